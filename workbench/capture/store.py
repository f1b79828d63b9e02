"""``Capture``: captured tensors per hook point and prompt, with safetensors shards and a JSON manifest.

On disk a capture is a directory::

    manifest.json                   format, names, shard index, library versions, meta (model, revision,
                                    prompts, spec, dtypes)
    shard-RUN-00000.safetensors     tensors keyed "NAME|PROMPT_INDEX" (and "__tokens__|PROMPT_INDEX")

Shards are written atomically (temporary file, then rename) batch by batch, so a capture can spill to disk
while it runs; each shard's index entry holds its size and the xxh3_128 of its file bytes. ``RUN`` is a
random token per capture, so a capture replacing an older one (``overwrite=True``) never writes over the
old shards: the new manifest replaces the old one atomically, and only then are the shards the old manifest
listed removed.

Reading is lazy: :meth:`Capture.load` checks the manifest's schema, that every shard is a file inside the
store directory and has its listed size; a shard's checksum is verified the first time anything is read
from it, then tensors are read from the memory-mapped shard only when asked for.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import xxhash
from safetensors import safe_open
from safetensors.torch import save_file

from workbench._version import versions
from workbench.errors import InputError, WorkbenchError
from workbench.files import atomic_write, atomic_write_text

MANIFEST = "manifest.json"
TOKENS = "__tokens__"
FORMAT = 2  # 1: manifests before checksums (no "format" field)
HASH = "xxh3_128"
CHUNK = 2**20  # bytes read per hash update (fits the L2 cache: 2x faster than 16 MiB here)

_FIELDS: dict[str, type] = {"format": int, "names": list, "shards": list, "versions": dict, "meta": dict}
_SHARD_FIELDS: dict[str, type] = {"file": str, "prompts": list, "bytes": int, HASH: str}
_HEX = re.compile(r"[0-9a-f]{32}")


class CorruptStoreError(WorkbenchError):
    """A capture directory is missing files or does not match its manifest."""


class ManifestError(CorruptStoreError):
    """A capture manifest has the wrong shape, an old format, or points outside its store."""


class ChecksumError(CorruptStoreError):
    """A shard's size or checksum differs from its manifest entry."""


class StoreExistsError(InputError):
    """A capture would be written into a directory that already holds one, without ``overwrite=True``."""


def file_digest(path: Path) -> str:
    """The xxh3_128 hex digest of a file's bytes (read in chunks, no memory map)."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as file:
        while n := file.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


# ---------------------------------------------------------------------- manifest checks
_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a boolean"}


def _type_name(value: Any) -> str:
    return "null" if value is None else _KINDS.get(type(value), f"a {type(value).__name__}")


def _is(value: Any, kind: type) -> bool:
    """isinstance, with JSON booleans not counted as integers."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _fields(value: Any, fields: dict[str, type], where: str) -> str | None:
    """The first problem with an object's fields (missing, unknown, wrong type), or None."""
    if not isinstance(value, dict):
        return f"{where} is {_type_name(value)}, not an object"
    missing = [k for k in fields if k not in value]
    unknown = [k for k in value if k not in fields]
    if missing or unknown:
        return f"{where} {'lacks' if missing else 'has unknown'} field {(missing or unknown)[0]!r}"
    wrong = next((k for k, kind in fields.items() if not _is(value[k], kind)), None)
    if wrong is not None:
        return f"{where}.{wrong} is {_type_name(value[wrong])}, expected {_KINDS[fields[wrong]]}"
    return None


def shard_path(directory: Path, file: str) -> Path:
    """The path of a shard named in a manifest, refused unless it is a file name inside ``directory``.

    Raises:
        ManifestError: An absolute path, a path with directories or ``..``, or a symlink resolving outside
            the store directory.
    """
    if file in ("", ".", "..") or "/" in file or "\\" in file:
        raise ManifestError(f"capture store {directory}: shard path {file!r} is not a file name in the store")
    path = directory / file
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ManifestError(f"capture store {directory}: shard {file} resolves outside the store")
    return path


