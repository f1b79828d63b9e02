"""Capture store integrity: shard checksums, the manifest schema, shard paths and overwriting a store."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import workbench
from workbench.capture import Capture, CaptureSpec, capture
from workbench.capture.engine import CaptureTooLargeError
from workbench.capture.store import (
    MANIFEST,
    ChecksumError,
    CorruptStoreError,
    ManifestError,
    StoreExistsError,
)
from workbench.models.tiny import VOCAB, build_tiny

RESID = r"blocks\.\d+\.hook_resid_post"
NAME = "blocks.0.hook_resid_post"


def _prompts(lengths: tuple[int, ...] = (5, 6, 7), seed: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=generator) for n in lengths]


@pytest.fixture(scope="module")
def model() -> workbench.WorkbenchModel:
    return workbench.load(build_tiny("gpt2"))


@pytest.fixture(scope="module")
def pristine(model: workbench.WorkbenchModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real spilled capture (batch 1 and a tiny budget: several shards), written once."""
    spec = CaptureSpec(points=[RESID], batch_size=1, memory_budget_gb=1e-5)
    directory = tmp_path_factory.mktemp("store") / "cap"
    capture(model, _prompts(), spec, out_dir=directory, progress=False)
    return directory


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pristine store for one test to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "cap"))


def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text())


def _shards(directory: Path) -> list[Path]:
    return [directory / s["file"] for s in _manifest(directory)["shards"]]


def _read_all(directory: Path) -> dict[str, list[torch.Tensor]]:
    loaded = Capture.load(directory)
    return {"tokens": loaded.tokens, **{name: loaded[name] for name in loaded.names}}


