"""OpenAI GPT (GPT-1): attention computed inside ``Attention._attn`` (no attention interface).

GPT-1 scales its scores by ``1/sqrt(d)`` (when ``scale``) and writes ``-1e4`` over future positions
from its ``bias`` buffer. The forward here hands query, key and value to the interface with that
``-1e4`` as an additive mask (the pattern is the same: ``exp(-1e4)`` is zero in float32), plus HF's
padding mask. The model type is ``openai-gpt``; the modeling file is ``modeling_openai``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workbench.arch.interface import call_interface

ATTENTION_CLASS = "Attention"


def attention_forward(
    self: nn.Module,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    output_attentions: bool = False,
) -> list[torch.Tensor]:
    """``Attention.forward`` of ``modeling_openai`` through the attention interface."""
    query, key, value = (self.split_heads(t) for t in self.c_attn(x).split(self.split_size, dim=2))
    q_len, k_len = query.shape[-2], key.shape[-2]
    allowed = self.bias[:, :, :q_len, :k_len]
    mask = (1 - allowed) * -1e4
    if attention_mask is not None:
        mask = mask + attention_mask
    scaling = 1 / math.sqrt(value.shape[-1]) if self.scale else 1.0
    output, pattern = call_interface(self, query, key, value, mask.to(query.dtype), scaling)
    output = self.resid_dropout(self.c_proj(output.reshape(*x.shape[:2], -1)))
    return [output, pattern]  # the pattern always, as interface families return it (the block keeps a list)
