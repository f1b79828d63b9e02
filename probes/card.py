"""The "thinking parameters" card: what a model is (the header: size, dtype, quantisation, shape) and the
thirty factors that shape how it thinks (:mod:`probes.factors`), each with its value and where the value
came from; ``measure=True`` fills the measured rows from the registered probes (:mod:`probes.card_measure`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from probes.factors import Factor, factors
from probes.registry import Probe
from workbench.models.checkpoint import Fact, quantization_facts
from workbench.models.model import WorkbenchModel
from workbench.models.quantize import shape_of

HEADER = "header"  # the class of header rows in the card's table (number 0)
SUMMARY_FIELDS = (
    "family",
    "dtype",
    "quantisation",
    "layers",
    "d_model",
    "attention_kind",
    "parameters_total",
    "parameters_active_per_token",
)


@dataclass(frozen=True)
class Card:
    """A model's card.

    Attributes:
        model: The model's label (zoo name, directory or hub id).
        header: What the model is: family, class, dtype, parameter counts, quantisation, shape; each a
            :class:`Fact` (value and source).
        factors: The thirty :class:`Factor` rows, numbered 1-30 in six classes.
    """

    model: str
    header: dict[str, Fact]
    factors: list[Factor]

    def get(self, key: str | int) -> Any:
        """The value of a header field (by name) or of a factor (by number or name).

        Raises:
            KeyError: No such field or factor.
        """
        if isinstance(key, int):
            return self.factor(key).value
        if key in self.header:
            return self.header[key].value
        for f in self.factors:
            if f.name == key:
                return f.value
        raise KeyError(key)

    def factor(self, number: int) -> Factor:
        """Factor ``number`` (1-30).

        Raises:
            KeyError: No such factor.
        """
        found = [f for f in self.factors if f.number == number]
        if not found:
            raise KeyError(number)
        return found[0]

    def rows(self) -> list[dict[str, Any]]:
        """Every row as ``{number, class, factor, value, source}``; header rows have number 0 and class
        ``header``; values as they are (dicts, lists, numbers, strings, None)."""
        head = [
            {"number": 0, "class": HEADER, "factor": name, "value": fact.value, "source": fact.source}
            for name, fact in self.header.items()
        ]
        body = [
            {"number": f.number, "class": f.cls, "factor": f.name, "value": f.value, "source": f.source}
            for f in self.factors
        ]
        return head + body

    def frame(self) -> pd.DataFrame:
        """The rows as a tidy table, values as text (:func:`text`)."""
        return pd.DataFrame([{**r, "value": text(r["value"])} for r in self.rows()])

    def to_json(self) -> str:
        """JSON: the model label, the header ``{field: {value, source}}`` and the factors in order."""
        out = {
            "model": self.model,
            "header": {n: {"value": f.value, "source": f.source} for n, f in self.header.items()},
            "factors": [r for r in self.rows() if r["number"]],
        }
        return json.dumps(plain(out), indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        """Markdown: the header table, then the factors grouped by class."""
        lines = [f"# Card: {self.model}", "", "| field | value | source |", "|---|---|---|"]
        lines += [f"| {n} | {_cell(f.value)} | {_cell(f.source)} |" for n, f in self.header.items()]
        lines += ["", "| # | class | factor | value | source |", "|---|---|---|---|---|"]
        lines += [
            f"| {f.number} | {f.cls} | {f.name} | {_cell(f.value)} | {_cell(f.source)} |"
            for f in self.factors
        ]
        return "\n".join(lines) + "\n"

    def to_rich(self) -> Any:
        """A ``rich`` group: the header table and the factors table (class shown once per group)."""
        from rich.console import Group
        from rich.table import Table

        head = Table(title=f"Thinking parameters: {self.model}")
        for column in ("field", "value", "source"):
            head.add_column(column)
        for name, fact in self.header.items():
            head.add_row(name, text(fact.value), fact.source)
        body = Table()
        for column in ("#", "class", "factor", "value", "source"):
            body.add_column(column, overflow="fold")
        previous = None
        for f in self.factors:
            body.add_row(str(f.number), f.cls if f.cls != previous else "", f.name, text(f.value), f.source)
            previous = f.cls
        return Group(head, body)


def plain(value: Any, digits: int | None = None) -> Any:
    """A value with numpy scalars made Python numbers and NaN made None (JSON-ready); ``digits``: floats
    rounded to that many significant digits."""
    if isinstance(value, dict):
        return {str(k): plain(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, digits) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.{digits}g}") if digits else value
    return value


def text(value: Any) -> str:
    """A value as one line: ``-`` for None, numbers to 4 significant digits, dicts and lists as JSON."""
    value = plain(value, digits=4)
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _cell(value: Any) -> str:
    return text(value).replace("|", "\\|").replace("\n", " ")


def parameter_counts(model: WorkbenchModel) -> tuple[int, int]:
    """Total parameters and parameters active per token (MoE: only top-k of the routed experts count)."""
    total = sum(math.prod(shape_of(p)) for p in model.hf.parameters())  # packed 4-bit codes: logical size
    adapter, cfg = model.adapter, model.cfg
    if not cfg.is_moe or adapter.experts is None:
        return total, total
    inactive = 0.0
    share_off = 1 - cfg.top_k / cfg.n_experts
    for block in adapter.block_modules(model.base):
        if adapter.is_moe_block(block):
            experts = block.get_submodule(adapter.experts)
            inactive += share_off * sum(math.prod(shape_of(p)) for p in experts.parameters())
    return total, round(total - inactive)


def _rope(config: Any) -> tuple[Any, Any]:
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and "rope_theta" not in params and params:
        params = next(iter(params.values()))  # per-layer-type parameters
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    kind = params.get("rope_type", "default")
    extra = {k: v for k, v in params.items() if k not in ("rope_theta", "rope_type")}
    return theta, ({"type": kind, **extra} if extra else kind)


def header(model: WorkbenchModel) -> dict[str, Fact]:
    """What the model is: family and class, dtype, parameter counts (counted on the weights, or on the
    meta device's shapes), quantisation and shape."""
    cfg = model.cfg
    weights = next(model.hf.parameters())
    counted = "config (counted on the meta device)" if weights.is_meta else "weights (counted)"
    total, active = parameter_counts(model)
    theta, scaling = _rope(model.config)
    rope = cfg.positional == "rope"
    return {
        "family": Fact(cfg.family, "adapter"),
        "class": Fact(type(model.hf).__name__, "weights"),
        "dtype": Fact(str(weights.dtype).removeprefix("torch."), counted.split(" ")[0]),
        "parameters_total": Fact(total, counted),
        "parameters_active_per_token": Fact(active, f"{counted}; MoE: top-k of the routed experts"),
        "quantisation": quantization_facts(model),
        "layers": Fact(cfg.n_layers, "config"),
        "d_model": Fact(cfg.d_model, "config"),
        "heads": Fact(cfg.n_heads, "config"),
        "kv_heads": Fact(cfg.n_kv_heads, "config"),
        "head_dim": Fact(cfg.d_head, "config"),
        "attention_kind": Fact(cfg.kv_layout, "config, adapter"),
        "causal": Fact(cfg.causal, "adapter"),
        "positional": Fact(cfg.positional, "adapter"),
        "rope_theta": Fact(theta if rope else None, "config" if rope else "no rotary embedding"),
        "rope_scaling": Fact(scaling if rope else None, "config" if rope else "no rotary embedding"),
        "context_length": Fact(cfg.n_ctx, "config"),
        "norm": Fact(cfg.norm, "adapter"),
        "activation": Fact(cfg.activation, "config"),
        "tied_embeddings": Fact(bool(getattr(model.config, "tie_word_embeddings", False)), "config"),
    }


def card(model: WorkbenchModel, *, measure: bool = False, base: WorkbenchModel | None = None) -> Card:
    """The card of a loaded model: the header and the thirty factors, read from the checkpoint's files;
    ``measure`` runs the cheap registered probes and fills the measured rows
    (:func:`probes.card_measure.measured`); a ``base`` checkpoint fills the tuning rows 8, 12 and 14 from
    the checkpoint diff against it (:func:`probes.card_diff.tuning_rows`, on the held-out sample).

    Raises:
        InputError: ``base`` is not of the model's architecture.
    """
    rows = factors(model)
    if measure:
        from probes.card_measure import measured

        rows = measured(model, rows)
    if base is not None:
        from probes.card_diff import tuning_rows
        from probes.card_measure import CHARS, PER_DOMAIN
        from workbench.zoo import heldout

        rows = tuning_rows(model, base, rows, heldout(PER_DOMAIN, CHARS))
    return Card(model.source, header(model), rows)


@dataclass(frozen=True)
class Comparison:
    """Two cards row by row.

    Attributes:
        a: The first model's label.
        b: The second model's label.
        rows: ``{number, class, factor, a, b, differs}`` per row, values as text.
    """

    a: str
    b: str
    rows: list[dict[str, Any]]

    def to_json(self) -> str:
        """JSON: both labels and the rows."""
        return json.dumps({"a": self.a, "b": self.b, "rows": self.rows}, indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        """Markdown: one table, a row whose values differ marked ``*``."""
        lines = [
            f"| # | class | factor | {_cell(self.a)} | {_cell(self.b)} | differs |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            cells = [r["number"], r["class"], r["factor"], _cell(r["a"]), _cell(r["b"]), "*" * r["differs"]]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        return "\n".join(lines) + "\n"

    def to_rich(self) -> Any:
        """A ``rich`` table, differing rows marked ``*`` and highlighted."""
        from rich.table import Table

        table = Table(title=f"Cards: {self.a} vs {self.b} (* differs)")
        for column in ("", "#", "class", "factor", self.a, self.b):
            table.add_column(column, overflow="fold")
        for r in self.rows:
            mark, style = ("*", "bold yellow") if r["differs"] else ("", None)
            table.add_row(mark, str(r["number"]), r["class"], r["factor"], r["a"], r["b"], style=style)
        return table


def compare(a: Card, b: Card) -> Comparison:
    """Two cards row by row (values as text; a header field one card lacks shows ``-``)."""
    left, right = {r["factor"]: r for r in a.rows()}, {r["factor"]: r for r in b.rows()}
    rows = []
    for name in dict.fromkeys([*left, *right]):
        row = left.get(name) or right[name]
        va, vb = (text(side[name]["value"]) if name in side else "-" for side in (left, right))
        rows.append(
            {
                "number": row["number"],
                "class": row["class"],
                "factor": name,
                "a": va,
                "b": vb,
                "differs": va != vb,
            }
        )
    return Comparison(a.model, b.model, rows)


CARD = Probe(
    name="card",
    doc="Thinking-parameters card: the header (number 0) and the thirty factors (number, class, factor, "
    "value, source).",
    formula="read, not measured: config, adapter, tokenizer, generation_config.json, chat template, model "
    "card, quantization_config and weights (parameter counts; KV bytes per token = layers x kv_heads x "
    "(d_k + d_v) x bytes)",
    cite="the workbench's card (docs/card.md); KV layout per family as in each HF modeling file",
    run=lambda ctx, params: card(ctx.model).frame(),
    summary=lambda t: (
        t[(t["class"] == HEADER) & t.factor.isin(SUMMARY_FIELDS)]
        .pivot_table(index="model", columns="factor", values="value", aggfunc="first", sort=False)
        .reindex(columns=[f for f in SUMMARY_FIELDS if f in set(t.factor)])
        .rename_axis(columns=None)
        .reset_index()
    ),
)
