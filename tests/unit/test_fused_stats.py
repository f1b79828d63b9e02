"""Both routes' statistics (fused log-sum-exp, chunked in 4-query chunks) against the float64 softmax of
the full scores, on random queries and keys:
GQA, left and right padding, learned sinks, sliding windows, bidirectional attention and a query block
over a longer cache; the float64 kernels where scores are large (Gemma 4's 512-wide heads at scale 1);
top keys and tail rows; and the calls the fused route must leave to the chunked path."""

from __future__ import annotations

import pytest
import torch

from workbench.capture.fused import applies, fused_stats, score_dtype
from workbench.capture.streamed import streamed_stats, tail_pattern, top_keys

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
    in_set: torch.Tensor | None = None,
    scale: float = SCALE,
) -> dict[str, torch.Tensor]:
    """The statistics from the float64 probabilities of every query and key."""
    probs = _probs(q, k, keep, sinks, valid, scale)
    keys = torch.arange(k.shape[2])
    in_sink = (keys[None] >= first[:, None]) & (keys[None] < first[:, None] + SINK_TOKENS)
    here = torch.arange(q.shape[2]) + k.shape[2] - q.shape[2]
    stats = {
        "stat_sink_mass": (probs * in_sink[:, None, None, :]).sum(-1),
        "stat_key_mass": probs.sum(2),
        "stat_entropy": -(probs * probs.clamp_min(1e-300).log()).sum(-1),
        "stat_distance": (probs * (here[:, None] - keys[None, :]).double()).sum(-1),
    }
    if in_set is not None:
        stats["stat_set_mass"] = (probs * in_set[:, None, None, :]).sum(-1)
    return stats


def _probs(
    q: torch.Tensor,
    k: torch.Tensor,
    keep: torch.Tensor,
    sinks: torch.Tensor | None,
    valid: torch.Tensor,
    scale: float = SCALE,
) -> torch.Tensor:
    """The float64 pattern [batch, head, q, k] (pad query rows zero)."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1).double()
    scores = (q.double() @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~keep, -torch.inf)
    if sinks is not None:
        column = sinks.double().reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        probs = torch.cat([scores, column], -1).softmax(-1)[..., :-1]
    else:
        probs = scores.softmax(-1)
    return probs.nan_to_num(0.0) * valid[:, None, :, None]


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
    in_set = torch.rand(batch, length) < 0.3  # a fixed key set (delimiters, say)
    got = route(
        q, k, keep, SCALE, first, SINK_TOKENS, sinks=logits, query_valid=valid, causal=causal,
        in_set=in_set, distance=True,
    )  # fmt: skip
    expected = _reference(q, k, keep, first, logits, valid, in_set)
    assert set(got) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name].double(), value, atol=1e-5, rtol=0, msg=name)
    plain = route(q, k, keep, SCALE, first, SINK_TOKENS, sinks=logits, query_valid=valid, causal=causal)
    assert set(plain) == {"stat_sink_mass", "stat_key_mass", "stat_entropy"}  # extras only on request
    for name, value in plain.items():
        torch.testing.assert_close(value, got[name], atol=1e-6, rtol=0, msg=name)


def test_no_mask_and_a_query_block_over_a_cache() -> None:
    """sdpa's plain causal call (no mask) and the last 5 queries over 23 cached keys (bottom-right)."""
    torch.manual_seed(1)
    q, k = torch.randn(1, 4, 23, 16), torch.randn(1, 2, 23, 16)
    keep = _keep(1, 23, True, None, [0], "right")
    first, valid = torch.zeros(1, dtype=torch.long), torch.ones(1, 23)
    expected = _reference(q, k, keep, first, None, valid)
    got = fused_stats(q, k, None, SCALE, first, SINK_TOKENS, distance=True)
    for name, value in expected.items():
        torch.testing.assert_close(got[name].double(), value, atol=1e-5, rtol=0, msg=name)
    tail = fused_stats(q[:, :, -5:], k, None, SCALE, first, SINK_TOKENS, distance=True)
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


