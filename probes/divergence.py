"""Distribution comparisons shared by the probes (lenses, eviction, sink ablation); the entropy is
:func:`workbench.numerics.entropy`."""

from __future__ import annotations

import torch


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_v p_v (log p_v - log q_v)`` over the last axis, from log-probabilities (nats)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)
