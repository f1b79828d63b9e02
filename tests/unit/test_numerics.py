"""The one entropy function against hand-computed values."""

from __future__ import annotations

import math

import torch

from workbench.numerics import entropy


def test_entropy_of_known_distributions() -> None:
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    assert torch.allclose(entropy(p), torch.tensor([math.log(4), 0.0, math.log(2)]), atol=1e-7)
    # 0.1, 0.2, 0.7 by hand: -(0.1 ln 0.1 + 0.2 ln 0.2 + 0.7 ln 0.7) = 0.8018185525433372
    q = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)
    assert abs(float(entropy(q)) - 0.8018185525433372) < 1e-15
    assert abs(float(entropy(q.log(), log=True)) - 0.8018185525433372) < 1e-15
    assert entropy(p.T, dim=0).shape == (3,) and torch.equal(entropy(p.T, dim=0), entropy(p))
