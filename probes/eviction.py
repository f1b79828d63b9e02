"""Eviction simulation: run the model with a pruned KV cache and compare it with the full cache.

Teacher-forced: the prompt is prefilled, its cache pruned once to ``budget`` entries per layer by a
policy of :mod:`probes.kvcache` (scores pooled over the query heads that share a KV head), then the
continuation is fed token by token, each new token appended to the cache. Reported against the same
decoding with the full cache: perplexity of the continuation, ``KL(p_full || p_pruned)`` and top-1
agreement, averaged over continuation positions.

The policies read the prefill's streamed statistics (each key's accumulated attention and the last
prompt rows, :class:`probes.kvcache.AttentionSummary`): the prefill stays on the model's sdpa attention,
so prompts of 16k tokens fit where their patterns would not.

Positions: ``"original"`` keeps every token's position (H2O, SnapKV); ``"cache"`` re-assigns positions
inside the cache as StreamingLLM does (Xiao et al. 2023, Sec. 3.2): kept keys are re-rotated to positions
``0..B-1`` and new tokens continue from ``B``. Re-rotation needs standard rotate-half RoPE with no
attention scaling (Llama, Mistral, Qwen, Mixtral, OLMoE, Granite-MoE).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import DynamicCache

from probes.divergence import kl_divergence
from probes.figures import lines_by_group
from probes.kvcache import SNAPKV_WINDOW, AttentionSummary, check_budgets, kept_set
from probes.params import SHARE, param
from probes.registry import Context, Needs, NotApplicable, Probe, per_model
from workbench.capture import CaptureSpec, streaming
from workbench.models.model import WorkbenchModel


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _reposition(model: WorkbenchModel, keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rotate cached keys [b, kvh, B, d] from their original positions ``index`` to ``0..B-1``."""
    rotary = getattr(model.base, "rotary_emb", None)
    if rotary is None or getattr(rotary, "attention_scaling", 1.0) != 1.0 or model.cfg.kv_layout == "MLA":
        raise ValueError(f"{model.adapter.family}: cache positions need plain rotate-half RoPE")
    target = torch.arange(index.shape[-1], device=keys.device)
    delta = (target - index).reshape(-1, index.shape[-1])  # [b * kvh, B]
    cos, sin = rotary(keys, position_ids=delta)  # [b * kvh, B, d]
    cos, sin = cos.reshape(*index.shape, -1), sin.reshape(*index.shape, -1)
    return keys * cos + _rotate_half(keys) * sin


def _prune(
    model: WorkbenchModel,
    cache: DynamicCache,
    summaries: dict[int, AttentionSummary],
    policy: str,
    budget: int,
    positions: str,
) -> None:
    """Prune each attention layer's cache (by layer: a hybrid's linear-attention layers keep a state,
    not keys, and are left as they are)."""
    for layer, summary in summaries.items():
        cached = cache.layers[layer]
        if cached.keys.shape[2] != summary.length:
            continue  # a sliding-window layer: its own window already bounds the cache
        kv_heads = cached.keys.shape[1]
        keep = kept_set(policy, summary.grouped(kv_heads), budget)  # [kv_head, k], scores per KV head
        index = keep.nonzero()[:, 1].view(kv_heads, -1)[None]  # [1, kv_head, B], ascending positions
        gather = index[..., None].expand(-1, -1, -1, cached.keys.shape[-1])
        keys = cached.keys.gather(2, gather)
        values = cached.values.gather(2, index[..., None].expand(-1, -1, -1, cached.values.shape[-1]))
        cached.keys = _reposition(model, keys, index) if positions == "cache" else keys
        cached.values = values


