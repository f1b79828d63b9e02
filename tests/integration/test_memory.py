"""Memory before loading and offloading: the estimate from a config against a hand count, a model no
machine can hold refused before any weight is read, and tiny-llama with most blocks on disk giving the
in-memory model's captures, generation and interventions exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import workbench
from workbench.capture import CaptureSpec, capture
from workbench.capture.generate import generate
from workbench.errors import ModelTooLargeError, WorkbenchError
from workbench.intervene.heads import ablate_heads
from workbench.intervene.sinks import remove_sink
from workbench.models.memory import check_fits, estimate
from workbench.zoo.registry import resolve_zoo

CONFIG = json.loads((resolve_zoo("tiny-llama") / "config.json").read_text())
PROMPT = "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b"


def _llama_parameters(c: dict) -> int:
    """A tied Llama's parameter count by hand: embeddings, per block q / k / v / o, gate / up / down and
    two norms, the final norm."""
    d, kv = c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]
    q = c["num_attention_heads"] * c["head_dim"]
    block = d * q + 2 * d * kv + q * d + 3 * d * c["intermediate_size"] + 2 * d
    return c["vocab_size"] * d + c["num_hidden_layers"] * block + d


def test_estimate_counts_weights_and_cache_by_hand() -> None:
    found = estimate(workbench.load("tiny-llama", device="meta"))
    rotary = 2 * (CONFIG["head_dim"] // 2)  # the rotary inv_freq and original_inv_freq buffers
    assert found.weights == 4 * (_llama_parameters(CONFIG) + rotary)
    kv_per_token = 2 * CONFIG["num_hidden_layers"] * CONFIG["num_key_value_heads"] * CONFIG["head_dim"] * 4
    assert found.context == 512 and found.kv_cache == kv_per_token * 512  # capped at the configured positions
    half = estimate(workbench.load("tiny-llama", device="meta"), torch.bfloat16, context=100)
    assert half.weights == found.weights // 2 and half.kv_cache == kv_per_token // 2 * 100


def test_check_fits_gives_both_numbers() -> None:
    found = estimate(workbench.load("tiny-llama", device="meta"))
    check_fits(found, "tiny-llama", available=found.total)  # exactly enough
    with pytest.raises(ModelTooLargeError, match=r"tiny-llama needs 0\.0 GB .* but cpu has 0\.0 GB free"):
        check_fits(found, "tiny-llama", available=found.total - 1)


def test_a_model_no_machine_holds_is_refused_before_its_weights_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 512-layer Llama config (about 27.6 T parameters) beside a weight file that is not one: the refusal
    comes first, with the hand-counted size; the CLI says it in one line."""
    from workbench.cli import run

    config = {**CONFIG, "hidden_size": 65536, "intermediate_size": 262144, "num_hidden_layers": 512}
    config |= {"num_attention_heads": 512, "num_key_value_heads": 64, "head_dim": 128}
    config["max_position_embeddings"] = 8192
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # empty header
    weights_gb = 4 * _llama_parameters(config) / 1e9
    with pytest.raises(ModelTooLargeError) as refused:
        workbench.load(str(tmp_path))
    assert f"{weights_gb:.1f} GB of weights in float32" in str(refused.value)
    assert "GB of KV cache for 4096 tokens" in str(refused.value) and "offloaded" in str(refused.value)
    bf16 = f"{weights_gb / 2:.1f} GB of weights in bfloat16"
    with pytest.raises(ModelTooLargeError, match=bf16):
        workbench.load(str(tmp_path), dtype=torch.bfloat16)
    assert run(["main", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs" in err[0] and "GB free" in err[0]


def test_placement_options_need_a_device_map(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="give one"):
        workbench.load("tiny-llama", max_memory={"cpu": "1GB"})


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory: pytest.TempPathFactory) -> workbench.WorkbenchModel:
    folder = tmp_path_factory.mktemp("offload")
    return workbench.load("tiny-llama", device_map="auto", max_memory={"cpu": "3MB"}, offload_folder=folder)


def test_disk_offload_places_the_blocks_on_disk(offloaded: workbench.WorkbenchModel) -> None:
    placed = offloaded.hf.hf_device_map
    assert placed["model.layers"] == "disk" and placed["model.embed_tokens"] == "cpu"
    assert all(p.device.type == "meta" for p in offloaded.hf.model.layers.parameters())  # not in memory


def test_disk_offload_captures_generates_and_intervenes_as_in_memory(
    offloaded: workbench.WorkbenchModel,
) -> None:
    memory = workbench.load("tiny-llama")
    points = [
        r"blocks\.\d+\.hook_resid_post",
        r"blocks\.\d+\.attn\.hook_pattern",
        r"blocks\.\d+\.attn\.hook_z",
    ]
    spec = CaptureSpec(points=points, stats=["sink_mass", "entropy", "key_mass"])
    expected, got = (capture(m, [PROMPT, "Short one."], spec, progress=False) for m in (memory, offloaded))
    assert expected.names == got.names
    for name in expected.names:
        for a, b in zip(expected[name], got[name], strict=True):
            assert torch.equal(a, b), name
    assert (
        generate(memory, PROMPT, max_new_tokens=8).text == generate(offloaded, PROMPT, max_new_tokens=8).text
    )
    for edit in (lambda m: ablate_heads(m, {1: [0, 2]}), lambda m: remove_sink(m, 1, [0, 3])):
        with edit(memory):
            a = memory.read(PROMPT, ["blocks.3.hook_resid_post"])["blocks.3.hook_resid_post"]
        with edit(offloaded):
            b = offloaded.read(PROMPT, ["blocks.3.hook_resid_post"])["blocks.3.hook_resid_post"]
        assert torch.equal(a, b)
