"""OLMoE: Llama-style attention with q/k RMSNorm over the full projection, a sparse MoE in every layer.

Router ``mlp.gate`` (``OlmoeTopKRouter``) returns ``(logits, weights, indices)``: softmax over all experts,
top-k on the probabilities (sorted, descending), renormalised only when ``config.norm_topk_prob`` (False for
the released OLMoE-1B-7B). No shared expert.
"""

from __future__ import annotations

from typing import ClassVar

from workbench.arch.base import ArchAdapter, RouterConvention


class OlmoeAdapter(ArchAdapter):
    """64 experts top-8 in the release; renormalisation under a flag."""

    family: ClassVar[str] = "olmoe"
    model_types: ClassVar[tuple[str, ...]] = ("olmoe",)
    router: ClassVar[str | None] = "mlp.gate"
    experts: ClassVar[str | None] = "mlp.experts"
    mlp_down: ClassVar[str | None] = None
    n_experts_attr: ClassVar[str | None] = "num_experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax", topk_on="probs", renormalise="flag"
    )
