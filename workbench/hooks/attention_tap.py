"""Taps on the attention function: post-RoPE q/k/v, pre-softmax scores and the KV cache content.

Every supported family computes q, k and v (RoPE applied, cache updated) inside its attention module and
hands them to ``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``.
While at least one tap is active, the workbench puts a thin wrapper in that interface's local mapping for
the model's implementation key (the interface the module's modeling file calls: transformers' own, or a
family's own instance); the wrapper serves the registered modules and calls the original function
(the family's own ``eager_attention_forward`` for ``"eager"``). It is removed when the last tap closes.
Modules without a tap pass straight through.

Tensor layouts handed to hook functions (HF passes ``[batch, head, pos, d]``):

- ``q`` ``[batch, pos, head, d_head]``; ``k``, ``v`` ``[batch, pos, kv_head, d_head]`` for this call's
  new positions;
- ``kv_key``, ``kv_value`` ``[batch, kv_head, kv_pos, d_head]``, everything this call attends to (the cache
  after its update);
- ``scores`` ``[batch, head, q_pos, k_pos]``: ``q k^T * scaling + mask``, as eager attention computes it;
- ``inputs``: an :class:`AttentionCall` with everything the call received (for streamed statistics);
- ``mask``: a function of the :class:`AttentionCall` returning a replacement mask (or None to keep it);
- ``output``: a function of the :class:`AttentionCall` returning the call's result ``(attn_output
  [batch, q_pos, head, d_v], None)`` in place of the original function (the first such result is used;
  every function runs), or None to let the original run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from workbench.arch.interface import eager_of, interface_of

TapFn = Callable[[Any], torch.Tensor | None]
AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
TAP_FIELDS = ("q", "k", "v", "scores", "kv_key", "kv_value", "inputs", "mask", "output")


@dataclass(frozen=True)
class AttentionCall:
    """Everything one attention-function call received (for ``inputs`` taps; read-only).

    Attributes:
        module: The attention module.
        query: [batch, head, q_pos, d] post-RoPE.
        key: [batch, kv_head, k_pos, d] after the cache update.
        value: [batch, kv_head, k_pos, d_v].
        mask: The mask handed to the attention function (additive float, boolean or None).
        scaling: Softmax scaling.
        softcap: Score soft-capping ``cap * tanh(s / cap)`` before the mask (Gemma 2), as the module
            handed it to the attention function; None for most families.
        implementation: The attention implementation serving the call (``sdpa``, ``eager`` ...).
        options: The other keyword arguments the function received (dropout, is_causal, sinks ...).
    """

    module: nn.Module
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    softcap: float | None = None
    implementation: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TapEntry:
    """Callbacks registered for one attention module."""

    eager: AttentionFn
    callbacks: dict[str, list[TapFn]] = field(default_factory=dict)
    users: int = 0


_lock = threading.Lock()
_entries: dict[int, TapEntry] = {}
# (interface, key) -> (refcount, previous local mapping); the interface is transformers' one or a family's own
_installed: dict[tuple[int, str], tuple[int, AttentionFn | None]] = {}


def _run(fns: list[TapFn], value: torch.Tensor) -> torch.Tensor:
    for fn in fns:
        out = fn(value)
        if out is not None:
            value = out
    return value


def _apply_new_positions(fns: list[TapFn], full: torch.Tensor, q_len: int) -> torch.Tensor:
    """Hand the last ``q_len`` positions of ``[b, h, p, d]`` as ``[b, p, h, d]``; splice in a replacement."""
    new = full[:, :, full.shape[2] - q_len :, :].transpose(1, 2)
    out = _run(fns, new)
    if out is new:
        return full
    full = full.clone()
    full[:, :, full.shape[2] - q_len :, :] = out.transpose(1, 2)
    return full


def additive_mask(
    mask: torch.Tensor | None,
    q_len: int,
    k_len: int,
    causal: bool,
    dtype: torch.dtype,
    device: torch.device,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor | None:
    """The mask an attention call received, as an additive float mask for query rows ``rows``.

    Attention functions receive an additive float mask, a boolean keep-mask, or None (sdpa's own causal
    masking); masked entries become ``finfo(dtype).min`` as in HF's eager masks. Only the requested rows
    are built, so long contexts can be processed in chunks.

    Returns:
        [batch or 1, 1, rows, k_len], or None when nothing is masked (no mask, not causal).
    """
    start, stop = rows if rows is not None else (0, q_len)
    low = torch.finfo(dtype).min
    if mask is None:
        if not causal:
            return None
        queries = torch.arange(start, stop, device=device)[:, None] + (k_len - q_len)
        keep = torch.arange(k_len, device=device)[None, :] <= queries
        return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, low)[None, None]
    mask = mask[:, :, start:stop, :k_len]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, low)
    return mask.to(dtype)


def attention_scores(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Pre-softmax scores ``q k^T * scaling + mask`` with the ops eager attention uses (soft-capped to
    ``softcap * tanh(s / softcap)`` before the mask where the family caps them, as Gemma 2's eager does).

    Args:
        module: The attention module (its ``is_causal`` decides the mask when sdpa passed none).
        query: ``[batch, head, q_pos, d]``.
        key: ``[batch, kv_head, k_pos, d]`` (repeated to the query heads for GQA/MQA).
        mask: Additive float mask, boolean keep-mask, or None.
        scaling: The module's softmax scaling.
        softcap: The cap the module handed its attention function, or None.
    """
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    causal = getattr(module, "is_causal", False) and query.shape[2] > 1
    extra = additive_mask(mask, query.shape[2], key.shape[2], causal, scores.dtype, scores.device)
    return scores if extra is None else scores + extra


