"""Qwen3-MoE: per-head q/k RMSNorm before RoPE, routed experts without a shared expert.

Router ``mlp.gate`` (``Qwen3MoeTopKRouter``) returns ``(logits, weights, indices)``: softmax over all
experts, top-k on probabilities, renormalised when ``config.norm_topk_prob`` (True in the releases).
Dense layers follow ``mlp_only_layers`` / ``decoder_sparse_step`` as in Qwen2-MoE.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workbench.arch.base import ArchAdapter, RouterConvention
from workbench.arch.qwen2_moe import sparse_layer_count


class Qwen3MoeAdapter(ArchAdapter):
    """Routed experts only; renormalisation under a flag."""

    family: ClassVar[str] = "qwen3_moe"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_moe",)
    router: ClassVar[str | None] = "mlp.gate"
    experts: ClassVar[str | None] = "mlp.experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax", topk_on="probs", renormalise="flag"
    )

    def moe_facts(self, config: Any) -> dict[str, Any]:
        """Experts, top-k and dense layers."""
        return {
            "experts": config.num_experts,
            "top_k": config.num_experts_per_tok,
            "shared_experts": 0,
            "dense_layers": config.num_hidden_layers - sparse_layer_count(config),
        }
