"""Hostile or broken model sources: each is refused with one line on stderr and exit 2, never a traceback.

Real files written by real HF classes: a pickle next to an unrelated safetensors file, sharded pickles, an
unknown ``model_type``, truncated weights, a bad hook-point regex, a misspelt zoo name, an empty name and
an unreachable hub. transformers 5 ignores ``save_pretrained(safe_serialization=False)`` (it always writes
``model.safetensors``), so pickles are written with ``torch.save`` the way older checkpoints were.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import workbench
from workbench.cli import run
from workbench.errors import UnsafeCheckpointError
from workbench.models.tiny import build_tiny


def _one_line(stderr: str) -> str:
    """The single ``workbench: error:`` line of a refused command."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI in this process; assert exit 2 and one line; return the line."""
    assert run(args) == 2
    return _one_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved by ``save_pretrained`` (config + model.safetensors)."""
    path = tmp_path_factory.mktemp("llama")
    build_tiny("llama").save_pretrained(path)
    return path


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved model to damage."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _pickle_only(directory: Path) -> dict[str, torch.Tensor]:
    """Replace the directory's safetensors by a ``pytorch_model.bin`` pickle; return the state dict."""
    state = build_tiny("llama").state_dict()
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    return state


def test_pickle_beside_unrelated_safetensors_is_refused(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pickle_only(copy)
    save_file({"unrelated": torch.zeros(2)}, copy / "x.safetensors")
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "card", str(copy)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert "pytorch_model.bin" in line and "--allow-pickle" in line
    assert run(["card", str(copy), "--allow-pickle", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"]["layers"] == 3


def test_sharded_pickle_is_refused(copy: Path) -> None:
    state = _pickle_only(copy)
    shard = "pytorch_model-00001-of-00001.bin"
    (copy / "pytorch_model.bin").rename(copy / shard)
    index = {"metadata": {}, "weight_map": dict.fromkeys(state, shard)}
    (copy / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeCheckpointError, match=re.escape(shard)):
        workbench.load(str(copy))


def test_safetensors_preferred_over_a_pickle_beside_it(copy: Path) -> None:
    """transformers loads model.safetensors first, so a pickle next to it is never read: no refusal."""
    torch.save({"not": torch.zeros(1)}, copy / "pytorch_model.bin")
    assert workbench.load(str(copy)).adapter.family == "llama"


def test_unknown_model_type(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "no_such_family"}))
    assert "model_type 'no_such_family'" in _refused(["card", str(copy)], capsys)


def test_truncated_weights(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = _refused(["card", str(copy)], capsys)
    assert "model.safetensors" in line and "truncated" in line


def test_bad_pattern_regex(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid hook point pattern '('" in _refused(["hooks", str(saved), "--pattern", "("], capsys)


def test_misspelt_zoo_name_suggests_and_skips_the_hub(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(["card", "tiny-mo"], capsys)
    assert "did you mean 'tiny-moe'?" in line and "could not load hub id" not in line


def test_empty_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert "model name is empty" in _refused(["card", ""], capsys)


def test_unreachable_hub_fails_in_one_line() -> None:
    """A hub endpoint that refuses connections (no HF_HUB_OFFLINE set): one line naming the id."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "card", "some-org/some-model"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    assert "'some-org/some-model'" in _one_line(result.stderr)


def test_unexpected_error_is_one_line_with_debug_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure no check anticipates (writing into a missing directory): one line, exit 1."""
    assert run(["tokenizer", "tiny-llama", "--out", str(tmp_path / "missing" / "t.parquet")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: unexpected error: ")
    assert lines[0].endswith("(run with --debug for the traceback)")
