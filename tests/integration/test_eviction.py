"""Eviction simulation with the real models: the full budget is the full cache; pruning costs quality."""

from __future__ import annotations

import math

import pytest
import torch

import workbench
from probes.eviction import eviction_table, simulate_eviction
from probes.kvcache import POLICIES, SNAPKV_WINDOW, AttentionSummary, kept_set, retention_curve
from workbench.capture import CaptureSpec, capture, streaming
from workbench.models.tiny import VOCAB, build_tiny


def _ids(n: int = 24) -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(7))


def _masked_reference(
    model: workbench.WorkbenchModel,
    ids: torch.Tensor,
    prompt_len: int,
    kept: list[int],
    window: int | None = None,
) -> dict[str, float]:
    """The eviction metrics from two plain HF forward passes, no cache surgery: evicting prompt keys from
    every layer's cache before the continuation is the same as masking them out for the continuation's
    queries (prompt queries keep full causal attention). ``window``: sliding layers keep HF's own sliding
    mask (the last ``window`` keys, the query included). Float64 metrics, written out here."""
    n = ids.shape[1] - 1  # the last token is only a target
    q, k = torch.arange(n)[:, None], torch.arange(n)[None]
    causal = k <= q
    evicted = (q >= prompt_len) & (k < prompt_len) & ~torch.isin(k, torch.tensor(kept))

    def additive(allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 1, n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)

    mask: object = additive(causal & ~evicted)
    if window is not None:
        mask = {"full_attention": mask, "sliding_attention": additive(causal & (k > q - window))}
    with torch.no_grad():
        full = model.hf(input_ids=ids[:, :n]).logits[0, prompt_len - 1 :].double().log_softmax(-1)
        pruned = model.hf(input_ids=ids[:, :n], attention_mask=mask).logits[0, prompt_len - 1 :]
    pruned = pruned.double().log_softmax(-1)
    nll = -pruned.gather(-1, ids[0, prompt_len:, None]).mean()
    return {
        "perplexity": math.exp(float(nll)),
        "kl": float((full.exp() * (full - pruned)).sum(-1).mean()),
        "top1_agreement": float((full.argmax(-1) == pruned.argmax(-1)).double().mean()),
    }


