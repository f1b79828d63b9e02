"""Shared fixtures: tiny random-init models of every family (real HF classes) and token batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import workbench
from workbench.models.tiny import TINY_FAMILIES, VOCAB, build_tiny


@pytest.fixture(params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    """Every supported family."""
    return request.param


@pytest.fixture
def tiny(family: str) -> workbench.WorkbenchModel:
    """A tiny random-init model of ``family`` wrapped by the workbench."""
    return workbench.load(build_tiny(family))


@pytest.fixture
def ids() -> torch.Tensor:
    """A fixed batch of token ids [2, 7]."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, VOCAB, (2, 7), generator=generator)


@pytest.fixture
def chromium() -> str:
    """Debian's chromium for the browser tests (.ci/run installs it; CI fails without it, a developer
    machine without it skips)."""
    from apps.driver import CHROMIUM

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {CHROMIUM} (.ci/run installs Debian's chromium)")
        pytest.skip(f"no {CHROMIUM} on this machine")
    return CHROMIUM


def pickle_only(directory: Path) -> dict[str, torch.Tensor]:
    """Replace a saved tiny Llama's safetensors by a ``pytorch_model.bin`` pickle (written with
    ``torch.save``, as older checkpoints were: transformers 5 always saves safetensors); return the state."""
    state = build_tiny("llama").state_dict()
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    return state


@pytest.fixture(scope="session")
def broken_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """Damaged copies of a tiny Llama saved by ``save_pretrained``, each with the words its one-line
    refusal must hold: a pickle beside an unrelated safetensors file (transformers would load the pickle),
    an unknown ``model_type``, and weights cut in half."""
    made = {}
    for case in ("pickle_bypass", "unknown_model_type", "truncated_weights"):
        path = tmp_path_factory.mktemp(case)
        build_tiny("llama").save_pretrained(path)
        made[case] = path
    pickle_only(made["pickle_bypass"])
    save_file({"unrelated": torch.zeros(2)}, made["pickle_bypass"] / "x.safetensors")
    config = made["unknown_model_type"] / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "no_such_family"}))
    weights = made["truncated_weights"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    words = {
        "pickle_bypass": ["pytorch_model.bin", "--allow-pickle"],
        "unknown_model_type": ["model_type 'no_such_family'"],
        "truncated_weights": ["model.safetensors", "truncated"],
    }
    return {case: (path, words[case]) for case, path in made.items()}


def hf_logits_without_heads(
    model: workbench.WorkbenchModel, layer: int, heads: list[int], ids: torch.Tensor
) -> torch.Tensor:
    """HF-side reference for head ablation on a Llama-layout model: logits with the columns of ``heads``
    zeroed in layer ``layer``'s ``o_proj`` input (a plain torch pre-hook, independent of the workbench)."""
    d_head = model.config.hidden_size // model.config.num_attention_heads

    def zero_columns(module: torch.nn.Module, args: tuple) -> tuple:
        z = args[0].clone()
        for head in heads:
            z[..., head * d_head : (head + 1) * d_head] = 0
        return (z, *args[1:])

    handle = model.hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero_columns)
    try:
        with torch.no_grad():
            return model.hf(input_ids=ids).logits
    finally:
        handle.remove()
