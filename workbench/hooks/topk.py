"""A router's top-k in ranked order, for routers that return it unsorted (DeepSeek-V2/V3).

``moe.hook_expert_indices`` [tokens, k] is ranked by the router's own selection score, descending, for every
family, and ``moe.hook_expert_weights`` is permuted alike. Routers that call ``topk(..., sorted=False)``
(``RouterConvention.ranked`` False) get one column order per call (:meth:`ArchAdapter.topk_order`: the
chosen ids sorted by the score they were chosen on; the choice itself is the router's); the same order
permutes ids and weights, so each id keeps its weight. A replacement given in ranked order goes back
through the inverse permutation, so the experts receive the router's own column order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.base import ArchAdapter


def router_order(adapter: ArchAdapter, router: nn.Module, output: tuple[Any, ...]) -> torch.Tensor | None:
    """Column order [tokens, k] that ranks one call's output of ``router``; None when already ranked."""
    conv = adapter.router_convention
    if conv is None or conv.ranked:
        return None
    return adapter.topk_order(router, output[conv.index_of("logits")], output[conv.index_of("indices")])


def rank(value: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """The router's ids or weights [tokens, k] in ranked order."""
    return value if order is None else value.gather(-1, order)


def unrank(value: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """Inverse of :func:`rank`: ranked columns back in the router's own column order."""
    return value if order is None else torch.empty_like(value).scatter(-1, order, value)


def dense_topk(value: torch.Tensor, which: tuple[str, int]) -> torch.Tensor:
    """The k largest entries of a dense choice ``[tokens, n_experts]`` (zero off the chosen experts):
    their weights or their ids, descending."""
    part, k = which
    top = value.topk(k, dim=-1)
    return top.values if part == "values" else top.indices
