"""Numerical definitions shared by the capture engine and the probes."""

from __future__ import annotations

import torch


def entropy(p: torch.Tensor, dim: int = -1, log: bool = False) -> torch.Tensor:
    """Shannon entropy ``H(p) = -sum_i p_i log p_i`` in nats over ``dim``, with ``0 log 0 = 0`` (each
    ``p_i`` below 1e-30 enters the logarithm as 1e-30, which changes no sum in float32 or float64).

    Args:
        p: Probabilities (any shape; entries along ``dim`` sum to 1), or log-probabilities with ``log``.
        dim: The axis the distribution runs along.
        log: ``p`` holds log-probabilities (``-sum exp(l) l``, exact where the probabilities underflow).
    """
    if log:
        return -(p.exp() * p).sum(dim)
    return -(p * p.clamp_min(1e-30).log()).sum(dim)
