"""Each family's RouterConvention describes what its router module really returns."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

import workbench
from workbench.arch import ADAPTERS, RouterConvention
from workbench.intervene import reroute
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


def router_modules(hf: torch.nn.Module) -> list[torch.nn.Module]:
    """The HF router modules in layer order, found by class name (``*TopKRouter`` / ``*TopkRouter``)."""
    return [m for m in hf.modules() if type(m).__name__.lower().endswith("topkrouter")]


def selection_scores(family: str, router: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What each HF router's own ``topk`` ranks, read off its modeling code [tokens, n_experts]."""
    if family in ("gpt_oss", "granitemoe"):  # topk on the raw logits
        return logits.float()
    if family == "deepseek_v3":  # sigmoid scores plus the selection-only correction bias
        return logits.float().sigmoid() + router.e_score_correction_bias
    return logits.float().softmax(-1)  # softmax probabilities (DeepSeek-V2: group-masked, same order)


def wide_tiny(family: str) -> torch.nn.Module:
    """A tiny model with 16 experts and top-4 (DeepSeek: 4 groups, 2 kept), where ``topk(sorted=False)``
    really returns an unsorted order on the CPU (top-2 comes back sorted)."""
    adapter = next(a for a in ADAPTERS if a.family == family)
    return build_tiny(family, **{adapter.n_experts_attr: 16, "num_experts_per_tok": 4})


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_expert_indices_are_ranked_by_selection_score(family: str) -> None:
    hf = wide_tiny(family)
    routers = router_modules(hf)
    if family == "deepseek_v3":
        assert all(r.e_score_correction_bias.abs().min() > 0 for r in routers)
    raw: list[tuple[torch.Tensor, ...]] = []
    handles = [
        r.register_forward_hook(lambda m, a, out: raw.append(tuple(t.detach() for t in out))) for r in routers
    ]
    model = workbench.load(hf)
    ids = torch.randint(3, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(2))
    try:
        values = model.read(ids, r"blocks\.\d+\.moe\.hook_expert_(indices|weights)")
    finally:
        for handle in handles:
            handle.remove()
    layers = sorted({int(name.split(".")[1]) for name in values})
    assert len(layers) == len(routers) == len(raw)
    raw_unsorted = 0
    for layer, router, (logits, raw_weights, raw_indices) in zip(layers, routers, raw, strict=True):
        indices = values[f"blocks.{layer}.moe.hook_expert_indices"]
        weights = values[f"blocks.{layer}.moe.hook_expert_weights"]
        scores = selection_scores(family, router, logits)
        served = scores.gather(-1, indices)
        assert torch.equal(served[:, 0], served.amax(-1)), f"layer {layer}: column 0 is not the top choice"
        assert (served.diff(dim=-1) <= 0).all(), f"layer {layer}: not descending in selection score"
        assert torch.equal(indices.sort(-1).values, raw_indices.sort(-1).values)  # the router's own set
        dense = torch.zeros_like(scores)
        assert torch.equal(  # each id keeps the weight the router paired with it
            dense.scatter(-1, indices, weights.float()), dense.scatter(-1, raw_indices, raw_weights.float())
        )
        raw_served = scores.gather(-1, raw_indices)
        raw_unsorted += int((raw_served.diff(dim=-1) > 0).any(-1).sum())
    if not model.adapter.router_convention.ranked:
        assert raw_unsorted > 0  # the router's own order really is unsorted here: the test has power


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_ranked_flag_matches_the_hf_router_source(family: str) -> None:
    """``RouterConvention.ranked`` is False exactly where the HF router calls ``topk(..., sorted=False)``."""
    router = router_modules(build_tiny(family))[0]
    unsorted = "sorted=False" in inspect.getsource(type(router).forward)
    assert workbench.load(build_tiny(family)).adapter.router_convention.ranked is not unsorted


@pytest.mark.parametrize("family", ["deepseek_v2", "deepseek_v3"])
def test_replacing_ranked_weights_reaches_the_experts_in_router_order(family: str) -> None:
    """Zeroing column 0 of the served (ranked) weights zeroes the top choice's weight in what the experts
    receive, in the router's own column order; an identity replacement changes nothing."""
    hf = wide_tiny(family)
    model = workbench.load(hf)
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4))
    router, experts = hf.model.layers[1].mlp.gate, hf.model.layers[1].mlp.experts
    seen: list[tuple[torch.Tensor, ...]] = []
    handles = [
        router.register_forward_hook(lambda m, a, out: seen.append(("router", *out))),
        experts.register_forward_pre_hook(lambda m, args: seen.append(("experts", *args))),
    ]

    def zero_top(value: torch.Tensor, name: str) -> torch.Tensor:
        return value.index_fill(-1, torch.tensor([0]), 0.0)

    try:
        clean = model.forward(ids).logits
        same = model.run_with_hooks(ids, {"blocks.1.moe.hook_expert_weights": lambda v, n: v.clone()}).logits
        seen.clear()
        model.run_with_hooks(ids, {"blocks.1.moe.hook_expert_weights": zero_top})
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(same, clean)
    (_, logits, raw_weights, raw_indices), (_, _, indices, weights) = seen
    assert torch.equal(indices, raw_indices)  # the router's column order, untouched
    top = selection_scores(family, router, logits).gather(-1, raw_indices).argmax(-1, keepdim=True)
    assert torch.equal(weights.gather(-1, top), torch.zeros_like(top, dtype=weights.dtype))
    keep = torch.ones_like(raw_weights, dtype=torch.bool).scatter(-1, top, False)
    assert torch.equal(weights[keep], raw_weights[keep])


def test_reroute_hands_its_edit_the_ranked_top_k() -> None:
    """A custom routing edit sees column 0 as the top choice on DeepSeek-V3 too."""
    model = workbench.load(wide_tiny("deepseek_v3"))
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(5))
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(layer: int, logits: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor):
        seen[layer] = (logits, indices)
        return weights, indices

    clean = model.forward(ids).logits
    with reroute(model, record):
        assert torch.equal(model.forward(ids).logits, clean)  # a no-op edit in ranked order changes nothing
    for layer, (logits, indices) in seen.items():
        router = model.hf.model.layers[layer].mlp.gate
        served = selection_scores("deepseek_v3", router, logits).gather(-1, indices)
        assert (served.diff(dim=-1) <= 0).all()
