"""MPT: ALiBi, QKV clipping, and attention computed inside ``MptAttention.forward`` (no interface).

MPT adds its position bias ``[head, 1, k]`` (ALiBi) to ``q k^T * softmax_scale`` and fills masked
positions (a boolean mask, True where masked) with the dtype's minimum. The forward here does the same
projections, clipping and cache update and hands query, key and value to the interface with the bias plus
an additive mask, so ``attn.hook_attn_scores`` holds the ALiBi-biased scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "MptAttention"


def attention_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    position_bias: torch.Tensor | None,
    cache: Any = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``MptAttention.forward`` through the attention interface (the bias joins the mask)."""
    batch, q_len = hidden_states.shape[:2]
    qkv = self.Wqkv(hidden_states)
    if self.clip_qkv:
        qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
    query, key, value = (
        t.reshape(batch, q_len, self.n_heads, self.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=2)
    )
    if cache is not None:
        key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
    k_len = key.shape[-2]
    mask = torch.zeros(1, 1, 1, k_len, dtype=query.dtype, device=query.device)
    if position_bias is not None:  # [head, 1 or q, k]: the last q_len / k_len entries, as MPT slices them
        mask = mask + position_bias[:, -q_len:, -k_len:][None].to(query.dtype)
    if attention_mask is not None:
        mask = mask.masked_fill(attention_mask, torch.finfo(query.dtype).min)
    output, pattern = call_interface(self, query, key, value, mask, self.softmax_scale)
    return self.out_proj(output.reshape(batch, q_len, -1)), pattern
