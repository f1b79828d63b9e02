"""The "thinking parameters" card: every setting that shapes a model's behaviour, in one table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from probes.registry import Probe
from workbench.models.model import WorkbenchModel
from workbench.tokenizer_facts import script_coverage, special_tokens, tokenizer_algorithm

SUMMARY_FIELDS = (
    "family",
    "layers",
    "d_model",
    "attention_kind",
    "experts",
    "top_k",
    "parameters_total",
    "vocab_size",
)


@dataclass
class Card:
    """Rows of ``(section, field, value)``; values are plain Python (str, int, float, bool, None)."""

    model: str
    rows: list[tuple[str, str, Any]] = field(default_factory=list)

    def add(self, section: str, name: str, value: Any) -> None:
        """Append one row."""
        self.rows.append((section, name, value))

    def get(self, name: str) -> Any:
        """Value of the first row called ``name``."""
        for _, row_name, value in self.rows:
            if row_name == name:
                return value
        raise KeyError(name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {field: value}}``."""
        out: dict[str, dict[str, Any]] = {}
        for section, name, value in self.rows:
            out.setdefault(section, {})[name] = value
        return out

    def to_json(self) -> str:
        """JSON object with the model label and the sections."""
        return json.dumps({"model": self.model, **self.to_dict()}, indent=2, default=str)

    def to_markdown(self) -> str:
        """A markdown table (section | field | value)."""
        lines = [f"# Card: {self.model}", "", "| section | field | value |", "|---|---|---|"]
        lines += [f"| {s} | {n} | {_fmt(v)} |" for s, n, v in self.rows]
        return "\n".join(lines) + "\n"

    def to_rich(self) -> Any:
        """A ``rich.table.Table``."""
        from rich.table import Table

        table = Table(title=f"Thinking parameters: {self.model}")
        for column in ("section", "field", "value"):
            table.add_column(column)
        previous = None
        for section, name, value in self.rows:
            table.add_row(section if section != previous else "", name, _fmt(value))
            previous = section
        return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _rope(config: Any) -> tuple[Any, Any]:
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and "rope_theta" not in params and params:
        params = next(iter(params.values()))  # per-layer-type parameters
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    kind = params.get("rope_type", "default")
    extra = {k: v for k, v in params.items() if k not in ("rope_theta", "rope_type")}
    scaling = kind if not extra else f"{kind} {json.dumps(extra, default=str)}"
    return theta, scaling


def parameter_counts(model: WorkbenchModel) -> tuple[int, int]:
    """Total parameters and parameters active per token (MoE: only top-k of the routed experts count)."""
    total = sum(p.numel() for p in model.hf.parameters())
    adapter, cfg = model.adapter, model.cfg
    if not cfg.is_moe or adapter.experts is None:
        return total, total
    inactive = 0.0
    share_off = 1 - cfg.top_k / cfg.n_experts
    for block in adapter.block_modules(model.base):
        if adapter.is_moe_block(block):
            experts = block.get_submodule(adapter.experts)
            inactive += share_off * sum(p.numel() for p in experts.parameters())
    return total, round(total - inactive)


def kv_bytes_per_token(model: WorkbenchModel, dtype: torch.dtype | None = None) -> int:
    """Architectural KV-cache bytes per token: ``2 x layers x kv_heads x head_dim x bytes`` (MLA: latent)."""
    dtype = dtype or next(model.hf.parameters()).dtype
    return model.cfg.kv_elements_per_token * torch.tensor([], dtype=dtype).element_size()


def _router_rule(model: WorkbenchModel) -> str | None:
    conv = model.adapter.router_convention
    if conv is None:
        return None
    parts = [f"{conv.scoring} scoring", f"top-k on {conv.topk_on}"]
    parts.append("renormalised" if conv.renormalises(model.config) else "not renormalised")
    if conv.correction_bias:
        parts.append("selection bias")
    if conv.group_limited:
        parts.append("group-limited")
    if conv.scaling_factor_attr:
        parts.append(f"x {getattr(model.config, conv.scaling_factor_attr)}")
    if conv.router_bias:
        parts.append("router bias")
    if conv.discovered:
        parts.append("read off the router's output")
    return ", ".join(parts)


