"""XGLM: sinusoidal positions, and attention computed inside ``XGLMAttention.forward`` (no interface).

XGLM scales the query projection by ``1/sqrt(d)`` before ``q k^T``; the forward here hands the unscaled
query to the interface with that scaling (``attn.hook_q`` is the projection itself) and HF's additive
mask. The causal LM has no encoder: a call with ``key_value_states`` (cross-attention) runs HF's own
forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface, update_self_cache

ATTENTION_CLASS = "XGLMAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    key_value_states: torch.Tensor | None = None,
    cache: Any = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``XGLMAttention.forward`` (self-attention) through the attention interface."""
    if key_value_states is not None:
        return type(self).forward(self, hidden_states, key_value_states, cache, attention_mask, **kwargs)
    batch, q_len, _ = hidden_states.shape
    heads = lambda t: t.view(batch, q_len, -1, self.head_dim).transpose(1, 2)  # noqa: E731
    query, key, value = (
        heads(self.q_proj(hidden_states)),
        heads(self.k_proj(hidden_states)),
        heads(self.v_proj(hidden_states)),
    )
    if cache is not None:
        key, value = update_self_cache(cache, key, value, self.layer_idx, kwargs)
    output, pattern = call_interface(self, query, key, value, attention_mask, self.scaling)
    return self.out_proj(output.reshape(batch, q_len, self.embed_dim)), pattern
