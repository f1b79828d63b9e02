"""GPT-OSS: learned attention sinks, alternating sliding/full attention, top-k on raw router logits.

Each attention head has a learned sink logit ``self_attn.sinks`` [head] that joins the softmax as an extra
column and is then dropped, so a head's pattern rows sum to less than one; the missing mass is the sink's.
``layer_types`` alternates ``sliding_attention`` and ``full_attention``.

Router ``mlp.router`` (``GptOssTopKRouter``, a linear layer *with bias*) returns ``(logits, weights,
indices)``: top-k on raw logits (sorted, descending), then softmax over the k chosen logits. The MLP block
returns ``(hidden, router_scores)``, so ``hook_mlp_out`` reads element 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from workbench.arch.base import ArchAdapter, RouterConvention


class GptOssAdapter(ArchAdapter):
    """Learned sinks; softmax over the top-k logits."""

    family: ClassVar[str] = "gpt_oss"
    model_types: ClassVar[tuple[str, ...]] = ("gpt_oss",)
    router: ClassVar[str | None] = "mlp.router"
    experts: ClassVar[str | None] = "mlp.experts"
    learned_sinks: ClassVar[str | None] = "self_attn.sinks"
    mlp_down: ClassVar[str | None] = None
    mlp_output_index: ClassVar[int | None] = 0
    n_experts_attr: ClassVar[str | None] = "num_local_experts"
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="softmax_over_topk", topk_on="logits", renormalise="never", router_bias=True
    )

    def sink_logits(self, attn_module: nn.Module) -> torch.Tensor | None:
        """``self_attn.sinks`` [head]: one logit per head appended to every softmax row."""
        return attn_module.sinks
