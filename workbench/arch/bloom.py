"""Bloom: ALiBi, and attention computed inside ``BloomAttention.forward`` (no attention interface).

Bloom adds a per-head linear bias to the scores, ``alibi.baddbmm(q, k^T, beta=1, alpha=1/sqrt(d))``, then
the additive causal mask. The forward here does the same projections and cache update and hands query,
key and value to the interface with ``alibi + mask`` as the additive mask and ``1/sqrt(d)`` as the
scaling, so ``attn.hook_attn_scores`` holds the ALiBi-biased scores HF's softmax sees. Everything else
(blocks, norms, MLP, the residual Bloom's attention and MLP add themselves) is discovered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "BloomAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    residual: torch.Tensor,
    alibi: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer_past: Any = None,
    use_cache: bool = False,
    output_attentions: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``BloomAttention.forward`` through the attention interface (ALiBi joins the mask)."""
    from transformers.models.bloom.modeling_bloom import dropout_add  # loaded with the model already

    batch, q_len, _ = hidden_states.shape
    query, key, value = self._reshape(self.query_key_value(hidden_states))  # [batch, head, pos, d]
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_idx)
    bias = alibi.view(batch, self.num_heads, 1, -1) * self.beta  # [batch * head, 1, kv] -> per head
    mask = bias if attention_mask is None else bias + attention_mask
    output, pattern = call_interface(self, query, key, value, mask.to(query.dtype), self.inv_norm_factor)
    output = self.dense(output.reshape(batch, q_len, -1))
    return dropout_add(output, residual, self.hidden_dropout, self.training), pattern
