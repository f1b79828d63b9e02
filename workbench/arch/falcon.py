"""Falcon: attention computed inside ``FalconAttention.forward`` (no attention interface), RoPE or ALiBi.

The forward here does Falcon's projections (multi-query, grouped ``new_decoder_architecture`` or
per-head), RoPE and cache update, and hands query, key and value to the interface: with RoPE the
scaling is ``1/sqrt(d)`` and the mask HF's; with ALiBi Falcon scales the bias too,
``(q k^T + alibi) / sqrt(d) + mask``, so the mask handed over is ``alibi / sqrt(d) + mask``. Blocks
(parallel attention and MLP by default), norms and MLP are discovered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "FalconAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    alibi: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.LongTensor | None = None,
    layer_past: Any = None,
    use_cache: bool = False,
    output_attentions: bool = False,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``FalconAttention.forward`` through the attention interface."""
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb  # loaded with the model

    query, key, value = (t.transpose(1, 2) for t in self._split_heads(self.query_key_value(hidden_states)))
    batch, _, q_len, _ = query.shape
    if alibi is None:
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_idx)
    mask = attention_mask
    if alibi is not None:
        bias = alibi.view(batch, self.num_heads, 1, -1) * self.inv_norm_factor
        mask = bias if mask is None else bias + mask
    output, pattern = call_interface(self, query, key, value, mask, self.inv_norm_factor)
    return self.dense(output.reshape(batch, q_len, -1)), pattern
