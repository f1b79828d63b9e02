"""Qwen2-MoE: Qwen2 attention (q/k/v biases), routed experts plus one gated shared expert.

Router ``mlp.gate`` (``Qwen2MoeTopKRouter``) returns ``(logits, weights, indices)``: softmax over all experts,
top-k on probabilities (sorted, descending), renormalised when ``config.norm_topk_prob``. The shared expert
``mlp.shared_expert`` is added after a sigmoid gate ``mlp.shared_expert_gate``; ``moe.hook_shared_out`` is the
shared expert's output *before* that gate. Layers in ``mlp_only_layers`` or off the ``decoder_sparse_step``
grid are dense (``mlp.down_proj``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from workbench.arch.base import ArchAdapter, RouterConvention


def sparse_layer_count(config: Any) -> int:
    """Number of layers that route to experts (the HF rule for Qwen-MoE configs)."""
    return sum(
        1
        for i in range(config.num_hidden_layers)
        if i not in (config.mlp_only_layers or []) and (i + 1) % config.decoder_sparse_step == 0
    )


class Qwen2MoeAdapter(ArchAdapter):
    """Routed experts plus one sigmoid-gated shared expert."""

    family: ClassVar[str] = "qwen2_moe"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_moe",)
    router: ClassVar[str | None] = "mlp.gate"
    experts: ClassVar[str | None] = "mlp.experts"
    shared_experts: ClassVar[str | None] = "mlp.shared_expert"
    n_experts_attr: ClassVar[str | None] = "num_experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax", topk_on="probs", renormalise="flag"
    )

    def n_shared_experts(self, config: Any) -> int:
        """One sigmoid-gated shared expert."""
        return 1

    def n_dense_layers(self, config: Any) -> int:
        """Layers in ``mlp_only_layers`` or off the ``decoder_sparse_step`` grid."""
        return config.num_hidden_layers - sparse_layer_count(config)
