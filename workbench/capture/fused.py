"""Exact streamed attention statistics from a fused attention kernel's log-sum-exp: two kernel calls per
attention call, no ``T x T`` scores in memory and no work on masked keys beyond what the kernel skips.

Per head, with scores ``s[q, k] = scale * q.k + m[q, k]`` (``m`` 0 where the key is visible, ``-inf``
where masked), ``L[q] = logsumexp_k s[q, k]`` and, with a learned sink logit ``z`` (GPT-OSS),
``L'[q] = logaddexp(L[q], z)`` (``L' = L`` without one); ``p[q, k] = exp(s[q, k] - L'[q])``:

- sink mass ``sum_{k in S} p[q, k]`` over the few sink keys, computed directly from their scores;
- entropy ``-sum_k p log p = w[q] * (L'[q] - scale * q.(A K)[q])``, where ``w[q] = exp(L[q] - L'[q])`` is
  the mass on real keys and ``(A K)[q] = sum_k softmax(s[q])_k k_k`` is the kernel's output with the
  keys as values (the same call returns ``L``);
- key mass ``sum_q p[q, k] = exp(L_T[k])``: ``L_T`` is the log-sum-exp of a second call with the roles
  swapped, queries ``[k, 1]`` and keys ``[q, -L'[q] / scale]`` (so that ``scale`` times their dot product
  is ``scale * q.k - L'[q]``), over the reversed sequence so that a causal mask stays causal; a pad query
  gets ``-inf`` and adds nothing.

The identities need a mask of visible / masked keys only (:func:`applies`): an additive bias (ALiBi) or
soft-capped scores (Gemma 2) keep the chunked path (:func:`workbench.capture.streamed.streamed_stats`),
which is also the reference these are tested against.
"""

from __future__ import annotations

import torch

FUSED = "fused log-sum-exp"
CHUNKED = "chunked"


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


def _additive(keep: torch.Tensor) -> torch.Tensor:
    """A keep-mask as the kernel's additive float mask (0 visible, -inf masked)."""
    return torch.zeros(keep.shape, device=keep.device).masked_fill(~keep, -torch.inf)


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

    Returns:
        ``stat_sink_mass`` and ``stat_entropy`` [batch, head, q_pos], ``stat_key_mass`` [batch, head, k_pos]
        (float32).
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    if heads != key.shape[1]:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
    query, key = query.float(), key.float()
    # every score of a query shifts by the same scale * q.c when the keys are centred on c: the
    # probabilities do not change, and L and q.(A K) lose the common part that would cancel in fp32
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
        additive = mask[..., -q_len:, -k_len:].float()
    else:
        additive = _additive(keep)
    attended, lse = _kernel(query, key, key, additive, plain_causal, scaling)  # (A K), L, both centred
    total = lse if sinks is None else torch.logaddexp(lse, sinks.float().reshape(1, -1, 1) - offset)
    live = torch.ones(batch, 1, q_len, dtype=torch.bool, device=query.device)
    if query_valid is not None:
        live = live & query_valid.bool()[:, None, :]
    if keep is not None:  # a row without a visible key (the kernel reports L = 0 there) counts as a pad
        live = live & keep.any(-1)
    total = total.masked_fill(~live, torch.inf)  # pad queries: p = 0
    real = torch.exp(lse - total)  # mass on real keys (1 without a learned sink)
    dots = (query * attended).sum(-1) * scaling
    entropy = (real * (total - dots)).nan_to_num(0.0, posinf=0.0, neginf=0.0)

    sink_mass = _sink_mass(query, key, keep, total, scaling, first, sink_tokens, causal)

    ones = query.new_ones(batch, heads, k_len, 1)
    shift = (-total / scaling).masked_fill(~torch.isfinite(total), -torch.inf)[..., None]
    width = -(key.shape[-1] + 1) % 8  # zero columns: kernels want head sizes in multiples of 8
    rows = torch.cat([key, ones, key.new_zeros(batch, heads, k_len, width)], dim=-1).flip(2)
    cols = torch.cat([query, shift, query.new_zeros(batch, heads, q_len, width)], dim=-1).flip(2)
    swapped = None if keep is None else additive.transpose(-1, -2).flip(-1, -2)
    causal_swapped = keep is None and causal and q_len == k_len
    _, lse_t = _kernel(rows, cols, torch.zeros_like(cols), swapped, causal_swapped, scaling)
    key_mass = torch.exp(lse_t).flip(2).nan_to_num(0.0)
    if keep is not None:  # a key no live query sees gets 0 (the kernel's L = 0 on an empty row)
        key_mass = key_mass * (keep & live[..., None]).any(-2)
    return {"stat_sink_mass": sink_mass, "stat_key_mass": key_mass, "stat_entropy": entropy}
