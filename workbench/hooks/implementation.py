"""Switching a model's attention implementation while hooks need it (eager for ``attn.hook_pattern``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def attention_implementation(model: nn.Module, implementation: str) -> Iterator[None]:
    """Switch ``model`` to an attention implementation (e.g. ``"eager"``) and back on exit.

    Eager is valid for every model and the previous value was valid before, so the switch sets
    ``_attn_implementation`` on every config object the modules hold (attention modules read it on each
    call) instead of re-running ``set_attn_implementation``'s checks, which would cost more than a tiny
    model's forward pass.
    """
    previous = model.config._attn_implementation
    if previous == implementation:
        yield
        return
    if implementation != "eager":
        model.set_attn_implementation(implementation)
        configs = []
    else:
        configs = list(
            {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}.values()
        )
        for config in configs:
            config._attn_implementation = implementation
    try:
        yield
    finally:
        if configs:
            for config in configs:
                config._attn_implementation = previous
        else:
            model.set_attn_implementation(previous)
