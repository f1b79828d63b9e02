"""Streamed attention statistics computed in query chunks from the tapped q and k.

Never materialises a ``T x T`` pattern: each chunk of ``C`` queries costs ``O(C x T)`` memory, while the
model's own forward pass keeps its attention implementation (sdpa). Per head and query, with ``p`` the
attention distribution (learned sink logits join the softmax as GPT-OSS does, and are dropped after):

- ``stat_sink_mass`` [batch, head, pos]: ``sum_{k < s} p[q, first + k]``, mass on the first ``s`` real tokens;
- ``stat_key_mass`` [batch, head, pos]: ``sum_q p[q, k]``, attention each key receives (H2O's accumulated
  score, Zhang et al. 2023);
- ``stat_entropy`` [batch, head, pos]: ``-sum_k p[q, k] log p[q, k]`` in nats;
- ``stat_set_mass`` [batch, head, pos]: ``sum_{k in S} p[q, k]``, mass on the keys holding given tokens;
- ``stat_distance`` [batch, head, pos]: ``sum_k p[q, k] (i - k)``, the mean look-back of query ``i`` in
  tokens (causal attention: the mean attention distance; bidirectional: the signed mean offset);
- ``stat_top_keys`` [batch, head, pos, top_k]: the real-token positions of the ``top_k`` highest-scoring
  visible keys per query, best first (-1 where fewer are visible);
- ``stat_tail_pattern`` [batch, head, tail, k_pos]: the pattern rows of each prompt's last ``tail`` real
  queries (zero rows where a prompt is shorter).
"""

from __future__ import annotations

import torch

from workbench.hooks.attention_tap import additive_mask
from workbench.numerics import entropy