def _decode(
    model: WorkbenchModel, cache: DynamicCache, tokens: list[int], start: int, first: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities [len(tokens) + 1, vocab]: ``first`` (the prefill's last logits), then each token
    fed at positions ``start, start + 1, ...`` over ``cache``."""
    logits = [first]
    for step, token in enumerate(tokens):
        out = model.hf(
            input_ids=torch.tensor([[token]]),
            position_ids=torch.tensor([[start + step]]),
            cache=cache,
            use_cache=True,
        )
        logits.append(out.logits[:, -1])
    return torch.cat(logits).float().log_softmax(-1)


@torch.no_grad()
def simulate_eviction(
    model: WorkbenchModel,
    ids: torch.Tensor,
    prompt_len: int,
    policy: str,
    budget: int,
    positions: str = "original",
) -> dict[str, float]:
    """Perplexity, KL to the full cache and top-1 agreement of a continuation under a pruned prompt cache.

    Args:
        model: A causal model.
        ids: Token ids [1, N]; the first ``prompt_len`` are the prompt.
        prompt_len: Prompt length (the part that is pruned).
        policy: ``oracle``, ``recent``, ``sink_window``, ``h2o`` or ``snapkv``.
        budget: Cache entries kept per layer and KV head (``>= prompt_len`` keeps everything).
        positions: ``"original"`` or ``"cache"`` (StreamingLLM).

    Raises:
        ValueError: A prompt that leaves no continuation, or a budget below one entry.
    """
    if not 1 <= prompt_len < ids.shape[-1]:
        raise ValueError(f"prompt_len: expected 1 <= prompt_len < {ids.shape[-1]} tokens, got {prompt_len}")
    if budget < 1:
        raise ValueError(f"budget: expected at least one cache entry, got {budget}")
    prompt, cache = ids[:, :prompt_len], DynamicCache(config=model.config)
    spec = CaptureSpec(stats=["key_mass", "tail_pattern"], tail=SNAPKV_WINDOW)
    with streaming(model, prompt, spec) as stats:  # one prefill; the pruned run decodes from a copy
        out = model.hf(input_ids=prompt, cache=cache, use_cache=True)
    pruned_cache, start = copy.deepcopy(cache), prompt_len
    if budget < prompt_len:
        summaries = {
            int(name.split(".")[1]): AttentionSummary(
                value[0], stats[name.replace("key_mass", "tail_pattern")][0]
            )
            for name, value in stats.items()
            if name.endswith("stat_key_mass")
        }
        _prune(model, pruned_cache, summaries, policy, budget, positions)
        if positions == "cache":
            start = budget
    continuation = ids[0, prompt_len:-1].tolist()
    full = _decode(model, cache, continuation, prompt_len, out.logits[:, -1])
    pruned_logp = _decode(model, pruned_cache, continuation, start, out.logits[:, -1])
    targets = ids[0, prompt_len:]
    nll = -pruned_logp.gather(-1, targets[:, None]).mean()
    return {
        "perplexity": math.exp(float(nll)),
        "kl": float(kl_divergence(full, pruned_logp).mean()),
        "top1_agreement": float((full.argmax(-1) == pruned_logp.argmax(-1)).float().mean()),
    }


def eviction_table(
    model: WorkbenchModel,
    ids: torch.Tensor,
    prompt_len: int,
    budgets: tuple[float, ...] = (0.2, 0.5, 1.0),
    policies: tuple[str, ...] = ("recent", "sink_window", "h2o", "snapkv"),
    positions: str = "original",
) -> pd.DataFrame:
    """:func:`simulate_eviction` over policies and budgets (shares of the prompt). Columns: ``policy, budget,
    perplexity, kl, top1_agreement, positions``; budgets must lie in (0, 1] (else ``ValueError``)."""
    check_budgets(budgets)
    rows = []
    for policy in policies:
        for share in budgets:
            found = simulate_eviction(
                model, ids, prompt_len, policy, max(1, round(share * prompt_len)), positions
            )
            rows.append({"policy": policy, "budget": share, **found, "positions": positions})
    return pd.DataFrame(rows)


# -- registered probe -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvictionParams:
    """Prompt tokens (pruned), continuation tokens (scored) and cache budgets (shares of the prompt)."""

    prompt_len: int = param(64, low=1)
    continuation: int = param(16, low=1)
    budgets: tuple[float, ...] = param((0.25, 0.5, 1.0), min_len=1, **SHARE)


def _eviction(ctx: Context, params: EvictionParams) -> pd.DataFrame:
    prompt_len, continuation = params.prompt_len, params.continuation
    ids = ctx.model.tokenizer("\n".join(ctx.prompts), return_tensors="pt")["input_ids"][
        :, : prompt_len + continuation
    ]
    if ids.shape[1] <= prompt_len:
        raise NotApplicable(
            f"the prompt set gives {ids.shape[1]} tokens; eviction needs more than {prompt_len}"
        )
    return eviction_table(ctx.model, ids, prompt_len, tuple(params.budgets))


EVICTION = Probe(
    name="eviction",
    doc="Decoding with a pruned cache: perplexity, KL and top-1 agreement against the full cache.",
    formula="the prompt's cache pruned once to B entries per layer by a policy, the continuation "
    "teacher-forced; KL(p_full || p_pruned), perplexity and top-1 agreement averaged over its positions",
    cite="Zhang et al. 2023 (H2O, arXiv 2306.14048), Sec. 5; Xiao et al. 2023 (StreamingLLM), Sec. 3.2",
    run=_eviction,
    params=EvictionParams,
    needs=Needs(causal_lm=True, tokenizer=True, runs_model=True),
    figures=lambda t: per_model(
        t, lambda r, m: lines_by_group(r, "budget", "kl", "policy", f"KL to the full cache, {m}")
    ),
    summary=lambda t: t[t.budget == t.budget.min()][
        ["model", "policy", "budget", "perplexity", "kl", "top1_agreement"]
    ],
)
