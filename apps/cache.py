"""Cached calls of the app: one loaded model per source, one capture per (source, prompt), so that
interactions (choosing a head, an expert, a budget) rerun no forward pass."""

from __future__ import annotations

import html
from typing import NamedTuple

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

import workbench
from apps import data
from workbench.models.quantize import parse_request


class Source(NamedTuple):
    """The model a view shows: a zoo name, directory, GGUF file or hub id, and the quantisation it is
    loaded with (``METHOD:BITS``, empty for none); it prints as its label."""

    name: str
    quantize: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.quantize})" if self.quantize else self.name


@st.cache_resource(show_spinner="loading model", max_entries=4)
def model(source: Source) -> workbench.WorkbenchModel:
    return workbench.load(source.name, quantization=parse_request(source.quantize))


def causal_model(source: Source, what: str) -> workbench.WorkbenchModel | None:
    """The cached model of a view that needs a causal model, or None after saying so, naming ``what`` the
    model lacks (views return on None)."""
    loaded = model(source)
    if not loaded.cfg.causal_lm:
        st.info(f"{source} is not a causal language model: it has no {what}.")
        return None
    return loaded


@st.cache_data(show_spinner="reading the card", max_entries=8)
def card(source: Source, measure: bool) -> pd.DataFrame:
    """The card's rows (:meth:`probes.card.Card.frame`); ``measure``: with the measured rows."""
    from probes.card import card as build_card

    return build_card(model(source), measure=measure).frame()


@st.cache_data(show_spinner="comparing the checkpoints", max_entries=4)
def diff(base: Source, tuned: Source, prompt: str | None) -> dict[str, pd.DataFrame]:
    """Every checkpoint-diff table (:func:`probes.diff.diff`) on the held-out sample (``prompt`` None, the
    default battery's cut) or on one prompt."""
    from probes.card_measure import CHARS, PER_DOMAIN
    from probes.diff import diff as compare
    from workbench.zoo import heldout

    texts = heldout(PER_DOMAIN, CHARS) if prompt is None else {"prompt": [prompt]}
    return compare(model(base), model(tuned), texts).tables()


@st.cache_data(show_spinner="capturing", max_entries=16)
def activity(source: Source, prompt: str) -> data.LayerActivity:
    return data.layer_activity(model(source), prompt)


@st.cache_data(show_spinner="capturing attention patterns", max_entries=8)
def patterns(source: Source, prompt: str) -> tuple[list[torch.Tensor], pd.DataFrame]:
    return data.attention_patterns(model(source), prompt)


@st.cache_data(show_spinner="routing the held-out domains", max_entries=4)
def specialisation(source: Source) -> pd.DataFrame:
    return data.specialisation(model(source))


@st.cache_data(show_spinner="measuring compression depth", max_entries=4)
def compression(source: Source) -> tuple[pd.DataFrame, torch.Tensor, pd.DataFrame | None]:
    return data.compression_depth(model(source))


@st.cache_data(show_spinner="decoding with a pruned cache", max_entries=32)
def eviction(source: Source, prompt: str, budget: float, policy: str) -> dict[str, float]:
    return data.eviction(model(source), prompt, budget, policy)


def grid_figure(grid: torch.Tensor, x: list[str], y: list[str], title: str, **layout: object) -> go.Figure:
    """A heatmap whose axis labels are escaped (token text never renders as markup) and kept in order."""
    figure = go.Figure(
        go.Heatmap(
            z=grid.tolist(),
            x=[html.escape(v) for v in x],
            y=[html.escape(v) for v in y],
            colorscale="Viridis",
        )
    )
    figure.update_xaxes(type="category")
    figure.update_yaxes(type="category", autorange="reversed")
    return figure.update_layout(title=title, **layout)


def cell_figure(grid: torch.Tensor, x: list[str], y: list[str], title: str, height: int = 320) -> go.Figure:
    """A heatmap drawn as square markers, so that a click selects a cell (plotly heatmaps cannot be
    selected); labels escaped as in :func:`grid_figure`."""
    rows, columns = len(y), len(x)
    xs = [html.escape(v) for v in x] * rows
    ys = [html.escape(v) for v in y for _ in range(columns)]
    size = max(6, min(30, 900 // max(columns, 1), (height - 120) // max(rows, 1)))
    marker = {
        "symbol": "square",
        "size": size,
        "color": grid.flatten().tolist(),
        "colorscale": "Viridis",
        "showscale": True,
    }
    figure = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker=marker,
            hovertemplate="%{x}, %{y}: %{marker.color:.4g}<extra></extra>",
        )
    )
    figure.update_xaxes(type="category")
    figure.update_yaxes(type="category", autorange="reversed")
    return figure.update_layout(title=title, height=height, clickmode="event+select")