def per_query_head(kv: torch.Tensor, heads: int) -> torch.Tensor:
    """Keys or values [batch, kv_head, pos, d] repeated to ``heads`` query heads (GQA / MQA)."""
    return kv if kv.shape[1] == heads else kv.repeat_interleave(heads // kv.shape[1], dim=1)


def _probabilities(
    scores: torch.Tensor, rows: torch.Tensor | None, seen: int, sinks: torch.Tensor | None
) -> torch.Tensor:
    """One chunk's attention probabilities: scores plus the mask rows, softmax with the learned sink
    logit joined and dropped (GPT-OSS); fully masked (pad) rows give 0."""
    if rows is not None:
        scores = scores + rows[..., :seen]
    if sinks is not None:
        column = sinks.float().reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        return torch.cat([scores, column], dim=-1).softmax(-1)[..., :-1].nan_to_num(0.0)
    return scores.softmax(-1).nan_to_num(0.0)


def _scores(query: torch.Tensor, keys_t: torch.Tensor, scaling: float, softcap: float | None) -> torch.Tensor:
    """``scale * q.k`` of one chunk in float32, soft-capped ``cap * tanh(s / cap)`` (Gemma 2) if given."""
    scores = torch.matmul(query.float(), keys_t) * scaling
    return scores if softcap is None else torch.tanh(scores / softcap) * softcap


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
    in_set: torch.Tensor | None = None,
    distance: bool = False,
) -> dict[str, torch.Tensor]:
    """Sink mass, key mass and entropy (and set mass, look-back) for one attention call, in query chunks.

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
        in_set: [batch, k_pos] keys of a fixed set (``stat_set_mass``), or None.
        distance: Also return ``stat_distance``.

    Returns:
        ``stat_sink_mass``, ``stat_entropy`` (and ``stat_set_mass``, ``stat_distance``) [batch, head, q_pos],
        ``stat_key_mass`` [batch, head, k_pos].
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    key = per_query_head(key, heads)
    keys = torch.arange(k_len, device=query.device)
    in_sink = (keys[None, :] >= first[:, None]) & (keys[None, :] < first[:, None] + sink_tokens)  # [b, k]
    stats = {
        name: query.new_zeros(batch, heads, q_len, dtype=torch.float32)
        for name, wanted in (
            ("stat_sink_mass", True),
            ("stat_entropy", True),
            ("stat_set_mass", in_set is not None),
            ("stat_distance", distance),
        )
        if wanted
    }
    key_mass = query.new_zeros(batch, heads, k_len, dtype=torch.float32)
    keys_t = key.float().transpose(2, 3)  # converted once
    for q0 in range(0, q_len, chunk):
        q1 = min(q0 + chunk, q_len)
        seen = q1 + k_len - q_len if causal else k_len  # causal: later keys are masked, so skipped
        scores = _scores(query[:, :, q0:q1], keys_t[..., :seen], scaling, softcap)
        rows = additive_mask(mask, q_len, k_len, causal, torch.float32, query.device, rows=(q0, q1))
        probs = _probabilities(scores, rows, seen, sinks)
        if query_valid is not None:
            probs = probs * query_valid[:, None, q0:q1, None].to(probs.dtype)
        stats["stat_sink_mass"][:, :, q0:q1] = (probs * in_sink[:, None, None, :seen]).sum(-1)
        stats["stat_entropy"][:, :, q0:q1] = entropy(probs)
        if in_set is not None:
            stats["stat_set_mass"][:, :, q0:q1] = (probs * in_set[:, None, None, :seen]).sum(-1)
        if distance:
            here = torch.arange(q0, q1, device=query.device) + (k_len - q_len)
            offsets = (here[:, None] - keys[None, :seen]).float()
            stats["stat_distance"][:, :, q0:q1] = (probs * offsets).sum(-1)
        key_mass[..., :seen] += probs.sum(2)
    return {**stats, "stat_key_mass": key_mass}


def top_keys(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    first: torch.Tensor,
    top_k: int,
    chunk: int,
    causal: bool = True,
    softcap: float | None = None,
) -> torch.Tensor:
    """The ``top_k`` highest-scoring visible keys of every query, in query chunks (the softmax keeps the
    order of the scores, so these are also the keys with the most attention).

    Args:
        query, key, mask, scaling, causal, softcap: As for :func:`streamed_stats`.
        first: Index of each prompt's first real key [batch]; results are real-token positions
            (key index - first).
        top_k: Keys kept per query.
        chunk: Queries per chunk.

    Returns:
        [batch, head, q_pos, top_k] int64 positions, best first; -1 where fewer keys are visible.
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    key = per_query_head(key, heads)
    keys_t = key.float().transpose(2, 3)
    out = torch.full((batch, heads, q_len, top_k), -1, dtype=torch.long, device=query.device)
    for q0 in range(0, q_len, chunk):
        q1 = min(q0 + chunk, q_len)
        seen = q1 + k_len - q_len if causal else k_len
        scores = _scores(query[:, :, q0:q1], keys_t[..., :seen], scaling, softcap)
        rows = additive_mask(mask, q_len, k_len, causal, torch.float32, query.device, rows=(q0, q1))
        if rows is not None:
            scores = scores + rows[..., :seen]
        found = scores.topk(min(top_k, seen), dim=-1)
        masked = found.values <= torch.finfo(torch.float32).min / 2
        positions = found.indices - first[:, None, None, None]
        out[:, :, q0:q1, : found.indices.shape[-1]] = positions.masked_fill(masked, -1)
    return out


def tail_pattern(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    tail: int,
    sinks: torch.Tensor | None = None,
    query_valid: torch.Tensor | None = None,
    causal: bool = True,
    softcap: float | None = None,
) -> torch.Tensor:
    """The attention rows of each prompt's last ``tail`` real queries (the rows eviction policies such as
    SnapKV vote with), one prompt at a time.

    Args:
        query, key, mask, scaling, sinks, causal, softcap: As for :func:`streamed_stats`.
        tail: Rows kept per prompt (the last real queries, in order; zero rows first where a prompt has
            fewer).
        query_valid: [batch, q_pos] real (1) or pad (0) queries.

    Returns:
        [batch, head, tail, k_pos] float32.
    """
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    key = per_query_head(key, heads)
    out = query.new_zeros(batch, heads, tail, k_len, dtype=torch.float32)
    for b in range(batch):
        real = (
            torch.arange(q_len, device=query.device)
            if query_valid is None
            else query_valid[b].nonzero().squeeze(-1)
        )
        if not len(real):
            continue
        q1 = int(real[-1]) + 1
        q0 = max(q1 - tail, int(real[0]))
        scores = _scores(query[b : b + 1, :, q0:q1], key[b : b + 1].float().transpose(2, 3), scaling, softcap)
        row_mask = None if mask is None else mask[b : b + 1]
        rows = additive_mask(row_mask, q_len, k_len, causal, torch.float32, query.device, rows=(q0, q1))
        out[b, :, tail - (q1 - q0) :] = _probabilities(scores, rows, k_len, sinks)[0]
    return out
