"""Where the batch, position and head axes of each hook point are, read from its documented shape.

The shapes in ``workbench.hooks.points.POINTS`` are the single source: ``pos`` / ``q_pos`` / ``kv_pos`` mark
position axes, ``k_pos`` the key axis of a pattern, ``head`` / ``kv_head`` the head axis, and a leading
``tokens`` axis means ``batch x pos`` flattened row-major (router outputs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import torch

from workbench.hooks.points import doc_for

POSITION_AXES = ("pos", "q_pos", "kv_pos")


@dataclass(frozen=True)
class Layout:
    """Axes of one prompt's value (batch axis removed; a ``tokens`` axis becomes ``pos``)."""

    pos_axis: int | None
    key_axis: int | None
    head_axis: int | None
    tokens: bool
    quadratic: bool

    def positions_power(self) -> int:
        """How stored size grows with prompt length: 2 for patterns, 1 for everything else."""
        return 2 if self.quadratic else 1


@cache
def layout_for(name: str) -> Layout:
    """The layout of a hook point (or streamed statistic) from its documented shape."""
    if name.endswith(".stat_key_mass"):  # [batch, head, k_pos]
        return Layout(pos_axis=None, key_axis=1, head_axis=0, tokens=False, quadratic=False)
    if name.endswith(".stat_tail_pattern"):  # [batch, head, tail, k_pos]
        return Layout(pos_axis=None, key_axis=2, head_axis=0, tokens=False, quadratic=False)
    if ".stat_" in name:  # other streamed statistics: [batch, head, pos] ([..., top_k] for top_keys)
        return Layout(pos_axis=1, key_axis=None, head_axis=0, tokens=False, quadratic=False)
    shape = doc_for(name).shape.split(" or ")[0]
    axes = [a.strip() for a in re.sub(r"[\[\]]", "", shape).split(",")]
    tokens = axes[0] == "tokens"
    per_prompt = ["pos", *axes[1:]] if tokens else axes[1:]
    pos = next((i for i, a in enumerate(per_prompt) if a in POSITION_AXES), None)
    key = per_prompt.index("k_pos") if "k_pos" in per_prompt else None
    head = next((i for i, a in enumerate(per_prompt) if a in ("head", "kv_head")), None)
    return Layout(pos, key, head, tokens, key is not None)


def split_prompts(value: torch.Tensor, layout: Layout, mask: torch.Tensor) -> list[torch.Tensor]:
    """Per-prompt tensors with pad positions removed.

    Args:
        value: The batched value as the hook saw it.
        layout: Its layout.
        mask: Attention mask [batch, pos] (1 = real token).
    """
    batch, length = mask.shape
    per_position = value.dim() >= 3 and tuple(value.shape[:2]) == (batch, length)  # DBRX's experts
    if not per_position and (layout.tokens or (value.dim() == 2 and value.shape[0] == batch * length)):
        value = value.reshape(batch, length, *value.shape[1:])
    if bool(mask.all()):  # no padding: views, no copies
        return list(value.unbind(0))
    out = []
    for row, keep in zip(value, mask.bool(), strict=True):
        real = keep.nonzero().squeeze(-1)
        if layout.pos_axis is not None and row.shape[layout.pos_axis] == length:
            row = row.index_select(layout.pos_axis, real)
        if layout.key_axis is not None and row.shape[layout.key_axis] == length:
            row = row.index_select(layout.key_axis, real)
        out.append(row)
    return out
