"""Compression probes on the DADApy oracle, synthetic manifolds and analytic cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from probes.compression import (
    anisotropy,
    decimation_subsets,
    effective_rank,
    gride,
    gride_scales,
    linear_cka,
    prompt_entropy,
    twonn,
    twonn_decimation,
)

ORACLE = Path(__file__).resolve().parents[3] / "shared" / "oracles" / "dadapy_2gaussians_2d.json"


def gaussian_manifold(dim: int, n: int = 2000, ambient: int = 100, seed: int = 0) -> torch.Tensor:
    """``dim``-dimensional Gaussian points embedded in ``ambient`` dimensions by a random rotation."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(ambient, ambient, generator=generator)).Q[:dim]
    return torch.randn(n, dim, generator=generator) @ basis


def neighbour_distances(points: np.ndarray, k: int) -> np.ndarray:
    """Float64 brute-force distances to the k nearest neighbours (direct differences), ascending. [N, k]"""
    distances = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, :k]


def dadapy_twonn(r: np.ndarray, fraction: float = 0.9) -> float:
    """DADApy's ``_compute_id_2NN(mus, fraction, "base")``: ``curve_fit`` of ``y = d x`` with ``x`` the
    sorted ``log(r2 / r1)`` and ``y = -log(1 - i / N)``, on the smallest ``int(N fraction)``; the least
    squares slope through the origin is ``sum x y / sum x^2``."""
    n = r.shape[0]
    x = np.sort(np.log(r[:, 1] / r[:, 0]))[: int(n * fraction)]
    y = -np.log(1 - np.arange(1, x.shape[0] + 1) / n)
    return float((x * y).sum() / (x * x).sum())


def dadapy_gride(r: np.ndarray, n1: int, n2: int) -> float:
    """DADApy's ``_argmax_loglik``: ``_filter_mus`` (ratios of 1 nudged by 10 eps, ratios above
    ``q50 + 20 (q95 - q50)`` dropped), then bisection on [0.001, 1000] to 1e-7 of ``_neg_dloglik_did``,
    ``sum(((1 - n2 + n1) / max(1 - mu^-d, 2e-7) + n2 - 1) log mu) - (N - 1) / d``."""
    mus = r[:, n2 - 1] / r[:, n1 - 1]
    mus[mus == 1] += 10 * np.finfo(np.float64).eps
    q3, q2 = np.percentile(mus, [95, 50])
    mus = mus[mus < 20 * (q3 - q2) + q2]
    n = len(mus)

    def slope(d: float) -> float:
        one_minus = np.maximum(1.0 - mus ** (-d), 2e-7)
        return float(np.sum(((1 - n2 + n1) / one_minus + n2 - 1.0) * np.log(mus)) - (n - 1) / d)

    d0, d1 = 0.001, 1000.0
    l1 = slope(d1)
    while abs(d0 - d1) > 1e-7:
        d2 = (d0 + d1) / 2.0
        if slope(d2) * l1 > 0:
            d1 = d2
        else:
            d0 = d2
    return (d0 + d1) / 2.0


@pytest.mark.skipif(not ORACLE.is_file(), reason="shared/oracles is laid beside the checkout")
def test_dadapy_oracle() -> None:
    points = torch.tensor(json.loads(ORACLE.read_text())["points"], dtype=torch.float64)
    assert abs(twonn(points, fraction=0.9) - 1.85) <= 0.01
    r = neighbour_distances(points.numpy(), 8)
    assert twonn(points, fraction=0.9) == pytest.approx(dadapy_twonn(r), abs=1e-4)
    for n1 in (1, 2, 4):
        assert gride(points, n1) == pytest.approx(dadapy_gride(r, n1, 2 * n1), abs=1e-4)


def test_gride_12_is_the_unbiased_twonn_mle() -> None:
    points = gaussian_manifold(5, n=500).double()
    r = neighbour_distances(points.numpy(), 2)
    log_mu = np.log(r[:, 1] / r[:, 0])
    assert twonn(points, method="mle") == pytest.approx(499 / log_mu.sum(), rel=1e-9)
    assert twonn(points, method="mle", unbiased=False) == pytest.approx(500 / log_mu.sum(), rel=1e-9)
    assert gride(points, 1) == pytest.approx(dadapy_gride(r, 1, 2), abs=1e-6)


def test_gride_scales_follow_dadapy() -> None:
    points = gaussian_manifold(3, n=400).double()
    r = neighbour_distances(points.numpy(), 8)
    rows = gride_scales(points, max_n1=4)
    assert [row["n1"] for row in rows] == [1, 2, 4]
    for row in rows:
        n1 = row["n1"]
        assert row["id"] == pytest.approx(dadapy_gride(r, n1, 2 * n1), abs=1e-4)
        assert row["scale"] == pytest.approx(r[:, [n1 - 1, 2 * n1 - 1]].mean(), rel=1e-9)
    assert rows[0]["id_err"] == pytest.approx(rows[0]["id"] / math.sqrt(400), rel=1e-9)  # n2 - n1 = 1


def test_decimation_follows_dadapy_on_the_same_subsets() -> None:
    points = gaussian_manifold(2, n=800, ambient=10).double()
    subsets = decimation_subsets(800, seed=3)
    # DADApy's sizes: round(800 / 2^i) for i < int(log2 800) - 1 = 8, above n_min = 10
    assert [len(s[0]) for s in subsets] == [800, 400, 200, 100, 50, 25, 12]
    assert [len(s) for s in subsets] == [1, 2, 4, 8, 16, 32, 66]
    for size in subsets:
        together = torch.cat(size)
        assert together.unique().numel() == together.numel()  # disjoint
    rows = twonn_decimation(points, seed=3)
    for row, size in zip(rows, subsets, strict=True):
        ids = np.array([dadapy_twonn(neighbour_distances(points[s].numpy(), 2)) for s in size])
        assert row["id"] == pytest.approx(ids.mean(), abs=1e-4)
        assert row["id_err"] == pytest.approx(ids.std() / math.sqrt(len(ids)), abs=1e-4)
        assert row["subsets"] == len(size) and row["points"] == len(size[0])
    assert 1.7 < rows[2]["id"] < 2.3  # 200 points of a plane


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


def test_max_explained_variance() -> None:
    from probes.compression import max_explained_variance

    line = torch.outer(torch.linspace(-1, 1, 50), torch.tensor([1.0, 2.0, 3.0]))
    assert max_explained_variance(line) == pytest.approx(1.0)
    # two axes with variances 4 : 1 (orthogonal, equal-length +-1 patterns): 4 / 5 on the first
    plane = torch.tensor([[2.0, 1.0], [2.0, -1.0], [-2.0, 1.0], [-2.0, -1.0]])
    assert max_explained_variance(plane) == pytest.approx(0.8)
