"""GPT-NeoX-Japanese: partial RoPE, and attention computed inside the module (no attention interface).

The forward here does the fused projection, RoPE on the first ``rotary_ndims`` of each head and the
cache update, and hands query, key and value to the interface with scaling ``1/norm_factor`` and HF's
additive mask. As in HF, the output projection's bias is returned apart (the block adds it with the
residual).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "GPTNeoXJapaneseAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.LongTensor | None = None,
    layer_past: Any = None,
    use_cache: bool | None = False,
    output_attentions: bool | None = False,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``GPTNeoXJapaneseAttention.forward`` through the attention interface."""
    from transformers.models.gpt_neox_japanese.modeling_gpt_neox_japanese import (  # loaded with the model
        apply_rotary_pos_emb,
    )

    qkv = self.query_key_value(hidden_states)
    qkv = qkv.view(*qkv.shape[:-1], self.num_attention_heads, 3 * self.head_size).permute(0, 2, 1, 3)
    query, key, value = qkv.split(self.head_size, dim=-1)
    rot = self.rotary_ndims
    cos, sin = position_embeddings
    q_rot, k_rot = apply_rotary_pos_emb(query[..., :rot], key[..., :rot], cos, sin)
    query = torch.cat((q_rot, query[..., rot:]), dim=-1).contiguous()
    key = torch.cat((k_rot, key[..., rot:]), dim=-1).contiguous()
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_idx)
    output, pattern = call_interface(self, query, key, value, attention_mask, 1.0 / self.norm_factor)
    return self.dense(output.reshape(*hidden_states.shape[:2], -1)), pattern, self.dense_bias
