"""Removing the attention sink: every query's attention to the first tokens is masked out before the
softmax, which renormalises the rest (``A'[t, k] = A[t, k] / (1 - sum_{j < s} A[t, j])`` for ``k >= s``).

Queries among the first ``s`` tokens keep their attention (they can see nothing else). Prompts are taken
to start at cache index 0 (no left padding, no evicted sink).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from workbench.hooks.attention_tap import AttentionCall, additive_mask, tap
from workbench.models.model import WorkbenchModel


@contextmanager
def remove_sink(
    model: WorkbenchModel, sink_tokens: int = 1, layers: list[int] | None = None
) -> Iterator[None]:
    """Mask the first ``sink_tokens`` keys for every later query in the chosen layers (all by default)."""

    def edit(call: AttentionCall) -> torch.Tensor:
        q_len, k_len = call.query.shape[2], call.key.shape[2]
        causal = getattr(call.module, "is_causal", False)
        mask = additive_mask(call.mask, q_len, k_len, causal, call.query.dtype, call.query.device)
        if mask is None:
            mask = torch.zeros(1, 1, q_len, k_len, dtype=call.query.dtype, device=call.query.device)
        mask = mask.clone()
        later = torch.arange(q_len, device=mask.device) + (k_len - q_len) >= sink_tokens  # absolute positions
        mask[:, :, later, :sink_tokens] = torch.finfo(mask.dtype).min
        return mask

    blocks = model.adapter.block_modules(model.base)
    with ExitStack() as stack:
        for layer, block in enumerate(blocks):
            attn = model.adapter.attention_module(block)
            if (layers is None or layer in layers) and attn is not None:
                stack.enter_context(tap(attn, {"mask": [edit]}, model.adapter.eager_attention(attn)))
        yield
