"""How each battery table is shown: a few figures and a short summary table per probe.

Figures are drawn from the tables with :mod:`probes.figures`; a summary is a small aggregate (one row per
model, or per model and layer) for the markdown summary and the comparison report.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go

from probes.figures import bars_by_group, heatmap, lines_by_group, sink_heatmap

Figures = list[tuple[str, go.Figure]]


def _per_model(table: pd.DataFrame, draw: Callable[[pd.DataFrame, str], go.Figure]) -> Figures:
    return [(str(model), draw(rows, str(model))) for model, rows in table.groupby("model", sort=False)]


def _last_layer(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.layer == table.groupby("model").layer.transform("max")]


FIGURES: dict[str, Callable[[pd.DataFrame], Figures]] = {
    "sinks": lambda t: _per_model(t, lambda r, m: sink_heatmap(r, f"First-token alpha, {m}")),
    "massive_activations": lambda t: [
        (
            "all",
            lines_by_group(
                t.groupby(["model", "layer"], as_index=False).top_ratio.mean(),
                "layer",
                "top_ratio",
                "model",
                "Top activation / median per layer",
            ),
        )
    ],
    "kv_retention": lambda t: _per_model(
        _last_layer(t),
        lambda r, m: lines_by_group(
            r, "budget", "retained_mass", "policy", f"Retained mass, last layer, {m}"
        ),
    ),
    "eviction": lambda t: _per_model(
        t, lambda r, m: lines_by_group(r, "budget", "kl", "policy", f"KL to the full cache, {m}")
    ),
    "moe_routing": lambda t: [
        ("all", lines_by_group(t, "layer", "load_entropy", "model", "Expert-load entropy per layer"))
    ],
    "moe_load": lambda t: _per_model(
        t.assign(layer=[f"layer {x}" for x in t.layer]),
        lambda r, m: bars_by_group(r, "expert", "load", "layer", f"Expert load, {m}"),
    ),
    "moe_specialisation": lambda t: _per_model(
        _last_layer(t),
        lambda r, m: heatmap(r, "domain", "expert", "spec", f"Domain specialisation, last layer, {m}"),
    ),
    "moe_coactivation": lambda t: _per_model(
        _last_layer(t), lambda r, m: heatmap(r, "i", "j", "coact", f"Co-activation, last layer, {m}")
    ),
    "compression": lambda t: [
        ("all", lines_by_group(t, "layer", "twonn_90", "model", "TwoNN intrinsic dimension per layer"))
    ],
    "lens": lambda t: [
        (
            "all",
            lines_by_group(
                t.assign(model=t.model + " " + t.lens),
                "layer",
                "kl_to_final",
                "model",
                "Lens KL to the final layer",
            ),
        )
    ],
    "prediction_depth": lambda t: [
        ("all", bars_by_group(t, "depth", "share", "model", "Prediction depth (logit lens)"))
    ],
    "tokenizer": lambda t: [
        ("all", bars_by_group(t, "language", "fertility", "model", "Fertility per language"))
    ],
    "loss_per_byte": lambda t: [
        ("all", bars_by_group(t, "group", "bits_per_byte", "model", "Bits per byte per group"))
    ],
    "decoding": lambda t: [
        (
            "all",
            lines_by_group(
                t[t.sweep == "temperature"],
                "temperature",
                "sampling_entropy",
                "model",
                "Sampling entropy by temperature",
            ),
        )
    ],
    "batch_invariance": lambda t: [
        (
            "all",
            bars_by_group(
                t.assign(model=t.model + " " + t.side),
                "batch_size",
                "max_abs_diff",
                "model",
                "Batch invariance",
            ),
        )
    ],
}

CARD_FIELDS = [
    "family",
    "layers",
    "d_model",
    "attention_kind",
    "experts",
    "top_k",
    "parameters_total",
    "vocab_size",
]
SUMMARIES: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "card": lambda t: (
        t[t.field.isin(CARD_FIELDS)]
        .pivot_table(index="model", columns="field", values="value", aggfunc="first", sort=False)
        .reindex(columns=[f for f in CARD_FIELDS if f in set(t.field)])
        .rename_axis(columns=None)
        .reset_index()
    ),
    "sinks": lambda t: t.groupby("model", sort=False, as_index=False).agg(
        sink_rate=("sink_share", lambda s: 100 * s.mean()), mean_alpha=("alpha", "mean")
    ),
    "massive_activations": lambda t: t.groupby("model", sort=False, as_index=False).agg(
        max_top_ratio=("top_ratio", "max"), massive_per_prompt=("n_massive", "mean")
    ),
    "kv_retention": lambda t: (
        t[t.budget == t.budget.min()]
        .groupby(["model", "policy"], sort=False, as_index=False)
        .retained_mass.mean()
    ),
    "eviction": lambda t: t[t.budget == t.budget.min()][
        ["model", "policy", "budget", "perplexity", "kl", "top1_agreement"]
    ],
    "moe_routing": lambda t: t.groupby("model", sort=False, as_index=False)[
        ["load_entropy", "switch_loss", "z_loss", "rep1"]
    ].mean(),
    "moe_load": lambda t: t.groupby("model", sort=False, as_index=False).agg(
        min_load=("load", "min"), max_load=("load", "max")
    ),
    "moe_specialisation": lambda t: t.groupby(["model", "domain"], sort=False, as_index=False).spec.max(),
    "moe_coactivation": lambda t: t[t.i != t.j].groupby("model", sort=False, as_index=False).coact.max(),
    "compression": lambda t: t.loc[
        t.groupby("model", sort=False).twonn_90.idxmax(), ["model", "layer", "twonn_90"]
    ],
    "lens": lambda t: t.groupby(["model", "lens"], sort=False, as_index=False)[
        ["kl_to_final", "top1_agreement"]
    ].mean(),
    "prediction_depth": lambda t: (
        t.assign(weighted=t.depth * t.share)
        .groupby("model", sort=False, as_index=False)
        .agg(mean_depth=("weighted", "sum"))
    ),
    "tokenizer": lambda t: t.pivot_table(
        index="model", columns="language", values="fertility", sort=False
    ).reset_index(),
    "loss_per_byte": lambda t: t.pivot_table(
        index="model", columns="group", values="bits_per_byte", sort=False
    ).reset_index(),
    "decoding": lambda t: t[
        [
            "model",
            "sweep",
            "temperature",
            "top_p",
            "top_k",
            "repetition_penalty",
            "sampling_entropy",
            "distinct_2",
        ]
    ],
    "batch_invariance": lambda t: t.groupby("model", sort=False, as_index=False).agg(
        max_abs_diff=("max_abs_diff", "max"), argmax_flips=("argmax_flips", "sum")
    ),
}