def _wrapper(key: str, previous: AttentionFn | None) -> AttentionFn:
    def tapped_attention(
        module: nn.Module,
        query: torch.Tensor,
        key_states: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        entry = _entries.get(id(module))
        if key == "eager":
            original = entry.eager if entry is not None else eager_of(module)
        else:
            original = previous if previous is not None else ALL_ATTENTION_FUNCTIONS._global_mapping[key]
        if entry is not None:
            cbs = entry.callbacks
            q_len = query.shape[2]
            if "q" in cbs:
                query = _run(cbs["q"], query.transpose(1, 2)).transpose(1, 2)
            if "k" in cbs:
                key_states = _apply_new_positions(cbs["k"], key_states, q_len)
            if "v" in cbs:
                value = _apply_new_positions(cbs["v"], value, q_len)
            if "kv_key" in cbs:
                _run(cbs["kv_key"], key_states)
            if "kv_value" in cbs:
                _run(cbs["kv_value"], value)
            scaling = kwargs.get("scaling")
            scaling = module.scaling if scaling is None else scaling
            softcap = kwargs.get("softcap")
            if "scores" in cbs:
                scores = attention_scores(module, query, key_states, attention_mask, scaling, softcap)
                _run(cbs["scores"], scores)
            if "mask" in cbs:
                for fn in cbs["mask"]:
                    call = AttentionCall(module, query, key_states, value, attention_mask, scaling, softcap)
                    new_mask = fn(call)
                    attention_mask = attention_mask if new_mask is None else new_mask
            call = AttentionCall(
                module, query, key_states, value, attention_mask, scaling, softcap, key, kwargs
            )
            if "inputs" in cbs:
                _run(cbs["inputs"], call)
            if "output" in cbs:
                results = [fn(call) for fn in cbs["output"]]
                served = next((r for r in results if r is not None), None)
                if served is not None:
                    return served
        return original(module, query, key_states, value, attention_mask, **kwargs)

    return tapped_attention


def _install(interface: Any, key: str) -> None:
    count, previous = _installed.get((id(interface), key), (0, None))
    if count == 0:
        previous = interface._local_mapping.get(key)
        interface[key] = _wrapper(key, previous)
    _installed[(id(interface), key)] = (count + 1, previous)


def _uninstall(interface: Any, key: str) -> None:
    count, previous = _installed[(id(interface), key)]
    if count > 1:
        _installed[(id(interface), key)] = (count - 1, previous)
        return
    del _installed[(id(interface), key)]
    if previous is None:
        del interface[key]
    else:
        interface[key] = previous


@contextmanager
def tap(module: nn.Module, callbacks: dict[str, list[TapFn]], eager: AttentionFn | None = None) -> Any:
    """Register tap callbacks on one attention module for the duration of the context.

    Taps nest: several contexts may tap the same module; each removes exactly its own callbacks.

    Args:
        module: An attention module that calls ``ALL_ATTENTION_FUNCTIONS.get_interface``.
        callbacks: Field name (one of ``TAP_FIELDS``) to functions; a function returning a tensor
            replaces the value (``q``, ``k``, ``v`` only).
        eager: The family's eager attention function (default: ``eager_attention_forward`` of the
            module's own modeling file).
    """
    # the model may switch to eager inside the context (a pattern hook), so both keys are served
    keys = sorted({module.config._attn_implementation, "eager"})
    interface = interface_of(module)
    with _lock:
        entry = _entries.setdefault(id(module), TapEntry(eager or eager_of(module)))
        for field_name, fns in callbacks.items():
            entry.callbacks.setdefault(field_name, []).extend(fns)
        entry.users += 1
        for key in keys:
            _install(interface, key)
    try:
        yield
    finally:
        with _lock:
            for field_name, fns in callbacks.items():
                remaining = [f for f in entry.callbacks[field_name] if all(f is not g for g in fns)]
                if remaining:
                    entry.callbacks[field_name] = remaining
                else:
                    del entry.callbacks[field_name]
            entry.users -= 1
            if entry.users == 0:
                _entries.pop(id(module), None)
            for key in keys:
                _uninstall(interface, key)
