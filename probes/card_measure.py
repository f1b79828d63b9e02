"""The card's measured rows: the cheap registered probes run on the held-out sample, each row filled from
its probe's own summary (so a card and the probe run directly give the same numbers).

Rows: 10 pre-training data and 11 data depth (``loss_per_byte``: bits per byte overall and by domain),
13 specialisation (the spread of bits per byte over domains; ``moe_specialisation`` on MoE models),
17 attention sinks (``sinks``), 25 batch effects (``batch_invariance`` in float32 and bfloat16) and
30 semantic compression depth (``compression`` and ``cka``). A probe that does not apply leaves its row's
read value and says why in the source.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

from probes.factors import Factor
from probes.registry import NotApplicable, get
from workbench.models.load import load
from workbench.models.model import WorkbenchModel
from workbench.models.quantize import loaded_quantised
from workbench.zoo import heldout

PER_DOMAIN, CHARS = 2, 300  # the default battery's held-out cut
SAMPLE = f"held-out sample, {PER_DOMAIN} texts per domain, {CHARS} chars"
DTYPES = (torch.float32, torch.bfloat16)


def summary(probe: str, model: WorkbenchModel, texts: dict[str, list[str]]) -> pd.DataFrame:
    """A registered probe's summary table on a model (its ``model`` column dropped).

    Raises:
        NotApplicable: The probe does not apply to the model.
    """
    found = get(probe)
    table = found(model, texts).assign(model=model.source)
    return found.summarise(table).drop(columns="model")


def _row(table: pd.DataFrame) -> dict[str, Any]:
    return table.to_dict("records")[0]


def _in_dtype(model: WorkbenchModel, dtype: torch.dtype) -> WorkbenchModel:
    """The model itself in its own dtype, else a copy cast to ``dtype``."""
    if next(model.hf.parameters()).dtype == dtype:
        return model
    return load(copy.deepcopy(model.hf).to(dtype), tokenizer=model.tokenizer)


def _losses(model: WorkbenchModel, texts: dict[str, list[str]]) -> dict[int, tuple[Any, str]]:
    table = get("loss_per_byte")(model, texts)
    by_domain = {r.group: r.bits_per_byte for r in table.itertuples()}
    overall = float((table.nats_per_byte * table.bytes).sum() / table.bytes.sum() / math.log(2))
    spread = {
        "bits_per_byte_spread": max(by_domain.values()) - min(by_domain.values()),
        "easiest": min(by_domain, key=by_domain.get),
        "hardest": max(by_domain, key=by_domain.get),
    }
    if model.cfg.is_moe:
        spec = summary("moe_specialisation", model, texts)
        spread["moe_specialisation"] = {r.domain: r.spec for r in spec.itertuples()}
    source = f"measured: loss_per_byte ({SAMPLE})"
    return {
        10: ({"bits_per_byte": overall}, source),
        11: (by_domain, source),
        13: (spread, source + ("; moe_specialisation" if model.cfg.is_moe else "")),
    }


def _batch(model: WorkbenchModel, texts: dict[str, list[str]]) -> dict[str, Any]:
    if loaded_quantised(model.hf):  # its backend fixes the dtypes: not cast
        return {"as loaded (quantised)": _row(summary("batch_invariance", model, texts))}
    return {
        str(d).removeprefix("torch."): _row(summary("batch_invariance", _in_dtype(model, d), texts))
        for d in DTYPES
    }


def _compression(model: WorkbenchModel, texts: dict[str, list[str]]) -> dict[str, Any]:
    return {**_row(summary("compression", model, texts)), **_row(summary("cka", model, texts))}


def _with(read: Factor, value: Any, source: str) -> Factor:
    """A read row with its measurement, or the reason there is none, added: a dict value gains the
    measured keys; the source keeps what was read and replaces the "not run" note."""
    read_parts = [read.source.split("measured:")[0].rstrip("; ")] if read.value is not None else []
    if read.value is not None and value is not None:
        value = {**read.value, **value}
    elif value is None:
        value = read.value
    return replace(read, value=value, source="; ".join([*read_parts, source]))


def measured(
    model: WorkbenchModel, factors: list[Factor], texts: dict[str, list[str]] | None = None
) -> list[Factor]:
    """The card's factors with rows 10, 11, 13, 17, 25 and 30 measured on ``texts`` (default: the held-out
    sample as the default battery cuts it); a row whose probe does not apply keeps its read value and says
    why."""
    texts = texts or heldout(PER_DOMAIN, CHARS)
    found: dict[int, tuple[Any, str]] = {}
    why: dict[int, str] = {}
    try:
        found |= _losses(model, texts)
    except NotApplicable as reason:
        why |= {n: f"not measurable: {reason}" for n in (10, 11, 13)}
    runs = {
        17: ("sinks", lambda: _row(summary("sinks", model, texts))),
        25: ("batch_invariance in float32 and bfloat16", lambda: _batch(model, texts)),
        30: ("compression, cka", lambda: _compression(model, texts)),
    }
    for number, (probes, run) in runs.items():
        try:
            found[number] = (run(), f"measured: {probes} ({SAMPLE})")
        except NotApplicable as reason:
            why[number] = f"not measurable: {reason}"
    found |= {n: (None, reason) for n, reason in why.items()}
    return [_with(f, *found[f.number]) if f.number in found else f for f in factors]
