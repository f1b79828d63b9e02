"""Replacing hook point values and patching activations from another prompt (activation patching,
Meng et al. 2022; Heimersheim & Nanda 2024 for practice)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from workbench.models.model import Inputs, WorkbenchModel


@contextmanager
def replace(
    model: WorkbenchModel, values: dict[str, torch.Tensor | Callable[[torch.Tensor], torch.Tensor]]
) -> Iterator[None]:
    """Replace hook point values while the context is open.

    Args:
        model: The model.
        values: Point name to a tensor (broadcast to the value's shape) or a function of the value.
    """

    def hook_for(new: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]):
        def swap(value: torch.Tensor, name: str) -> torch.Tensor:
            out = new(value) if callable(new) else new
            return out.to(value.dtype).expand_as(value).clone()

        return swap

    with model.hooks({name: hook_for(new) for name, new in values.items()}):
        yield


@contextmanager
def patch(
    model: WorkbenchModel, source: Inputs, names: list[str] | str, positions: list[int] | None = None
) -> Iterator[None]:
    """Run with the values of ``names`` taken from a forward pass over ``source``.

    Args:
        model: The model.
        source: The prompt whose activations are patched in (same token count as the target unless
            ``positions`` is given).
        names: Hook point names or patterns.
        positions: Patch only these positions (axis 1 of ``[batch, pos, ...]`` points).
    """
    cached = model.read(source, names)

    def hook_for(name: str):
        def swap(value: torch.Tensor, _: str) -> torch.Tensor:
            donor = cached[name].to(value.dtype)
            if positions is None:
                return donor.expand_as(value).clone()
            value = value.clone()
            value[:, positions] = donor[:, positions]
            return value

        return swap

    with model.hooks({name: hook_for(name) for name in cached}):
        yield
