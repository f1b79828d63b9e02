"""Shared fixtures: tiny random-init models of every family (real HF classes) and token batches."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.models.tiny import TINY_FAMILIES, VOCAB, build_tiny


@pytest.fixture(params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    """Every supported family."""
    return request.param


@pytest.fixture
def tiny(family: str) -> workbench.WorkbenchModel:
    """A tiny random-init model of ``family`` wrapped by the workbench."""
    return workbench.load(build_tiny(family))


@pytest.fixture
def ids() -> torch.Tensor:
    """A fixed batch of token ids [2, 7]."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, VOCAB, (2, 7), generator=generator)
