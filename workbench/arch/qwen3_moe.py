"""Qwen3-MoE: per-head q/k RMSNorm before RoPE, routed experts without a shared expert.

Router ``mlp.gate`` (``Qwen3MoeTopKRouter``) returns ``(logits, weights, indices)``: softmax over all experts,
top-k on probabilities (sorted, descending), renormalised when ``config.norm_topk_prob`` (True in the
releases). Dense layers follow ``mlp_only_layers`` / ``decoder_sparse_step`` as in Qwen2-MoE, whose adapter
this one extends without the shared expert.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workbench.arch.qwen2_moe import Qwen2MoeAdapter


class Qwen3MoeAdapter(Qwen2MoeAdapter):
    """Qwen2-MoE routing without the shared expert."""

    family: ClassVar[str] = "qwen3_moe"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_moe",)
    shared_experts: ClassVar[str | None] = None

    def n_shared_experts(self, config: Any) -> int:
        """No shared expert."""
        return 0
