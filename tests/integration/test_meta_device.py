"""Cards and hook listings of models that do not fit: a directory with only a config.json is built on
the meta device, so a 70B Llama or a 671B DeepSeek-V3 costs no weight memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import transformers as tf

import workbench
from workbench.models.shapes import LLAMA_3_70B

LIMIT_KIB = 1_500_000  # the process's peak resident memory; a 70B model in bf16 alone is 140 GB


def _configs(root: Path) -> dict[str, Path]:
    sizes = {
        "llama-3-70b": tf.LlamaConfig(**LLAMA_3_70B),
        "deepseek-v3": tf.DeepseekV3Config(architectures=["DeepseekV3ForCausalLM"]),  # the release's sizes
        # no file in workbench/arch/: discovered on a small CPU twin, sizes read from this config
        "glm-4.5-air": tf.Glm4MoeConfig(
            vocab_size=151552,
            hidden_size=4096,
            intermediate_size=10944,
            moe_intermediate_size=1408,
            num_hidden_layers=46,
            num_attention_heads=96,
            num_key_value_heads=8,
            head_dim=128,
            n_routed_experts=128,
            num_experts_per_tok=8,
            n_shared_experts=1,
            first_k_dense_replace=1,
            architectures=["Glm4MoeForCausalLM"],
        ),
    }
    for name, config in sizes.items():
        config.save_pretrained(root / name)
    return {name: root / name for name in sizes}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama-3-70b", {"layers": 80, "kv_heads": 8, "parameters": (70.0e9, 71.0e9)}),
        ("deepseek-v3", {"layers": 61, "kv_heads": 128, "parameters": (671.0e9, 686.0e9)}),
        (
            "glm-4.5-air",
            {"layers": 46, "kv_heads": 8, "heads": 96, "head_dim": 128, "parameters": (106.0e9, 107.5e9)},
        ),
    ],
)
def test_card_and_hooks_of_a_config_only_directory(tmp_path: Path, name: str, expected: dict) -> None:
    directory = _configs(tmp_path)[name]
    script = (
        "import re\n"
        "from workbench.cli import run\n"
        f"code = run(['card', {str(directory)!r}, '--format', 'json'])\n"
        f"code += run(['hooks', {str(directory)!r}, '--pattern', r'blocks\\.(45|60)\\..*'])\n"
        # VmHWM is this process image's own peak (ru_maxrss would carry the forking pytest's over exec)
        "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print('PEAK', peak, 'CODE', code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    peak, code = result.stdout.split("PEAK ")[-1].split(" CODE ")
    assert int(code) == 0 and int(peak) < LIMIT_KIB, result.stdout[-400:]
    card = json.loads(result.stdout[: result.stdout.index("\n}\n") + 2])
    header = {name: fact["value"] for name, fact in card["header"].items()}
    assert header["layers"] == expected["layers"]
    for fact in ("kv_heads", "heads", "head_dim"):
        assert header[fact] == expected.get(fact, header[fact]), fact
    low, high = expected["parameters"]
    assert low <= header["parameters_total"] <= high
    assert card["header"]["parameters_total"]["source"] == "config (counted on the meta device)"
    factors = card["factors"]
    assert [f["number"] for f in factors] == list(range(1, 31))
    for number in (2, 3, 4, 9, 27, 28, 29):  # no tokenizer in the directory: the rows say so
        assert factors[number - 1]["value"] is None and "no tokenizer" in factors[number - 1]["source"]
    assert factors[0]["value"] == {"embedding": config_vocab(directory)}
    assert f"blocks.{min(expected['layers'] - 1, 60)}.hook_resid_post" in result.stdout
    if name == "glm-4.5-air":  # the router read off the twin, the counts off this config
        assert (factors[15]["value"]["experts"], factors[15]["value"]["top_k"]) == (128, 8)


def config_vocab(directory: Path) -> int:
    return json.loads((directory / "config.json").read_text())["vocab_size"]


def test_load_on_meta_allocates_no_weights(tmp_path: Path) -> None:
    directory = _configs(tmp_path)["llama-3-70b"]
    model = workbench.load(str(directory), device="meta")
    assert all(p.is_meta for p in model.hf.parameters())
    assert model.cfg.n_layers == 80 and "blocks.79.attn.hook_pattern" in model.points
