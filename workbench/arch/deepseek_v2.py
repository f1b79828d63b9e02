"""DeepSeek-V2: multi-head latent attention (MLA) and DeepSeekMoE with shared experts.

Attention compresses keys and values into a latent of ``kv_lora_rank`` plus a shared RoPE key of
``qk_rope_head_dim`` (``self_attn.kv_a_proj_with_mqa``), expanded per head by ``kv_b_proj``; q and k have
``qk_nope_head_dim + qk_rope_head_dim`` dimensions, v has ``v_head_dim``. HF caches the latent, as the paper
does: the cache layer's "keys" are the normalised latent [batch, 1, pos, kv_lora_rank] (``kv.latent``, the
input of ``kv_b_proj``) and its "values" the shared RoPE key [batch, 1, pos, qk_rope_head_dim]; ``kv.key`` and
``kv.value`` are the per-head expansions attention uses. Cache size: ``(kv_lora_rank + qk_rope_head_dim) x
layers`` elements per token.

Router ``mlp.gate`` (``DeepseekV2TopkRouter``) returns ``(logits, weights, indices)``: float32 softmax over
all experts, top-k on probabilities (``topk_method`` ``greedy`` or ``group_limited_greedy`` over ``n_group``
groups keeping ``topk_group``), no renormalisation, weights times ``routed_scaling_factor``. Its top-k is
``torch.topk(..., sorted=False)``, so the k columns come back in an implementation-defined order (on the
CPU top-2 comes back sorted, top-4 of 16 does not); ``moe.hook_expert_indices`` / ``hook_expert_weights``
serve them ranked by probability, descending, permuted alike (``RouterConvention.ranked`` is False). Shared
experts ``mlp.shared_experts`` are added unweighted. The first ``first_k_dense_replace`` layers are dense.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from workbench.arch.base import ArchAdapter, KVLayout, RouterConvention, Site


class DeepseekV2Adapter(ArchAdapter):
    """MLA attention; softmax routing with optional group limits and a scaling factor."""

    family: ClassVar[str] = "deepseek_v2"
    model_types: ClassVar[tuple[str, ...]] = ("deepseek_v2",)
    q_proj: ClassVar[str | None] = None  # q_proj or q_a_proj/q_b_proj depending on q_lora_rank
    k_proj: ClassVar[str | None] = "self_attn.kv_b_proj"
    v_proj: ClassVar[str | None] = "self_attn.kv_b_proj"
    router: ClassVar[str | None] = "mlp.gate"
    experts: ClassVar[str | None] = "mlp.experts"
    shared_experts: ClassVar[str | None] = "mlp.shared_experts"
    n_experts_attr: ClassVar[str | None] = "n_routed_experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax",
        topk_on="probs",
        renormalise="never",
        group_limited=True,
        scaling_factor_attr="routed_scaling_factor",
        ranked=False,
    )

    def head_dim(self, config: Any) -> int:
        """q/k head dimension: the no-RoPE part plus the RoPE part."""
        return int(config.qk_nope_head_dim + config.qk_rope_head_dim)

    def v_head_dim(self, config: Any) -> int:
        """Value head dimension."""
        return int(config.v_head_dim)

    def kv_layout(self, config: Any) -> KVLayout:
        """Multi-head latent attention."""
        return "MLA"

    def kv_elements_per_token(self, config: Any) -> int:
        """MLA caches the latent and the shared RoPE key: ``(d_c + d_rope) x layers``."""
        return int((config.kv_lora_rank + config.qk_rope_head_dim) * config.num_hidden_layers)

    def block_sites(self, block: nn.Module) -> dict[str, Site]:
        """Adds ``kv.latent``: the compressed KV as cached (input of ``kv_b_proj``)."""
        return {**super().block_sites(block), "kv.latent": Site("self_attn.kv_b_proj", "input")}

    def n_shared_experts(self, config: Any) -> int:
        """``n_shared_experts`` always-on experts."""
        return int(config.n_shared_experts)

    def n_dense_layers(self, config: Any) -> int:
        """The first ``first_k_dense_replace`` layers are dense."""
        return min(config.first_k_dense_replace, config.num_hidden_layers)

    def moe_facts(self, config: Any) -> dict[str, Any]:
        """The common MoE fields plus group limits and the routed scaling factor."""
        grouped = getattr(config, "topk_method", "group_limited") != "greedy"
        return {
            **super().moe_facts(config),
            "groups": f"{config.topk_group} of {config.n_group}" if grouped else "none",
            "routed_scaling_factor": config.routed_scaling_factor,
        }
