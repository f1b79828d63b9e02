"""A short per-layer capture summary: what the main job prints under the card until batteries land."""

from __future__ import annotations

import torch

from workbench.models.model import Inputs, WorkbenchModel
from workbench.numerics import entropy

DEFAULT_PROMPTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "In 1905 Einstein published four papers that changed physics.",
)


def layer_summary(model: WorkbenchModel, prompts: Inputs = DEFAULT_PROMPTS) -> list[dict[str, float | int]]:
    """Per layer: mean residual norm, mean attention entropy (nats) and mean first-token attention mass.

    Pad positions are excluded through the attention mask (queries) and the pattern itself (keys).
    """
    batch = model.encode(prompts)
    names = model.hook_points([r"blocks\.\d+\.hook_resid_post", r"blocks\.\d+\.attn\.hook_pattern"])
    values = model.read(batch, names)
    mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
    first = mask.float().argmax(dim=1)  # first real token per prompt (left padding safe)
    rows = []
    for layer in range(model.cfg.n_layers):
        resid = values[f"blocks.{layer}.hook_resid_post"].float()
        pattern = values[f"blocks.{layer}.attn.hook_pattern"].float()  # [batch, head, q, k]
        entropies = entropy(pattern)  # [batch, head, q]
        sink = pattern[torch.arange(pattern.shape[0]), :, :, first]  # [batch, head, q]
        keep = mask[:, None, :].expand_as(entropies)
        rows.append(
            {
                "layer": layer,
                "resid_norm": resid.norm(dim=-1)[mask].mean().item(),
                "attn_entropy": entropies[keep].mean().item(),
                "first_token_mass": sink[keep].mean().item(),
            }
        )
    return rows
