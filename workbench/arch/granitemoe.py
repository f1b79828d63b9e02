"""Granite-MoE: Llama-style attention with muP multipliers and a ``block_sparse_moe`` MoE block.

Router ``block_sparse_moe.router`` (``GraniteMoeTopKRouter``) returns ``(logits, weights, indices)``: top-k on
raw float32 logits (sorted, descending), then softmax over the k chosen. Quirks: ``embedding_multiplier``
scales the embeddings, ``residual_multiplier`` scales each branch before the residual add,
``attention_multiplier`` replaces 1/sqrt(d_head), and the logits are divided by ``logits_scaling``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workbench.arch.base import ArchAdapter, RouterConvention


class GraniteMoeAdapter(ArchAdapter):
    """MoE block under ``block_sparse_moe``; softmax over the top-k logits."""

    family: ClassVar[str] = "granitemoe"
    model_types: ClassVar[tuple[str, ...]] = ("granitemoe",)
    mlp: ClassVar[str] = "block_sparse_moe"
    mlp_down: ClassVar[str | None] = None
    router: ClassVar[str | None] = "block_sparse_moe.router"
    experts: ClassVar[str | None] = "block_sparse_moe.experts"
    n_experts_attr: ClassVar[str | None] = "num_local_experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax_over_topk", topk_on="logits", renormalise="never"
    )

    def moe_facts(self, config: Any) -> dict[str, Any]:
        """The common MoE fields plus the muP multipliers that shape the forward pass."""
        multipliers = (
            f"embedding {config.embedding_multiplier}, residual {config.residual_multiplier}, "
            f"attention {config.attention_multiplier}, logits 1/{config.logits_scaling}"
        )
        return {**super().moe_facts(config), "multipliers": multipliers}
