"""The same hook points read through TransformerBridge and nnsight match the HF path within 1e-5."""

from __future__ import annotations

import copy

import pytest
import torch

import workbench
from workbench.models.tiny import build_tiny

BACKEND_FAMILIES = ("gpt2", "llama", "mixtral", "olmoe")
MODULE_POINTS = [
    r"hook_embed",
    r"blocks\.\d+\.hook_resid_(pre|mid|post)",
    r"blocks\.\d+\.attn\.hook_pattern",
    r"blocks\.\d+\.attn\.hook_z",
    r"blocks\.\d+\.hook_(attn|mlp)_out",
    r"blocks\.\d+\.mlp\.hook_post",
    r"blocks\.\d+\.moe\.hook_(router_logits|expert_indices|expert_weights)",
    r"ln_final\.hook_normalized",
]
TL_ONLY = [r"blocks\.\d+\.attn\.hook_(q|k|v|attn_scores)"]


@pytest.mark.parametrize("backend", ["tl", "nnsight"])
@pytest.mark.parametrize("family", BACKEND_FAMILIES)
def test_backend_matches_hf(family: str, backend: str, ids: torch.Tensor) -> None:
    hf = build_tiny(family, attn_implementation="eager")
    reference = workbench.load(copy.deepcopy(hf))
    other = workbench.load(hf, backend=backend)
    patterns = reference.hook_points(MODULE_POINTS + (TL_ONLY if backend == "tl" else []), missing_ok=True)
    expected = reference.read(ids, patterns)
    got = other.read(ids, patterns)
    assert set(got) == set(expected)
    assert len(expected) > 10
    for name, value in expected.items():
        torch.testing.assert_close(got[name].broadcast_to(value.shape), value, rtol=0, atol=1e-5, msg=name)


def test_nnsight_refuses_tap_points(ids: torch.Tensor) -> None:
    model = workbench.load(build_tiny("llama"), backend="nnsight")
    with pytest.raises(workbench.WorkbenchError, match="nnsight serves module points only"):
        model.read(ids, "blocks.0.attn.hook_q")


def test_load_accepts_bridge_and_nnsight_objects(ids: torch.Tensor) -> None:
    from nnsight import NNsight
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    hf = build_tiny("gpt2", attn_implementation="eager")
    expected = workbench.load(copy.deepcopy(hf)).read(ids, "blocks.1.hook_resid_post")[
        "blocks.1.hook_resid_post"
    ]
    via_nnsight = workbench.load(NNsight(copy.deepcopy(hf)))
    bridge = build_bridge_from_module(copy.deepcopy(hf), "GPT2LMHeadModel", hf_config=hf.config)
    via_bridge = workbench.load(bridge)
    assert (via_nnsight.backend, via_bridge.backend) == ("nnsight", "tl")
    for model in (via_nnsight, via_bridge):
        assert model.adapter.family == "gpt2"
        got = model.read(ids, "blocks.1.hook_resid_post")["blocks.1.hook_resid_post"]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
