"""Streamed attention statistics computed in query chunks from the tapped q and k.

Never materialises a ``T x T`` pattern: each chunk of ``C`` queries costs ``O(C x T)`` memory, while the
model's own forward pass keeps its attention implementation (sdpa). Per head and query, with ``p`` the
attention distribution (learned sink logits join the softmax as GPT-OSS does, and are dropped after):

- ``stat_sink_mass`` [batch, head, pos]: ``sum_{k < s} p[q, first + k]``, mass on the first ``s`` real tokens;
- ``stat_key_mass`` [batch, head, pos]: ``sum_q p[q, k]``, attention each key receives (H2O's accumulated
  score, Zhang et al. 2023);
- ``stat_entropy`` [batch, head, pos]: ``-sum_k p[q, k] log p[q, k]`` in nats.
"""

from __future__ import annotations

import torch

from workbench.hooks.attention_tap import additive_mask
from workbench.numerics import entropy

STAT_POINTS = {"sink_mass": "stat_sink_mass", "key_mass": "stat_key_mass", "entropy": "stat_entropy"}


def streamed_stats(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    first: torch.Tensor,
    sink_tokens: int,
    chunk: int,
    sinks: torch.Tensor | None = None,
    query_valid: torch.Tensor | None = None,
    causal: bool = True,
    softcap: float | None = None,
) -> dict[str, torch.Tensor]:
    """Sink mass, key mass and entropy for one attention call, in query chunks.

    Args:
        query: [batch, head, q_pos, d].
        key: [batch, kv_head, k_pos, d] (repeated for GQA/MQA).
        mask: The mask the attention function received (additive float or boolean keep-mask) or None
            (causal).
        scaling: Softmax scaling.
        first: Index of each prompt's first real key [batch].
        sink_tokens: How many leading real keys form the sink.
        chunk: Queries per chunk.
        sinks: Learned per-head sink logits [head] (GPT-OSS), or None.
        query_valid: [batch, q_pos] real (1) or pad (0) queries; pad queries add nothing to key mass.
        causal: Whether a missing mask means causal attention (False for encoders).
        softcap: Score soft-capping ``cap * tanh(s / cap)`` before the mask (Gemma 2), or None.

    Returns:
        ``stat_sink_mass`` and ``stat_entropy`` [batch, head, q_pos], ``stat_key_mass`` [batch, head, k_pos].
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    if heads != key.shape[1]:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
    keys = torch.arange(k_len, device=query.device)
    in_sink = (keys[None, :] >= first[:, None]) & (keys[None, :] < first[:, None] + sink_tokens)  # [b, k]
    sink_mass = query.new_zeros(batch, heads, q_len, dtype=torch.float32)
    entropies = query.new_zeros(batch, heads, q_len, dtype=torch.float32)
    key_mass = query.new_zeros(batch, heads, k_len, dtype=torch.float32)
    keys_t = key.float().transpose(2, 3)  # converted once
    for q0 in range(0, q_len, chunk):
        q1 = min(q0 + chunk, q_len)
        seen = q1 + k_len - q_len if causal else k_len  # causal: later keys are masked, so skipped
        scores = torch.matmul(query[:, :, q0:q1].float(), keys_t[..., :seen]) * scaling
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        rows = additive_mask(mask, q_len, k_len, causal, torch.float32, query.device, rows=(q0, q1))
        if rows is not None:
            scores = scores + rows[..., :seen]
        if sinks is not None:
            sink_col = sinks.float().reshape(1, -1, 1, 1).expand(batch, -1, q1 - q0, 1)
            probs = torch.cat([scores, sink_col], dim=-1).softmax(-1)[..., :-1]
        else:
            probs = scores.softmax(-1)
        probs = probs.nan_to_num(0.0)  # fully masked (pad) query rows
        if query_valid is not None:
            probs = probs * query_valid[:, None, q0:q1, None].to(probs.dtype)
        sink_mass[:, :, q0:q1] = (probs * in_sink[:, None, None, :seen]).sum(-1)
        entropies[:, :, q0:q1] = entropy(probs)
        key_mass[..., :seen] += probs.sum(2)
    return {"stat_sink_mass": sink_mass, "stat_key_mass": key_mass, "stat_entropy": entropies}
