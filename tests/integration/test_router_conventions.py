"""Each family's RouterConvention describes what its router module really returns."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import workbench
from workbench.arch import ADAPTERS, RouterConvention
from workbench.models.tiny import build_tiny

MOE_FAMILIES = tuple(a.family for a in ADAPTERS if a.router_convention is not None)


def expected_selection(
    conv: RouterConvention, logits: torch.Tensor, config: Any, bias: torch.Tensor | None
) -> torch.Tensor:
    """Sorted expert ids the convention says the router selects."""
    k = config.num_experts_per_tok
    if conv.topk_on == "logits":
        ranked = logits
    else:
        ranked = logits.softmax(-1) if conv.scoring == "softmax" else logits.sigmoid()
        if conv.correction_bias:
            ranked = ranked + bias
    if conv.group_limited:
        grouped = ranked.view(ranked.shape[0], config.n_group, -1)
        group_score = grouped.topk(2, -1).values.sum(-1) if conv.correction_bias else grouped.max(-1).values
        keep = torch.zeros_like(group_score).scatter(1, group_score.topk(config.topk_group, -1).indices, 1.0)
        ranked = ranked.masked_fill(keep.repeat_interleave(grouped.shape[-1], 1) == 0, float("-inf"))
    return ranked.topk(k, -1).indices.sort(-1).values


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_convention_reproduces_router_output(family: str, ids: torch.Tensor) -> None:
    model = workbench.load(build_tiny(family))
    conv = model.adapter.router_convention
    assert conv is not None
    values = model.read(ids, r"blocks\.\d+\.moe\.hook_(router_logits|expert_indices|expert_weights)")
    layers = sorted({int(name.split(".")[1]) for name in values})
    scale = getattr(model.config, conv.scaling_factor_attr) if conv.scaling_factor_attr else 1.0
    for layer in layers:
        logits = values[f"blocks.{layer}.moe.hook_router_logits"].float()
        indices = values[f"blocks.{layer}.moe.hook_expert_indices"]
        weights = values[f"blocks.{layer}.moe.hook_expert_weights"].float()
        bias = model.hf.model.layers[layer].mlp.gate.e_score_correction_bias if conv.correction_bias else None
        assert torch.equal(indices.sort(-1).values, expected_selection(conv, logits, model.config, bias))
        if conv.scoring == "softmax_over_topk":
            expected = logits.gather(-1, indices).softmax(-1)
        else:
            scores = logits.softmax(-1) if conv.scoring == "softmax" else logits.sigmoid()
            expected = scores.gather(-1, indices)
            if conv.renormalises(model.config):
                expected = expected / expected.sum(-1, keepdim=True)
        torch.testing.assert_close(weights, expected * scale)


def test_correction_bias_changes_selection_not_weights(ids: torch.Tensor) -> None:
    """DeepSeek-V3: ranking with the bias differs from ranking without it on some tokens."""
    model = workbench.load(build_tiny("deepseek_v3"))
    values = model.read(ids, r"blocks\.1\.moe\.hook_(router_logits|expert_indices)")
    logits = values["blocks.1.moe.hook_router_logits"]
    unbiased = expected_selection(
        model.adapter.router_convention, logits, model.config, torch.zeros(logits.shape[-1])
    )
    assert not torch.equal(values["blocks.1.moe.hook_expert_indices"].sort(-1).values, unbiased)
