"""Distribution comparisons shared by the probes (lenses, eviction, sink ablation, checkpoint diff); the
entropy is :func:`workbench.numerics.entropy`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from workbench.models.model import WorkbenchModel


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_v p_v (log p_v - log q_v)`` over the last axis, from log-probabilities (nats)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def next_token_log_probs(model: WorkbenchModel, ids: torch.Tensor) -> torch.Tensor:
    """One prompt's next-token log-probabilities [pos, vocab] in float64 (``ids``: [pos])."""
    with torch.no_grad():
        return model.hf(input_ids=ids[None]).logits[0].double().log_softmax(-1)
