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
