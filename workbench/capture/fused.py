"""Exact streamed attention statistics from a fused attention kernel's log-sum-exp: two kernel calls per
attention call, no ``T x T`` scores in memory and no work on masked keys beyond what the kernel skips.

Per head, with scores ``s[q, k] = scale * q.k + m[q, k]`` (``m`` 0 where the key is visible, ``-inf``
where masked), ``L[q] = logsumexp_k s[q, k]`` and, with a learned sink logit ``z`` (GPT-OSS),
``L'[q] = logaddexp(L[q], z)`` (``L' = L`` without one); ``p[q, k] = exp(s[q, k] - L'[q])``:

- sink mass ``sum_{k in S} p[q, k]`` over the few sink keys, computed directly from their scores;
- entropy ``-sum_k p log p = w[q] * (L'[q] - scale * q.(A K)[q])``, where ``w[q] = exp(L[q] - L'[q])`` is
  the mass on real keys and ``(A K)[q] = sum_k softmax(s[q])_k k_k`` is the kernel's output with the
  keys as values (the same call returns ``L``);
- mass on a key set ``sum_{k in S} p[q, k]`` and the mean look-back ``sum_k p[q, k] (i - k)`` (query
  ``i``, key ``k``) as more columns of the same call's values (an indicator of the set, the key index);
- key mass ``sum_q p[q, k] = exp(L_T[k] - c) * O_T[k]``: a second call with the roles swapped (the keys
  as queries, the queries as keys, over the reversed sequence so that a causal mask stays causal) whose
  values are the weights ``w[q] = exp(c - L'[q])`` (``c = min L'``): its log-sum-exp ``L_T`` and output
  ``O_T`` give ``sum_q exp(s[q, k]) w[q]``; a pad query has weight 0 and adds nothing.

The identities need a mask of visible / masked keys only (:func:`applies`): an additive bias (ALiBi) or
soft-capped scores (Gemma 2) keep the chunked path (:func:`workbench.capture.streamed.streamed_stats`),
which is also the reference these are tested against. ``L - scale * q.(A K)`` subtracts two numbers of
the scores' size, so a call whose scores can exceed :data:`FP32_SCORE_BOUND` runs the kernel in float64
(:func:`score_dtype`).
"""

from __future__ import annotations

import torch

from workbench.capture.streamed import per_query_head

FUSED = "fused log-sum-exp"
FUSED_64 = "fused log-sum-exp, float64"
CHUNKED = "chunked"
# scores bounded by this keep fp32 rounding in L - scale q.(A K) near 1e-6; above it the kernel runs in
# float64 (2-3x the fp32 call): Gemma 4's 512-wide global heads (scale 1) reach 512
FP32_SCORE_BOUND = 16.0
# the key-mass call weights each query by exp(min L' - L'); a wider spread of L' than this (learned sink
# logits far above the scores) would underflow fp32 weights, so that call runs in float64
MAX_WEIGHT_SPREAD = 60.0


