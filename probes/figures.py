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


def policy_curves(table: pd.DataFrame, value: str, title: str) -> go.Figure:
    """One line per policy of ``value`` against ``budget`` (retention curves, quality-vs-budget curves)."""
    figure = go.Figure()
    for policy, rows in table.groupby("policy"):
        rows = rows.sort_values("budget")
        figure.add_trace(
            go.Scatter(x=list(rows.budget), y=list(rows[value]), mode="lines+markers", name=policy)
        )
    return figure.update_layout(title=title, xaxis_title="cache budget (share of prompt)", yaxis_title=value)


def heatmap(table: pd.DataFrame, index: str, columns: str, values: str, title: str) -> go.Figure:
    """A heatmap of one value column over two key columns (domain x expert, expert x expert ...)."""
    grid = table.pivot(index=index, columns=columns, values=values)
    figure = go.Figure(
        go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index])
    )
    return figure.update_layout(title=title, xaxis_title=columns, yaxis_title=index)


def load_bars(table: pd.DataFrame, title: str = "Expert load per layer") -> go.Figure:
    """Grouped bars of ``load`` per ``expert``, one group per ``layer``."""
    figure = go.Figure()
    for layer, rows in table.groupby("layer"):
        figure.add_trace(go.Bar(x=list(rows.expert), y=list(rows.load), name=f"layer {layer}"))
    return figure.update_layout(
        title=title, xaxis_title="expert", yaxis_title="share of token-slots", barmode="group"
    )


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
    figure = go.Figure()
    for lens, rows in table.groupby("lens"):
        figure.add_trace(
            go.Scatter(x=list(rows.layer), y=list(rows.kl_to_final), mode="lines+markers", name=lens)
        )
    return figure.update_layout(title=title, xaxis_title="layer", yaxis_title="KL (nats)", xaxis_dtick=1)


def depth_histogram(depths: list[int], title: str = "Prediction depth") -> go.Figure:
    """Histogram of per-token prediction depths."""
    figure = go.Figure(go.Histogram(x=depths))
    return figure.update_layout(title=title, xaxis_title="layer", yaxis_title="tokens", xaxis_dtick=1)
