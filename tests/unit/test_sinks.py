"""Sink probes on planted attention and planted activations."""

from __future__ import annotations

import math

import torch

from probes.sinks import key_alpha, learned_sink_mass, massive_activations, sink_rate


def uniform_causal(heads: int, length: int) -> torch.Tensor:
    keep = torch.ones(length, length).tril()
    return (keep / keep.sum(-1, keepdim=True)).expand(heads, -1, -1)


def test_uniform_causal_attention_has_no_sink() -> None:
    pattern = uniform_causal(4, 64)
    alpha = key_alpha(pattern)
    harmonic = sum(1 / t for t in range(1, 65))
    torch.testing.assert_close(alpha, torch.full((4,), harmonic / 64))
    assert math.isclose(float(alpha[0]), 0.0741, abs_tol=5e-5)
    assert sink_rate(torch.stack([alpha, alpha])[:, None]) == 0.0


def test_planted_column_gives_its_exact_mass() -> None:
    length, mass = 32, 0.7
    pattern = torch.zeros(3, length, length)
    for t in range(length):
        pattern[:, t, 0] = 1.0 if t == 0 else mass
        if t:
            pattern[:, t, 1 : t + 1] = (1 - mass) / t
    expected = (1 + mass * (length - 1)) / length  # query 0 gives its whole row to itself
    torch.testing.assert_close(key_alpha(pattern), torch.full((3,), expected))
    assert sink_rate(key_alpha(pattern)[None, None]) == 100.0
    bidirectional = torch.full((2, 8, 8), 0.05)
    bidirectional[:, :, 0] = 0.65
    torch.testing.assert_close(key_alpha(bidirectional, causal=False), torch.full((2,), 0.65))


def test_massive_activation_is_found_where_planted() -> None:
    hidden = torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    hidden[0, 7] = 500.0
    hidden[3, 12] = -80.0
    found = massive_activations(hidden)
    assert found["top_positions"][:2] == [(0, 7), (3, 12)]
    assert found["n_massive"] == 1 and found["top_ratio"] > 1000
    assert found["top_values"][:2] == [500.0, 80.0]
    # the median of all 16 x 64 = 1024 magnitudes, the lower middle one (torch.median's convention);
    # the two planted entries sit at the top, so it is the 512th smallest |0.05 z|
    median = sorted(abs(v) for v in hidden.flatten().tolist())[511]
    assert found["median"] == median and found["top_ratio"] == 500.0 / median


def test_learned_sink_mass_is_the_missing_row_mass() -> None:
    pattern = torch.full((2, 4, 4), 0.2)
    torch.testing.assert_close(learned_sink_mass(pattern), torch.full((2,), 0.2))
