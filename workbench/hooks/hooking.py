"""Attach hook functions to resolved hook points as plain PyTorch hooks; always removed on exit.

A hook function has the TransformerLens signature ``fn(tensor, name) -> tensor | None``: returning a
tensor replaces the value downstream (refused for read-only points), returning ``None`` only reads.
The top-k ids and weights of a router that returns them unsorted are served ranked
(:mod:`workbench.hooks.topk`); both points of one router share one hook, so they share one column order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from workbench.arch.base import ArchAdapter, Site
from workbench.errors import HookPointError
from workbench.hooks.attention_tap import TapFn, tap
from workbench.hooks.points import ResolvedPoint
from workbench.hooks.topk import dense_topk, rank, router_order, unrank

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
Call = Callable[[torch.Tensor], torch.Tensor | None]  # a hook function bound to its point's name


def _guard(name: str, site: Site, fn: HookFn) -> Call:
    """Bind the name and refuse replacements of read-only points."""

    def call(value: torch.Tensor) -> torch.Tensor | None:
        out = fn(value, name)
        if out is not None and site.read_only:
            raise HookPointError(f"{name} is read-only: replacing it would not change the computation")
        return out

    return call


def _to_canonical(value: torch.Tensor, site: Site, n_heads: int, lead: Any = None) -> torch.Tensor:
    if site.dense_topk is not None:
        return dense_topk(value, site.dense_topk)
    if site.flat and lead and value.dim() == 2:  # [batch * pos, d] -> [batch, pos, d]
        value = value.unflatten(0, lead[0])
    return value.unflatten(-1, (n_heads, -1)) if site.split_heads else value


def _from_canonical(value: torch.Tensor, site: Site, original: torch.Tensor) -> torch.Tensor:
    value = value.flatten(-2) if site.split_heads else value
    return value.reshape(original.shape) if site.flat and value.dim() != original.dim() else value


def _leading_shape(block: nn.Module | None, stack: ExitStack) -> list:
    """A one-element list that holds the block input's [batch, pos] while the block runs (for flat sites)."""
    lead: list = []
    if block is None:
        return lead

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        value = args[0] if args else kwargs.get("hidden_states")
        lead[:] = [tuple(value.shape[:2])] if isinstance(value, torch.Tensor) else []

    stack.callback(block.register_forward_pre_hook(record, with_kwargs=True).remove)
    return lead


def _output_hook(
    call: Callable[[torch.Tensor], torch.Tensor | None], site: Site, n_heads: int, lead: list
) -> Callable:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        sequence = isinstance(output, tuple | list)  # GPT-1's attention returns a list
        index = site.index if site.index is not None else (0 if sequence else None)
        value = output if index is None else output[index]
        out = call(_to_canonical(value, site, n_heads, lead))
        if out is None:
            return None
        out = _from_canonical(out, site, value)
        if index is None:
            return out
        return type(output)((*output[:index], out, *output[index + 1 :]))

    return hook


def _input_hook(
    call: Callable[[torch.Tensor], torch.Tensor | None], site: Site, n_heads: int, lead: list
) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        value = args[site.arg] if len(args) > site.arg else kwargs["hidden_states"]
        out = call(_to_canonical(value, site, n_heads, lead))
        if out is None:
            return None
        out = _from_canonical(out, site, value)
        if len(args) > site.arg:
            return (*args[: site.arg], out, *args[site.arg + 1 :]), kwargs
        return args, {**kwargs, "hidden_states": out}

    return hook


def _topk_hook(entries: list[tuple[Site, Call]], adapter: ArchAdapter) -> Callable:
    """One router's ``rank_topk`` points: served ranked, replacements put back in the router's order."""

    def hook(module: nn.Module, args: Any, output: tuple) -> tuple | None:
        order = router_order(adapter, module, output)
        current = list(output)
        replaced = False
        for site, call in entries:
            assert site.index is not None
            out = call(rank(current[site.index], order))
            if out is not None:
                current[site.index], replaced = unrank(out, order), True
        return tuple(current) if replaced else None

    return hook


@contextmanager
def attach(
    points: dict[str, ResolvedPoint], fns: dict[str, HookFn], adapter: ArchAdapter, n_heads: int
) -> Iterator[None]:
    """Register ``fns`` on their points for the duration of the context.

    Args:
        points: Resolved points of the model (see :func:`workbench.hooks.points.resolve_points`).
        fns: Hook point name to hook function.
        adapter: The family adapter (supplies the family's eager attention function for taps).
        n_heads: Query heads, to split ``hook_z`` into heads.

    Raises:
        HookPointError: A name is not a hook point of this model.
    """
    unknown = [n for n in fns if n not in points]
    if unknown:
        raise HookPointError(f"not a hook point of this model: {', '.join(unknown[:5])}")
    taps: dict[int, tuple[nn.Module, dict[str, list[TapFn]]]] = {}
    routers: dict[int, tuple[nn.Module, list[tuple[Site, Call]]]] = {}
    with ExitStack() as stack:
        for name, fn in fns.items():
            point = points[name]
            site = point.site
            call = _guard(name, site, fn)
            if site.kind == "tap":
                assert point.attn_module is not None and site.field is not None
                entry = taps.setdefault(id(point.attn_module), (point.attn_module, defaultdict(list)))
                entry[1][site.field].append(call)
            elif site.rank_topk:
                routers.setdefault(id(point.module), (point.module, []))[1].append((site, call))
            elif site.kind == "output":
                lead = _leading_shape(point.block if site.flat else None, stack)
                handle = point.module.register_forward_hook(_output_hook(call, site, n_heads, lead))
                stack.callback(handle.remove)
            else:
                lead = _leading_shape(point.block if site.flat else None, stack)
                handle = point.module.register_forward_pre_hook(
                    _input_hook(call, site, n_heads, lead), with_kwargs=True
                )
                stack.callback(handle.remove)
        for module, entries in routers.values():
            stack.callback(module.register_forward_hook(_topk_hook(entries, adapter)).remove)
        for module, callbacks in taps.values():
            stack.enter_context(tap(module, dict(callbacks), adapter.eager_attention(module)))
        yield
