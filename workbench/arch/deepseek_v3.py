"""DeepSeek-V3: MLA attention as V2, sigmoid routing with a selection-only correction bias.

Router ``mlp.gate`` (``DeepseekV3TopkRouter``) returns ``(logits, weights, indices)``: float32 sigmoid
scores; selection ranks ``scores + e_score_correction_bias`` inside the ``topk_group`` best of ``n_group``
groups (a group scores as the sum of its two best); the applied weights are the *unbiased* sigmoid scores
of the chosen experts, renormalised when ``norm_topk_prob``, times ``routed_scaling_factor``.
"""

from __future__ import annotations

from typing import ClassVar

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
    )
