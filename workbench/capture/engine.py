"""``capture(model, prompts, spec)``: batched capture with padding removed, a memory estimate first,
spilling to disk past the budget, and streamed attention statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from rich.progress import Progress

from workbench.capture.layout import layout_for, split_prompts
from workbench.capture.spec import CaptureSpec
from workbench.capture.stat_taps import stat_point, stat_taps
from workbench.capture.store import Capture
from workbench.errors import InputError, WorkbenchError
from workbench.models.model import WorkbenchModel

Prompts = str | Sequence[str] | Sequence[torch.Tensor] | torch.Tensor


SMALL_CAPTURE = 64 * 2**20  # bytes; below this the default budget check is skipped


class CaptureTooLargeError(WorkbenchError):
    """The estimated capture does not fit the memory budget."""


@dataclass(frozen=True)
class Estimate:
    """Estimated bytes: what the capture stores, and the transient peak of one batch's hook values."""

    stored_bytes: int
    batch_bytes: int
    budget_bytes: int

    def resident_bytes(self, spills: bool) -> int:
        """What stays in memory: one batch when spilling to disk, everything otherwise."""
        return self.batch_bytes if spills else self.stored_bytes + self.batch_bytes


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _names(model: WorkbenchModel, spec: CaptureSpec) -> tuple[list[str], list[str]]:
    layers = None if spec.layers is None else tuple(spec.layers)
    key = ("capture_names", tuple(spec.points), layers, tuple(spec.stats))
    if key not in model.memo:
        model.memo[key] = _resolve_names(model, spec)
    return model.memo[key]


def _resolve_names(model: WorkbenchModel, spec: CaptureSpec) -> tuple[list[str], list[str]]:
    layers = range(model.cfg.n_layers)
    for what, chosen, count in (
        ("layer", spec.layers, len(layers)),
        ("head", spec.heads, model.cfg.n_heads),
    ):
        if chosen and max(chosen) >= count:
            raise InputError(f"{what} {max(chosen)} does not exist: the model has {count} {what}s")
    points = [n for n in model.hook_points(spec.points) if spec.keeps_layer(n)] if spec.points else []
    blocks = model.adapter.block_modules(model.base)
    stats = [
        stat_point(layer, s)
        for layer in layers
        if (spec.layers is None or layer in spec.layers) and model.adapter.attention_module(blocks[layer])
        for s in spec.stats
    ]
    return points, stats


def _encode(model: WorkbenchModel, prompts: Prompts) -> list[torch.Tensor]:
    """Token ids per prompt (no padding): prompts are strings, 1-D id tensors, or one [batch, pos] tensor."""
    if isinstance(prompts, torch.Tensor):
        return [row.cpu() for row in (prompts if prompts.dim() == 2 else prompts[None])]
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise InputError("no prompts to capture")
    ids = [
        p.reshape(-1).cpu() if isinstance(p, torch.Tensor) else model.encode(p)["input_ids"][0].cpu()
        for p in prompts
    ]
    if any(len(t) == 0 for t in ids):
        raise InputError("empty prompt: no tokens")
    return ids


