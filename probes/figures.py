"""Plotly figures built from the probes' tidy tables (the tables are the data; figures only draw them)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def sink_heatmap(table: pd.DataFrame, title: str = "First-token alpha (Gu et al. 2024)") -> go.Figure:
    """Layer x head heatmap of ``alpha`` from :func:`probes.sinks.sink_table`."""
    grid = table.pivot(index="layer", columns="head", values="alpha")
    figure = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), zmin=0, zmax=1))
    return figure.update_layout(
        title=title, xaxis_title="head", yaxis_title="layer", xaxis_dtick=1, yaxis_dtick=1
    )


def first_token_mass_by_layer(table: pd.DataFrame) -> go.Figure:
    """Mean ``alpha`` over heads per layer, from :func:`probes.sinks.sink_table`."""
    by_layer = table.groupby("layer").alpha.mean()
    figure = go.Figure(go.Scatter(x=list(by_layer.index), y=list(by_layer.values), mode="lines+markers"))
    return figure.update_layout(title="First-token mass by layer", xaxis_title="layer", yaxis_title="alpha")


def lines_by_group(
    table: pd.DataFrame, x: str, y: str, group: str, title: str, x_title: str | None = None
) -> go.Figure:
    """One line of ``y`` against ``x`` per value of ``group`` (rows sorted by ``x``)."""
    figure = go.Figure()
    for name, rows in table.groupby(group):
        rows = rows.sort_values(x)
        figure.add_trace(go.Scatter(x=list(rows[x]), y=list(rows[y]), mode="lines+markers", name=str(name)))
    return figure.update_layout(title=title, xaxis_title=x_title or x, yaxis_title=y)


def bars_by_group(
    table: pd.DataFrame, x: str, y: str, group: str, title: str, y_title: str | None = None
) -> go.Figure:
    """Grouped bars of ``y`` per ``x``, one bar series per value of ``group``."""
    figure = go.Figure()
    for name, rows in table.groupby(group):
        figure.add_trace(go.Bar(x=[str(v) for v in rows[x]], y=list(rows[y]), name=str(name)))
    return figure.update_layout(title=title, xaxis_title=x, yaxis_title=y_title or y, barmode="group")


def policy_curves(table: pd.DataFrame, value: str, title: str) -> go.Figure:
    """One line per policy of ``value`` against ``budget`` (retention curves, quality-vs-budget curves)."""
    return lines_by_group(table, "budget", value, "policy", title, "cache budget (share of prompt)")


def heatmap(table: pd.DataFrame, index: str, columns: str, values: str, title: str) -> go.Figure:
    """A heatmap of one value column over two key columns (domain x expert, expert x expert ...)."""
    grid = table.pivot(index=index, columns=columns, values=values)
    figure = go.Figure(
        go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index])
    )
    return figure.update_layout(title=title, xaxis_title=columns, yaxis_title=index)


def load_bars(table: pd.DataFrame, title: str = "Expert load per layer") -> go.Figure:
    """Grouped bars of ``load`` per ``expert``, one group per ``layer``."""
    labelled = table.assign(layer=[f"layer {layer}" for layer in table.layer])
    return bars_by_group(labelled, "expert", "load", "layer", title, "share of token-slots")


def id_profile(
    table: pd.DataFrame, summary: dict, value: str = "twonn_90", title: str = "ID profile"
) -> go.Figure:
    """ID per layer with the abstraction peak (Cheng et al.) and the semantic minimum (Valeriani et al.)."""
    figure = go.Figure(
        go.Scatter(x=list(table.layer), y=list(table[value]), mode="lines+markers", name=value)
    )
    for key, colour in (("abstraction_peak", "red"), ("semantic_minimum", "green")):
        if summary.get(key) is not None:
            figure.add_vline(x=summary[key], line_dash="dash", line_color=colour, annotation_text=key)
    return figure.update_layout(title=title, xaxis_title="layer", yaxis_title=value, xaxis_dtick=1)


def lens_curves(table: pd.DataFrame, title: str = "KL to the final distribution") -> go.Figure:
    """``kl_to_final`` per layer, one line per lens (from :func:`probes.lens.lens_table` rows)."""
    figure = lines_by_group(table, "layer", "kl_to_final", "lens", title)
    return figure.update_layout(yaxis_title="KL (nats)", xaxis_dtick=1)


def depth_histogram(depths: list[int], title: str = "Prediction depth") -> go.Figure:
    """Histogram of per-token prediction depths."""
    figure = go.Figure(go.Histogram(x=depths))
    return figure.update_layout(title=title, xaxis_title="layer", yaxis_title="tokens", xaxis_dtick=1)