def _flip_positions(shard: bytes) -> list[int]:
    """40 byte positions: the header length, the header JSON, the header / data boundary and the data."""
    header = 8 + struct.unpack("<Q", shard[:8])[0]
    size = len(shard)
    positions = [*range(8), 8, 9, 10, header - 3, header - 2, header - 1]  # length field, JSON edges
    positions += [8 + (header - 8) * k // 10 for k in range(1, 10)]  # inside the header JSON
    positions += [header, header + 1, header + 2, header + 3]  # first data bytes
    positions += [header + (size - header) * k // 10 for k in range(1, 10)]  # inside the data
    positions += [size - 4, size - 3, size - 2, size - 1]  # last data bytes
    assert len(set(positions)) == 40 and all(0 <= p < size for p in positions)
    return positions


def test_stored_values_equal_the_capture(model: workbench.WorkbenchModel, pristine: Path) -> None:
    loaded = Capture.load(pristine)
    assert len(_shards(pristine)) >= 2 and len(loaded) == 3  # spilled: several shards
    reference = capture(model, _prompts(), CaptureSpec(points=[RESID], batch_size=1), progress=False)
    for name in reference.names:
        assert all(torch.equal(a, b) for a, b in zip(loaded[name], reference[name], strict=True))


def test_every_sampled_byte_flip_is_detected(store: Path) -> None:
    shard = _shards(store)[0]
    original = shard.read_bytes()
    for position in _flip_positions(original):
        damaged = bytearray(original)
        damaged[position] ^= 0xFF
        shard.write_bytes(bytes(damaged))
        loaded = Capture.load(store)  # sizes match: the checksum is verified on first read
        with pytest.raises(ChecksumError) as error:
            loaded[NAME]
        message = str(error.value)
        assert "\n" not in message and str(store) in message and shard.name in message, position
    shard.write_bytes(original)
    pristine = _read_all(store)
    assert all(torch.equal(a, b) for a, b in zip(pristine["tokens"], _prompts(), strict=True))


@pytest.mark.parametrize("read", ["tokens", "point"])
def test_a_flip_in_the_last_shard_is_detected_by_any_read(store: Path, read: str) -> None:
    shard = _shards(store)[-1]
    damaged = bytearray(shard.read_bytes())
    damaged[-1] ^= 0x01  # one bit of the last value of the last prompt
    shard.write_bytes(bytes(damaged))
    loaded = Capture.load(store)
    with pytest.raises(ChecksumError, match="fails its xxh3_128 checksum"):
        _ = loaded.tokens if read == "tokens" else loaded[NAME]


def test_truncated_or_missing_shards_are_refused_at_load(store: Path) -> None:
    first, second = _shards(store)[:2]
    first.write_bytes(first.read_bytes()[:-1])
    with pytest.raises(ChecksumError, match="truncated"):
        Capture.load(store)
    second.unlink()
    first.write_bytes(first.read_bytes() + b"\0")  # right size again, wrong bytes
    with pytest.raises(CorruptStoreError, match="is missing"):
        Capture.load(store)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """A manifest edit setting ``path`` (keys and list indices separated by dots)."""

    def edit(manifest: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
        return manifest

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], Any]:
    def edit(manifest: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]
        return manifest

    return edit


BAD_MANIFESTS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "a list": (lambda m: [m], "is a list, not an object"),
    "a string": (lambda m: "capture", "is a string, not an object"),
    "null": (lambda m: None, "is null, not an object"),
    "no format (old store)": (_drop("format"), "predates shard checksums"),
    "a newer format": (_set("format", 3), "has format 3"),
    "format as a string": (_set("format", "2"), "format is a string, expected an integer"),
    "format as a boolean": (_set("format", True), "format is a boolean, expected an integer"),
    "no names": (_drop("names"), "lacks field 'names'"),
    "no shards": (_drop("shards"), "lacks field 'shards'"),
    "no meta": (_drop("meta"), "lacks field 'meta'"),
    "an unknown field": (_set("extra", 1), "has unknown field 'extra'"),
    "names as a string": (_set("names", NAME), "names is a string, expected a list"),
    "a name as a number": (_set("names.0", 7), "names must be distinct strings"),
    "repeated names": (_set("names", [NAME, NAME]), "names must be distinct strings"),
    "shards as an object": (_set("shards", {}), "shards is an object, expected a list"),
    "a shard as a list": (_set("shards.0", []), "shards[0] is a list, not an object"),
    "a shard without its checksum": (_drop("shards.0.xxh3_128"), "lacks field 'xxh3_128'"),
    "a shard with an unknown field": (_set("shards.0.crc", "0"), "has unknown field 'crc'"),
    "prompts as a string": (_set("shards.0.prompts", "0:1"), "prompts is a string, expected a list"),
    "prompts of strings": (_set("shards.0.prompts", ["0", "1"]), "expected [0, STOP]"),
    "prompts of booleans": (_set("shards.0.prompts", [False, True]), "expected [0, STOP]"),
    "a gap between shards": (_set("shards.1.prompts", [99, 100]), "is [99, 100], expected ["),
    "an empty shard span": (_set("shards.0.prompts", [0, 0]), "expected [0, STOP]"),
    "bytes as a string": (_set("shards.0.bytes", "100"), "bytes is a string, expected an integer"),
    "negative bytes": (_set("shards.0.bytes", -1), "expected a size"),
    "a short checksum": (_set("shards.0.xxh3_128", "abc"), "expected 32 lowercase hex digits"),
    "a checksum as a number": (_set("shards.0.xxh3_128", 5), "is an integer, expected a string"),
    "versions as a list": (_set("versions", []), "versions is a list, expected an object"),
    "a version as a number": (_set("versions.torch", 2), "versions must map strings to strings"),
    "meta as a list": (_set("meta", []), "meta is a list, expected an object"),
    "meta.prompts as a string": (_set("meta.prompts", "hi"), "meta.prompts must be null or a list"),
    "shard path ../x": (_set("shards.0.file", "../x"), "is not a file name in the store"),
    "an absolute shard path": (_set("shards.0.file", "/etc/passwd"), "is not a file name in the store"),
    "a shard path in a subdirectory": (_set("shards.0.file", "sub/x"), "is not a file name in the store"),
    "an empty shard path": (_set("shards.0.file", ""), "is not a file name in the store"),
    "a shard listed twice": (
        lambda m: _set("shards.1.file", m["shards"][0]["file"])(m),
        "lists a shard file twice",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_wrong_manifests_are_one_line_errors(store: Path, case: str) -> None:
    edit, message = BAD_MANIFESTS[case]
    (store / MANIFEST).write_text(json.dumps(edit(_manifest(store))))
    with pytest.raises(ManifestError) as error:
        Capture.load(store)
    text = str(error.value)
    assert message in text and str(store) in text and "\n" not in text, text


def test_a_symlinked_shard_pointing_outside_is_refused(store: Path, tmp_path: Path) -> None:
    shard = _shards(store)[0]
    outside = tmp_path / "outside.safetensors"
    shutil.move(shard, outside)
    shard.symlink_to(outside)  # same name, same bytes: only the location is wrong
    with pytest.raises(ManifestError, match="resolves outside the store"):
        Capture.load(store)


def test_capturing_into_a_store_needs_overwrite(
    model: workbench.WorkbenchModel, store: Path, tmp_path: Path
) -> None:
    old = _shards(store)
    unrelated = [store / "notes.txt", store / "shard-mine.safetensors", store / "sub" / "kept.bin"]
    for path in unrelated:
        path.parent.mkdir(exist_ok=True)
        path.write_text("not the capture's")
    spec = CaptureSpec(points=[RESID])
    with pytest.raises(StoreExistsError, match="pass overwrite=True") as error:
        capture(model, _prompts((4,), seed=9), spec, out_dir=store, progress=False)
    assert "\n" not in str(error.value) and all(p.exists() for p in old)
    assert len(Capture.load(store)) == 3  # the old store is untouched

    new = capture(model, _prompts((4,), seed=9), spec, out_dir=store, overwrite=True, progress=False)
    assert not any(p.exists() for p in old)
    assert all(p.read_text() == "not the capture's" for p in unrelated)
    files = {p.name for p in store.iterdir()}
    assert files == {MANIFEST, "notes.txt", "shard-mine.safetensors", "sub", _shards(store)[0].name}
    loaded = Capture.load(store)
    assert len(loaded) == 1 and torch.equal(loaded[NAME][0], new[NAME][0])


def test_a_failed_overwrite_keeps_the_old_store(model: workbench.WorkbenchModel, store: Path) -> None:
    before = _read_all(store)
    spec = CaptureSpec(points=[RESID], memory_budget_gb=1e-9)  # refused before anything is written
    with pytest.raises(CaptureTooLargeError):
        capture(model, _prompts(), spec, out_dir=store, overwrite=True, progress=False)
    after = _read_all(store)
    assert all(torch.equal(a, b) for k in before for a, b in zip(before[k], after[k], strict=True))


def test_save_into_a_store_needs_overwrite(model: workbench.WorkbenchModel, store: Path) -> None:
    old = _shards(store)
    memory = capture(model, _prompts((6,), seed=4), CaptureSpec(points=[RESID]), progress=False)
    with pytest.raises(StoreExistsError):
        memory.save(store)
    memory.save(store, overwrite=True)
    assert not any(p.exists() for p in old)
    assert torch.equal(Capture.load(store)[NAME][0], memory[NAME][0])


def test_overwriting_an_old_format_store_removes_its_shards(
    model: workbench.WorkbenchModel, store: Path
) -> None:
    manifest = _manifest(store)
    old = {"names": manifest["names"], "shards": [{"file": s["file"]} for s in manifest["shards"]]}
    (store / MANIFEST).write_text(json.dumps(old))  # the shape stores had before checksums
    with pytest.raises(ManifestError, match="predates shard checksums"):
        Capture.load(store)
    capture(model, _prompts((4,)), CaptureSpec(points=[RESID]), out_dir=store, overwrite=True, progress=False)
    assert len(_shards(store)) == 1 and sorted(store.glob("shard-*")) == _shards(store)


@pytest.mark.parametrize(
    "manifest",
    [{"state": "complete", "units": []}, {"shards": [{"file": "../victim.txt"}]}, [1, 2]],
    ids=["not a capture", "a shard outside", "a list"],
)
def test_overwrite_refuses_manifests_it_cannot_trust(
    model: workbench.WorkbenchModel, tmp_path: Path, manifest: Any
) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError):
        capture(model, _prompts((4,)), CaptureSpec(points=[RESID]), out_dir=directory, overwrite=True)
    assert victim.read_text() == "keep" and json.loads((directory / MANIFEST).read_text()) == manifest
