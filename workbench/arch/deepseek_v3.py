"""DeepSeek-V3: MLA attention as V2, sigmoid routing with a selection-only correction bias.

Router ``mlp.gate`` (``DeepseekV3TopkRouter``) returns ``(logits, weights, indices)``: float32 sigmoid
scores; selection ranks ``scores + e_score_correction_bias`` inside the ``topk_group`` best of ``n_group``
groups (a group scores as the sum of its two best); the applied weights are the *unbiased* sigmoid scores
of the chosen experts, renormalised when ``norm_topk_prob``, times ``routed_scaling_factor``. Both top-k
calls pass ``sorted=False``; ``moe.hook_expert_indices`` / ``hook_expert_weights`` serve the chosen experts
ranked by the *biased* score ``sigmoid(logits) + e_score_correction_bias``, descending, permuted alike (the
weights themselves, unbiased, need not be descending).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from workbench.arch.base import RouterConvention
from workbench.arch.deepseek_v2 import DeepseekV2Adapter


class DeepseekV3Adapter(DeepseekV2Adapter):
    """MLA as V2; sigmoid routing with correction bias and group limits."""

    family: ClassVar[str] = "deepseek_v3"
    model_types: ClassVar[tuple[str, ...]] = ("deepseek_v3",)
    router_convention: ClassVar[RouterConvention | None] = RouterConvention(
        scoring="sigmoid",
        topk_on="biased_scores",
        renormalise="flag",
        correction_bias=True,
        group_limited=True,
        scaling_factor_attr="routed_scaling_factor",
        ranked=False,
    )

    def correction_bias(self, router: nn.Module) -> torch.Tensor:
        """``e_score_correction_bias`` [n_experts]: added to the sigmoid scores for selection only."""
        return router.e_score_correction_bias
