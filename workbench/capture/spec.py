"""``CaptureSpec``: what a capture records, at which layers, heads and positions, in what dtype."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from workbench.capture.layout import Layout
from workbench.errors import InputError, shown

Positions = Literal["all", "last"] | list[int] | tuple[int, int]
STATS = ("sink_mass", "key_mass", "entropy", "set_mass", "distance", "top_keys", "tail_pattern")
REDUCTIONS = ("mean_pos", "norm")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sequence(value: object) -> bool:
    return isinstance(value, list | tuple)


def _strings(value: object) -> bool:
    return _sequence(value) and all(isinstance(v, str) for v in value)


def _positions(value: object) -> bool:
    if isinstance(value, tuple):
        return len(value) == 2 and all(_int(p) or p is None for p in value)
    return value in ("all", "last") or (isinstance(value, list) and all(_int(p) for p in value))


@dataclass
class CaptureSpec:
    """What to capture.

    Attributes:
        points: Hook point names or regular expressions (see ``docs/hook_points.md``).
        layers: Keep only these blocks (None: all).
        heads: Keep only these heads on per-head points (None: all).
        positions: ``"all"``, ``"last"``, a list of token indices (negative counts from the end) or a
            ``(start, stop)`` slice, applied to real tokens after padding is removed (query axis of patterns).
        dtype: Storage dtype name of floating-point values (``"float32"``, ``"bfloat16"`` ...); None keeps
            the model's. Integer values (expert ids) keep their own dtype.
        reduce: Optional reduction per stored value: ``"mean_pos"`` (mean over positions) or ``"norm"``
            (L2 norm over the last axis).
        stats: Streamed attention statistics, never holding a full pattern (the forward stays on sdpa):
            ``sink_mass``, ``key_mass``, ``entropy``, ``set_mass`` (mass on the keys holding
            ``key_tokens``), ``distance`` (mean look-back in tokens), ``top_keys`` (the ``top_k``
            highest-scoring keys per query) and ``tail_pattern`` (the pattern rows of the last ``tail``
            queries); formulas in :mod:`workbench.capture.streamed`.
        sink_tokens: How many leading real tokens count as the sink for ``sink_mass``.
        key_tokens: Token ids whose keys form the set of ``set_mass`` (delimiters, BOS ...).
        top_k: Keys per query of ``top_keys``.
        tail: Query rows per prompt of ``tail_pattern``.
        chunk: Query chunk size of the chunked route (and of ``top_keys``).
        stat_route: ``"fused"`` (default): the first five statistics from the fused attention kernel's
            log-sum-exp wherever its identities are exact (a mask of visible / masked keys, no
            soft-capping), in float64 where the scores are large enough for fp32 rounding to show, the
            chunked path otherwise (Gemma 2, ALiBi): 2-3x the forward instead of 6-14x at 4k-16k tokens;
            ``"chunked"``: the chunked reference everywhere. The capture's manifest records the route each
            layer took (``meta["stat_routes"]``).
        batch_size: Prompts per forward pass.
        padding_side: ``"right"`` or ``"left"``; results are identical either way (positions come from the
            attention mask).
        memory_budget_gb: Refuse a capture whose estimated resident size exceeds this (None: 40% of the
            machine's available memory).
    """

    points: list[str] = field(default_factory=list)
    layers: list[int] | None = None
    heads: list[int] | None = None
    positions: Positions = "all"
    dtype: str | None = None
    reduce: str | None = None
    stats: list[str] = field(default_factory=list)
    sink_tokens: int = 1
    key_tokens: list[int] | None = None
    top_k: int = 8
    tail: int = 32
    chunk: int = 256
    stat_route: Literal["fused", "chunked"] = "fused"
    batch_size: int = 8
    padding_side: Literal["right", "left"] = "right"
    memory_budget_gb: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.points, str):
            self.points = [self.points]
        self._check_types()
        unknown = [s for s in self.stats if s not in STATS]
        if unknown:
            raise InputError(f"unknown streamed statistic {unknown[0]!r}; choose from {', '.join(STATS)}")
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise InputError(f"unknown reduction {self.reduce!r}; choose from {', '.join(REDUCTIONS)}")
        if not self.points and not self.stats:
            raise InputError("the capture spec selects nothing: give points or stats")
        if self.padding_side not in ("right", "left"):
            raise InputError("padding_side must be 'right' or 'left'")
        if self.stat_route not in ("fused", "chunked"):
            raise InputError(f"stat_route must be 'fused' or 'chunked', got {shown(self.stat_route)}")
        if "set_mass" in self.stats and not self.key_tokens:
            raise InputError("the set_mass statistic needs key_tokens: the token ids whose keys form the set")

    def _check_types(self) -> None:
        """Refuse values of the wrong type or range (one line naming the field) before anything uses them,
        so that a budget of ``"abc"`` cannot become a string repeated 2^30 times."""
        if not _strings(self.points) or not _strings(self.stats):
            raise InputError("points and stats must be lists of strings")
        for name in ("layers", "heads"):
            value = getattr(self, name)
            if value is not None and not (_sequence(value) and all(_int(v) and v >= 0 for v in value)):
                raise InputError(f"{name} must be None or a list of ints >= 0, got {shown(value)}")
        if not _positions(self.positions):
            expected = "'all', 'last', a list of ints or a (start, stop) pair"
            raise InputError(f"positions must be {expected}, got {shown(self.positions)}")
        tokens = self.key_tokens
        if tokens is not None and not (_sequence(tokens) and all(_int(t) and t >= 0 for t in tokens)):
            raise InputError(f"key_tokens must be None or a list of token ids >= 0, got {shown(tokens)}")
        for name in ("sink_tokens", "top_k", "tail", "chunk", "batch_size"):
            value = getattr(self, name)
            if not (_int(value) and value >= 1):
                raise InputError(f"{name} must be an int >= 1, got {shown(value)}")
        budget = self.memory_budget_gb
        if budget is not None and not (
            isinstance(budget, int | float) and not isinstance(budget, bool) and 0 < budget < math.inf
        ):
            raise InputError(f"memory_budget_gb must be None or a number > 0, got {shown(budget)}")
        if self.dtype is not None and not isinstance(self.dtype, str):
            raise InputError(f"dtype must be None or a dtype name, got {shown(self.dtype)}")
        dtype = self.torch_dtype()
        if dtype is not None and not dtype.is_floating_point:
            raise InputError(
                f"dtype must be a floating-point dtype (storage of float values), got {self.dtype!r}"
            )

    def torch_dtype(self) -> torch.dtype | None:
        """The storage dtype as a torch dtype."""
        if self.dtype is None:
            return None
        value = getattr(torch, self.dtype, None)
        if not isinstance(value, torch.dtype):
            raise InputError(f"unknown dtype {self.dtype!r}")
        return value

    def keeps_layer(self, name: str) -> bool:
        """Whether a point of this name passes the layer filter."""
        match = re.match(r"^blocks\.(\d+)\.", name)
        return self.layers is None or match is None or int(match.group(1)) in self.layers

    def keeps_everything(self) -> bool:
        """No head, position, reduction or dtype selection: stored values are the hook values themselves."""
        return self.heads is None and self.positions == "all" and self.reduce is None and self.dtype is None

    def select(self, value: torch.Tensor, layout: Layout) -> torch.Tensor:
        """Apply head and position selection, the reduction and the storage dtype to one prompt's value."""
        if self.heads is not None and layout.head_axis is not None:
            value = value.index_select(layout.head_axis, torch.tensor(self.heads, device=value.device))
        if layout.pos_axis is not None and self.positions != "all":
            n = value.shape[layout.pos_axis]
            if self.positions == "last":
                index = [n - 1]
            elif isinstance(self.positions, tuple):
                index = list(range(n))[slice(*self.positions)]
            else:
                index = [p % n for p in self.positions]
            value = value.index_select(layout.pos_axis, torch.tensor(index, device=value.device))
        if self.reduce == "mean_pos" and layout.pos_axis is not None:
            value = value.float().mean(layout.pos_axis)
        elif self.reduce == "norm":
            value = value.float().norm(dim=-1)
        dtype = self.torch_dtype()
        return value.to(dtype) if dtype is not None and value.is_floating_point() else value

    def to_json(self) -> str:
        """The spec as JSON (stored in the capture manifest)."""
        return json.dumps(asdict(self))
