"""The tap's score computation on planted tensors and masks."""

from __future__ import annotations

import torch
from torch import nn

from workbench.hooks.attention_tap import attention_scores


class Causal(nn.Module):
    is_causal = True


def test_gqa_scores_and_masks_agree() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    expected = torch.einsum("bhqd,bhkd->bhqk", q, k.repeat_interleave(2, dim=1)) * 0.5
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    additive = torch.zeros(1, 1, 5, 5).masked_fill(~causal, torch.finfo(torch.float32).min)
    from_none = attention_scores(Causal(), q, k, None, 0.5)
    from_bool = attention_scores(Causal(), q, k, causal[None, None], 0.5)
    from_float = attention_scores(Causal(), q, k, additive, 0.5)
    for scores in (from_none, from_bool, from_float):
        torch.testing.assert_close(scores.softmax(-1), (expected + additive).softmax(-1))
    assert torch.equal(from_none[..., causal], expected[..., causal])


def test_decoding_step_sees_every_cached_key() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 2, 1, 4, generator=generator), torch.randn(1, 2, 6, 4, generator=generator)
    scores = attention_scores(Causal(), q, k, None, 1.0)
    assert scores.shape == (1, 2, 1, 6) and torch.isfinite(scores).all()
    # the one new query is the last position: no key is masked, every score is the plain dot product
    expected = (q.double() * k.double()).sum(-1)[:, :, None]  # [1, head, 1, 6]
    torch.testing.assert_close(scores.double(), expected, rtol=1e-6, atol=1e-6)