def test_large_scores_take_the_float64_kernels() -> None:
    """Unit-RMS queries and keys 512 wide at scale 1 (Gemma 4's global heads): scores reach hundreds,
    beyond the fp32 bound, so the kernels run in float64 and every statistic stays at float64 accuracy."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 4, 31, 512), torch.randn(1, 2, 31, 512)
    small = score_dtype(q * 0.05, k * 0.05, 1.0)
    assert score_dtype(q, k, 1.0) == torch.float64 and small == torch.float32
    keep = _keep(1, 31, True, None, [0], "right")
    first, valid = torch.zeros(1, dtype=torch.long), torch.ones(1, 31)
    expected = _reference(q, k, keep, first, None, valid, scale=1.0)
    got = fused_stats(q, k, None, 1.0, first, SINK_TOKENS, distance=True, dtype=torch.float64)
    for name, value in expected.items():
        scale = max(1.0, float(value.abs().max()))
        torch.testing.assert_close(got[name].double() / scale, value / scale, atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    ("causal", "window", "sinks"), [(True, None, True), (True, 6, False), (False, None, False)]
)
def test_top_keys_and_tail_rows_equal_the_float64_pattern(
    side: str, causal: bool, window: int | None, sinks: bool
) -> None:
    torch.manual_seed(4)
    batch, heads, length, top = 2, 4, 19, 5
    q, k = torch.randn(batch, heads, length, 16), torch.randn(batch, 2, length, 16)
    pads = [0, 4]
    keep = _keep(batch, length, causal, window, pads, side)
    valid = torch.ones(batch, length)
    for b, n in enumerate(pads):
        if n:
            valid[b, :n] = 0 if side == "left" else 1
            valid[b, length - n :] = 1 if side == "left" else 0
    first = torch.tensor(pads) if side == "left" else torch.zeros(batch, dtype=torch.long)
    logits = torch.randn(heads) if sinks else None
    probs = _probs(q, k, keep, logits, valid)
    ranked = top_keys(q, k, keep, SCALE, first, top, chunk=4, causal=causal)
    for b in range(batch):
        for h in range(heads):
            for i in valid[b].nonzero().squeeze(-1).tolist():
                row = probs[b, h, i]
                best = row.argsort(descending=True)[: int((row > 0).sum().clamp(max=top))]
                want = (best - first[b]).tolist()
                assert ranked[b, h, i].tolist() == want + [-1] * (top - len(want))
    rows = tail_pattern(q, k, keep, SCALE, 6, sinks=logits, query_valid=valid, causal=causal)
    for b in range(batch):
        real = valid[b].nonzero().squeeze(-1)
        torch.testing.assert_close(rows[b].double(), probs[b][:, real[-6:]], atol=1e-6, rtol=0)


def test_a_sink_logit_far_above_the_scores_keeps_the_key_mass_exact() -> None:
    """A learned sink logit of 100 puts that head's L' far above the others': the key-mass call's query
    weights exp(min L' - L') would underflow fp32, so it runs in float64 and stays exact."""
    torch.manual_seed(5)
    q, k = torch.randn(1, 4, 17, 16), torch.randn(1, 2, 17, 16)
    keep = _keep(1, 17, True, None, [0], "right")
    first, valid = torch.zeros(1, dtype=torch.long), torch.ones(1, 17)
    logits = torch.tensor([100.0, 0.0, -3.0, 2.0])
    got = fused_stats(q, k, None, SCALE, first, SINK_TOKENS, sinks=logits)
    expected = _reference(q, k, keep, first, logits, valid)
    for name in ("stat_key_mass", "stat_sink_mass", "stat_entropy"):
        torch.testing.assert_close(got[name].double(), expected[name], atol=1e-5, rtol=0, msg=name)
    assert float(expected["stat_key_mass"][0, 1:].sum()) > 1  # the other heads still carry their mass
