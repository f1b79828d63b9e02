"""Shared fixtures: tiny random-init models of every family (real HF classes) and token batches."""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture
def chromium() -> str:
    """Debian's chromium for the browser tests (.ci/run installs it; CI fails without it, a developer
    machine without it skips)."""
    from apps.driver import CHROMIUM

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {CHROMIUM} (.ci/run installs Debian's chromium)")
        pytest.skip(f"no {CHROMIUM} on this machine")
    return CHROMIUM
