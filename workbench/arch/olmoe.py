"""OLMoE: Llama-style attention with q/k RMSNorm over the full projection, a sparse MoE in every layer.

Router ``mlp.gate`` (``OlmoeTopKRouter``) returns ``(logits, weights, indices)``: softmax over all experts,
top-k on the probabilities, renormalised only when ``config.norm_topk_prob`` (False for the released
OLMoE-1B-7B). No shared expert.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workbench.arch.base import ArchAdapter, RouterConvention


class OlmoeAdapter(ArchAdapter):
    """64 experts top-8 in the release; renormalisation under a flag."""

    family: ClassVar[str] = "olmoe"
    model_types: ClassVar[tuple[str, ...]] = ("olmoe",)
    router: ClassVar[str | None] = "mlp.gate"
    experts: ClassVar[str | None] = "mlp.experts"
    mlp_down: ClassVar[str | None] = None
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax", topk_on="probs", renormalise="flag"
    )

    def moe_facts(self, config: Any) -> dict[str, Any]:
        """Experts, top-k and the routing rule."""
        return {
            "experts": config.num_experts,
            "top_k": config.num_experts_per_tok,
            "shared_experts": 0,
            "dense_layers": 0,
        }