def _sink_mechanism(model: WorkbenchModel) -> str:
    if model.adapter.learned_sinks:
        return "learned per-head sink logit"
    planted = getattr(model.config, "planted_sink_heads", None)  # zoo ground truth (planted-sink)
    if planted:
        return "planted heads " + ", ".join(f"L{layer}H{head}" for layer, head in planted)
    return "none (emergent only)"


def _tokenizer_rows(card_: Card, model: WorkbenchModel) -> None:
    tok = model.tokenizer
    card_.add("tokenizer", "vocab_size", model.cfg.d_vocab)
    if tok is None:
        card_.add("tokenizer", "algorithm", None)
        return
    card_.add("tokenizer", "tokenizer_size", len(tok))
    card_.add("tokenizer", "algorithm", tokenizer_algorithm(tok))
    for role, value in special_tokens(tok).items():
        card_.add("tokenizer", role, value)
    for script, share in script_coverage(tok).items():
        card_.add("script coverage", script, round(share, 3))


def card(model: WorkbenchModel) -> Card:
    """Build the card of a loaded model from its config, adapter, tokenizer and weights."""
    adapter, cfg = model.adapter, model.cfg
    dtype = next(model.hf.parameters()).dtype
    result = Card(model.source)
    result.add("model", "family", cfg.family)
    result.add("model", "class", type(model.hf).__name__)
    result.add("model", "dtype", str(dtype).removeprefix("torch."))
    _tokenizer_rows(result, model)
    total, active = parameter_counts(model)
    theta, scaling = _rope(model.config)
    rope = cfg.positional == "rope"
    attention = [
        ("layers", cfg.n_layers),
        ("d_model", cfg.d_model),
        ("heads", cfg.n_heads),
        ("kv_heads", cfg.n_kv_heads),
        ("attention_kind", cfg.kv_layout),
        ("head_dim", cfg.d_head),
        ("causal", cfg.causal),
        ("positional", cfg.positional),
        ("rope_theta", theta if rope else None),
        ("rope_scaling", scaling if rope else None),
        ("context_length", cfg.n_ctx),
        ("sliding_window", cfg.sliding_window),
        ("attention_sinks", _sink_mechanism(model)),
        ("norm", cfg.norm),
        ("activation", cfg.activation),
        ("tied_embeddings", bool(getattr(model.config, "tie_word_embeddings", False))),
    ]
    for name, value in attention:
        result.add("architecture", name, value)
    if cfg.is_moe:
        moe = [
            ("experts", cfg.n_experts),
            ("top_k", cfg.top_k),
            ("shared_experts", cfg.n_shared_experts),
            ("dense_layers", cfg.n_dense_layers),
            *cfg.moe_notes,
        ]
        for name, value in moe:
            result.add("moe", name, value)
    if adapter.router_convention is not None:
        result.add("moe", "router", _router_rule(model))
    result.add("size", "parameters_total", total)
    result.add("size", "parameters_active_per_token", active)
    result.add("kv cache", "kv_bytes_per_token", kv_bytes_per_token(model, dtype))
    if not cfg.causal:
        result.add("kv cache", "note", "encoder: no cache at inference; figure is what a cache would hold")
    return result


CARD = Probe(
    name="card",
    doc="Thinking-parameters card (section, field, value).",
    formula="read, not measured: config, adapter, tokenizer and weights (parameter counts, KV bytes per "
    "token = layers x kv_heads x (d_k + d_v) x bytes)",
    cite="the workbench's card (docs/architecture.md); KV layout per family as in each HF modeling file",
    run=lambda ctx, params: pd.DataFrame(
        [{"section": s, "field": n, "value": str(v)} for s, n, v in card(ctx.model).rows]
    ),
    summary=lambda t: (
        t[t.field.isin(SUMMARY_FIELDS)]
        .pivot_table(index="model", columns="field", values="value", aggfunc="first", sort=False)
        .reindex(columns=[f for f in SUMMARY_FIELDS if f in set(t.field)])
        .rename_axis(columns=None)
        .reset_index()
    ),
)
