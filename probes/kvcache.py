"""KV-cache probes: cache size, accumulated attention, sparsity, eviction policies, key outliers.

Definitions follow ``shared/PROBES.md`` ("KV cache"). Patterns are one prompt's attention [head, q, k].
Eviction policies choose, per head, the set of keys a cache of ``budget`` entries keeps at the end of the
prompt; retained mass is what the evaluated queries (by default the last prompt position, whose row
decides the next token) put on that set. Policies read only an :class:`AttentionSummary` of the pattern
(each key's accumulated attention and the last query rows), which the streamed statistics give at any
length without the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from probes.figures import lines_by_group
from probes.params import SHARE, param
from probes.registry import Context, Needs, Probe, last_layer, per_model
from workbench.capture import Capture


def kv_cache_bytes(
    layers: int,
    kv_heads: int,
    head_dim: int,
    bytes_per_element: int,
    tokens: int = 1,
    batch: int = 1,
    v_head_dim: int | None = None,
) -> int:
    """KV-cache size: ``batch x tokens x layers x kv_heads x (d_k + d_v) x bytes`` (2 x head_dim for MHA/GQA).

    Checks from PROBES.md: GPT-2 small fp16 36 KiB per token; Llama-2-7B 512 KiB; OPT-30B at batch 128 x
    1024 tokens about 180 GB (Sheng et al. 2023, FlexGen). MLA caches ``(d_c + d_rope) x layers`` instead:
    pass ``kv_heads=1``, ``head_dim=d_c`` and ``v_head_dim=d_rope``.
    """
    per_token = layers * kv_heads * (head_dim + (head_dim if v_head_dim is None else v_head_dim))
    return batch * tokens * per_token * bytes_per_element


SNAPKV_WINDOW = 32  # SnapKV's observation window (Li et al. 2024), the query rows a summary keeps


@dataclass(frozen=True)
class AttentionSummary:
    """What the eviction policies read of one prompt's attention: the attention each key receives from
    every query (``key_mass`` [head, k], H2O's accumulated score) and the last query rows (``tail``
    [head, W, k]: SnapKV's observation window, the oracle's and the retained mass's last query).

    Built from a full pattern (:meth:`of`), or from the streamed ``stat_key_mass`` and
    ``stat_tail_pattern`` of a capture at any length.
    """

    key_mass: torch.Tensor
    tail: torch.Tensor

    @classmethod
    def of(cls, pattern: torch.Tensor, window: int = SNAPKV_WINDOW) -> AttentionSummary:
        """The summary of a pattern [head, q, k]."""
        pattern = pattern.float()
        return cls(pattern.sum(1), pattern[:, -window:])

    @property
    def heads(self) -> int:
        return self.key_mass.shape[0]

    @property
    def length(self) -> int:
        return self.key_mass.shape[-1]

    def grouped(self, kv_heads: int) -> AttentionSummary:
        """Summed over the query heads that share each of ``kv_heads`` KV heads (GQA)."""
        return AttentionSummary(
            self.key_mass.float().unflatten(0, (kv_heads, -1)).sum(1),
            self.tail.float().unflatten(0, (kv_heads, -1)).sum(1),
        )


Attention = torch.Tensor | AttentionSummary  # a pattern [head, q, k] or its summary


def _summary(attention: Attention) -> AttentionSummary:
    return attention if isinstance(attention, AttentionSummary) else AttentionSummary.of(attention)


def accumulated_attention(pattern: Attention) -> torch.Tensor:
    """H2O's heavy-hitter score (Zhang et al. 2023, Sec. 3): ``score[h, k] = sum_t A[h, t, k]``. [head, k]"""
    return _summary(pattern).key_mass.float()


def sparsity(pattern: torch.Tensor, causal: bool = True, rel: float = 0.01) -> torch.Tensor:
    """H2O's sparsity per head: share of visible ``A[t, k] < rel x max_k A[t, k]`` (rel = 0.01). [head]"""
    pattern = pattern.float()
    small = pattern < rel * pattern.amax(-1, keepdim=True)
    q, k = pattern.shape[1:]
    visible = torch.ones(q, k, dtype=torch.bool).tril(k - q) if causal else torch.ones(q, k, dtype=torch.bool)
    return (small & visible).sum((-1, -2)).float() / visible.sum()


def _mask_from(indices: torch.Tensor, length: int) -> torch.Tensor:
    return torch.zeros(*indices.shape[:-1], length, dtype=torch.bool).scatter(-1, indices, True)


def keep_recent(length: int, budget: int, heads: int) -> torch.Tensor:
    """Recent window: the last ``budget`` keys. Returns a keep-mask [head, k]."""
    keep = torch.zeros(heads, length, dtype=torch.bool)
    keep[:, max(0, length - budget) :] = True
    return keep


def keep_sink_window(length: int, budget: int, heads: int, sinks: int = 4) -> torch.Tensor:
    """StreamingLLM (Xiao et al. 2023): the first ``sinks`` keys plus the last ``budget - sinks``.

    Returns a keep-mask [head, k].
    """
    keep = keep_recent(length, max(budget - sinks, 0), heads)
    keep[:, : min(sinks, budget)] = True
    return keep


def keep_h2o(pattern: Attention, budget: int, recent_share: float = 0.5) -> torch.Tensor:
    """H2O (Zhang et al. 2023): heavy hitters by accumulated attention plus a recent window.

    ``budget x recent_share`` most recent keys, the rest the highest :func:`accumulated_attention` among the
    older keys (the paper's default is 10% heavy + 10% recent, i.e. ``recent_share = 0.5``). [head, k]
    """
    summary = _summary(pattern)
    heads, length = summary.heads, summary.length
    recent = round(budget * recent_share)
    keep = keep_recent(length, recent, heads)
    score = accumulated_attention(summary).masked_fill(keep, float("-inf"))
    heavy = min(budget - recent, length - recent)
    if heavy > 0:
        keep |= _mask_from(score.topk(heavy, -1).indices, length)
    return keep


def keep_snapkv(
    pattern: Attention, budget: int, window: int = SNAPKV_WINDOW, kernel: int = 5
) -> torch.Tensor:
    """SnapKV (Li et al. 2024): the last ``window`` prompt queries vote; votes are average-pooled over
    neighbouring keys (``kernel``, as the released code's default avgpool); keep the top ``budget - window``
    older keys plus the window itself. [head, k]
    """
    summary = _summary(pattern)
    heads, length = summary.heads, summary.length
    window = min(window, budget, length)
    if window > summary.tail.shape[1]:
        raise ValueError(f"snapkv: a window of {window} queries needs that many tail rows")
    votes = summary.tail.float()[:, -window:, : length - window].sum(1)  # [head, k - window]
    if votes.shape[-1] == 0:
        return keep_recent(length, budget, heads)
    pooled = F.avg_pool1d(votes[:, None], kernel, stride=1, padding=kernel // 2, count_include_pad=False)[
        :, 0
    ]
    keep = keep_recent(length, window, heads)
    chosen = min(budget - window, pooled.shape[-1])
    if chosen > 0:
        keep[:, : length - window] |= _mask_from(pooled.topk(chosen, -1).indices, length - window)
    return keep


def keep_oracle(pattern: Attention, budget: int, queries: int = 1) -> torch.Tensor:
    """Oracle top-k: the keys the evaluated queries themselves attend to most (an upper bound). [head, k]"""
    summary = _summary(pattern)
    return _mask_from(summary.tail.float()[:, -queries:].sum(1).topk(budget, -1).indices, summary.length)


def retained_mass(pattern: Attention, keep: torch.Tensor, queries: int = 1) -> torch.Tensor:
    """Attention the last ``queries`` query rows put on the kept keys: ``sum_{k in S} A[t, k]``, mean over
    those queries. [head]"""
    return (_summary(pattern).tail.float()[:, -queries:] * keep[:, None]).sum(-1).mean(-1)


POLICIES = ("oracle", "recent", "sink_window", "h2o", "snapkv")


def kept_set(policy: str, pattern: Attention, budget: int) -> torch.Tensor:
    """The keep-mask [head, k] of one policy at one budget (entries), from a pattern or its summary."""
    pattern = _summary(pattern)
    heads, length = pattern.heads, pattern.length
    if policy == "oracle":
        return keep_oracle(pattern, budget)
    if policy == "recent":
        return keep_recent(length, budget, heads)
    if policy == "sink_window":
        return keep_sink_window(length, budget, heads)
    if policy == "h2o":
        return keep_h2o(pattern, budget)
    if policy == "snapkv":
        return keep_snapkv(pattern, budget)
    raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")


def key_channel_absmax(keys: torch.Tensor) -> torch.Tensor:
    """KIVI (Liu et al. 2024): per-channel absolute maximum of keys [kv_head, pos, d] -> [kv_head, d]."""
    return keys.float().abs().amax(1)


def quantization_error(keys: torch.Tensor, bits: int = 2, per: str = "channel") -> float:
    """Relative error of asymmetric ``bits``-bit quantisation of keys grouped per channel or per token.

    KIVI quantises keys per channel because a few outlier channels dominate per-token ranges and crush the
    other channels. Error is the mean over channels of ``||K_c - Q(K)_c|| / ||K_c||`` (a Frobenius ratio
    would be dominated by the outlier channel itself).

    Args:
        keys: [kv_head, pos, d].
        bits: Quantisation bits.
        per: ``"channel"`` (min/max over positions) or ``"token"`` (min/max over channels).
    """
    keys = keys.float()
    dim = 1 if per == "channel" else 2
    low, high = keys.amin(dim, keepdim=True), keys.amax(dim, keepdim=True)
    scale = (high - low).clamp_min(1e-12) / (2**bits - 1)
    restored = ((keys - low) / scale).round() * scale + low
    per_channel = (keys - restored).norm(dim=1) / keys.norm(dim=1).clamp_min(1e-12)  # [kv_head, d]
    return float(per_channel.mean())


def check_budgets(budgets: tuple[float, ...]) -> None:
    """Refuse cache budgets that are not shares of the prompt (an empty tuple, or a value outside (0, 1]).

    Raises:
        ValueError: Naming the first bad budget.
    """
    if not budgets:
        raise ValueError("budgets: expected at least one share of the prompt in (0, 1]")
    for share in budgets:
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ValueError(f"budgets: expected shares of the prompt in (0, 1], got {share!r}")


def retention_curve(
    patterns: list[Attention],
    budgets: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
    queries: int = 1,
) -> list[dict[str, float | str]]:
    """Retained mass per policy and budget (a share of each prompt's length), averaged over prompts and heads.

    Args:
        patterns: One layer's patterns, one [head, q, k] (or its :class:`AttentionSummary`) per prompt.
        budgets: Cache budgets as shares of the prompt length.
        queries: Evaluated query rows at the end of each prompt.

    Returns:
        Rows ``{"policy", "budget", "retained_mass"}`` (for a tidy DataFrame).

    Raises:
        ValueError: A budget outside (0, 1].
    """
    check_budgets(budgets)
    rows: list[dict[str, float | str]] = []
    summaries = [_summary(p) for p in patterns]
    for policy in POLICIES:
        for share in budgets:
            masses = [
                float(retained_mass(p, kept_set(policy, p, max(1, round(share * p.length))), queries).mean())
                for p in summaries
            ]
            rows.append({"policy": policy, "budget": share, "retained_mass": sum(masses) / len(masses)})
    return rows


# -- registered probes ----------------------------------------------------------------------------------

PATTERNS = r"blocks\.\d+\.attn\.hook_pattern"


@dataclass(frozen=True)
class RetentionParams:
    """``budgets``: cache budgets as shares of each prompt's length."""

    budgets: tuple[float, ...] = param((0.1, 0.25, 0.5, 1.0), min_len=1, **SHARE)


def summaries(result: Capture, layer: int) -> list[AttentionSummary]:
    """One layer's :class:`AttentionSummary` per prompt, from a capture's streamed ``stat_key_mass`` and
    ``stat_tail_pattern`` (any length) or its ``hook_pattern``."""
    at = f"blocks.{layer}.attn."
    if at + "stat_key_mass" in result.names:
        return [
            AttentionSummary(m, t)
            for m, t in zip(result[at + "stat_key_mass"], result[at + "stat_tail_pattern"], strict=True)
        ]
    return [AttentionSummary.of(p) for p in result[at + "hook_pattern"]]


def _kv_retention(ctx: Context, params: RetentionParams) -> pd.DataFrame:
    result = ctx.capture(stats=("key_mass", "tail_pattern"))
    rows = []
    for layer in range(ctx.model.cfg.n_layers):
        curve = retention_curve(summaries(result, layer), tuple(params.budgets))
        rows += [{"layer": layer, **row} for row in curve]
    return pd.DataFrame(rows)


KV_RETENTION = Probe(
    name="kv_retention",
    doc="Retained attention mass of the last query per eviction policy and cache budget, per layer.",
    formula="retained = sum over kept keys k of A[last, k], the kept set of B = budget x T keys chosen by "
    "each policy (recent, sinks + window, H2O accumulated attention, SnapKV observation window, oracle)",
    cite="Xiao et al. 2023 (StreamingLLM, arXiv 2309.17453); Zhang et al. 2023 (H2O, arXiv 2306.14048); "
    "Li et al. 2024 (SnapKV, arXiv 2404.14469)",
    run=_kv_retention,
    params=RetentionParams,
    needs=Needs(causal_lm=True, points=(PATTERNS,)),
    figures=lambda t: per_model(
        last_layer(t),
        lambda r, m: lines_by_group(
            r, "budget", "retained_mass", "policy", f"Retained mass, last layer, {m}"
        ),
    ),
    summary=lambda t: (
        t[t.budget == t.budget.min()]
        .groupby(["model", "policy"], sort=False, as_index=False)
        .retained_mass.mean()
    ),
)