def _assert_matches(found: dict[str, float], expected: dict[str, float]) -> None:
    # one batched forward with a mask against a prefill plus token-by-token decoding with a cache: the
    # same attention summed in a different order, so fp32 rounding differs (KL ~1e-3 here, agreeing to
    # about 5e-5 relative); a near-tie top-1 would differ by 1/8
    assert found["kl"] == pytest.approx(expected["kl"], rel=1e-3)
    assert found["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert found["top1_agreement"] == expected["top1_agreement"]


@pytest.mark.parametrize("family", ["llama", "mixtral", "gpt2", "deepseek_v3", "gpt_oss"])
@pytest.mark.parametrize("policy", POLICIES)
def test_full_budget_equals_the_full_cache_exactly(family: str, policy: str) -> None:
    model = workbench.load(build_tiny(family))
    found = simulate_eviction(model, _ids(), prompt_len=16, policy=policy, budget=16)
    assert found["kl"] == 0.0 and found["top1_agreement"] == 1.0


def test_pruning_costs_quality_and_cache_positions_work() -> None:
    model = workbench.load(build_tiny("llama"))
    ids = _ids(32)
    small = simulate_eviction(model, ids, prompt_len=24, policy="recent", budget=4)
    assert small["kl"] > 0
    _assert_matches(small, _masked_reference(model, ids, 24, kept=[20, 21, 22, 23]))  # the last 4 of 24
    # a recent window moves every kept key and every new token by the same 24 - 8 = 16 positions, and RoPE
    # sees only relative positions: StreamingLLM's cache positions must give the original-position result
    shifted = simulate_eviction(model, ids, prompt_len=24, policy="recent", budget=8, positions="cache")
    unshifted = simulate_eviction(model, ids, prompt_len=24, policy="recent", budget=8)
    assert shifted["kl"] > 0
    _assert_matches(unshifted, _masked_reference(model, ids, 24, kept=list(range(16, 24))))
    assert shifted["kl"] == pytest.approx(unshifted["kl"], rel=1e-4)  # re-rotated keys: fp32 rounding
    assert shifted["perplexity"] == pytest.approx(unshifted["perplexity"], rel=1e-5)
    repositioned = simulate_eviction(
        model, ids, prompt_len=24, policy="sink_window", budget=8, positions="cache"
    )
    assert repositioned["kl"] > 0 and repositioned["perplexity"] > 0
    full = simulate_eviction(model, ids, prompt_len=24, policy="sink_window", budget=24, positions="cache")
    assert full["kl"] == 0.0


def test_sliding_window_layers_keep_their_own_window() -> None:
    model = workbench.load(build_tiny("gpt_oss"))
    found = simulate_eviction(model, _ids(), 16, "h2o", 6)
    assert found["kl"] > 0 and 0 <= found["top1_agreement"] <= 1
    # the full-attention layer keeps the last 6 of 16 prompt keys; the sliding layers (window 8) keep
    # their own window, untouched by the policy
    recent = simulate_eviction(model, _ids(), 16, "recent", 6)
    _assert_matches(recent, _masked_reference(model, _ids(), 16, kept=list(range(10, 16)), window=8))


def test_cache_positions_refused_without_plain_rope() -> None:
    with pytest.raises(ValueError, match="rotate-half RoPE"):
        simulate_eviction(workbench.load(build_tiny("gpt2")), _ids(), 16, "recent", 4, positions="cache")


def test_eviction_table_on_a_zoo_model() -> None:
    model = workbench.load("tiny-moe")
    ids = model.encode("def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5 and then exits")[
        "input_ids"
    ]
    table = eviction_table(model, ids, prompt_len=ids.shape[1] - 6, budgets=(0.3, 1.0))
    assert (table[table.budget == 1.0].kl == 0).all()
    assert set(table.policy) == {"recent", "sink_window", "h2o", "snapkv"}
    # a share of the prompt becomes round(share x prompt) cache entries: the same simulation, same numbers
    prompt_len = ids.shape[1] - 6
    row = table[(table.policy == "h2o") & (table.budget == 0.3)].iloc[0]
    direct = simulate_eviction(model, ids, prompt_len, "h2o", round(0.3 * prompt_len))
    assert (row.kl, row.perplexity, row.top1_agreement) == (
        direct["kl"],
        direct["perplexity"],
        direct["top1_agreement"],
    )


@pytest.mark.parametrize("family", ["llama", "gpt_oss", "deepseek_v3"])
def test_the_streamed_prefill_gives_the_policies_the_patterns_summary(family: str) -> None:
    """The eviction prefill streams each layer's key mass and last 32 rows on sdpa: they equal the eager
    patterns' (GPT-OSS: learned sinks, sliding layers; DeepSeek-V3: MLA), and every policy keeps the same
    keys from either."""
    model = workbench.load(build_tiny(family))
    ids = _ids(40)
    spec = CaptureSpec(stats=["key_mass", "tail_pattern"], tail=SNAPKV_WINDOW)
    with torch.no_grad(), streaming(model, ids, spec) as stats:
        model.hf(input_ids=ids)
    eager = capture(model, ids, CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"]), progress=False)
    kv_heads = model.cfg.n_kv_heads
    for layer in range(model.cfg.n_layers):
        at = f"blocks.{layer}.attn."
        pattern = eager[at + "hook_pattern"][0]
        summary = AttentionSummary(stats[at + "stat_key_mass"][0], stats[at + "stat_tail_pattern"][0])
        torch.testing.assert_close(summary.key_mass, pattern.float().sum(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(summary.tail, pattern.float()[:, -SNAPKV_WINDOW:], atol=1e-6, rtol=0)
        grouped = pattern.float().unflatten(0, (kv_heads, -1)).sum(1)
        for policy in POLICIES:
            for budget in (4, 12):
                got = kept_set(policy, summary.grouped(kv_heads), budget)
                assert torch.equal(got, kept_set(policy, grouped, budget)), (layer, policy, budget)
        curve, reference = retention_curve([summary]), retention_curve([pattern])  # the kv_retention probe
        assert [r["retained_mass"] for r in curve] == pytest.approx(
            [r["retained_mass"] for r in reference], abs=1e-5
        )
