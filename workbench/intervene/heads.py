"""Head ablation on ``attn.hook_z`` (each head's output before o_proj): zero or mean (Wang et al. 2022,
"Interpretability in the Wild", use mean ablation over a reference distribution)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from workbench.capture import CaptureSpec, capture
from workbench.models.model import WorkbenchModel


def head_means(
    model: WorkbenchModel, prompts: Sequence[str] | Sequence[torch.Tensor], layers: list[int]
) -> dict[int, torch.Tensor]:
    """Mean of ``hook_z`` over all real positions of the reference prompts, per layer: [head, d_head]."""
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    result = capture(model, list(prompts), CaptureSpec(points=list(names.values())), progress=False)
    return {layer: torch.cat(result[name]).float().mean(0) for layer, name in names.items()}


@contextmanager
def ablate_heads(
    model: WorkbenchModel, heads: dict[int, list[int]], means: dict[int, torch.Tensor] | None = None
) -> Iterator[None]:
    """Zero-ablate (or, with ``means``, mean-ablate) heads while the context is open.

    Args:
        model: The model.
        heads: Layer to the heads to ablate.
        means: Per-layer replacement values [head, d_head] from :func:`head_means`; None zero-ablates.
    """

    def hook_for(layer: int):
        def ablate(z: torch.Tensor, name: str) -> torch.Tensor:
            z = z.clone()
            for head in heads[layer]:
                z[:, :, head] = 0 if means is None else means[layer][head].to(z.dtype)
            return z

        return ablate

    with model.hooks({f"blocks.{layer}.attn.hook_z": hook_for(layer) for layer in heads}):
        yield
