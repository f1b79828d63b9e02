"""Mixtral: Mistral attention with a sparse MoE MLP in every layer.

Router ``mlp.gate`` (``MixtralTopKRouter``) returns ``(logits, weights, indices)``: softmax over all
experts in float32, top-k on the probabilities (sorted, descending), always renormalised over the k chosen.
Experts are fused 3-D weights in ``mlp.experts``; no shared expert.
"""

from __future__ import annotations

from typing import ClassVar

from workbench.arch.base import ArchAdapter, RouterConvention


class MixtralAdapter(ArchAdapter):
    """Sparse MoE in every block, top-k over softmax probabilities, renormalised."""

    family: ClassVar[str] = "mixtral"
    model_types: ClassVar[tuple[str, ...]] = ("mixtral",)
    router: ClassVar[str | None] = "mlp.gate"
    experts: ClassVar[str | None] = "mlp.experts"
    mlp_down: ClassVar[str | None] = None
    n_experts_attr: ClassVar[str | None] = "num_local_experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax", topk_on="probs", renormalise="always"
    )
