"""Exact k-NN (fp32 candidates, float64 refinement, certified fallbacks) against float64 brute force."""

from __future__ import annotations

import math

import pytest
import torch

from probes.neighbours import distinct, knn, knn_distances, outside_bound


def brute_force(points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest float64 distances per row from direct differences (no ``|x|^2 + |y|^2 - 2 x.y``
    expansion), self excluded, and their indices. ([N, k], [N, k])"""
    x = points.double()
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    distances.fill_diagonal_(float("inf"))
    found = distances.topk(k, dim=1, largest=False)
    return found.values, found.indices


def assert_exact(points: torch.Tensor, k: int, **options: object) -> None:
    """Distances within 1e-6 relative of float64 brute force; neighbour sets equal except exact ties (a
    differing neighbour must sit at exactly the brute-force k-th distance)."""
    got = knn(points, k, **options)
    expected, expected_ids = brute_force(points, k)
    assert got.distances.shape == (points.shape[0], k) and got.indices.dtype == torch.int64
    torch.testing.assert_close(got.distances.double(), expected, rtol=1e-6, atol=0)
    x = points.double()
    own = (x[got.indices] - x[:, None]).square().sum(-1).sqrt()  # the reported neighbours' true distances
    torch.testing.assert_close(own, expected, rtol=1e-12, atol=0)
    for row in (got.indices.sort(1).values != expected_ids.sort(1).values).any(1).nonzero().flatten():
        ties = set(got.indices[row].tolist()) ^ set(expected_ids[row].tolist())
        assert all(
            math.dist(x[row], x[j]) == pytest.approx(float(expected[row, -1]), rel=1e-12) for j in ties
        )


def circle(n: int) -> torch.Tensor:
    """Points on the unit circle in R^2 at uniform random angles (seed 0): fp32 expansion fails here."""
    angle = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 * math.pi
    return torch.stack([angle.cos(), angle.sin()], dim=1).float()


def twonn_float64(points: torch.Tensor) -> float:
    """TwoNN (Facco et al. 2017, DADApy's fit): least squares through the origin of ``-log(1 - i/N)`` on
    the sorted ``log(r2 / r1)``, the smallest 90%, from float64 brute-force distances."""
    r, _ = brute_force(points, 2)
    log_mu = (r[:, 1] / r[:, 0]).log().sort().values
    n = log_mu.shape[0]
    keep = int(0.9 * n)
    y = -torch.log(1 - torch.arange(1, keep + 1, dtype=torch.float64) / n)
    return float((log_mu[:keep] * y).sum() / log_mu[:keep].square().sum())


@pytest.mark.slow
@pytest.mark.parametrize("n", [500, 1000, 2000, 4000, 8000])
def test_dense_circle_is_exact_and_twonn_follows(n: int) -> None:
    from probes.compression import twonn

    points = circle(n)
    assert_exact(points, 2)
    assert twonn(points) == pytest.approx(twonn_float64(points), rel=0.03)


def test_swiss_roll_and_an_offset_plane_are_exact() -> None:
    generator = torch.Generator().manual_seed(3)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(1500, generator=generator, dtype=torch.float64))
    height = 21 * torch.rand(1500, generator=generator, dtype=torch.float64)
    roll = torch.stack([t * t.cos(), height, t * t.sin()], dim=1)
    assert_exact(roll.float(), 4)
    assert_exact(roll, 4)  # float64 input
    basis = torch.linalg.qr(torch.randn(256, 256, generator=generator)).Q[:2]
    plane = torch.randn(1500, 2, generator=generator) @ basis + 1e3 * torch.randn(256, generator=generator)
    assert_exact(plane, 3)


def test_near_duplicates_are_exact() -> None:
    generator = torch.Generator().manual_seed(4)
    base = torch.randn(400, 32, generator=generator) + 10
    ulps = torch.randint(1, 4, (400, 32), generator=generator) * torch.finfo(torch.float32).eps * 10
    near = base + ulps  # a few fp32 ulps away: far below the expansion's rounding error
    assert_exact(torch.cat([base, near]), 3)


def test_float64_input_stays_float64_and_beats_fp32_resolution() -> None:
    base = torch.randn(300, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    points = torch.cat([base, base + 1e-10])  # 1e-10 apart: invisible in fp32
    got = knn(points, 1)
    assert got.distances.dtype == torch.float64
    torch.testing.assert_close(
        got.distances[:, 0], torch.full((600,), 1e-10 * math.sqrt(8), dtype=torch.float64)
    )
    assert torch.equal(got.indices[:300, 0], torch.arange(300, 600))


@pytest.mark.parametrize("method", ["tiles", "chunks"])
@pytest.mark.parametrize(
    ("n", "dim", "tile"),
    [
        (1300, 48, 1024),  # diagonal tiles halved twice (1024 -> 512 -> 256), a ragged last tile
        (777, 5, 100),  # many ragged tiles, rows narrower than 16 lanes at the end
        (60, 3, 7),  # tiles narrower than one 16-wide lane group
    ],
)
@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_both_paths_match_brute_force(method: str, n: int, dim: int, tile: int, k: int) -> None:
    generator = torch.Generator().manual_seed(n + k)
    points = torch.randn(n, dim, generator=generator) * torch.rand(dim, generator=generator) + 5.0
    assert_exact(points, k, tile=tile, method=method)


def test_lattice_with_tied_distances() -> None:
    axis = torch.arange(12, dtype=torch.float32)
    grid = torch.cartesian_prod(axis, axis, axis)  # 1728 points, every neighbour distance tied many times
    for method in ("tiles", "chunks"):
        got = knn(grid, 6, tile=500, method=method)
        assert got.searched_again[1] > 0  # ties at the k-th place cannot be certified: direct search
        assert_exact(grid, 6, tile=500, method=method)


def test_all_neighbours() -> None:
    points = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    assert_exact(points, 39, tile=16, method="tiles")


@pytest.mark.parametrize("data", ["gaussian", "circle"])
def test_outside_bound_is_a_lower_bound_and_not_vacuous(data: str) -> None:
    """On an fp32 expansion computed here: the bound stays below the exact distance of every point outside
    the m smallest (on the circle the expansion's rounding is as large as the distances), and close to the
    threshold's own distance on well-separated data (it is not vacuous)."""
    generator = torch.Generator().manual_seed(6)
    points = torch.randn(500, 64, generator=generator) if data == "gaussian" else circle(3000)
    centred = points - points.mean(0)
    norms = centred.square().sum(1)
    expansion = norms[:, None] + norms[None, :] - 2 * centred @ centred.T
    expansion.fill_diagonal_(float("inf"))
    values, order = expansion.sort(dim=1)
    m = 5
    bound = outside_bound(values[:, m - 1], norms, points.shape[1], 2.0**-24)
    x = points.double()
    exact = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    outside = exact.gather(1, order[:, m:-1]).min(1).values  # the last column is the point itself
    assert bool((outside >= bound).all())
    if data == "gaussian":
        assert bool((bound > 0.99 * values[:, m - 1].double().sqrt()).all())


@pytest.mark.parametrize(
    ("k", "method", "extra"), [(0, "auto", 2), (40, "auto", 2), (2, "kd-tree", 2), (2, "auto", 0)]
)
def test_knn_rejects_bad_arguments(k: int, method: str, extra: int) -> None:
    with pytest.raises(ValueError, match=r"k-nearest neighbours need|unknown k-NN method|extra candidate"):
        knn(torch.randn(40, 3), k, method=method, extra=extra)


def test_drop_duplicates_removes_exact_duplicates_only() -> None:
    points = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    near = points[:5] + 0.05  # near-duplicates are different points and stay
    repeated = torch.cat([points, points[:50], near, points[:1]])
    unique = torch.unique(torch.cat([points, near]), dim=0)
    expected, _ = brute_force(unique, 3)
    for method in ("tiles", "chunks"):
        got = knn_distances(repeated, 3, method=method, drop_duplicates=True)
        assert got.shape == (305, 3)
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)
        kept = knn_distances(torch.cat([points, near]), 3, method=method, drop_duplicates=True)
        assert kept.shape == (305, 3)  # nothing to drop: the near-duplicates are distinct points
    assert torch.equal(distinct(repeated), unique)
