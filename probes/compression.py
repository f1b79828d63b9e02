"""Semantic compression depth: intrinsic dimension, effective rank, entropy, CKA and anisotropy.

Definitions follow ``shared/PROBES.md`` ("Semantic compression depth"). Inputs are point clouds [N, D]
(token or prompt representations of one layer); nearest-neighbour distances come from
:mod:`probes.neighbours` (exact, tiled, CPU or GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from probes.figures import heatmap, id_profile, lines_by_group
from probes.neighbours import knn_distances
from probes.params import NoParams, param
from probes.registry import Context, Needs, Probe, per_model
from workbench.numerics import entropy


def twonn(points: torch.Tensor, fraction: float = 0.9, method: str = "lsq", unbiased: bool = True) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017) of a point cloud [N, D]; duplicate points are removed
    first. See :func:`twonn_from_distances`."""
    return twonn_from_distances(knn_distances(points, 2, drop_duplicates=True), fraction, method, unbiased)


def twonn_from_distances(
    distances: torch.Tensor, fraction: float = 0.9, method: str = "lsq", unbiased: bool = True
) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017) from ascending neighbour distances [N, k >= 2].

    ``mu_i = r2 / r1``. ``lsq``: with the ratios sorted and ``F_i = i / N``, fit ``-log(1 - F) = d log mu``
    through the origin on the smallest ``fraction`` of them (0.9 as DADApy; Valeriani et al. use 0.98).
    ``mle``: ``d = (N - 1) / sum log mu`` as DADApy, which GRIDE(1, 2) equals when its ratio filter keeps
    every point (``unbiased=False``: ``N / sum log mu``, the plain maximum likelihood).
    """
    r = distances.double()
    mu = r[:, 1] / r[:, 0]
    mu = mu[torch.isfinite(mu)].sort().values  # a zero distance (duplicates left in) has no ratio
    n = mu.shape[0]
    if method == "mle":
        return float(((n - 1) if unbiased else n) / mu.log().sum())
    keep = int(n * fraction)
    x = mu[:keep].log()
    y = -torch.log(1 - torch.arange(1, n + 1, dtype=torch.float64)[:keep] / n)
    return float((x * y).sum() / (x * x).sum())


def gride(points: torch.Tensor, n1: int = 1, n2: int | None = None) -> float:
    """GRIDE (Denti et al. 2022) of a point cloud [N, D]; duplicate points are removed first. See
    :func:`gride_from_distances`."""
    n2 = 2 * n1 if n2 is None else n2
    return gride_from_distances(knn_distances(points, n2, drop_duplicates=True), n1, n2)


def _ratios(distances: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """The finite ``mu = r_{n2} / r_{n1}`` in float64 (a zero distance, duplicates left in, has none). [N']"""
    r = distances.double()
    mu = r[:, n2 - 1] / r[:, n1 - 1]
    return mu[torch.isfinite(mu)]


def _gride_ratios(distances: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """:func:`_ratios` as DADApy's ``_filter_mus`` keeps them: ratios equal to 1 (ties) nudged to
    ``1 + 10 eps``, ratios above ``q50 + 20 (q95 - q50)`` (overlapping points) dropped. [N']"""
    mu = _ratios(distances, n1, n2)
    mu = torch.where(mu == 1, mu + 10 * torch.finfo(torch.float64).eps, mu)
    q95, q50 = torch.quantile(mu, torch.tensor([0.95, 0.5], dtype=torch.float64)).tolist()
    return mu[mu < q50 + 20 * (q95 - q50)]


def gride_from_distances(distances: torch.Tensor, n1: int = 1, n2: int | None = None) -> float:
    """GRIDE (Denti et al. 2022): maximum-likelihood ID from ratios of the ``n2``-th to the ``n1``-th
    neighbour distance (``n2 = 2 n1`` by default), given ascending neighbour distances [N, k >= n2].

    ``mu = r_{n2} / r_{n1}`` has density ``d (mu^d - 1)^{n2-n1-1} / (B(n2-n1, n1) mu^{(n2-1) d + 1})``
    (Denti et al. 2022, the density of the ratio of neighbour distances). As DADApy
    (``_argmax_loglik``), the ratios are filtered (:func:`_gride_ratios`) and the likelihood carries
    ``(N - 1) log d``: ``d`` is the root of ``sum_i ((n1 - n2 + 1) / (1 - mu_i^-d) + n2 - 1) log mu_i =
    (N - 1) / d``, found by bisection on [1e-3, 1e3] to 1e-7. GRIDE(1, 2) is ``(N - 1) / sum log mu``,
    the TwoNN MLE.
    """
    n2 = 2 * n1 if n2 is None else n2
    mu = _gride_ratios(distances, n1, n2)
    log_mu, n = mu.log(), mu.numel()
    if n2 - n1 == 1:  # the slope is linear in 1 / d
        return float((n - 1) / ((n2 - 1) * log_mu.sum()))

    def slope(d: float) -> float:  # DADApy's _neg_dloglik_did, regularised the same way
        one_minus = (1 - mu ** (-d)).clamp_min(2e-7)
        return float((((1 - n2 + n1) / one_minus + n2 - 1) * log_mu).sum() - (n - 1) / d)

    low, high = 1e-3, 1e3
    at_high = slope(high)
    while high - low > 1e-7:
        middle = (low + high) / 2
        if slope(middle) * at_high > 0:
            high = middle
        else:
            low = middle
    return (low + high) / 2


def _gride_error(distances: torch.Tensor, d: float, n1: int, n2: int) -> float:
    """DADApy's error of a GRIDE estimate: ``1 / sqrt(I(d))`` with the Fisher information ``N / d^2 +
    sum (n2 - n1 - 1) (log mu / (1 - mu^-d))^2 mu^-d`` (``_fisher_info_scaling``) on all ratios."""
    mu = _ratios(distances, n1, n2)
    one_minus = (1 - mu ** (-d)).clamp_min(5 * torch.finfo(torch.float64).eps)
    info = mu.numel() / d**2 + ((n2 - n1 - 1) * (mu.log() / one_minus).square() * mu ** (-d)).sum()
    return float(info**-0.5)


def gride_scales(points: torch.Tensor, max_n1: int = 16) -> list[dict[str, float]]:
    """The multiscale GRIDE curve as DADApy's ``return_id_scaling_gride``: GRIDE(n1, 2 n1) at ``n1 = 1, 2,
    4, ...`` up to ``max_n1`` (and ``2 n1 < N``), one neighbour search for all of them.

    Returns:
        One row per scale: ``n1``, ``n2``, ``id``, ``id_err`` (:func:`_gride_error`) and ``scale``, the mean
        of the ``n1``-th and ``n2``-th neighbour distances.
    """
    scales, n1 = [], 1
    while n1 <= max_n1 and 2 * n1 < points.shape[0]:
        scales.append(n1)
        n1 *= 2
    if not scales:
        return []
    distances = knn_distances(points, 2 * scales[-1], drop_duplicates=True)  # one search for every scale
    rows = []
    for n1 in scales:
        d = gride_from_distances(distances, n1)
        rows.append(
            {
                "n1": n1,
                "n2": 2 * n1,
                "id": d,
                "id_err": _gride_error(distances, d, n1, 2 * n1),
                "scale": float(distances[:, [n1 - 1, 2 * n1 - 1]].double().mean()),
            }
        )
    return rows


def effective_rank(matrix: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(H(p))`` with ``p = s / sum s`` of the singular values.
    Identity 64 -> 64; rank one -> 1; diag(2, 1) -> 1.8899."""
    s = torch.linalg.svdvals(matrix.double())
    p = s[s > 0] / s.sum()
    return float(torch.exp(entropy(p)))


def prompt_entropy(tokens: torch.Tensor, alpha: float = 1.0) -> float:
    """Matrix-based Renyi entropy of a prompt's token Gram matrix (Skean et al. 2025; Giraldo et al. 2014).

    ``K = Z Z^T / tr(Z Z^T)`` with ``Z`` the L2-normalised token representations [T, D];
    ``S_alpha = log(sum_i lambda_i^alpha) / (1 - alpha)``, and for ``alpha = 1`` the von Neumann entropy
    ``-sum lambda log lambda``. 16 orthonormal tokens -> log 16; identical tokens -> 0.
    """
    z = torch.nn.functional.normalize(tokens.double(), dim=-1)
    gram = z @ z.T
    eigen = torch.linalg.eigvalsh(gram / gram.trace()).clamp_min(0)
    eigen = eigen[eigen > 1e-12]
    if alpha == 1.0:
        return float(entropy(eigen))
    return float(torch.log((eigen**alpha).sum()) / (1 - alpha))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred [N, D]
    representations. Invariant to orthogonal transforms and isotropic scaling: CKA(X, 3XQ + 5) = 1."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def anisotropy(points: torch.Tensor, pairs: int = 2000, seed: int = 0) -> float:
    """Anisotropy (Ethayarajh 2019): mean cosine similarity between random pairs of representations."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randint(points.shape[0], (pairs,), generator=generator)
    b = torch.randint(points.shape[0], (pairs,), generator=generator)
    keep = a != b
    return float(
        torch.nn.functional.cosine_similarity(points[a[keep]].float(), points[b[keep]].float()).mean()
    )


def max_explained_variance(points: torch.Tensor) -> float:
    """Share of the total variance along the first principal component (1 = all variance on one axis)."""
    centred = points.double() - points.double().mean(0)
    s = torch.linalg.svdvals(centred) ** 2
    return float(s[0] / s.sum())


def decimation_subsets(n: int, n_min: int = 10, seed: int = 0) -> list[list[torch.Tensor]]:
    """The subsets of Facco et al. 2017's scale analysis: sizes ``round(N / 2^i)`` for ``i < log2(N) - 1``
    above ``n_min`` (DADApy's ``return_id_scaling_2NN``), and for each size the ``N // size`` disjoint
    subsets of one seeded permutation (all N points at the first size)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(n / 2**i) for i in range(int(math.log2(n)) - 1)]
    return [[order[j * size : (j + 1) * size] for j in range(n // size)] for size in sizes if size > n_min]


def twonn_decimation(
    points: torch.Tensor, n_min: int = 10, fraction: float = 0.9, seed: int = 0
) -> list[dict[str, float]]:
    """TwoNN at decreasing sample sizes (Facco et al. 2017, section "Scale analysis"; DADApy's
    ``return_id_scaling_2NN``): at each size of :func:`decimation_subsets`, TwoNN on every disjoint subset,
    averaged. A plateau marks the scale where the estimate is trustworthy.

    Returns:
        One row per size: ``points``, ``subsets``, ``id`` (the mean), ``id_std`` (their standard deviation)
        and ``id_err = id_std / sqrt(subsets)``, DADApy's error of the mean.
    """
    rows = []
    for subsets in decimation_subsets(points.shape[0], n_min, seed):
        ids = torch.tensor([twonn(points[subset], fraction) for subset in subsets], dtype=torch.float64)
        std = float(ids.std(correction=0))
        rows.append(
            {
                "points": len(subsets[0]),
                "subsets": len(subsets),
                "id": float(ids.mean()),
                "id_std": std,
                "id_err": std / math.sqrt(len(subsets)),
            }
        )
    return rows


def pool(hidden: torch.Tensor, how: str) -> torch.Tensor:
    """One prompt's [pos, d] representations pooled: ``last`` [1, d], ``mean`` [1, d], ``all`` [pos, d]."""
    if how == "last":
        return hidden[-1:]
    if how == "mean":
        return hidden.mean(0, keepdim=True)
    if how == "all":
        return hidden
    raise ValueError(f"unknown pooling {how!r}; use last, mean or all")


def id_summaries(profile: list[float]) -> dict[str, int | float | None]:
    """Both published readings of an ID profile over layers.

    ``abstraction_peak`` (Cheng et al. 2025): the layer of the ID maximum away from the ends (mid-depth
    peak). ``semantic_minimum`` (Valeriani et al. 2023): the ID minimum after the first local peak. Their
    ratio ``peak_id / minimum_id`` is reported too.
    """
    n = len(profile)
    inner = range(1, n - 1) if n > 2 else range(n)
    peak = max(inner, key=lambda i: profile[i])
    first_peak = next(
        (i for i in range(1, n - 1) if profile[i] >= profile[i - 1] and profile[i] >= profile[i + 1]), peak
    )
    after = range(first_peak + 1, n)
    minimum = min(after, key=lambda i: profile[i]) if after else None
    return {
        "abstraction_peak": peak,
        "semantic_minimum": minimum,
        "peak_over_minimum": profile[peak] / profile[minimum]
        if minimum is not None and profile[minimum] > 0
        else None,
    }


def cka_matrix(layers: list[torch.Tensor]) -> torch.Tensor:
    """Layer x layer linear CKA of representations [N, D] (same N rows in every layer)."""
    n = len(layers)
    grid = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            grid[i, j] = grid[j, i] = linear_cka(layers[i], layers[j])
    return grid


def cka_blocks(grid: torch.Tensor, threshold: float = 0.9) -> list[tuple[int, int]]:
    """Runs of consecutive layers whose CKA with the run's first layer stays >= ``threshold`` (block
    structure, Nguyen et al. 2021): ``[(start, end), ...]`` inclusive."""
    blocks, start = [], 0
    for layer in range(1, grid.shape[0] + 1):
        if layer == grid.shape[0] or grid[start, layer] < threshold:
            blocks.append((start, layer - 1))
            start = layer
    return blocks


def subsample(points: torch.Tensor, max_points: int = 2000) -> torch.Tensor:
    """At most ``max_points`` rows of ``points`` [N, D], drawn with seed 0 (the same rows for any two clouds
    of one size)."""
    if points.shape[0] <= max_points:
        return points
    return points[torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(0))[:max_points]]


def compression_profile(
    hidden_by_layer: list[list[torch.Tensor]], pooling: str = "all", max_points: int = 2000
) -> list[dict]:
    """Per layer: TwoNN (90% and 98%), GRIDE(2, 4), effective rank, anisotropy, max explained variance,
    and the mean prompt entropy, on pooled representations; ``pooling`` is recorded in every row.

    Args:
        hidden_by_layer: For each layer, one [pos, d] tensor per prompt.
        pooling: ``last``, ``mean`` or ``all`` (see :func:`pool`).
        max_points: Subsample pooled points to at most this many (seeded) for the distance-based estimators.
    """
    rows = []
    for layer, prompts in enumerate(hidden_by_layer):
        points = subsample(torch.cat([pool(h.float(), pooling) for h in prompts]), max_points)
        with_gride = points.shape[0] > 8
        distances = knn_distances(points, 4 if with_gride else 2, drop_duplicates=True)  # one search
        rows.append(
            {
                "layer": layer,
                "pooling": pooling,
                "points": points.shape[0],
                "twonn_90": twonn_from_distances(distances, 0.9),
                "twonn_98": twonn_from_distances(distances, 0.98),
                "gride_2_4": gride_from_distances(distances, 2) if with_gride else float("nan"),
                "effective_rank": effective_rank(points),
                "anisotropy": anisotropy(points),
                "max_explained_variance": max_explained_variance(points),
                "prompt_entropy": sum(prompt_entropy(h) for h in prompts) / len(prompts),
            }
        )
    return rows


# -- registered probes ----------------------------------------------------------------------------------

RESIDUALS = r"blocks\.\d+\.hook_resid_post"


@dataclass(frozen=True)
class CompressionParams:
    """How each prompt's positions are pooled."""

    pooling: str = param("all", choices=("all", "last", "mean"))


def _hidden(ctx: Context) -> list[list[torch.Tensor]]:
    result = ctx.capture(RESIDUALS)
    return [result[f"blocks.{i}.hook_resid_post"] for i in range(ctx.model.cfg.n_layers)]


COMPRESSION = Probe(
    name="compression",
    doc="Per-layer TwoNN, GRIDE, effective rank, anisotropy, explained variance, prompt entropy.",
    formula="TwoNN: d = -log(1 - F(mu)) / log(mu) fitted on mu = r2 / r1 (the 90% or 98% smallest); "
    "GRIDE(2, 4) maximum likelihood on r4 / r2; effective rank exp(H(s / sum s)); prompt entropy "
    "-sum lambda log lambda of the normalised token Gram matrix",
    cite="Facco et al. 2017 (TwoNN, Sci. Rep. 7:12140); Denti et al. 2022 (GRIDE, Sci. Rep. 12:20005); "
    "Roy & Vetterli 2007 (effective rank); Skean et al. 2025 (prompt entropy, arXiv 2502.02013)",
    run=lambda ctx, params: pd.DataFrame(compression_profile(_hidden(ctx), params.pooling)),
    params=CompressionParams,
    needs=Needs(points=(RESIDUALS,)),
    figures=lambda t: [
        ("all", lines_by_group(t, "layer", "twonn_90", "model", "TwoNN intrinsic dimension per layer")),
        *per_model(
            t, lambda r, m: id_profile(r, id_summaries(r.twonn_90.tolist()), title=f"ID profile, {m}")
        ),
    ],
    summary=lambda t: pd.DataFrame(
        [
            {"model": m, "twonn_90_max": rows.twonn_90.max(), **id_summaries(rows.twonn_90.tolist())}
            for m, rows in t.groupby("model", sort=False)
        ]
    ),
)


def _cka(ctx: Context, params: NoParams) -> pd.DataFrame:
    grid = cka_matrix([torch.cat(h) for h in _hidden(ctx)])
    return pd.DataFrame(
        [{"i": i, "j": j, "cka": float(grid[i, j])} for i in range(len(grid)) for j in range(len(grid))]
    )


CKA = Probe(
    name="cka",
    doc="Linear CKA between the token representations of every pair of layers.",
    formula="CKA(X, Y) = |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F) on centred X, Y [tokens, d]",
    cite="Kornblith et al. 2019, Similarity of Neural Network Representations Revisited (ICML), Eq. 6",
    run=_cka,
    needs=Needs(points=(RESIDUALS,)),
    figures=lambda t: per_model(
        t, lambda r, m: heatmap(r, "i", "j", "cka", f"Linear CKA layer x layer, {m}")
    ),
    summary=lambda t: pd.DataFrame(
        [
            {"model": m, "cka_blocks": str(cka_blocks(cka_grid(rows)))}
            for m, rows in t.groupby("model", sort=False)
        ]
    ),
)


def cka_grid(rows: pd.DataFrame) -> torch.Tensor:
    """One model's rows of a ``cka`` table back as the layer x layer matrix. [layer, layer]"""
    return torch.tensor(rows.pivot(index="i", columns="j", values="cka").values)
