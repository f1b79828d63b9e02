"""Exact k-NN distances (CPU tiles and chunked top-k) against float64 brute force, and duplicate removal."""

from __future__ import annotations

import pytest
import torch

from probes.neighbours import distinct, knn_distances


def brute_force(points: torch.Tensor, k: int) -> torch.Tensor:
    """k smallest float64 distances per row, self excluded. [N, k]"""
    distances = torch.cdist(points.double(), points.double())
    distances.fill_diagonal_(float("inf"))
    return distances.topk(k, dim=1, largest=False).values


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
def test_knn_matches_float64_brute_force(method: str, n: int, dim: int, tile: int, k: int) -> None:
    generator = torch.Generator().manual_seed(n + k)
    points = torch.randn(n, dim, generator=generator) * torch.rand(dim, generator=generator) + 5.0
    got = knn_distances(points, k, tile=tile, method=method)
    assert got.shape == (n, k) and got.dtype == torch.float32
    assert torch.allclose(got.double(), brute_force(points, k), rtol=1e-4, atol=1e-5)


def test_knn_on_a_lattice_with_tied_distances() -> None:
    axis = torch.arange(12, dtype=torch.float32)
    grid = torch.cartesian_prod(axis, axis, axis)  # 1728 points, every neighbour distance tied many times
    for method in ("tiles", "chunks"):
        got = knn_distances(grid, 6, tile=500, method=method)
        assert torch.allclose(got.double(), brute_force(grid, 6), atol=1e-4)


def test_knn_all_neighbours_and_methods_agree() -> None:
    points = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    tiles = knn_distances(points, 39, tile=16, method="tiles")
    assert torch.allclose(tiles.double(), brute_force(points, 39), rtol=1e-4)
    assert torch.allclose(knn_distances(points, 2), knn_distances(points, 2, method="chunks"), rtol=1e-5)


@pytest.mark.parametrize(("k", "method"), [(0, "auto"), (40, "auto"), (2, "kd-tree")])
def test_knn_rejects_bad_arguments(k: int, method: str) -> None:
    with pytest.raises(ValueError, match=r"k-nearest neighbours need|unknown k-NN method"):
        knn_distances(torch.randn(40, 3), k, method=method)


def test_drop_duplicates_removes_exact_duplicates_only() -> None:
    points = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    near = points[:5] + 0.05  # near-duplicates are different points and stay
    repeated = torch.cat([points, points[:50], near, points[:1]])
    expected = brute_force(torch.unique(torch.cat([points, near]), dim=0), 3)
    for method in ("tiles", "chunks"):
        got = knn_distances(repeated, 3, method=method, drop_duplicates=True)
        assert got.shape == (305, 3)
        assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-5)
        kept = knn_distances(torch.cat([points, near]), 3, method=method, drop_duplicates=True)
        assert kept.shape == (305, 3)  # nothing to drop: the near-duplicates are distinct points
    assert torch.equal(distinct(repeated), torch.unique(torch.cat([points, near]), dim=0))
