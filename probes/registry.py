"""The probe registry: one :class:`Probe` object per probe, defined in the probe's own module, which the
battery, the app, the CLI, the results page and the docs all read.

A probe module of this package is found by its file alone: every module-level :class:`Probe` of a module
in ``probes/`` is registered. A probe from another package registers through an entry point::

    [project.entry-points."workbench.probes"]
    my_probe = "my_package.probes:MY_PROBE"      # a Probe, or a module whose Probes are all taken

Whether a probe applies to a model is decided here, from its :class:`Needs`, with the reason
(:func:`unmet`); a probe that finds out only from the data (too few tokens) raises :class:`NotApplicable`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch

from probes.params import NoParams, parse
from workbench.capture import CaptureSpec, capture
from workbench.capture.store import Capture
from workbench.errors import InputError
from workbench.models.model import WorkbenchModel
from workbench.zoo import domain_windows

ENTRY_POINTS = "workbench.probes"
Figures = list[tuple[str, go.Figure]]


class NotApplicable(Exception):
    """The probe does not apply to this model or prompt set (the reason is recorded instead of a table)."""


@dataclass(frozen=True)
class Needs:
    """What a probe needs of a model (checked by :func:`unmet` before it runs).

    Attributes:
        causal_lm: A causal language model (causal attention and an LM head).
        moe: At least one MoE layer.
        tokenizer: A tokenizer.
        points: Hook points it captures (names or regular expressions); each must match a point.
        runs_model: It runs the model itself beyond one capture (ablations, decoding, lenses, eviction):
            it cannot be computed from a capture store alone.
        pair: It compares two checkpoints of one architecture (the checkpoint diff): it runs on a
            battery's ``pairs`` (the context's ``base`` and ``model``), never on one model.
    """

    causal_lm: bool = False
    moe: bool = False
    tokenizer: bool = False
    points: tuple[str, ...] = ()
    runs_model: bool = False
    pair: bool = False

    def words(self) -> str:
        """The needs in words, for the docs (``causal LM, MoE; runs the model``)."""
        parts = [n for n, on in (("causal LM", self.causal_lm), ("MoE", self.moe)) if on]
        parts += ["tokenizer"] if self.tokenizer else []
        parts += [f"`{p}`" for p in self.points]
        text = ", ".join(parts) or "any model"
        text = f"a base and a tuned checkpoint of {text}" if self.pair else text
        return f"{text}; runs the model" if self.runs_model else text


@dataclass
class Context:
    """What a probe's ``run`` gets besides its parameters: the model, the prompt set by group, the seed and
    where captures go.

    Attributes:
        model: The loaded model.
        texts: Prompt texts by group (domain, language ...).
        seed: The run's seed.
        store: Directory for capture stores (None: in memory).
        base: The base checkpoint a pair probe compares ``model`` (the tuned one) against.
    """

    model: WorkbenchModel
    texts: dict[str, list[str]]
    seed: int = 0
    store: Path | None = None
    base: WorkbenchModel | None = None

    @property
    def prompts(self) -> list[str]:
        """All texts, group after group."""
        return [t for texts in self.texts.values() for t in texts]

    @property
    def groups(self) -> list[str]:
        """The group of each text in :attr:`prompts`."""
        return [g for g, texts in self.texts.items() for _ in texts]

    def capture(self, *points: str, stats: Sequence[str] = ()) -> Capture:
        """Capture hook points and streamed statistics (``stats``, CaptureSpec's names) for the prompt
        set (kept on disk under the store when one is set; a probe redone after a kill replaces its own
        store)."""
        spec, store = CaptureSpec(points=list(points), stats=list(stats)), self.store
        return capture(
            self.model, self.prompts, spec, out_dir=store, progress=False, overwrite=store is not None
        )

    def windows(self, seq_len: int, per_group: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token windows of ``seq_len`` (at most ``per_group`` per group) and their group ids."""
        return domain_windows(self.model.tokenizer, self.texts, seq_len, per_group)


def _no_figures(table: pd.DataFrame) -> Figures:
    return []


@dataclass(frozen=True)
class Probe:
    """One probe: how to run it, what it needs, how its table is shown and what it measures.

    Attributes:
        name: Registry name (a battery spec's ``[probes.NAME]``, ``workbench probe run NAME``).
        doc: One line: what a row of its table holds.
        formula: The definition it computes.
        cite: The paper (or code) the definition follows.
        run: ``run(context, params) -> tidy table`` (one row per layer, head, group ...; no model column).
        params: Its parameter dataclass (:mod:`probes.params`: type, default, range per field).
        needs: What it needs of a model.
        prompts: The built-in prompt set it reads by default (``heldout``, ``parallel`` or ``short``).
        figures: ``figures(table) -> [(label, figure)]`` over a table of one or more models (``model``
            column).
        summary: ``summary(table) -> small table`` (one row per model, or per model and layer); None shows
            the table's first rows.
    """

    name: str
    doc: str
    formula: str
    cite: str
    run: Callable[[Context, Any], pd.DataFrame]
    params: type = NoParams
    needs: Needs = field(default_factory=Needs)
    prompts: str = "heldout"
    figures: Callable[[pd.DataFrame], Figures] = _no_figures
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None

    def parse(self, table: dict[str, Any], at: str | None = None) -> Any:
        """Its parameters from a table of overrides (defaults for the rest), checked (:func:`parse`)."""
        return parse(self.params, table, at or self.name)

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        """Its summary of a table (the first rows when it has none)."""
        return self.summary(table) if self.summary is not None else table.head(10)

    def __call__(
        self,
        model: WorkbenchModel,
        texts: dict[str, list[str]],
        base: WorkbenchModel | None = None,
        **params: Any,
    ) -> pd.DataFrame:
        """Run on a model and texts by group with parameters given by keyword (library use); the table
        gets no ``model`` column. A pair probe compares ``model`` (tuned) against ``base``.

        Raises:
            NotApplicable: The model lacks what the probe needs.
            ParamError: A parameter of the wrong type or out of range.
            InputError: A pair probe's checkpoints are not of one architecture.
        """
        return self.measure(Context(model, texts, base=base), self.parse(params))

    def measure(self, ctx: Context, params: Any) -> pd.DataFrame:
        """``run`` after checking the model meets the probe's needs (what the battery and the library
        call).

        Raises:
            NotApplicable: The model lacks what the probe needs (or the data decides it does not apply).
        """
        reason = unmet(self.needs, ctx.model)
        if not reason and self.needs.pair:
            missing = "it compares two checkpoints: give a base (base=, --base or a battery's pairs)"
            reason = missing if ctx.base is None else None
            reason = reason or unmet(replace(self.needs, pair=False), ctx.base)
        elif not reason and ctx.base is not None:
            reason = "it reads one model, not a pair"
        if reason:
            raise NotApplicable(reason)
        return self.run(ctx, params)


def unmet(needs: Needs, model: WorkbenchModel) -> str | None:
    """Why a model does not meet a probe's needs, or None when it does."""
    cfg = model.cfg
    if needs.causal_lm and not cfg.causal_lm:
        return f"{model.source} is not a causal language model"
    if needs.moe and not cfg.is_moe:
        return f"{model.source} has no MoE layers"
    if needs.tokenizer and model.tokenizer is None:
        return f"{model.source} has no tokenizer"
    missing = [p for p in needs.points if not model.hook_points(p, missing_ok=True)]
    if missing:
        return f"{model.source} has no {missing[0]} hook point"
    return None


def _probes_of(module: ModuleType) -> list[Probe]:
    return [value for value in vars(module).values() if isinstance(value, Probe)]


_REGISTRY: dict[str, Probe] = {}


def _add(probe: Probe, origin: str) -> None:
    known = _REGISTRY.get(probe.name)
    if known is not None and known is not probe:
        raise InputError(f"probe {probe.name!r} from {origin} is already registered")
    _REGISTRY[probe.name] = probe


def registry() -> dict[str, Probe]:
    """Every registered probe by name: this package's modules (alphabetical, then definition order), then
    the entry points of installed packages."""
    if not _REGISTRY:
        import probes

        for info in sorted(pkgutil.iter_modules(probes.__path__), key=lambda i: i.name):
            for probe in _probes_of(importlib.import_module(f"probes.{info.name}")):
                _add(probe, f"probes.{info.name}")
        for point in entry_points(group=ENTRY_POINTS):
            try:
                loaded = point.load()
            except Exception as error:  # a broken plug-in is named, not a traceback
                raise InputError(f"probe entry point {point.name} ({point.value}): {error}") from None
            found = _probes_of(loaded) if isinstance(loaded, ModuleType) else [loaded]
            if not found or not all(isinstance(p, Probe) for p in found):
                raise InputError(f"probe entry point {point.name} ({point.value}) is not a Probe")
            for probe in found:
                _add(probe, f"entry point {point.name}")
    return dict(_REGISTRY)


def get(name: str) -> Probe:
    """The registered probe called ``name``.

    Raises:
        InputError: No such probe (the message lists the known ones).
    """
    probes = registry()
    if name not in probes:
        raise InputError(f"unknown probe {name!r} (known: {', '.join(probes)})")
    return probes[name]


def per_model(table: pd.DataFrame, draw: Callable[[pd.DataFrame, str], go.Figure]) -> Figures:
    """One figure per model of a table (``draw(rows, model)``)."""
    return [(str(model), draw(rows, str(model))) for model, rows in table.groupby("model", sort=False)]


def last_layer(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each model's last layer."""
    return table[table.layer == table.groupby("model").layer.transform("max")]