def _kernel(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused kernel's output and log-sum-exp [batch, head, q_pos] (CPU: the flash kernel; CUDA:
    the efficient-attention kernel, which takes masks)."""
    if query.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, causal, attn_mask=mask, scale=scale
        )
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, mask, True, 0.0, causal, scale=scale
    )
    return out[0], out[1][..., : query.shape[2]]


def applies(mask: torch.Tensor | None, softcap: float | None) -> bool:
    """Whether the identities hold for an attention call: no soft-capping, and a mask that only shows or
    hides keys (None, boolean, or additive 0 / masked), not an additive bias such as ALiBi."""
    if softcap is not None:
        return False
    if mask is None or mask.dtype == torch.bool:
        return True
    return bool(((mask == 0) | (mask <= torch.finfo(mask.dtype).min / 2)).all())


def visible_keys(mask: torch.Tensor | None, q_len: int, k_len: int) -> torch.Tensor | None:
    """The mask as booleans ``[batch or 1, head or 1, q_pos, k_pos]`` (True: the key is visible), or None
    when there is none (plain causal, or nothing masked)."""
    if mask is None:
        return None
    keep = mask if mask.dtype == torch.bool else mask == 0
    return keep[..., -q_len:, -k_len:]


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A keep-mask as the kernel's additive float mask (0 visible, -inf masked)."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, -torch.inf)


def _sink_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    keep: torch.Tensor | None,
    total: torch.Tensor,
    scaling: float,
    first: torch.Tensor,
    sink_tokens: int,
    causal: bool,
) -> torch.Tensor:
    """``sum_{k in S} exp(s[q, k] - L'[q])`` over each prompt's first ``sink_tokens`` real keys.
    [batch, head, q_pos]"""
    batch, heads, q_len, d = query.shape
    k_len = key.shape[2]
    raw = first[:, None] + torch.arange(sink_tokens, device=query.device)  # [batch, s]
    positions = raw.clamp(0, k_len - 1)  # outside the keys (evicted by a window, past the end): dropped
    inside = ((raw >= 0) & (raw < k_len))[:, None, None, :]
    sink_keys = key.gather(2, positions[:, None, :, None].expand(batch, heads, sink_tokens, d))
    scores = torch.einsum("bhqd,bhsd->bhqs", query, sink_keys) * scaling
    if keep is not None:
        keep = keep.expand(batch, heads, q_len, k_len)
        seen = keep.gather(3, positions[:, None, None, :].expand(batch, heads, q_len, sink_tokens))
    elif causal:  # query i sits at position k_len - q_len + i
        q_pos = torch.arange(q_len, device=query.device) + (k_len - q_len)
        seen = (positions[:, None, :] <= q_pos[None, :, None])[:, None]
    else:
        seen = torch.ones_like(inside)
    probs = torch.exp(scores - total[..., None]) * (seen & inside)
    return probs.nan_to_num(0.0).sum(-1)


def score_dtype(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.dtype | None:
    """The precision one call's identities need: float32 while ``scale * max |q| * max |k - mean k|``
    (a bound on every score after centring) stays within :data:`FP32_SCORE_BOUND`, float64 above it on
    CPU, None where the device has no float64 kernel (the chunked path then takes the call)."""
    key = key.float()
    centred = key - key.mean(dim=2, keepdim=True)
    bound = scaling * query.float().norm(dim=-1).amax() * centred.norm(dim=-1).amax()
    if float(bound) <= FP32_SCORE_BOUND:
        return torch.float32
    return torch.float64 if query.device.type == "cpu" else None


def _padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """``parts`` joined on the last axis, with zero columns up to a multiple of 8 (kernels want it)."""
    joined = torch.cat(parts, dim=-1)
    width = -joined.shape[-1] % 8
    return torch.cat([joined, joined.new_zeros(*joined.shape[:-1], width)], dim=-1) if width else joined


def _widen(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` with zero columns up to ``width`` on the last axis."""
    extra = width - x.shape[-1]
    return torch.cat([x, x.new_zeros(*x.shape[:-1], extra)], dim=-1) if extra else x


def fused_stats(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    first: torch.Tensor,
    sink_tokens: int,
    sinks: torch.Tensor | None = None,
    query_valid: torch.Tensor | None = None,
    causal: bool = True,
    in_set: torch.Tensor | None = None,
    distance: bool = False,
    dtype: torch.dtype = torch.float32,
    value: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Sink mass, key mass and entropy of one attention call from two fused-kernel calls (same inputs and
    results as :func:`workbench.capture.streamed.streamed_stats`) for a call where :func:`applies`.

    Args:
        query: [batch, head, q_pos, d].
        key: [batch, kv_head, k_pos, d].
        mask: Boolean keep-mask or additive 0 / masked mask the attention function received, or None.
        scaling: Softmax scaling.
        first: Index of each prompt's first real key [batch].
        sink_tokens: How many leading real keys form the sink.
        sinks: Learned per-head sink logits [head], or None.
        query_valid: [batch, q_pos] real (1) or pad (0) queries.
        causal: Whether a missing mask means causal attention.
        in_set: [batch, k_pos] keys of a fixed set (``stat_set_mass``), or None.
        distance: Also return ``stat_distance``.
        dtype: The kernels' precision (:func:`score_dtype`).
        value: [batch, kv_head, k_pos, d_v]: the call's values, to serve the attention call itself from the
            first kernel call (its values ``[V, K, ...]``), or None.

    Returns:
        ``stat_sink_mass``, ``stat_entropy`` (and ``stat_set_mass``, ``stat_distance``) [batch, head, q_pos],
        ``stat_key_mass`` [batch, head, k_pos] (float32); with ``value``, also ``attn_output``
        [batch, head, q_pos, d_v], the attention's output.
    """
    batch, heads, q_len, d = query.shape
    k_len = key.shape[2]
    key = per_query_head(key, heads)
    value = None if value is None else per_query_head(value, heads)
    query, key = query.to(dtype), key.to(dtype)
    # every score of a query shifts by the same scale * q.c when the keys are centred on c: the
    # probabilities do not change, and L and q.(A K) lose the common part that would cancel
    center = key.mean(dim=2, keepdim=True)
    key = key - center
    offset = (query * center).sum(-1) * scaling  # [batch, head, q_pos]
    keep = visible_keys(mask, q_len, k_len)
    plain_causal = keep is None and causal and q_len == k_len
    if keep is None and causal and not plain_causal:  # a causal call over a cache: bottom-right aligned
        keep = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
    if keep is None:
        additive = None
    elif mask is not None and mask.dtype != torch.bool:  # already additive (0 / masked): reuse it
        additive = mask[..., -q_len:, -k_len:].to(dtype)
    else:
        additive = _additive(keep, dtype)
    served = 0 if value is None else value.shape[-1]  # the output's columns come first
    columns = [key] if value is None else [value.to(dtype), key]
    if in_set is not None:
        columns.append(in_set[:, None, :, None].to(dtype).expand(batch, heads, k_len, 1))
    if distance:
        index = torch.arange(k_len, device=query.device, dtype=dtype)
        columns.append(index[None, None, :, None].expand(batch, heads, k_len, 1))
    values = _padded(columns)
    width = values.shape[-1]
    # L and (A K) of the centred keys (zero columns widen q and k to the values' width)
    out, lse = _kernel(_widen(query, width), _widen(key, width), values, additive, plain_causal, scaling)
    attended = out[..., served : served + d]
    total = lse if sinks is None else torch.logaddexp(lse, sinks.to(dtype).reshape(1, -1, 1) - offset)
    live = torch.ones(batch, 1, q_len, dtype=torch.bool, device=query.device)
    if query_valid is not None:
        live = live & query_valid.bool()[:, None, :]
    if keep is not None:  # a row without a visible key (the kernel reports L = 0 there) counts as a pad
        live = live & keep.any(-1)
    total = total.masked_fill(~live, torch.inf)  # pad queries: p = 0
    real = torch.exp(lse - total)  # mass on real keys (1 without a learned sink)
    dots = (query * attended).sum(-1) * scaling
    stats = {
        "stat_entropy": (real * (total - dots)).nan_to_num(0.0, posinf=0.0, neginf=0.0),
        "stat_sink_mass": _sink_mass(query, key, keep, total, scaling, first, sink_tokens, causal),
    }
    column = served + d
    if in_set is not None:
        stats["stat_set_mass"] = (real * out[..., column]).nan_to_num(0.0)
        column += 1
    if distance:
        here = torch.arange(q_len, device=query.device, dtype=dtype) + (k_len - q_len)
        stats["stat_distance"] = (real * (here - out[..., column])).nan_to_num(0.0)

    # the swapped call over the reversed sequence (a causal mask stays causal): keys ask, queries answer
    # with the value w = exp(c - L'), so exp(L_T - c) * out = sum_q exp(s - L') = sum_q p[q, k]
    finite = torch.isfinite(total)
    low = total[finite].min() if bool(finite.any()) else total.new_zeros(())
    wide = bool(finite.any()) and float(total[finite].max() - low) > MAX_WEIGHT_SPREAD
    swap_dtype = torch.float64 if wide and query.device.type == "cpu" else dtype
    weight = torch.exp(low - total).masked_fill(~finite, 0.0)
    answers = torch.zeros_like(query)
    answers[..., 0] = weight
    rows, cols = key.flip(2).to(swap_dtype), query.flip(2).to(swap_dtype)
    swapped = None if keep is None else additive.transpose(-1, -2).flip(-1, -2).to(swap_dtype)
    causal_swapped = keep is None and causal and q_len == k_len
    out_t, lse_t = _kernel(rows, cols, answers.flip(2).to(swap_dtype), swapped, causal_swapped, scaling)
    key_mass = (torch.exp(lse_t - low) * out_t[..., 0]).flip(2).nan_to_num(0.0)
    if keep is not None:  # a key no live query sees gets 0 (the kernel's L = 0 on an empty row)
        key_mass = key_mass * (keep & live[..., None]).any(-2)
    stats["stat_key_mass"] = key_mass
    stats = {name: found.float() for name, found in stats.items()}
    if value is not None:
        stats["attn_output"] = out[..., :served]
    return stats
