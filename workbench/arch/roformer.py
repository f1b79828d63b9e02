"""RoFormer: BERT's self-attention with sinusoidal rotary positions on query and key (and value when
``rotary_value``), computed inline (no attention interface).

The forward here applies the module's own ``apply_rotary_position_embeddings`` and hands the rotated
query, key and value to the interface with ``1/sqrt(d)`` and HF's additive mask. Cross-attention runs
HF's own forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "RoFormerSelfAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    sinusoidal_pos: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    cache: Any = None,
    output_attentions: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``RoFormerSelfAttention.forward`` (self-attention) through the attention interface."""
    if encoder_hidden_states is not None:
        args = (
            hidden_states,
            attention_mask,
            sinusoidal_pos,
            encoder_hidden_states,
            cache,
            output_attentions,
        )
        return type(self).forward(self, *args, **kwargs)
    shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    query, key, value = (
        p(hidden_states).view(shape).transpose(1, 2) for p in (self.query, self.key, self.value)
    )
    if sinusoidal_pos is not None:
        if self.rotary_value:
            query, key, value = self.apply_rotary_position_embeddings(sinusoidal_pos, query, key, value)
        else:
            query, key = self.apply_rotary_position_embeddings(sinusoidal_pos, query, key)
    if cache is not None:
        layers = getattr(cache, "self_attention_cache", cache)
        key, value = layers.update(key, value, self.layer_idx, kwargs=kwargs)
    output, pattern = call_interface(self, query, key, value, attention_mask, self.attention_head_size**-0.5)
    return output.reshape(*hidden_states.shape[:-1], self.all_head_size), pattern
