"""Both routes' statistics (fused log-sum-exp, chunked in 4-query chunks) against the float64 softmax of
the full scores, on random queries and keys:
GQA, left and right padding, learned sinks, sliding windows, bidirectional attention and a query block
over a longer cache; and the calls it must leave to the chunked path."""

from __future__ import annotations

import pytest
import torch

from workbench.capture.fused import applies, fused_stats
from workbench.capture.streamed import streamed_stats

SCALE, SINK_TOKENS = 0.25, 2


def _keep(
    batch: int, length: int, causal: bool, window: int | None, pads: list[int], side: str
) -> torch.Tensor:
    keep = torch.ones(batch, 1, length, length, dtype=torch.bool)
    if causal:
        keep &= torch.ones(length, length, dtype=torch.bool).tril()
    if window:
        keep &= ~torch.ones(length, length, dtype=torch.bool).tril(-window)
    for b, n in enumerate(pads):
        if n and side == "left":
            keep[b, :, :, :n] = False
        if n and side == "right":
            keep[b, :, :, length - n :] = False
    return keep


def _reference(
    q: torch.Tensor,
    k: torch.Tensor,
    keep: torch.Tensor,
    first: torch.Tensor,
    sinks: torch.Tensor | None,
    valid: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The statistics from the float64 probabilities of every query and key."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1).double()
    scores = (q.double() @ k.transpose(-1, -2)) * SCALE
    scores = scores.masked_fill(~keep, -torch.inf)
    if sinks is not None:
        column = sinks.double().reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        probs = torch.cat([scores, column], -1).softmax(-1)[..., :-1]
    else:
        probs = scores.softmax(-1)
    probs = probs.nan_to_num(0.0) * valid[:, None, :, None]
    keys = torch.arange(k.shape[2])
    in_sink = (keys[None] >= first[:, None]) & (keys[None] < first[:, None] + SINK_TOKENS)
    return {
        "stat_sink_mass": (probs * in_sink[:, None, None, :]).sum(-1),
        "stat_key_mass": probs.sum(2),
        "stat_entropy": -(probs * probs.clamp_min(1e-300).log()).sum(-1),
    }


def _chunked(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
    return streamed_stats(*args, chunk=4, **kwargs)


@pytest.mark.parametrize("route", [fused_stats, _chunked], ids=["fused", "chunked"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    ("causal", "window", "sinks"),
    [(True, None, False), (True, None, True), (True, 6, False), (True, 6, True), (False, None, False)],
)
def test_statistics_equal_the_float64_softmax(
    route: object, side: str, causal: bool, window: int | None, sinks: bool
) -> None:
    torch.manual_seed(0)
    batch, heads, kv_heads, length, d = 2, 4, 2, 23, 16
    q, k = torch.randn(batch, heads, length, d), torch.randn(batch, kv_heads, length, d)
    pads = [0, 5]
    keep = _keep(batch, length, causal, window, pads, side)
    valid = torch.ones(batch, length)
    for b, n in enumerate(pads):
        if side == "left":
            valid[b, :n] = 0
        elif n:
            valid[b, length - n :] = 0
    first = torch.tensor(pads) if side == "left" else torch.zeros(batch, dtype=torch.long)
    logits = torch.randn(heads) if sinks else None
    got = route(q, k, keep, SCALE, first, SINK_TOKENS, sinks=logits, query_valid=valid, causal=causal)
    expected = _reference(q, k, keep, first, logits, valid)
    for name, value in expected.items():
        torch.testing.assert_close(got[name].double(), value, atol=1e-5, rtol=0, msg=name)


def test_no_mask_and_a_query_block_over_a_cache() -> None:
    """sdpa's plain causal call (no mask) and the last 5 queries over 23 cached keys (bottom-right)."""
    torch.manual_seed(1)
    q, k = torch.randn(1, 4, 23, 16), torch.randn(1, 2, 23, 16)
    keep = _keep(1, 23, True, None, [0], "right")
    first, valid = torch.zeros(1, dtype=torch.long), torch.ones(1, 23)
    expected = _reference(q, k, keep, first, None, valid)
    got = fused_stats(q, k, None, SCALE, first, SINK_TOKENS)
    for name, value in expected.items():
        torch.testing.assert_close(got[name].double(), value, atol=1e-5, rtol=0, msg=name)
    tail = fused_stats(q[:, :, -5:], k, None, SCALE, first, SINK_TOKENS)
    block = _reference(q[:, :, -5:], k, keep[..., -5:, :], first, None, valid[:, -5:])
    for name, value in block.items():
        torch.testing.assert_close(tail[name].double(), value, atol=1e-5, rtol=0, msg=name)


def test_biased_or_soft_capped_calls_keep_the_chunked_path() -> None:
    keep = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    alibi = additive + torch.arange(4.0)  # a per-key bias on the visible keys
    assert applies(None, None) and applies(keep, None) and applies(additive, None)
    assert not applies(alibi, None) and not applies(keep, 30.0)


def test_sink_keys_a_sliding_window_evicted_drop_out() -> None:
    """Over a cache that no longer holds the first real token (``first`` < 0), only the sink keys still
    held count."""
    torch.manual_seed(2)
    q, k = torch.randn(1, 4, 9, 16), torch.randn(1, 2, 9, 16)
    keep = _keep(1, 9, True, None, [0], "right")
    first, valid = torch.tensor([-1]), torch.ones(1, 9)
    got = fused_stats(q, k, None, SCALE, first, SINK_TOKENS)
    expected = _reference(q, k, keep, first, None, valid)
    torch.testing.assert_close(got["stat_sink_mass"].double(), expected["stat_sink_mass"], atol=1e-5, rtol=0)
