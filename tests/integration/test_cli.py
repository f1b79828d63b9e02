"""CLI: the card in three formats, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers as tf

from workbench.cli import run
from workbench.models.tiny import build_tiny

CLI = [sys.executable, "-m", "workbench"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def unsupported_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random-init MVP decoder: a real family whose attention does not call transformers'
    attention interface, so no adapter can be discovered (and none is routed yet: docs/families.md)."""
    path = tmp_path_factory.mktemp("mvp")
    config = tf.MvpConfig(
        vocab_size=128,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=64,
    )
    tf.MvpForCausalLM(config).save_pretrained(path)
    return path


def test_card_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_tiny("olmoe").save_pretrained(tmp_path)
    assert run(["card", str(tmp_path), "--format", "json"]) == 0
    card = json.loads(capsys.readouterr().out)
    config = json.loads((tmp_path / "config.json").read_text())
    router = card["factors"][15]
    assert router["number"] == 16 and router["value"]["experts"] == config["num_experts"]
    assert card["header"]["attention_kind"]["value"] == "GQA"  # 4 heads share 2 KV heads
    assert card["header"]["layers"] == {"value": config["num_hidden_layers"], "source": "config"}
    assert run(["card", str(tmp_path), "--format", "markdown"]) == 0
    assert '| 16 | architecture | MoE router type | {"router": "softmax scoring, top-k on probs' in (
        capsys.readouterr().out
    )


def test_unknown_hub_id_is_one_line() -> None:
    result = _cli("card", "nonexistent-org/no-such-model", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nonexistent-org/no-such-model" in lines[0] and "local directory" in lines[0]


def test_unsupported_family_is_one_line(unsupported_dir: Path) -> None:
    result = _cli("card", str(unsupported_dir))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'mvp'" in lines[0] and "attention interface" in lines[0]


def test_directory_without_weights_is_one_line(tmp_path: Path) -> None:
    """The main job captures activations, so it needs weights (card and hooks do not: test_meta_device)."""
    build_tiny("llama").config.save_pretrained(tmp_path)
    result = _cli("main", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no model weights" in lines[0]


def test_pickle_only_directory_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_tiny("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    result = _cli("card", str(tmp_path))
    assert result.returncode == 2 and "--allow-pickle" in result.stderr
    assert run(["card", str(tmp_path), "--allow-pickle", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["header"]["layers"]["value"] == 3


def test_debug_shows_traceback(unsupported_dir: Path) -> None:
    result = _cli("card", str(unsupported_dir), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr
    # re-raised, not turned into the one-line exit 2: Python's exit status 1 and the error's own class
    assert result.returncode == 1
    assert "UnsupportedFamilyError" in result.stderr and "'mvp'" in result.stderr


def test_generic_fallback_lists_residual_points(
    unsupported_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["hooks", str(unsupported_dir), "--generic"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in out and "blocks.0.hook_attn_out" in out


def test_generic_fallback_values_equal_hf_hidden_states(unsupported_dir: Path) -> None:
    import workbench

    model = workbench.load(str(unsupported_dir), allow_generic=True)
    assert model.adapter.family == "generic"
    ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(0))
    values = model.read(ids, r"blocks\.\d+\.hook_resid_(pre|post)")
    with torch.no_grad():
        hidden = model.hf(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.equal(values["blocks.0.hook_resid_pre"], hidden[0])
    assert torch.equal(values["blocks.0.hook_resid_post"], hidden[1])


def test_tokenizer_command_on_a_user_file(tmp_path: Path) -> None:
    texts = tmp_path / "fr.txt"
    texts.write_text("le chat dort\nla pluie tombe\n", encoding="utf-8")
    out = tmp_path / "table.parquet"
    assert run(["tokenizer", "tiny-llama", "--texts", str(texts), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table.language.tolist() == ["fr"] and table.words.iloc[0] == 6 and table.script.iloc[0] == "Latin"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"en": 1}\n', encoding="utf-8")
    result = _cli("tokenizer", "tiny-llama", "--texts", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"workbench: error: {bad}:1: expected an object of strings"