def _shard_problem(shard: Any, index: int, start: int) -> str | None:
    where = f"shards[{index}]"
    problem = _fields(shard, _SHARD_FIELDS, where)
    if problem:
        return problem
    span = shard["prompts"]
    if len(span) != 2 or not all(_is(v, int) for v in span) or span[0] != start or span[1] <= start:
        return f"{where}.prompts is {span!r}, expected [{start}, STOP] with STOP > {start}"
    if shard["bytes"] < 0:
        return f"{where}.bytes is {shard['bytes']!r}, expected a size"
    if not _HEX.fullmatch(shard[HASH]):
        return f"{where}.{HASH} is {shard[HASH]!r}, expected 32 lowercase hex digits"
    return None


def _manifest_problem(manifest: Any) -> str | None:
    """The first schema problem of a parsed manifest, or None."""
    if isinstance(manifest, dict) and "format" not in manifest and "shards" in manifest:
        return "predates shard checksums (format 1); recapture it with overwrite=True"
    problem = _fields(manifest, _FIELDS, "manifest")
    if problem:
        return problem
    if manifest["format"] != FORMAT:
        return f"has format {manifest['format']}; this workbench reads format {FORMAT}"
    names = manifest["names"]
    if not all(_is(n, str) for n in names) or len(set(names)) != len(names):
        return "names must be distinct strings"
    if not all(_is(k, str) and _is(v, str) for k, v in manifest["versions"].items()):
        return "versions must map strings to strings"
    stop = 0
    for index, shard in enumerate(manifest["shards"]):
        if problem := _shard_problem(shard, index, stop):
            return problem
        stop = shard["prompts"][1]
    files = [s["file"] for s in manifest["shards"]]
    if len(set(files)) != len(files):
        return "lists a shard file twice"
    prompts = manifest["meta"].get("prompts")
    if prompts is not None and (not _is(prompts, list) or not all(_is(p, str) for p in prompts)):
        return "meta.prompts must be null or a list of strings"
    if prompts is not None and len(prompts) < stop:  # more prompts than stored: a capture cut short
        return f"meta.prompts holds {len(prompts)} prompts, the shards {stop}"
    return None


def _read_manifest(directory: Path) -> Any:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStoreError(f"{directory} is not a readable capture ({MANIFEST}: {exc})") from exc


def _listed_shards(directory: Path) -> list[Path]:
    """The shard files an existing manifest lists (any format), for replacing that store.

    Raises:
        ManifestError: The manifest is not a capture manifest, or lists paths outside the store.
    """
    manifest = _read_manifest(directory)
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and _is(s.get("file"), str) for s in shards
    ):
        raise ManifestError(
            f"{directory / MANIFEST} is not a capture manifest; not overwriting it (move it away by hand)"
        )
    return [shard_path(directory, s["file"]) for s in shards]


def _check_file(directory: Path, shard: dict[str, Any]) -> Path:
    """A shard's path once it exists inside the store with its listed size (cheap: one stat)."""
    path = shard_path(directory, shard["file"])
    if not path.is_file():
        raise CorruptStoreError(f"capture store {directory}: shard {shard['file']} is missing")
    size = path.stat().st_size
    if size != shard["bytes"]:
        raise ChecksumError(
            f"capture store {directory}: shard {shard['file']} is {size} bytes, its manifest says "
            f"{shard['bytes']}: the shard is truncated or was replaced"
        )
    return path


def _verify(directory: Path, shard: dict[str, Any]) -> Path:
    """A shard's path once its size and checksum match the manifest."""
    path = _check_file(directory, shard)
    if file_digest(path) != shard[HASH]:
        raise ChecksumError(
            f"capture store {directory}: shard {shard['file']} fails its {HASH} checksum: the shard is "
            "corrupt; recapture with overwrite=True"
        )
    return path


