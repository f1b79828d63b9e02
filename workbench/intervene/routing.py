"""Editing MoE routing through what the router returned: mask experts, force experts, or any rewrite.

The router module's own output tuple is rewritten (its logits are left as they are), so the experts
really run with the edited ids and weights. The edit sees the ids and weights ranked by selection score as
``moe.hook_expert_indices`` serves them (column 0 is the top choice for every family) and its result goes
back in the router's own column order. Masking zeroes the masked experts' weights and renormalises
the rest when the family's weights sum to one (softmax over the top-k, or renormalisation on); forcing
selects the given experts for every token and weights them by the family's own scoring of their logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from workbench.hooks.topk import rank, router_order, unrank
from workbench.models.model import WorkbenchModel

RouteFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def reroute(model: WorkbenchModel, fn: RouteFn, layers: list[int] | None = None) -> Iterator[None]:
    """Rewrite router decisions: ``fn(layer, logits, weights, indices) -> (weights, indices)``.

    ``weights`` and ``indices`` [tokens, k] arrive ranked by the router's selection score, descending;
    ``fn`` returns the same shapes.
    """
    adapter = model.adapter
    conv = adapter.router_convention
    if conv is None or adapter.router is None:
        raise ValueError(f"{adapter.family} has no router")
    order = (conv.index_of("logits"), conv.index_of("weights"), conv.index_of("indices"))
    with ExitStack() as stack:
        for layer, block in enumerate(adapter.block_modules(model.base)):
            if not adapter.is_moe_block(block) or (layers is not None and layer not in layers):
                continue

            def hook(module: Any, args: Any, output: tuple, layer: int = layer) -> tuple:
                ranking = router_order(adapter, module, output)
                logits, weights, indices = (output[i] for i in order)
                weights, indices = fn(layer, logits, rank(weights, ranking), rank(indices, ranking))
                out = list(output)
                out[order[1]], out[order[2]] = unrank(weights, ranking), unrank(indices, ranking)
                return tuple(out)

            stack.callback(block.get_submodule(adapter.router).register_forward_hook(hook).remove)
        yield


def _weights_sum_to_one(model: WorkbenchModel) -> bool:
    conv = model.adapter.router_convention
    assert conv is not None
    return conv.scoring == "softmax_over_topk" or conv.renormalises(model.config)


@contextmanager
def mask_experts(model: WorkbenchModel, experts: dict[int, list[int]]) -> Iterator[None]:
    """Give the listed experts (layer -> expert ids) zero weight, renormalising as the family does."""
    renormalise = _weights_sum_to_one(model)

    def edit(layer: int, logits: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor):
        masked = torch.isin(indices, torch.tensor(experts[layer], device=indices.device))
        total = weights.sum(-1, keepdim=True)
        weights = weights.masked_fill(masked, 0)
        if renormalise:
            weights = weights * (total / weights.sum(-1, keepdim=True).clamp_min(1e-20))
        return weights, indices

    with reroute(model, edit, layers=list(experts)):
        yield


@contextmanager
def force_experts(model: WorkbenchModel, experts: dict[int, list[int]]) -> Iterator[None]:
    """Route every token to the listed experts (exactly k per layer), weighted by the family's scoring."""
    conv = model.adapter.router_convention
    assert conv is not None
    scale = getattr(model.config, conv.scaling_factor_attr) if conv.scaling_factor_attr else 1.0

    def edit(layer: int, logits: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor):
        forced = torch.tensor(experts[layer], device=indices.device)
        if len(forced) != indices.shape[-1]:
            raise ValueError(f"layer {layer} routes to {indices.shape[-1]} experts; got {len(forced)}")
        indices = forced.expand_as(indices).clone()
        chosen = logits.float().gather(-1, indices)
        if conv.scoring == "softmax_over_topk":
            new = chosen.softmax(-1)
        else:
            scores = logits.float().softmax(-1) if conv.scoring == "softmax" else logits.float().sigmoid()
            new = scores.gather(-1, indices)
            if conv.renormalises(model.config):
                new = new / new.sum(-1, keepdim=True)
        return (new * scale).to(weights.dtype), indices

    with reroute(model, edit, layers=list(experts)):
        yield


@contextmanager
def drop_shared_experts(model: WorkbenchModel) -> Iterator[None]:
    """Zero the shared experts' output in every MoE layer (DeepSeekMoE, Qwen2-MoE) inside the context."""
    names = model.hook_points(r"blocks\.\d+\.moe\.hook_shared_out", missing_ok=True)
    if not names:
        raise ValueError(f"{model.adapter.family} has no shared experts")
    with model.hooks(dict.fromkeys(names, lambda value, name: torch.zeros_like(value))):
        yield
