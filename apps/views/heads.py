"""Attention heads: one head's pattern with the sink (first key) highlighted, and the layer x head grid of
first-token alpha (Gu et al. 2024)."""

from __future__ import annotations

import streamlit as st

from apps import cache
from apps.cache import Source

TITLE = "Attention heads"


def render(source: Source, prompt: str) -> None:
    try:
        patterns, table = cache.patterns(source, prompt)
    except ValueError as error:
        st.info(f"{error}; the layer-activity view shows the streamed statistics of long prompts.")
        return
    tokens = cache.activity(source, prompt).tokens
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(len(patterns)), key="heads_layer")
    head = right.selectbox("Head", range(patterns[layer].shape[0]), key="heads_head")
    figure = cache.grid_figure(
        patterns[layer][head], tokens, tokens, f"Pattern, layer {layer} head {head}", height=460
    )
    figure.add_vrect(x0=-0.5, x1=0.5, line_color="red", line_width=2, annotation_text="sink")
    st.plotly_chart(figure, key="heads_pattern")
    grid = table.pivot(index="layer", columns="head", values="alpha")
    heads = [f"head {h}" for h in grid.columns]
    figure = cache.grid_figure(
        grid.values, heads, [f"layer {i}" for i in grid.index], "First-token alpha per head", height=300
    )
    figure.add_shape(
        type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5, line_color="red"
    )
    st.plotly_chart(figure, key="heads_grid")
    row = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
    st.metric("First-token alpha of the selected head", f"{row.alpha:.4f}")
    st.dataframe(table, hide_index=True, key="heads_table")
