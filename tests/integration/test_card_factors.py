"""The card's thirty rows on real files: every zoo model's own checkpoint files, config-only directories
for the quantisation and cross-modal readers, the measured rows against the probes run directly, and two
cards side by side. Expected values are read from the files (JSON, YAML, the template's text) here."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import GenerationConfig

import workbench
from probes.registry import get
from workbench.cli import run
from workbench.families.tiny import tiny_config
from workbench.zoo import heldout
from workbench.zoo.registry import MODELS_DIR

ZOO = [*sorted(p.name for p in MODELS_DIR.iterdir()), "minilm"]
TUNING = {"sft", "dpo", "rlhf", "ppo", "orpo", "kto", "grpo", "simpo", "reward-model"}  # method tags
GENERATION_ROWS = {
    5: ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "stop_strings"),
    21: ("do_sample", "temperature", "top_p", "top_k", "min_p"),
    22: ("max_new_tokens", "max_length", "min_new_tokens", "min_length"),
    23: ("repetition_penalty", "no_repeat_ngram_size", "encoder_repetition_penalty", "length_penalty"),
    24: ("max_time",),
}


def _directory(name: str) -> Path:
    return MODELS_DIR / name if name != "minilm" else Path(workbench.load("minilm").config._name_or_path)


def _front_matter(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8").split("---")[1])


def _kv_bytes(config: dict) -> int:
    """2 x layers x kv_heads x head_dim x 4 bytes (fp32), from the config's own fields."""
    layers = config.get("num_hidden_layers") or config["n_layer"]
    heads = config.get("num_attention_heads") or config["n_head"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (config.get("hidden_size") or config["n_embd"]) // heads
    return 2 * layers * kv_heads * head_dim * 4


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_card_holds_its_files_values(name: str) -> None:
    directory = _directory(name)
    card = workbench.card(workbench.load(name))
    rows = {f.number: f for f in card.factors}
    assert sorted(rows) == list(range(1, 31)) and all(f.source for f in card.factors)
    config = json.loads((directory / "config.json").read_text())
    assert rows[1].value["embedding"] == config["vocab_size"]
    assert rows[17].value["kv_bytes_per_token"] == _kv_bytes(config)
    assert card.get("quantisation") is None and "quantization_config" not in config
    assert rows[19].value == "none"
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    assert rows[2].value.startswith(tokenizer["model"]["type"])  # BPE / Unigram / WordPiece
    if name == "minilm":  # an encoder: nothing is decoded, and the checkpoint has no generation config
        assert not (directory / "generation_config.json").exists()
        for number in GENERATION_ROWS:
            assert rows[number].value is None and "no language-model head" in rows[number].source
    else:
        written = json.loads((directory / "generation_config.json").read_text())
        defaults = GenerationConfig._get_default_generation_params()  # what generate fills in when unset
        for number, fields in GENERATION_ROWS.items():
            for field in fields:
                expected = written[field] if field in written else defaults.get(field)
                assert rows[number].value[field] == expected, (number, field)
    meta = _front_matter(directory / "README.md")
    datasets = meta.get("datasets")
    assert (rows[10].value or {}).get("datasets") == datasets
    assert rows[12].value == [t for t in meta.get("tags", []) if t in TUNING]
    template = directory / "chat_template.jinja"
    if template.is_file():  # tiny-llama: a system role with a default prompt, tools, reasoning markers
        text = template.read_text()
        assert rows[9].value == re.search(r"set system = '([^']*)'", text).group(1)
        assert rows[27].value is True and rows[29].value == ["assistant", "tool"]
        assert rows[28].value == [m for m in ("<think>", "</think>", "enable_thinking") if m in text]
    else:
        for number in (9, 27, 28, 29):
            assert rows[number].value is None and "no chat template" in rows[number].source
    early = MODELS_DIR / f"{name}-early"
    assert rows[15].value == ([early.name] if early.is_dir() else None)


def test_quantisation_and_cross_modal_readers_on_config_only_directories(tmp_path: Path) -> None:
    """A GPTQ-style quantisation config, a vision tower (Gemma 3) and cross-attention layers (Mllama),
    each a directory holding only its config.json (built on the meta device)."""
    llama = tiny_config("llama")
    llama.quantization_config = {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 128,
        "modules_to_not_convert": ["lm_head"],
    }
    for name, config in (
        ("gptq", llama),
        ("gemma3", tiny_config("gemma3")),
        ("mllama", tiny_config("mllama")),
    ):
        config.save_pretrained(tmp_path / name)
    files = {n: json.loads((tmp_path / n / "config.json").read_text()) for n in ("gptq", "gemma3", "mllama")}
    quantised = workbench.card(workbench.load(str(tmp_path / "gptq"), device="meta"))
    written = files["gptq"]["quantization_config"]
    keys = ("quant_method", "bits", "group_size", "modules_to_not_convert")
    assert quantised.get("quantisation") == {k: written[k] for k in keys}
    vision = workbench.card(workbench.load(str(tmp_path / "gemma3"), device="meta"))
    assert vision.get(19) == {"vision_config": files["gemma3"]["vision_config"]["model_type"]}
    cross = workbench.card(workbench.load(str(tmp_path / "mllama"), device="meta"))
    assert cross.get(19)["cross_attention_layers"] == files["mllama"]["text_config"]["cross_attention_layers"]
    assert cross.get(19)["vision_config"] == files["mllama"]["vision_config"]["model_type"]
    for card in (quantised, vision, cross):  # nothing silently missing: a value, or why there is none
        assert [f.number for f in card.factors] == list(range(1, 31)) and all(f.source for f in card.factors)
        for number in (2, 3, 4, 9):  # no tokenizer in a config-only directory
            assert card.get(number) is None and "no tokenizer" in card.factor(number).source


def _direct(name: str) -> dict[int, dict]:
    """The measured rows' numbers from the registered probes run directly on the held-out cut."""
    model, texts = workbench.load(name), heldout(2, 300)
    rows: dict[int, dict] = {}
    if model.cfg.causal_lm:
        loss = get("loss_per_byte")(model, texts)
        nll = (loss.nats_per_byte * loss.bytes).sum()
        rows[10] = {"bits_per_byte": nll / loss.bytes.sum() / math.log(2)}
        rows[11] = dict(zip(loss.group, loss.bits_per_byte, strict=True))
        rows[13] = {"bits_per_byte_spread": loss.bits_per_byte.max() - loss.bits_per_byte.min()}
    sinks = get("sinks")(model, texts)
    rows[17] = {"sink_rate": 100 * sinks.sink_share.mean(), "mean_alpha": sinks.alpha.mean()}
    rows[25] = {}
    for dtype in ("float32", "bfloat16"):
        table = get("batch_invariance")(workbench.load(name, dtype=getattr(torch, dtype)), texts)
        flips = table.argmax_flips.sum() if model.cfg.causal_lm else None  # an encoder has no argmax
        rows[25][dtype] = {"max_abs_diff": table.max_abs_diff.max(), "argmax_flips": flips}
    compression = get("compression")(model, texts)
    rows[30] = {"twonn_90_max": compression.twonn_90.max()}
    return rows


def _close(measured: object, direct: object) -> bool:
    if isinstance(direct, dict):
        return all(_close(measured[k], v) for k, v in direct.items())
    if direct is None:
        return measured is None
    return measured == pytest.approx(float(direct), rel=1e-6, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-llama", "minilm"])
def test_measure_fills_the_rows_with_the_probes_numbers(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["card", name, "--measure", "--format", "json"]) == 0
    factors = {f["number"]: f for f in json.loads(capsys.readouterr().out)["factors"]}
    direct = _direct(name)
    for number, expected in direct.items():
        assert "measured:" in factors[number]["source"], number
        assert _close(factors[number]["value"], expected), (number, factors[number]["value"], expected)
    if name == "minilm":  # an encoder: no next-token loss, so no loss per byte and no spread over domains
        for number in (10, 13):
            assert "not a causal language model" in factors[number]["source"], factors[number]
        assert factors[10]["value"]["datasets"] == _front_matter(_directory(name) / "README.md")["datasets"]


def test_two_cards_side_by_side_mark_the_rows_that_differ(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["card", "tiny-llama", "tiny-llama-unigram", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["a"], shown["b"]) == ("tiny-llama", "tiny-llama-unigram")
    assert all(r["differs"] == (r["a"] != r["b"]) for r in shown["rows"])
    differing = {r["factor"] if r["number"] == 0 else r["number"] for r in shown["rows"] if r["differs"]}
    # the tokenizer (Unigram vs BPE) and the chat template only tiny-llama carries; the same architecture
    assert {2, 3, 9, 27, 28, 29} <= differing and not differing & {"layers", "d_model", 16, 17}
    assert run(["card", "tiny-llama", "tiny-llama-unigram", "--format", "markdown"]) == 0
    assert "| 2 | tokenizer | algorithm | BPE (byte-level) | Unigram | * |" in capsys.readouterr().out
