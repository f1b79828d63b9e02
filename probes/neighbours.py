"""Exact k-nearest neighbours for the intrinsic-dimension estimators, and duplicate removal.

Three stages, each certified before the next is needed:

1. Candidates: the ``m = k + extra`` smallest squared distances of every point from the fp32 expansion
   ``|y_i|^2 + |y_j|^2 - 2 y_i . y_j`` on centred points ``y`` (symmetric Gram tiles folded by numba on the
   CPU, :mod:`probes.neighbour_kernels`; ``addmm`` and ``topk`` per chunk of rows elsewhere).
2. Refinement: the candidates' distances recomputed from direct differences of the input points in
   float64, O(N m D), and re-ranked. A row is *certified* when a proven lower bound on the distance of
   every point outside its candidate list (:func:`outside_bound`, from the fp32 rounding error of the
   expansion) is at least its refined k-th distance: then no outside point can be nearer, and the refined
   list is the exact one.
3. Fallback: rows that fail are searched again with the expansion in float64 and certified the same way
   (rounding 2^-53 instead of 2^-24); rows that still fail (exact ties at the k-th place) are searched by
   direct differences against every point.

The distances equal float64 brute force (``torch.cdist`` in float64) to float64 rounding, whatever the
data's offset, scale or dimension; float64 input gives float64 distances.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probes.neighbour_kernels import TileFolder, exact_squared

_TILES_UP_TO_M = 32  # list lengths measured faster on tiles than chunks on the CPU (2 cores, AVX2)
_PAIR_BLOCK = 1 << 22  # elements per block of direct differences on non-CPU devices and in the last stage
_MATMUL_INPUT_ROUNDING = {"highest": 0.0, "high": 2.0**-11, "medium": 2.0**-8}  # fp32 matmul modes


@dataclass(frozen=True)
class Neighbours:
    """Exact k nearest neighbours of every point, self excluded.

    Attributes:
        distances: [N, k] Euclidean distances, ascending (float64 for float64 input, else float32).
        indices: [N, k] int64 row numbers of the neighbours (any order among exact ties).
        searched_again: rows whose fp32 candidates could not be certified: ``(float64 expansion, direct
            differences)``.
    """

    distances: torch.Tensor
    indices: torch.Tensor
    searched_again: tuple[int, int]


def outside_bound(
    threshold: torch.Tensor, norms: torch.Tensor, dim: int, unit: float, input_rounding: float = 0.0
) -> torch.Tensor:
    """Proven lower bound on the exact distance from point ``i`` to any point outside its candidate list.

    Notation: ``c`` the exactly centred points, ``y = fl(c)`` their stored copies (``|y - c| <= rho |c|``,
    ``rho = unit``), ``a_j`` the square root of the computed ``|y_j|^2`` (relative error ``eta =
    gamma_{D+2}``, ``gamma_n = n u / (1 - n u)``), ``e_ij`` the computed expansion. Its error is at most
    ``kappa (|y_i| + |y_j|)^2`` with ``kappa = gamma_{D+2} + gamma_D + 2 u_in + 3 u`` (both norms, the dot
    product with inputs rounded by ``u_in`` when the matmul rounds them, three additions; Higham 2002,
    eq. 3.5). A point ``j`` outside the list has ``e_ij >= T_i`` (the list's largest value), so with
    ``t = a_j``:

    - ``h1(t) = sqrt(max(T_i - kappa' (a_i + t)^2, 0)) - rho' (a_i + t)`` (decreasing in ``t``), and
    - ``h2(t) = beta t - a_i / beta`` (the reverse triangle inequality ``|c_i - c_j| >= |c_j| - |c_i|``,
      increasing), with ``kappa' = kappa (1 + eta)^2``, ``rho' = rho (1 + eta) / (1 - rho)``,
      ``beta = (1 - eta)(1 - rho)``,

    both bound ``|c_i - c_j|`` from below. For any ``t0``, ``min_t max(h1, h2) >= min(h1(t0), h2(t0))``;
    ``t0 = min((sqrt(T_i) + a_i) / beta, A)`` (``A`` the largest norm) makes ``h2(t0) >= sqrt(T_i) >=
    h1(t0)``, so the bound is ``h1(t0)``: a far point with a large norm cannot loosen the bound of a
    point with a small one.

    Args:
        threshold: [N] ``T_i``, the largest computed squared distance in each candidate list.
        norms: [N] computed squared norms ``|y_i|^2`` of the centred points.
        dim: D, the points' dimension.
        unit: unit roundoff ``u`` of the expansion's dtype (2^-24 fp32, 2^-53 fp64).
        input_rounding: ``u_in``, rounding of the matmul's inputs (TF32 or bf16 modes), 0 for full precision.

    Returns:
        [N] float64 lower bounds on the distance (not squared; 0 where nothing can be proven).
    """

    def gamma(n: int) -> float:
        return n * unit / (1 - n * unit)

    eta = gamma(dim + 2)
    kappa = (gamma(dim + 2) + gamma(dim) + 2 * input_rounding + 3 * unit) * (1 + eta) ** 2
    rho = unit * (1 + eta) / (1 - unit)
    beta = (1 - eta) * (1 - unit)
    a = norms.double().clamp_min(0).sqrt()
    t0 = ((threshold.double().clamp_min(0).sqrt() + a) / beta).clamp_max(float(a.max()))
    reach = a + t0
    return ((threshold.double() - kappa * reach.square()).clamp_min(0).sqrt() - rho * reach).clamp_min(0)


def _unit(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def _squared_norms(points: torch.Tensor) -> torch.Tensor:
    """``sum_d y_d^2`` per row (error ``gamma_D`` relative, as :func:`outside_bound` assumes). [N]"""
    return points.square().sum(dim=1)


def _chunk_candidates(
    centred: torch.Tensor, norms: torch.Tensor, rows: torch.Tensor, m: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m`` smallest squared distances by the expansion (``addmm`` + ``topk``) for ``rows``, in the
    points' dtype on their device, self excluded. ([R, m] values, [R, m] indices)"""
    values, indices = [], []
    for start in range(0, rows.shape[0], chunk):
        part = rows[start : start + chunk]
        block = torch.addmm(norms[None, :], centred[part], centred.T, alpha=-2)
        block[torch.arange(part.shape[0], device=block.device), part] = float("inf")
        found = block.topk(m, dim=-1, largest=False)
        values.append(found.values + norms[part, None])
        indices.append(found.indices)
    return torch.cat(values), torch.cat(indices)


def _direct_squared(points: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Float64 squared distances from direct differences between ``points[rows[r]]`` and
    ``points[candidates[r, c]]``. [R, m]"""
    if points.device.type == "cpu":
        return torch.from_numpy(exact_squared(points.numpy(), rows.numpy(), candidates.numpy()))
    out = []
    step = max(1, _PAIR_BLOCK // (candidates.shape[1] * points.shape[1]))
    for start in range(0, rows.shape[0], step):
        near = points[candidates[start : start + step]].double()
        out.append((near - points[rows[start : start + step], None].double()).square().sum(-1))
    return torch.cat(out)


def _refine(
    points: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates re-ranked by their exact squared distances; the first ``k``. ([R, k] float64, [R, k])"""
    exact = _direct_squared(points, rows, candidates)
    exact, order = exact.sort(dim=1, stable=True)
    return exact[:, :k], candidates.gather(1, order[:, :k])


def _certified(exact_kth: torch.Tensor, bound: torch.Tensor, dim: int) -> torch.Tensor:
    """Rows whose outside bound reaches the refined k-th squared distance (itself rounded by at most
    ``gamma_{D+3}`` in float64). [R] bool"""
    slack = 1 + (dim + 3) * 2.0**-52
    return bound.square() >= exact_kth * slack


def knn(points: torch.Tensor, k: int, tile: int = 1024, method: str = "auto", extra: int = 2) -> Neighbours:
    """Exact k nearest neighbours of every point (self excluded), certified as described in the module.

    Args:
        points: [N, D] point cloud (float64 stays float64; other dtypes are read as float32).
        k: neighbours per point, ``1 <= k < N``.
        tile: rows per Gram tile (CPU tiles) or per chunk (chunked path).
        method: ``"tiles"`` (CPU: symmetric fp32 Gram tiles folded by numba), ``"chunks"`` (any device:
            ``addmm`` and ``topk`` per chunk of rows) or ``"auto"``: tiles on the CPU up to candidate lists
            of 32, chunks otherwise (N = 5000, D = 256, 2 cores: 63 vs 116 ms at k = 2, 131 vs 181 ms at
            k = 30). Both give the same exact result.
        extra: candidates kept beyond ``k`` per point. More make certification likelier on data whose
            neighbour distances are close together next to their norms, at a little more fold time.

    Returns:
        :class:`Neighbours`: distances [N, k] ascending, indices [N, k], rows searched again.
    """
    n = points.shape[0]
    if points.dim() != 2 or not 1 <= k < n:
        raise ValueError(
            f"k-nearest neighbours need [N, D] points and 1 <= k < N; got k={k}, shape {tuple(points.shape)}"
        )
    if method not in ("auto", "tiles", "chunks"):
        raise ValueError(f"unknown k-NN method {method!r}: use auto, tiles or chunks")
    if extra < 1:
        raise ValueError(f"k-NN certification needs at least one extra candidate; got extra={extra}")
    source = points.detach()
    source = source if source.dtype == torch.float64 else source.float()
    source = source.contiguous()
    dim, m = source.shape[1], min(k + extra, n - 1)
    centred = (source - source.mean(dim=0)).float()
    norms = _squared_norms(centred)
    rows = torch.arange(n, device=source.device)
    if method == "auto":
        method = "tiles" if source.device.type == "cpu" and m <= _TILES_UP_TO_M else "chunks"
    if method == "tiles":
        approx, candidates = TileFolder(centred.cpu(), norms.cpu(), m, tile).run()
        approx, candidates = approx.to(source.device), candidates.to(source.device)
    else:
        approx, candidates = _chunk_candidates(centred, norms, rows, m, tile)
    squared, indices = _refine(source, rows, candidates, k)
    rounding = _MATMUL_INPUT_ROUNDING.get(torch.get_float32_matmul_precision(), 2.0**-8)
    bound = outside_bound(approx[:, -1], norms, dim, _unit(torch.float32) * (1 + 2.0**-28), rounding)
    failed = rows[~_certified(squared[:, k - 1], bound, dim)]
    again = (failed.numel(), 0)
    if failed.numel():
        direct = _search_again(source, failed, k, m, tile, squared, indices)
        again = (failed.numel(), direct)
    distances = squared.sqrt().to(source.dtype)
    return Neighbours(distances, indices, again)


def _search_again(
    source: torch.Tensor,
    failed: torch.Tensor,
    k: int,
    m: int,
    tile: int,
    squared: torch.Tensor,
    indices: torch.Tensor,
) -> int:
    """Stage 3 of the module: the float64 expansion for the ``failed`` rows, certified, then direct
    differences against every point for the rows that still fail. Writes into ``squared`` and ``indices``
    and returns the number of rows searched directly."""
    centred = source.double() - source.double().mean(dim=0)
    norms = _squared_norms(centred)
    approx, candidates = _chunk_candidates(centred, norms, failed, m, tile)
    exact, found = _refine(source, failed, candidates, k)
    bound = outside_bound(approx[:, -1], norms[failed], source.shape[1], _unit(torch.float64))
    ok = _certified(exact[:, k - 1], bound, source.shape[1])
    squared[failed[ok]], indices[failed[ok]] = exact[ok], found[ok]
    direct = failed[~ok]
    everyone = torch.arange(source.shape[0], device=source.device)
    step = max(1, _PAIR_BLOCK // (source.shape[0] * source.shape[1]))
    for start in range(0, direct.numel(), step):
        part = direct[start : start + step]
        exact = _direct_squared(source, part, everyone.expand(part.numel(), -1).contiguous())
        exact[torch.arange(part.numel()), part] = float("inf")
        best = exact.topk(k, dim=1, largest=False, sorted=True)
        squared[part], indices[part] = best.values, best.indices
    return direct.numel()


def knn_distances(
    points: torch.Tensor, k: int, tile: int = 1024, method: str = "auto", drop_duplicates: bool = False
) -> torch.Tensor:
    """Exact Euclidean distances to the ``k`` nearest neighbours of every point (see :func:`knn`). [N, k]

    Args:
        points: [N, D] point cloud.
        k: neighbours per point, ``1 <= k < N``.
        tile: rows per tile (CPU tiles) or per chunk (chunked path).
        method: ``"tiles"``, ``"chunks"`` or ``"auto"`` (see :func:`knn`).
        drop_duplicates: return the distances among the distinct points instead (one row per distinct
            point; a zero nearest distance breaks the ratio estimators, and DADApy removes identical points
            too). The distances are exact, so a point has a duplicate exactly when its nearest distance is 0.

    Returns:
        [N, k] distances on the points' device (fewer rows with ``drop_duplicates``).
    """
    distances = knn(points, k, tile, method).distances
    if drop_duplicates and bool((distances[:, 0] == 0).any()):
        unique = distinct(points)
        if unique.shape[0] <= k:
            raise ValueError(
                f"k-nearest neighbours need 1 <= k < N distinct points; got k={k}, N={unique.shape[0]}"
            )
        return knn(unique, k, tile, method).distances
    return distances


def distinct(points: torch.Tensor) -> torch.Tensor:
    """The distinct rows of ``points`` (exact duplicates removed; sorted, as ``torch.unique`` returns them).
    Token representations repeat: the first token of every prompt."""
    return torch.unique(points.detach() if points.dtype == torch.float64 else points.detach().float(), dim=0)
