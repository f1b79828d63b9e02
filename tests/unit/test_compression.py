"""Compression probes on the DADApy oracle, synthetic manifolds and analytic cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from probes.compression import anisotropy, effective_rank, gride, linear_cka, prompt_entropy, twonn

ORACLE = Path(__file__).resolve().parents[3] / "shared" / "oracles" / "dadapy_2gaussians_2d.json"


def gaussian_manifold(dim: int, n: int = 2000, ambient: int = 100, seed: int = 0) -> torch.Tensor:
    """``dim``-dimensional Gaussian points embedded in ``ambient`` dimensions by a random rotation."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(ambient, ambient, generator=generator)).Q[:dim]
    return torch.randn(n, dim, generator=generator) @ basis


@pytest.mark.skipif(not ORACLE.is_file(), reason="shared/oracles is laid beside the checkout")
def test_dadapy_oracle() -> None:
    points = torch.tensor(json.loads(ORACLE.read_text())["points"])
    assert abs(twonn(points, fraction=0.9) - 1.85) <= 0.01


def test_gride_12_equals_the_twonn_mle() -> None:
    points = gaussian_manifold(5, n=500)
    assert gride(points, 1) == pytest.approx(twonn(points, method="mle", unbiased=False), rel=1e-12)
    assert twonn(points, method="mle") == pytest.approx(gride(points, 1) * 499 / 500, rel=1e-12)


@pytest.mark.parametrize(
    ("dim", "low", "high"), [(2, 0.9, 1.1), (5, 0.9, 1.1), (10, 0.8, 1.0), (20, 0.8, 1.0)]
)
def test_gaussian_manifolds(dim: int, low: float, high: float) -> None:
    estimate = twonn(gaussian_manifold(dim))
    assert low * dim <= estimate <= high * dim, estimate


def test_gride_multiscale_reads_the_dimension() -> None:
    assert gride(gaussian_manifold(5), 4) == pytest.approx(5, rel=0.15)


def test_effective_rank_checks() -> None:
    assert effective_rank(torch.eye(64)) == pytest.approx(64)
    assert effective_rank(torch.outer(torch.arange(1.0, 9), torch.arange(1.0, 5))) == pytest.approx(1)
    assert effective_rank(torch.diag(torch.tensor([2.0, 1.0]))) == pytest.approx(1.8899, abs=1e-4)


def test_entropy_and_cka_checks() -> None:
    assert prompt_entropy(torch.eye(16)) == pytest.approx(math.log(16))
    assert prompt_entropy(torch.ones(16, 8)) == pytest.approx(0, abs=1e-9)
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(0))
    q = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1))).Q
    assert linear_cka(x, 3 * x @ q + 5) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(200, 32, generator=torch.Generator().manual_seed(2))) < 0.3
    assert anisotropy(torch.ones(10, 4) + 1e-3 * x[:10, :4]) > 0.99


def test_profile_summaries_and_cka_blocks() -> None:
    from probes.compression import cka_blocks, id_summaries

    summary = id_summaries([4.0, 9.0, 12.0, 7.0, 5.0, 6.0, 8.0])
    assert summary["abstraction_peak"] == 2 and summary["semantic_minimum"] == 4
    assert summary["peak_over_minimum"] == pytest.approx(12 / 5)
    grid = torch.tensor([[1, 0.95, 0.5, 0.4], [0.95, 1, 0.6, 0.5], [0.5, 0.6, 1, 0.97], [0.4, 0.5, 0.97, 1]])
    assert cka_blocks(grid) == [(0, 1), (2, 3)]


def test_max_explained_variance_and_decimation() -> None:
    from probes.compression import max_explained_variance, twonn_decimation

    line = torch.outer(torch.linspace(-1, 1, 50), torch.tensor([1.0, 2.0, 3.0]))
    assert max_explained_variance(line) == pytest.approx(1.0)
    curve = twonn_decimation(gaussian_manifold(3, n=800))
    assert set(curve) == {800, 400, 200, 100} and all(2.4 < v < 3.6 for v in curve.values())
