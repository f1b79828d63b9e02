"""RoFormer: BERT's self-attention with sinusoidal rotary positions on query and key (and value when
``rotary_value``), computed inline (no attention interface).

The forward here is BERT's routed self-attention (:func:`workbench.arch.interface.bert_attention`) with
the module's own ``apply_rotary_position_embeddings`` applied to the projections. Cross-attention runs
HF's own forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import bert_attention

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

    def rotate(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if sinusoidal_pos is None:
            return query, key, value
        if self.rotary_value:
            return self.apply_rotary_position_embeddings(sinusoidal_pos, query, key, value)
        return (*self.apply_rotary_position_embeddings(sinusoidal_pos, query, key), value)

    return bert_attention(self, hidden_states, attention_mask, cache, kwargs, rotate)