# ---------------------------------------------------------------------- the capture
class Capture:
    """Captured values: ``capture[name]`` is a list with one tensor per prompt (pad positions removed).

    Attributes:
        names: Captured hook points and streamed statistics, in model order.
        prompts: The prompts (None when token ids were given).
        meta: Model, spec and versions.
        directory: The store directory, or None for a capture held in memory only.
    """

    def __init__(
        self,
        names: list[str],
        meta: dict[str, Any],
        directory: str | Path | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """A capture to be filled with :meth:`append`.

        Args:
            names: Captured names.
            meta: Model, spec and anything else to keep in the manifest (JSON; other values as strings).
            directory: Store directory to spill to; it must not hold a capture unless ``overwrite``.
            overwrite: Replace a capture already in ``directory`` (its shards go once this one's manifest
                is written; nothing else in the directory is touched).

        Raises:
            StoreExistsError: ``directory`` holds a capture and ``overwrite`` is False.
        """
        self.names = names
        self.meta = meta
        self.prompts: list[str] | None = meta.get("prompts")
        self.directory: Path | None = None
        self._memory: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        self._tokens: list[torch.Tensor] | None = []  # None: stored tokens not read yet
        self._shards: list[dict[str, Any]] = []  # manifest entries: file, prompts [start, stop], bytes, hash
        self._handles: dict[str, Any] = {}  # open (verified) shards
        self._flushed = 0  # prompts already written to shards
        self._run = ""  # shard name token of this capture's writes
        self._replaced: list[Path] = []  # shards of the store being overwritten, removed after the manifest
        if directory is not None:
            self._claim(Path(directory), overwrite)

    def _claim(self, directory: Path, overwrite: bool) -> None:
        """Take ``directory`` as this capture's store (refused if it holds one, unless ``overwrite``)."""
        if (directory / MANIFEST).exists():
            if not overwrite:
                raise StoreExistsError(
                    f"{directory} already holds a capture; pass overwrite=True to replace it"
                )
            self._replaced = _listed_shards(directory)
        self.directory = directory

    # ------------------------------------------------------------------ building
    def append(self, values: dict[str, list[torch.Tensor]], tokens: list[torch.Tensor]) -> None:
        """Add one batch: per-name lists of per-prompt tensors, and the prompts' token ids."""
        for name in self.names:
            self._memory[name].extend(values[name])
        self.tokens.extend(tokens)

    def resident_bytes(self) -> int:
        """Bytes held in memory (not yet spilled)."""
        return sum(t.numel() * t.element_size() for ts in self._memory.values() for t in ts)

    def spill(self) -> None:
        """Write the in-memory prompts to a new shard and drop them from memory."""
        if self.directory is None:
            raise WorkbenchError("cannot spill a capture without a directory")
        count = len(self.tokens) - self._flushed
        if count == 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for offset in range(count):
            index = self._flushed + offset
            tensors[f"{TOKENS}|{index}"] = self.tokens[index].contiguous()
            for name in self.names:
                tensors[f"{name}|{index}"] = self._memory[name][offset].contiguous()
        if not self._run:
            self._run = self._fresh_run()
        shard = f"shard-{self._run}-{len(self._shards):05d}.safetensors"
        entry = {"file": shard, "prompts": [self._flushed, self._flushed + count]}

        def write(temp: Path) -> None:
            save_file(tensors, str(temp))
            entry.update({"bytes": temp.stat().st_size, HASH: file_digest(temp)})

        atomic_write(self.directory / shard, write)
        self._handles[shard] = safe_open(str(self.directory / shard), framework="pt")
        self._shards.append(entry)
        self._flushed += count
        self._memory = {n: [] for n in self.names}
        self._write_manifest()

    def _fresh_run(self) -> str:
        """A shard name token no file in the store directory uses yet."""
        assert self.directory is not None
        while True:
            run = secrets.token_hex(4)
            if not any(self.directory.glob(f"shard-{run}-*")):
                return run

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write everything (remaining in-memory prompts included) to ``directory``.

        Raises:
            StoreExistsError: ``directory`` holds another capture and ``overwrite`` is False.
        """
        directory = Path(directory)
        if self.directory is not None and self.directory != directory:
            raise WorkbenchError(f"this capture already lives in {self.directory}")
        if self.directory is None:
            self._claim(directory, overwrite)
        self.spill()
        self._write_manifest()
        return directory

    def _write_manifest(self) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "names": self.names,
            "shards": self._shards,
            "versions": versions(),
            "meta": self.meta,
        }
        atomic_write_text(self.directory / MANIFEST, json.dumps(manifest, indent=2, default=str))
        kept = {s["file"] for s in self._shards}
        for path in self._replaced:  # the old store's shards, now that no manifest lists them
            if path.name not in kept:
                path.unlink(missing_ok=True)
        self._replaced = []

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, directory: str | Path) -> Capture:
        """Open a saved capture lazily (shards are checksummed when first read).

        Raises:
            CorruptStoreError: Missing or unreadable manifest or shards.
            ManifestError: A manifest of the wrong shape or an old format, or shard paths outside the store.
            ChecksumError: A shard of another size than its manifest lists.
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        if problem := _manifest_problem(manifest):
            raise ManifestError(f"capture store {directory}: {MANIFEST} {problem}")
        result = cls(manifest["names"], manifest["meta"])
        result.directory = directory
        result._shards = manifest["shards"]
        for shard in result._shards:
            _check_file(directory, shard)
        result._tokens = None
        result._flushed = result._shards[-1]["prompts"][1] if result._shards else 0
        return result

    def _open(self, shard: dict[str, Any]) -> Any:
        """The open handle of a shard, verified against its checksum on first use."""
        handle = self._handles.get(shard["file"])
        if handle is not None:
            return handle
        assert self.directory is not None
        path = _verify(self.directory, shard)
        try:
            handle = safe_open(str(path), framework="pt")
        except Exception as exc:
            raise CorruptStoreError(f"capture shard {path} is unreadable: {exc}") from exc
        keys = set(handle.keys())
        start, stop = shard["prompts"]
        for key in (f"{n}|{i}" for i in range(start, stop) for n in [TOKENS, *self.names]):
            if key not in keys:
                raise CorruptStoreError(f"capture shard {path} lacks {key}")
        self._handles[shard["file"]] = handle
        return handle

    @property
    def tokens(self) -> list[torch.Tensor]:
        """Token ids per prompt (a loaded capture reads them from its shards on first use)."""
        if self._tokens is None:
            self._tokens = [
                self._open(shard).get_tensor(f"{TOKENS}|{i}")
                for shard in self._shards
                for i in range(*shard["prompts"])
            ]
        return self._tokens

    def __len__(self) -> int:
        return self._flushed if self._tokens is None else len(self._tokens)

    def __contains__(self, name: str) -> bool:
        return name in self._memory

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getitem__(self, name: str) -> list[torch.Tensor]:
        """Per-prompt tensors of one point (read from shards on demand)."""
        if name not in self._memory:
            raise KeyError(f"{name} was not captured; captured: {', '.join(self.names[:6])} ...")
        stored = [
            self._open(shard).get_tensor(f"{name}|{i}")
            for shard in self._shards
            for i in range(*shard["prompts"])
        ]
        return stored + self._memory[name]

    def stack(self, name: str) -> torch.Tensor:
        """All prompts of one point stacked on a new batch axis (prompts must have equal shapes)."""
        values = self[name]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise WorkbenchError(
                f"{name} has prompts of different lengths {sorted(shapes)[:3]}; index per prompt"
            )
        return torch.stack(values)

    def token_strings(self, tokenizer: Any) -> list[list[str]]:
        """Token strings per prompt."""
        return [tokenizer.convert_ids_to_tokens(ids.tolist()) for ids in self.tokens]
