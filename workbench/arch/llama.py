"""Llama-style dense decoders: Llama, Mistral, Qwen2.

Pre-norm RMSNorm blocks, RoPE applied to q and k inside ``self_attn``, gated SiLU MLP
(``mlp.gate_proj``, ``mlp.up_proj``, ``mlp.down_proj``), GQA through ``num_key_value_heads``.
Mistral adds ``sliding_window``; Qwen2 adds q/k/v biases and per-layer ``layer_types``.
"""

from __future__ import annotations

from typing import ClassVar

from workbench.arch.base import ArchAdapter


class LlamaAdapter(ArchAdapter):
    """Llama, Mistral and Qwen2 share one layout."""

    family: ClassVar[str] = "llama"
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2")
