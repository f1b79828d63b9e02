"""Streamed attention statistics at each attention call: the route per call (the fused kernel's
log-sum-exp where its identities hold, in float64 where the scores need it, else the chunked reference)
and the taps that run them during a forward pass.

Statistics (``CaptureSpec.stats``) and the points they fill, per attention layer ``blocks.{L}.attn``:
``sink_mass``, ``key_mass``, ``entropy``, ``set_mass``, ``distance`` (both routes), ``top_keys`` and
``tail_pattern`` (chunked on either route: they need individual scores). Formulas:
:mod:`workbench.capture.streamed`.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.capture.fused import CHUNKED, FUSED, FUSED_64, applies, fused_stats, score_dtype
from workbench.capture.spec import CaptureSpec
from workbench.capture.streamed import streamed_stats, tail_pattern, top_keys
from workbench.hooks.attention_tap import AttentionCall, tap
from workbench.models.model import WorkbenchModel

# statistics of the softmax's shape (one fused call pair gives them all) and those needing scores
DISTRIBUTION = ("sink_mass", "key_mass", "entropy", "set_mass", "distance")


def stat_point(layer: int, stat: str) -> str:
    """The point name of a streamed statistic: ``blocks.{layer}.attn.stat_{stat}``."""
    return f"blocks.{layer}.attn.stat_{stat}"


def route_for(spec: CaptureSpec, call: AttentionCall) -> tuple[str, torch.dtype | None]:
    """The route one call's distribution statistics take, and the fused kernels' precision."""
    if spec.stat_route == "fused" and applies(call.mask, call.softcap):
        dtype = score_dtype(call.query, call.key, call.scaling)
        if dtype is not None:
            return (FUSED if dtype == torch.float32 else FUSED_64), dtype
    return CHUNKED, None  # soft-capping, an additive bias, or no float64 kernel: only chunked is exact


def serves_call(call: AttentionCall, dtype: torch.dtype | None, sinks: torch.Tensor | None) -> bool:
    """Whether the fused route's first kernel call can also serve the model's own attention call (its
    values ``[V, K]``), saving one kernel call: a float32 sdpa call on CPU whose statistics run in float32,
    with nothing sdpa would add (dropout, a position bias, sinks, soft-capping), and a causal flag that
    means what the fused route assumes (HF's sdpa reads a causal call over a longer cache top-left)."""
    options = call.options
    causal = options.get("is_causal")
    module_causal = getattr(call.module, "is_causal", False)
    q_len, k_len = call.query.shape[2], call.key.shape[2]
    return (
        call.implementation == "sdpa"
        and dtype == torch.float32
        and call.query.dtype == torch.float32
        and call.query.device.type == "cpu"
        and not options.get("dropout")
        and options.get("position_bias") is None
        and not options.get("output_attentions")
        and sinks is None
        and call.softcap is None
        and (causal is None or bool(causal) == module_causal)
        and (call.mask is not None or q_len in (1, k_len))
    )


def call_stats(
    model: WorkbenchModel, attn: Any, call: AttentionCall, spec: CaptureSpec, state: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], str]:
    """The requested statistics of one attention call, keyed ``stat_*``, and the route taken; where
    :func:`serves_call`, also ``attn_output`` [batch, head, q_pos, d_v], the call's own result.

    ``state`` holds the batch's attention mask [batch, pos], ``first`` (each prompt's first real token)
    and ``ids`` [batch, pos] (the tokens, for ``set_mass``).
    """
    mask, k_len = state["mask"], call.key.shape[2]
    # keys the cache no longer holds (sliding windows) shift the first real token's index
    first = state["first"] - (mask.shape[1] - k_len)
    sinks = model.adapter.sink_logits(attn)
    query_valid = mask[:, -call.query.shape[2] :]
    causal = getattr(attn, "is_causal", False)
    wanted = set(spec.stats)
    in_set = None
    if "set_mass" in wanted:
        tokens = torch.tensor(spec.key_tokens, device=call.key.device)
        in_set = torch.isin(state["ids"][:, -k_len:], tokens)
    args = (call.query, call.key, call.mask, call.scaling, first, spec.sink_tokens)
    extras = {"sinks": sinks, "query_valid": query_valid, "causal": causal}
    extras |= {"in_set": in_set, "distance": "distance" in wanted}
    values: dict[str, torch.Tensor] = {}
    route = CHUNKED
    if wanted & set(DISTRIBUTION):
        route, dtype = route_for(spec, call)
        if dtype is not None:
            value = call.value if serves_call(call, dtype, sinks) else None
            values = fused_stats(*args, **extras, dtype=dtype, value=value)
        else:
            values = streamed_stats(*args, spec.chunk, **extras, softcap=call.softcap)
    if "top_keys" in wanted:
        values["stat_top_keys"] = top_keys(
            call.query, call.key, call.mask, call.scaling, first, spec.top_k, spec.chunk, causal, call.softcap
        )
    if "tail_pattern" in wanted:
        values["stat_tail_pattern"] = tail_pattern(
            call.query, call.key, call.mask, call.scaling, spec.tail, sinks, query_valid, causal, call.softcap
        )
    return values, route


def stat_taps(
    model: WorkbenchModel,
    stats: list[str],
    spec: CaptureSpec,
    state: dict[str, Any],
    sink: dict[str, Any],
    routes: dict[str, str] | None = None,
) -> list[Any]:
    """Tap contexts computing the streamed statistics ``stats`` (point names) of every layer they name
    into ``sink`` (serving the attention call itself where the fused route can); the route each layer
    took goes into ``routes`` when given (several routes, one per batch or call, are joined with
    ``" + "``)."""
    routes = {} if routes is None else routes
    contexts = []
    blocks = model.adapter.block_modules(model.base)
    by_layer: dict[int, list[str]] = {}
    for name in stats:
        by_layer.setdefault(int(name.split(".")[1]), []).append(name)
    for layer, names in by_layer.items():
        attn = model.adapter.attention_module(blocks[layer])

        def compute(call: AttentionCall, names: list[str] = names, attn: Any = attn, at: int = layer) -> Any:
            values, route = call_stats(model, attn, call, spec, state)
            taken = set(routes[str(at)].split(" + ")) if str(at) in routes else set()
            routes[str(at)] = " + ".join(sorted(taken | {route}))
            for name in names:
                sink[name] = values[name.split(".")[-1]]
            output = values.get("attn_output")
            return None if output is None else (output.transpose(1, 2).contiguous(), None)

        contexts.append(tap(attn, {"output": [compute]}, model.adapter.eager_attention(attn)))
    return contexts
