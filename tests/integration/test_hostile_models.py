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
from conftest import pickle_only

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


@pytest.mark.parametrize("case", ["pickle_bypass", "unknown_model_type", "truncated_weights"])
def test_broken_model_directories(
    broken_models: dict[str, tuple[Path, list[str]]], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a fresh process (the pickle-bypass directory: as a user runs it) and in this one."""
    path, words = broken_models[case]
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "card", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert all(w in line for w in words), line
    assert _refused(["card", str(path)], capsys) == line


def test_pickle_loads_when_allowed(
    broken_models: dict[str, tuple[Path, list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = broken_models["pickle_bypass"]
    assert run(["card", str(path), "--allow-pickle", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["header"]["layers"]["value"] == 3


def test_sharded_pickle_is_refused(copy: Path) -> None:
    state = pickle_only(copy)
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
