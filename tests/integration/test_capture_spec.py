"""Capture specs from outside: wrong types and ranges are refused with one line naming the field, before
any forward pass; the memory estimate counts the streamed statistics; integer values keep their dtype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import workbench
from workbench.capture import CaptureSpec, capture, estimate_capture
from workbench.capture.engine import CaptureTooLargeError
from workbench.errors import InputError
from workbench.models.tiny import VOCAB, build_tiny

RESID = r"blocks\.\d+\.hook_resid_post"


@pytest.fixture(scope="module")
def model() -> workbench.WorkbenchModel:
    return workbench.load(build_tiny("olmoe"))  # 3 layers, 4 heads, 8 experts, top-2


def _prompts(lengths: tuple[int, ...] = (7, 4, 9)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randint(3, VOCAB, (n,), generator=generator) for n in lengths]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("memory_budget_gb", "abc", "memory_budget_gb must be None or a number > 0, got 'abc'"),
        ("memory_budget_gb", 0, "memory_budget_gb must be None or a number > 0"),
        ("memory_budget_gb", -1.5, "memory_budget_gb must be None or a number > 0"),
        ("memory_budget_gb", float("nan"), "memory_budget_gb"),
        ("memory_budget_gb", True, "memory_budget_gb"),
        ("batch_size", 0, "batch_size must be an int >= 1, got 0"),
        ("batch_size", 2.0, "batch_size must be an int >= 1"),
        ("chunk", -4, "chunk must be an int >= 1"),
        ("sink_tokens", 0, "sink_tokens must be an int >= 1"),
        ("layers", [0, -1], "layers must be None or a list of ints >= 0"),
        ("layers", "0", "layers must be None"),
        ("heads", [1.5], "heads must be None"),
        ("positions", "first", "positions must be 'all', 'last'"),
        ("positions", (0, 1, 2), "positions must be"),
        ("positions", [0, "1"], "positions must be"),
        ("dtype", "int8", "dtype must be a floating-point dtype"),
        ("dtype", "banana", "unknown dtype 'banana'"),
        ("dtype", 16, "dtype must be None or a dtype name"),
        ("points", [RESID, 3], "points and stats must be lists of strings"),
    ],
)
def test_bad_values_are_refused_naming_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(InputError) as refused:
        CaptureSpec(**{"points": [RESID], field: value})
    assert words in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("field", "value", "words"), [("layers", [3], "layer 3"), ("heads", [0, 4], "head 4")]
)
def test_layers_and_heads_the_model_lacks_are_refused(
    model: workbench.WorkbenchModel, field: str, value: list[int], words: str
) -> None:
    with pytest.raises(InputError, match=f"{words} does not exist: the model has"):
        capture(model, _prompts(), CaptureSpec(points=[RESID], **{field: value}), progress=False)


def test_the_estimate_counts_streamed_statistics(model: workbench.WorkbenchModel) -> None:
    spec = CaptureSpec(stats=["sink_mass", "key_mass", "entropy"], heads=[0, 2], positions="last")
    prompts = _prompts()
    result = capture(model, prompts, spec, progress=False)
    stored = sum(t.numel() * t.element_size() for n in result.names for t in result[n])
    # by hand, float32, 3 layers, 2 kept heads: sink mass and entropy keep the last query of each of the
    # 3 prompts, 3 x 2 stats x 2 x 4 B x 3 = 144; key mass every key of 7 + 4 + 9 tokens, 3 x 2 x 4 x 20 = 480
    assert stored == 144 + 480
    names = [n for n in result.names if ".stat_" in n]
    assert estimate_capture(model, prompts, [], spec, names).stored_bytes == stored


def test_a_statistics_only_capture_over_budget_is_refused(model: workbench.WorkbenchModel) -> None:
    spec = CaptureSpec(stats=["entropy"], memory_budget_gb=1e-7)  # 107 bytes
    with pytest.raises(CaptureTooLargeError, match="pass out_dir"):
        capture(model, _prompts(), spec, progress=False)


def test_the_refusal_does_not_ask_for_out_dir_when_it_was_given(
    model: workbench.WorkbenchModel, tmp_path: Path
) -> None:
    spec = CaptureSpec(points=[RESID], memory_budget_gb=1e-9)
    with pytest.raises(CaptureTooLargeError) as refused:
        capture(model, _prompts(), spec, out_dir=tmp_path / "c", progress=False)
    assert "pass out_dir" not in str(refused.value) and "lower batch_size" in str(refused.value)
    assert not (tmp_path / "c").exists()


def test_expert_ids_keep_their_integer_dtype(model: workbench.WorkbenchModel) -> None:
    points = [r"blocks\.\d+\.moe\.hook_expert_indices", RESID]
    half = capture(model, _prompts(), CaptureSpec(points=points, dtype="bfloat16"), progress=False)
    full = capture(model, _prompts(), CaptureSpec(points=points), progress=False)
    for a, b in zip(
        half["blocks.0.moe.hook_expert_indices"], full["blocks.0.moe.hook_expert_indices"], strict=True
    ):
        assert a.dtype == torch.long and torch.equal(a, b)
    assert half["blocks.0.hook_resid_post"][0].dtype == torch.bfloat16