def _texts(prompts: Prompts) -> list[str] | None:
    """The prompts as strings for the manifest (None when token ids were given)."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, torch.Tensor) or not all(isinstance(p, str) for p in prompts):
        return None
    return list(prompts)


def _batch(ids: list[torch.Tensor], pad_id: int, side: str) -> dict[str, torch.Tensor]:
    length = max(len(t) for t in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for row, t in enumerate(ids):
        span = slice(length - len(t), length) if side == "left" else slice(0, len(t))
        input_ids[row, span] = t
        mask[row, span] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _selected(n: int, spec: CaptureSpec) -> int:
    """How many of ``n`` real positions the spec keeps."""
    if spec.reduce == "mean_pos":
        return 1
    if spec.positions == "all":
        return n
    if spec.positions == "last":
        return 1
    if isinstance(spec.positions, tuple):
        return len(range(n)[slice(*spec.positions)])
    return len(spec.positions)


STAT_TEMPORARIES = 5  # [batch, head, chunk, k_pos] float32 tensors alive at once in streamed_stats


def _stat_bytes(name: str, length: int, selected: int, spec: CaptureSpec, float_size: int) -> float:
    """Bytes per head one prompt of ``length`` tokens (``selected`` of them kept) stores for a streamed
    statistic: per key (key mass), per kept query, ``top_k`` int64 ids per kept query, or ``tail`` rows."""
    if name.endswith("stat_top_keys"):
        return 8 * spec.top_k * selected
    if name.endswith("stat_tail_pattern"):
        return float_size * spec.tail * length
    return float_size * (length if name.endswith("stat_key_mass") else selected)


def estimate_capture(
    model: WorkbenchModel,
    ids: list[torch.Tensor],
    names: list[str],
    spec: CaptureSpec,
    stats: Sequence[str] = (),
) -> Estimate:
    """Estimate stored and per-batch bytes from a 2-token dry run (once per model and point set; sizes
    scale as pos or pos^2), and of the streamed statistics from the model's head count.

    Stored: for each point, elements per position (per position pair for patterns) x kept positions x the
    storage element size (integer values, such as expert ids, keep their own). Each statistic stores one
    float32 per kept head and position. Per batch: the hook values of the largest padded batch as the model
    emits them, the statistics of every layer, and one query chunk's scores and temporaries.
    """
    key = ("capture_sizes", tuple(names))
    if key not in model.memo:
        per_position: dict[str, tuple[float, int, bool]] = {}

        def measure(value: torch.Tensor, name: str) -> None:
            power = layout_for(name).positions_power()
            per_position[name] = (value.numel() / 2**power, value.element_size(), value.is_floating_point())

        if names:
            with torch.no_grad(), model.hooks(dict.fromkeys(names, measure)):
                model.base(input_ids=torch.ones(1, 2, dtype=torch.long, device=model.device))
        model.memo[key] = per_position
    storage = spec.torch_dtype()
    storage_size = torch.tensor([], dtype=storage).element_size() if storage else None
    lengths = [len(t) for t in ids]
    batch_prompts, longest = min(spec.batch_size, len(ids)), max(lengths)
    stored = batch = 0.0
    for name, (elements, size, floating) in model.memo[key].items():
        power = layout_for(name).positions_power()
        stored_size = storage_size if storage_size and floating else size
        stored += elements * stored_size * sum(_selected(n, spec) * n ** (power - 1) for n in lengths)
        batch += elements * size * batch_prompts * longest**power
    if stats:
        heads = model.cfg.n_heads
        kept = len(spec.heads) if spec.heads is not None else heads
        stat_size = storage_size or 4
        for name in stats:
            stored += kept * sum(_stat_bytes(name, n, _selected(n, spec), spec, stat_size) for n in lengths)
            batch += heads * batch_prompts * _stat_bytes(name, longest, longest, spec, 4)
        batch += 4 * heads * batch_prompts * longest * STAT_TEMPORARIES * min(spec.chunk, longest)
    if spec.memory_budget_gb is not None:
        budget = int(spec.memory_budget_gb * 2**30)
    elif stored + batch < SMALL_CAPTURE:
        budget = SMALL_CAPTURE  # no need to ask the OS for a capture this small
    else:
        budget = int(0.4 * psutil.virtual_memory().available)
    return Estimate(int(stored), int(batch), budget)


def capture(
    model: WorkbenchModel,
    prompts: Prompts,
    spec: CaptureSpec,
    *,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Capture:
    """Capture hook points and streamed statistics for prompts, batch by batch.

    Args:
        model: A loaded model (HF backend).
        prompts: Prompts (strings), token-id tensors of any lengths, or one [batch, pos] tensor.
        spec: What to record.
        out_dir: Directory for the capture; batches spill there when memory would exceed the budget.
        overwrite: Replace a capture already stored in ``out_dir`` (its shards are removed once the new
            manifest is written; other files in the directory are kept).
        progress: Show a progress bar.

    Raises:
        CaptureTooLargeError: The estimate exceeds the budget (checked before any forward pass).
        StoreExistsError: ``out_dir`` holds a capture and ``overwrite`` is False (checked before any
            forward pass).
    """
    points, stats = _names(model, spec)
    ids = _encode(model, prompts)
    directory = Path(out_dir) if out_dir is not None else None
    meta = {
        "model": model.source,
        "family": model.adapter.family,
        "revision": getattr(model.config, "_commit_hash", None),
        "prompts": _texts(prompts),
        "spec": spec.to_json(),
        "model_dtype": str(next(model.hf.parameters()).dtype),
        "stat_routes": {},  # layer -> the route its streamed statistics took (fused or chunked)
    }
    result = Capture(points + stats, meta, directory, overwrite=overwrite)
    estimate = estimate_capture(model, ids, points, spec, stats)
    spills = directory is not None
    if estimate.resident_bytes(spills) > estimate.budget_bytes:
        options = (
            "narrow the spec, lower batch_size or chunk (spilling to out_dir keeps one batch in memory)"
            if spills
            else "narrow the spec, pass out_dir to spill to disk"
        )
        raise CaptureTooLargeError(
            f"capture needs about {_size(estimate.resident_bytes(spills))} in memory "
            f"(stores {_size(estimate.stored_bytes)}); budget {_size(estimate.budget_bytes)}: {options}, "
            "or raise memory_budget_gb"
        )
    pad = (
        model.tokenizer.pad_token_id
        if model.tokenizer is not None and model.tokenizer.pad_token_id is not None
        else 0
    )
    state: dict[str, Any] = {}
    batch_values: dict[str, Any] = {}
    identity, on_device = spec.keeps_everything(), model.device.type != "cpu"

    def keep(value: torch.Tensor, name: str) -> None:
        batch_values[name] = value.detach()

    show = progress and len(ids) > spec.batch_size
    with Progress() if show else nullcontext() as bar:
        task = bar.add_task("capturing", total=len(ids)) if bar is not None else None
        for start in range(0, len(ids), spec.batch_size):
            chunk = ids[start : start + spec.batch_size]
            batch = {k: v.to(model.device) for k, v in _batch(chunk, pad, spec.padding_side).items()}
            mask = batch["attention_mask"]
            state["mask"], state["first"] = mask, mask.float().argmax(dim=1)
            state["ids"] = batch["input_ids"]
            if bool(mask.all()):  # no padding: HF's default mask and positions are the same, and cheaper
                inputs = {"input_ids": batch["input_ids"]}
            else:
                inputs = {**batch, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
            batch_values.clear()
            with ExitStack() as stack, torch.no_grad():
                stack.enter_context(model.hooks(dict.fromkeys(points, keep)))
                for context in stat_taps(model, stats, spec, state, batch_values, meta["stat_routes"]):
                    stack.enter_context(context)
                model.base(**inputs)  # every hook point lives in the base model: skip the LM head
            per_prompt = {
                name: split_prompts(batch_values[name], layout_for(name), mask) for name in result.names
            }
            if not identity:
                per_prompt = {n: [spec.select(v, layout_for(n)) for v in vs] for n, vs in per_prompt.items()}
            if on_device:
                per_prompt = {n: [v.cpu() for v in vs] for n, vs in per_prompt.items()}
            result.append(per_prompt, chunk)
            if directory is not None and result.resident_bytes() > estimate.budget_bytes // 2:
                result.spill()
            if bar is not None:
                bar.update(task, advance=len(chunk))
    if directory is not None:
        result.save(directory)
    return result


@contextmanager
def streaming(
    model: WorkbenchModel, ids: torch.Tensor, spec: CaptureSpec
) -> Iterator[dict[str, torch.Tensor]]:
    """The streamed statistics ``spec.stats`` of a forward pass run inside the block on one unpadded
    prompt ``ids`` [1, pos] (a prefill that also fills a cache, say); the yielded dict fills with point
    name -> value [1, ...] as the pass runs."""
    _, stats = _names(model, spec)
    values: dict[str, torch.Tensor] = {}
    state = {"mask": torch.ones_like(ids), "first": ids.new_zeros(1), "ids": ids}
    with ExitStack() as stack:
        for context in stat_taps(model, stats, spec, state, values):
            stack.enter_context(context)
        yield values
