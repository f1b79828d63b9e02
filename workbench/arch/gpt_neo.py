"""GPT-Neo: global and local (sliding-window) layers, unscaled scores, and attention computed inside
``GPTNeoSelfAttention._attn`` (no attention interface).

GPT-Neo does not divide its scores by ``sqrt(d)``; each layer's ``bias`` buffer is its causal (global)
or banded (local, ``window_size``) mask. The forward here does the same projections and cache update and
hands query, key and value to the interface with scaling 1 and that buffer folded into the additive
mask, so local layers show their window in ``attn.hook_attn_scores`` and the streamed statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "GPTNeoSelfAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    layer_past: Any = None,
    use_cache: bool = False,
    output_attentions: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``GPTNeoSelfAttention.forward`` through the attention interface (its window joins the mask)."""
    split = lambda t: self._split_heads(t, self.num_heads, self.head_dim)  # noqa: E731
    query, key, value = (
        split(self.q_proj(hidden_states)),
        split(self.k_proj(hidden_states)),
        split(self.v_proj(hidden_states)),
    )
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_id)
    q_len, k_len = query.shape[-2], key.shape[-2]
    allowed = self.bias[:, :, k_len - q_len : k_len, :k_len]
    mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(
        ~allowed, torch.finfo(query.dtype).min
    )
    if attention_mask is not None:
        mask = mask + attention_mask
    output, pattern = call_interface(self, query, key, value, mask, 1.0)
    output = self._merge_heads(output.transpose(1, 2), self.num_heads, self.head_dim)
    return self.resid_dropout(self.out_proj(output)), pattern
