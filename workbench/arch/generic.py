"""Fallback for families without an adapter: residual stream and attention output found by structure.

The decoder blocks are the longest ``nn.ModuleList`` whose length equals ``config.num_hidden_layers``
(or ``n_layer``); each block's attention is the child whose name contains ``attn`` or ``attention``.
Only ``hook_resid_pre``, ``hook_resid_post`` and ``hook_attn_out`` are offered.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from workbench.arch.base import ArchAdapter, Site


def find_blocks(base: nn.Module, n_layers: int | None) -> str | None:
    """Path of the ModuleList holding the blocks (longest one matching ``n_layers`` when known)."""
    candidates = [
        (name, len(mod))
        for name, mod in base.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n_layers is None or len(mod) == n_layers)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[1], -c[0].count(".")))[0]


def find_attention(block: nn.Module) -> str | None:
    """Name of the first direct child whose name suggests attention."""
    for name, _ in block.named_children():
        if "attn" in name.lower() or "attention" in name.lower():
            return name
    return None


class GenericAdapter(ArchAdapter):
    """Structure-found residual and attention-output points for an unknown family."""

    family: ClassVar[str] = "generic"

    def __init__(self, base: nn.Module, config: Any) -> None:
        n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        self.blocks_path = find_blocks(base, n_layers)

    def n_layers(self, config: Any) -> int:
        return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0))

    def n_heads(self, config: Any) -> int:
        """Heads as the config states them (1 when it does not: no head-level point is offered)."""
        return int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1)

    def d_model(self, config: Any) -> int:
        return int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0))

    def block_modules(self, base: nn.Module) -> list[nn.Module]:
        """Blocks found by structure (empty when none were found)."""
        return list(base.get_submodule(self.blocks_path)) if self.blocks_path else []

    def model_sites(self) -> dict[str, Site]:
        """No model-level points are known for an unknown family."""
        return {}

    def block_sites(self, block: nn.Module) -> dict[str, Site]:
        """Residual stream in and out, and the attention child's first output."""
        sites = {"hook_resid_pre": Site("", "input"), "hook_resid_post": Site("", index=None)}
        attn = find_attention(block)
        if attn is not None:
            sites["hook_attn_out"] = Site(attn, index=0)
        return sites
