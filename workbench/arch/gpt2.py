"""GPT-2: learned absolute positions, pre-norm LayerNorm, fused ``attn.c_attn`` (Conv1D) for q, k and v.

The base model is ``transformer``: ``wte`` (tokens), ``wpe`` (positions), blocks ``h``, final ``ln_f``.
``scale_attn_by_inverse_layer_idx`` divides the scores by (layer + 1); ``reorder_and_upcast_attn`` takes a
float32 path inside the attention module instead of the attention function (the tap then sees nothing).
MHA only; the MLP is ``mlp.c_fc`` -> activation -> ``mlp.c_proj``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from workbench.arch.base import ArchAdapter


class GPT2Adapter(ArchAdapter):
    """GPT-2 layout (Conv1D projections, learned positions)."""

    family: ClassVar[str] = "gpt2"
    model_types: ClassVar[tuple[str, ...]] = ("gpt2",)
    embed: ClassVar[str] = "wte"
    pos_embed: ClassVar[str | None] = "wpe"
    blocks: ClassVar[str] = "h"
    final_norm: ClassVar[str | None] = "ln_f"
    attn: ClassVar[str] = "attn"
    q_proj: ClassVar[str | None] = "attn.c_attn"
    k_proj: ClassVar[str | None] = "attn.c_attn"
    v_proj: ClassVar[str | None] = "attn.c_attn"
    o_proj: ClassVar[str] = "attn.c_proj"
    ln1: ClassVar[str | None] = "ln_1"
    ln2: ClassVar[str | None] = "ln_2"
    mlp_down: ClassVar[str | None] = "mlp.c_proj"
    positional: ClassVar[str] = "learned absolute"
    norm_type: ClassVar[str] = "LayerNorm"

    def n_layers(self, config: Any) -> int:
        """``n_layer``."""
        return int(config.n_layer)

    def n_heads(self, config: Any) -> int:
        """``n_head``."""
        return int(config.n_head)

    def n_kv_heads(self, config: Any) -> int:
        """GPT-2 is MHA."""
        return self.n_heads(config)

    def d_model(self, config: Any) -> int:
        """``n_embd``."""
        return int(config.n_embd)

    def head_dim(self, config: Any) -> int:
        """``n_embd / n_head``."""
        return self.d_model(config) // self.n_heads(config)
