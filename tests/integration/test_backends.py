"""The same hook points read through TransformerBridge and nnsight match the HF path within 1e-5."""

from __future__ import annotations

import copy
import re

import pytest
import torch

import workbench
from workbench.errors import HookPointError
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


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v2", "deepseek_v3"])
def test_bridge_serves_or_refuses_every_point(family: str, ids: torch.Tensor) -> None:
    """Each HF point read through the bridge alone is the HF tensor within 1e-5 (shared experts and, for
    MLA, the re-laid-out q/k/v/z included) or a one-line HookPointError, never a raw TransformerLens error."""
    hf = build_tiny(family, attn_implementation="eager")
    reference = workbench.load(copy.deepcopy(hf))
    bridge = workbench.load(hf, backend="tl")
    expected = reference.read(ids, r".*")
    served, refused = set(), {}
    for name, value in expected.items():
        try:
            got = bridge.read(ids, name)[name]
        except HookPointError as exc:
            refused[name] = str(exc)
            continue
        torch.testing.assert_close(got.broadcast_to(value.shape), value, rtol=0, atol=1e-5, msg=name)
        served.add(name)
    shared = {n for n in expected if n.endswith("moe.hook_shared_out")}
    attention = {n for n in expected if re.fullmatch(r"blocks\.\d+\.attn\.hook_(q|k|v|z)", n)}
    assert shared and shared | attention <= served
    assert all("\n" not in m and "not served by the TransformerBridge backend" in m for m in refused.values())
    ids_points = {n for n in expected if n.endswith(("moe.hook_expert_indices", "moe.hook_expert_weights"))}
    assert (ids_points <= refused.keys()) == family.startswith(
        "deepseek"
    )  # DeepSeek's bridge hooks logits only


@pytest.mark.parametrize("family", ["deepseek_v2", "deepseek_v3"])
def test_nnsight_ranks_unsorted_topk_as_hf(family: str, ids: torch.Tensor) -> None:
    """16 experts top-4: the router's own column order is unsorted; nnsight serves the HF path's ranked
    order (ids and weights), not the router's."""
    hf = build_tiny(family, attn_implementation="eager", n_routed_experts=16, num_experts_per_tok=4)
    reference = workbench.load(copy.deepcopy(hf))
    patterns = r"blocks\.1\.moe\.hook_expert_(indices|weights)"
    raw: list[torch.Tensor] = []
    gate = reference.hf.model.layers[1].mlp.gate
    hook = gate.register_forward_hook(lambda module, args, out: raw.append(out[2].clone()))
    try:
        expected = reference.read(ids, patterns)
    finally:
        hook.remove()
    got = workbench.load(hf, backend="nnsight").read(ids, patterns)
    assert (
        set(got) == set(expected) == {"blocks.1.moe.hook_expert_indices", "blocks.1.moe.hook_expert_weights"}
    )
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert not torch.equal(raw[0], expected["blocks.1.moe.hook_expert_indices"])  # ranking was needed
