"""Run a battery: every (model, probe) unit once, resumable, serially or as Ray tasks.

Layout of a run directory::

    manifest.json              spec, its digest, versions, models with their weight fingerprints,
                               status and seconds of every unit
    units/PROBE/MODEL.parquet  one unit's table, written atomically (temp file + rename); a pair probe's
                               unit is named by its pair, TUNED-vs-BASE
    units/PROBE/MODEL.skip     a unit that does not apply to the model, with the reason
    tables/PROBE.parquet       the probe's table over all models (a ``model`` column), in spec order
    captures/MODEL/PROBE/      capture stores, when ``[capture] store = true``
    report.html, summary.md    written by :mod:`workbench.battery.report`

A unit is done when its ``.parquet`` or ``.skip`` exists, so a run killed at any point (even SIGKILL)
resumes where it stopped: finished units are kept, the unit in flight is redone, nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probes.registry import Context, NotApplicable, get
from workbench._version import versions
from workbench.battery.prompts import resolve_prompts
from workbench.battery.spec import (
    BatterySpec,
    ModelEntry,
    PairEntry,
    ProbeEntry,
    SpecError,
    check_device,
)
from workbench.errors import WorkbenchError
from workbench.files import atomic_write

_MODELS: dict[tuple[str, str, str, str | None, str], Any] = {}  # per process: one load per model and dtype
RESIDENT = 2  # models kept loaded at once (a pair's two)


class LoadFailed(str):
    """Why a model could not be loaded (kept in place of the model, so its other units fail at once)."""


class BatteryIncomplete(WorkbenchError):
    """Some units failed; the others are written and a rerun retries only the failed ones."""


@dataclass(frozen=True)
class Unit:
    """One probe on one model, or a pair probe on a pair (``model`` the tuned checkpoint, ``base`` set)."""

    model: ModelEntry
    probe: ProbeEntry
    base: ModelEntry | None = None

    @property
    def label(self) -> str:
        """The unit's model label in the tables: the model's, or the pair's ``TUNED-vs-BASE``."""
        return self.model.name if self.base is None else PairEntry(self.base, self.model).name

    def path(self, root: Path, suffix: str) -> Path:
        return inside(root, root / "units" / self.probe.name / f"{self.label}.{suffix}")

    def done(self, root: Path) -> bool:
        return self.path(root, "parquet").exists() or self.path(root, "skip").exists()


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves (symbolic links followed) inside the run directory ``root``.

    Raises:
        SpecError: A path that would land outside ``root``.
    """
    if not path.resolve().is_relative_to(root.resolve()):
        raise SpecError(f"{path} would be written outside the run directory {root}")
    return path


def _model(spec: BatterySpec, entry: ModelEntry) -> Any:
    from workbench.models.load import load

    dtype = entry.dtype or spec.dtype
    key = (entry.source, dtype, spec.device, entry.device_map, json.dumps(entry.quantization, sort_keys=True))
    if key in _MODELS:
        _MODELS[key] = _MODELS.pop(key)  # most recently used last
    else:
        while len(_MODELS) >= RESIDENT:  # the least recently used goes
            _MODELS.pop(next(iter(_MODELS)))
        try:
            _MODELS[key] = load(
                entry.source,
                device=spec.device if entry.device_map is None else None,
                dtype=getattr(torch, dtype),
                device_map=entry.device_map,
                quantization=entry.quantization,
                trust_remote_code=entry.trust_remote_code,
            )
        except Exception as error:  # any loader's failure (config, weights, hub): the model's units fail
            first = next(iter(str(error).strip().splitlines()), "") or type(error).__name__
            _MODELS[key] = LoadFailed(f"could not load {entry.source}: {first}")
    return _MODELS[key]


def _failed(unit: Unit, reason: str) -> dict[str, Any]:
    return {"probe": unit.probe.name, "model": unit.label, "status": "failed", "reason": reason}


def run_unit(spec: BatterySpec, unit: Unit) -> dict[str, Any]:
    """Compute one unit and write its table (or its skip record) atomically; return its manifest entry."""
    root = spec.output
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    start = time.perf_counter()
    store = _store(root, unit) if spec.store else None
    base = _model(spec, unit.base) if unit.base is not None else None
    model = _model(spec, unit.model)
    for loaded in (base, model):
        if isinstance(loaded, LoadFailed):
            return _failed(unit, loaded)
    probe = get(unit.probe.probe)
    ctx = Context(model, resolve_prompts(spec.prompts[unit.probe.prompts]), spec.seed, store, base)
    try:
        table = probe.measure(ctx, probe.params(**unit.probe.params))
    except WorkbenchError as error:  # bad input for this model: recorded, the battery goes on
        return _failed(unit, str(error))
    except NotApplicable as reason:
        record = json.dumps({"skipped": str(reason)})
        atomic_write(unit.path(root, "skip"), lambda p: p.write_text(record, encoding="utf-8"))
        return _entry(spec, unit)
    table.insert(0, "model", unit.label)
    table.attrs = {"seconds": round(time.perf_counter() - start, 3)}  # kept in the Parquet metadata
    atomic_write(unit.path(root, "parquet"), lambda p: table.to_parquet(p, index=False))
    return _entry(spec, unit)


def plan(spec: BatterySpec) -> list[Unit]:
    """All units, model-major (each model loads once in a serial run), then the pair probes pair by pair;
    a probe restricted to some models or pairs (``models = [...]``) runs on those only."""
    singles = [
        Unit(model, probe)
        for model in spec.models
        for probe in spec.probes
        if not probe.pair and (not probe.models or model.name in probe.models)
    ]
    pairs = [
        Unit(pair.tuned, probe, pair.base)
        for pair in spec.pairs
        for probe in spec.probes
        if probe.pair and (not probe.models or pair.name in probe.models)
    ]
    return singles + pairs


def _store(root: Path, unit: Unit) -> Path:
    return inside(root, root / "captures" / unit.label / unit.probe.name)


def validate(spec: BatterySpec) -> None:
    """Everything checked before a run writes anything: threads, device, prompt files, and that every path
    the run writes resolves inside its directory (a spec built in code skips :func:`load_spec`'s checks).

    Raises:
        SpecError: One line naming the problem.
    """
    if isinstance(spec.threads, bool) or not isinstance(spec.threads, int) or spec.threads < 1:
        raise SpecError(f"threads: expected an int >= 1, got {spec.threads!r}")
    check_device(spec.device, "capture.device")
    for name, prompts in spec.prompts.items():
        try:
            resolve_prompts(prompts)
        except WorkbenchError as error:
            raise SpecError(f"prompts.{name}: {error}") from None
    root = spec.output
    paths = [root / "manifest.json", root / "report.html", root / "summary.md"]
    paths += [root / "tables" / f"{p.name}.parquet" for p in spec.probes]
    for unit in plan(spec):
        paths += [unit.path(root, "parquet"), unit.path(root, "skip")]
        paths += [_store(root, unit)] if spec.store else []
    for path in paths:
        inside(root, path)


def _has_results(root: Path) -> bool:
    return any((root / "units").glob("*/*.parquet")) or any((root / "units").glob("*/*.skip"))


def _check_output(spec: BatterySpec) -> None:
    manifest = spec.output / "manifest.json"
    if manifest.exists() and _has_results(spec.output):  # a manifest without results loses nothing
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise SpecError(
                f"{manifest}: damaged manifest; move the run directory away to start over"
            ) from None
        if previous.get("spec_digest") != spec.digest():
            raise SpecError(
                f"{spec.output} holds a run of another spec; give another --out or move that directory away"
            )


def _write_manifest(spec: BatterySpec, entries: list[dict[str, Any]], state: str) -> None:
    manifest = {
        "name": spec.name,
        "state": state,
        "spec_digest": spec.digest(),
        "spec": spec.raw,
        "versions": versions(),
        "models": [{**vars(m), **_fingerprint(m.source)} for m in spec.models],
        "pairs": [
            {"name": p.name, **{side: {**vars(m), **_fingerprint(m.source)} for side, m in vars(p).items()}}
            for p in spec.pairs
        ],
        "units": entries,
    }
    atomic_write(
        spec.output / "manifest.json", lambda p: p.write_text(json.dumps(manifest, indent=2, default=str))
    )


def _fingerprint(source: str) -> dict[str, Any]:
    """What identifies a model's weights: the zoo's recorded sha256, or for a local directory the sha256 of
    its config and the names and sizes of its weight files (hashing gigabytes per run would cost minutes);
    a hub id is identified by its revision in the spec."""
    from workbench.zoo.registry import zoo

    entries = zoo()
    if source in entries:
        return {"weights_sha256": entries[source].sha256}
    path = Path(source)
    if path.is_dir():
        config = path / "config.json"
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
        return {
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
            "weight_files": {p.name: p.stat().st_size for p in files},
        }
    return {}


def merge_tables(spec: BatterySpec) -> dict[str, Path]:
    """Concatenate every probe's unit tables (spec order) into ``tables/PROBE.parquet``."""
    paths = {}
    for probe in spec.probes:
        parts = [u.path(spec.output, "parquet") for u in plan(spec) if u.probe == probe]
        frames = [pd.read_parquet(p) for p in parts if p.exists()]
        if frames:
            merged = pd.concat(frames, ignore_index=True)
            merged.attrs = {}
            path = inside(spec.output, spec.output / "tables" / f"{probe.name}.parquet")
            atomic_write(path, lambda p, m=merged: m.to_parquet(p, index=False))
            paths[probe.name] = path
    return paths


def _ray_units(
    spec: BatterySpec, units: list[Unit], address: str, progress: Progress, task: Any
) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise WorkbenchError("Ray is not installed: pip install 'interp-workbench[distributed]'") from None
    try:
        if address == "local":
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
        else:
            ray.init(address=address, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise WorkbenchError(f"no Ray cluster at {address!r}: {str(error).splitlines()[0]}") from None
    try:
        remote = ray.remote(num_cpus=spec.threads)(run_unit)
        pending = {remote.remote(spec, unit): unit for unit in units}
        entries = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            entries.append(ray.get(ready[0]))
            progress.update(task, advance=1, description=f"{pending.pop(ready[0]).probe.name}")
        return entries
    finally:
        ray.shutdown()


def run_battery(spec: BatterySpec, ray: str | None = None, progress: bool = True) -> Path:
    """Run every unit not yet done, merge the tables and write the manifest, report and summary.

    Args:
        spec: A validated spec (:func:`workbench.battery.spec.load_spec`).
        ray: None to run here, ``"local"`` to start a Ray cluster on this machine, ``"auto"`` or an address
            to join a running one; each unit is then a Ray task.
        progress: Show progress bars.

    Returns:
        The run directory.
    """
    from workbench.battery.report import write_report

    validate(spec)
    _check_output(spec)
    units = plan(spec)
    todo = [u for u in units if not u.done(spec.output)]
    _write_manifest(spec, [], "running")
    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("units", total=len(units), completed=len(units) - len(todo))
        if ray:
            results = _ray_units(spec, todo, ray, bar, task)
        else:
            results = []
            for unit in todo:
                bar.update(task, description=f"{unit.label}: {unit.probe.name}")
                results.append(run_unit(spec, unit))
                bar.update(task, advance=1)
    failed = {(r["probe"], r["model"]): r for r in results if r["status"] == "failed"}
    entries = [failed.get((u.probe.name, u.label)) or _entry(spec, u) for u in units]
    merge_tables(spec)
    _write_manifest(spec, entries, "incomplete" if failed else "complete")
    write_report(spec.output)
    if failed:
        first = next(iter(failed.values()))
        raise BatteryIncomplete(
            f"{len(failed)} unit(s) failed, e.g. {first['probe']} on {first['model']}: {first['reason']} "
            f"(all in {spec.output / 'manifest.json'}; rerun to retry them)"
        )
    return spec.output


def _entry(spec: BatterySpec, unit: Unit) -> dict[str, Any]:
    skip = unit.path(spec.output, "skip")
    if skip.exists():
        reason = json.loads(skip.read_text(encoding="utf-8"))["skipped"]
        return {"probe": unit.probe.name, "model": unit.label, "status": "skipped", "reason": reason}
    seconds = pd.read_parquet(unit.path(spec.output, "parquet")).attrs.get("seconds")
    return {"probe": unit.probe.name, "model": unit.label, "status": "done", "seconds": seconds}
