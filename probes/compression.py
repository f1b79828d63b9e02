"""Semantic compression depth: intrinsic dimension, effective rank, entropy, CKA and anisotropy.

Definitions follow ``shared/PROBES.md`` ("Semantic compression depth"). Inputs are point clouds [N, D]
(token or prompt representations of one layer); distances are computed in row chunks with torch, so the
functions run on CPU or GPU and never hold more than ``chunk x N`` distances.
"""

from __future__ import annotations

import math

import torch


def knn_distances(points: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distances to the ``k`` nearest neighbours of every point (self excluded), ascending. [N, k]"""
    points = points.float()
    out = []
    for start in range(0, points.shape[0], chunk):
        block = torch.cdist(points[start : start + chunk], points)
        block[torch.arange(block.shape[0]), torch.arange(start, start + block.shape[0])] = float("inf")
        out.append(block.topk(k, dim=-1, largest=False).values)
    return torch.cat(out)


def twonn(points: torch.Tensor, fraction: float = 0.9, method: str = "lsq", unbiased: bool = True) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017).

    ``mu_i = r2 / r1``. ``lsq``: with the ratios sorted and ``F_i = i / N``, fit ``-log(1 - F) = d log mu``
    through the origin on the smallest ``fraction`` of them (0.9 as DADApy; Valeriani et al. use 0.98).
    ``mle``: ``d = (N - 1) / sum log mu`` (``unbiased=False``: ``N / sum log mu``, the plain maximum
    likelihood, which GRIDE(1, 2) equals).
    """
    r = knn_distances(points, 2).double()
    mu = (r[:, 1] / r[:, 0]).sort().values
    n = mu.shape[0]
    if method == "mle":
        return float(((n - 1) if unbiased else n) / mu.log().sum())
    keep = int(n * fraction)
    x = mu[:keep].log()
    y = -torch.log(1 - torch.arange(1, n + 1, dtype=torch.float64)[:keep] / n)
    return float((x * y).sum() / (x * x).sum())


def gride(points: torch.Tensor, n1: int = 1, n2: int | None = None) -> float:
    """GRIDE (Denti et al. 2022): maximum-likelihood ID from ratios of the ``n2``-th to the ``n1``-th
    neighbour distance (``n2 = 2 n1`` by default).

    ``mu = r_{n2} / r_{n1}`` has density ``d (mu^d - 1)^{n2-n1-1} / (B(n2-n1, n1) mu^{(n2-1) d + 1})``;
    the log-likelihood is maximised over ``d`` by golden-section search. GRIDE(1, 2) is ``N / sum log mu``.
    """
    n2 = 2 * n1 if n2 is None else n2
    r = knn_distances(points, n2).double()
    log_mu = (r[:, n2 - 1] / r[:, n1 - 1]).log()
    if n2 - n1 == 1 and n1 == 1:
        return float(log_mu.numel() / log_mu.sum())

    def loglik(d: float) -> float:
        terms = math.log(d) + (n2 - n1 - 1) * torch.log(torch.expm1(d * log_mu)) - ((n2 - 1) * d + 1) * log_mu
        return float(terms.sum())

    low, high = 1e-3, 1e3
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loglik(a) < loglik(b):
            low = a
        else:
            high = b
    return (low + high) / 2


def gride_scales(points: torch.Tensor, max_n1: int = 16) -> dict[int, float]:
    """GRIDE at ``n1 = 1, 2, 4, ...`` (the multiscale ID curve)."""
    scales, n1 = {}, 1
    while n1 <= max_n1 and 2 * n1 < points.shape[0]:
        scales[n1] = gride(points, n1)
        n1 *= 2
    return scales


def effective_rank(matrix: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(H(p))`` with ``p = s / sum s`` of the singular values.
    Identity 64 -> 64; rank one -> 1; diag(2, 1) -> 1.8899."""
    s = torch.linalg.svdvals(matrix.double())
    p = s[s > 0] / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


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
        return float(-(eigen * eigen.log()).sum())
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
