"""KV-cache probes on planted attention and planted keys."""

from __future__ import annotations

import itertools

import torch
import transformers as tf

from probes.kvcache import (
    POLICIES,
    keep_h2o,
    keep_sink_window,
    keep_snapkv,
    kept_set,
    kv_cache_bytes,
    quantization_error,
    retained_mass,
    sparsity,
)


def causal_random(heads: int, length: int, seed: int = 0) -> torch.Tensor:
    scores = torch.randn(heads, length, length, generator=torch.Generator().manual_seed(seed))
    keep = torch.ones(length, length, dtype=torch.bool).tril()
    return scores.masked_fill(~keep, float("-inf")).softmax(-1)


def test_opt_30b_cache_is_about_180_gb() -> None:
    config = tf.OPTConfig(hidden_size=7168, num_hidden_layers=48, ffn_dim=28672, num_attention_heads=56)
    head_dim = config.hidden_size // config.num_attention_heads
    size = kv_cache_bytes(
        config.num_hidden_layers, config.num_attention_heads, head_dim, 2, tokens=1024, batch=128
    )
    assert abs(size / 1e9 - 180) < 1.5
    # K and V x 48 layers x 56 heads x 128 dims x 2 bytes = 1,376,256 B per token; x 1024 x 128 tokens
    assert size == 2 * 48 * 56 * 128 * 2 * 1024 * 128 == 180_388_626_432


def test_h2o_keeps_recent_and_heavy_hitters() -> None:
    pattern = torch.zeros(1, 8, 8)
    pattern[0, :, 2] = 0.5  # planted heavy hitters: keys 2 and 4 take most attention
    pattern[0, :, 4] = 0.3
    pattern[0, :, 0] = 0.2
    keep = keep_h2o(pattern, budget=4)
    assert keep[0].nonzero().flatten().tolist() == [2, 4, 6, 7]


def test_snapkv_window_votes_with_pooling() -> None:
    pattern = torch.zeros(1, 12, 12)
    pattern[0, -4:, 3] = 9 / 4  # window votes: key 3 gets 9, key 4 gets 3
    pattern[0, -4:, 4] = 3 / 4
    keep = keep_snapkv(pattern, budget=6, window=4, kernel=3)
    # avg-pooled votes (kernel 3): key 3 -> 4, key 4 -> 4, key 2 -> 3, key 5 -> 1
    assert keep[0].nonzero().flatten().tolist() == [3, 4, 8, 9, 10, 11]
    no_pool = keep_snapkv(pattern, budget=6, window=4, kernel=1)
    assert no_pool[0].nonzero().flatten().tolist() == [3, 4, 8, 9, 10, 11]


def test_sink_window_and_full_budget() -> None:
    assert keep_sink_window(10, 6, 1)[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 8, 9]
    pattern = causal_random(3, 16)
    for policy in POLICIES:
        full = retained_mass(pattern, kept_set(policy, pattern, 16))
        torch.testing.assert_close(full, torch.ones(3))
        masses = [retained_mass(pattern, kept_set(policy, pattern, b)).mean() for b in (2, 4, 8, 16)]
        assert all(a <= b + 1e-6 for a, b in itertools.pairwise(masses)) or policy == "snapkv"
    oracle = retained_mass(pattern, kept_set("oracle", pattern, 4))
    for policy in POLICIES:
        assert (retained_mass(pattern, kept_set(policy, pattern, 4)) <= oracle + 1e-6).all()


def test_sparsity_counts_small_entries() -> None:
    pattern = torch.zeros(1, 4, 4)
    pattern[0] = torch.tensor(
        [[1, 0, 0, 0], [0.999, 0.001, 0, 0], [0.4, 0.3, 0.3, 0], [0.25, 0.25, 0.25, 0.25]]
    )
    # visible entries: 10; small (< 1% of the row max): the 0.001 entry only
    torch.testing.assert_close(sparsity(pattern), torch.tensor([0.1]))


def test_per_channel_quantisation_wins_with_outlier_channels() -> None:
    keys = torch.randn(2, 64, 32, generator=torch.Generator().manual_seed(0))
    keys[:, :, 5] *= 40  # an outlier channel, as KIVI observes in real keys
    assert quantization_error(keys, 2, "channel") < quantization_error(keys, 2, "token")


def test_quantisation_error_on_a_planted_grid() -> None:
    """Channels on their own 4-level grids quantise exactly per channel; per token, one entry misses."""
    keys = torch.tensor([[[0.0, 0, 0], [1, 3, 9], [2, 6, 0], [3, 9, 9]]])  # [kv_head 1, pos 4, d 3]
    # per channel (2 bits = 4 levels): 0..3 step 1, 0..9 step 3, {0, 9} step 3: every value is a level
    assert quantization_error(keys, 2, "channel") == 0.0
    # per token: [1, 3, 9] has levels 1 + j * 8/3, so 3 -> 1 + 8/3 = 11/3 (off by 2/3); the other tokens
    # are on their grids ([0, 0, 0]; [2, 6, 0] step 2; [3, 9, 9] step 2). Channel 1's relative error is
    # (2/3) / ||(0, 3, 6, 9)|| = (2/3) / sqrt(126); the mean over the 3 channels is 2 / (9 sqrt(126))
    expected = 2 / (9 * 126**0.5)  # 0.019797...
    assert abs(quantization_error(keys, 2, "token") - expected) < 1e-6
