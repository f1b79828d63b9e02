"""Layer activity: a layers x tokens heatmap of residual norm, attention entropy, sink mass or expert
choice, with per-head details for the clicked (or chosen) cell."""

from __future__ import annotations

import html

import streamlit as st

from apps import cache
from apps.cache import Source

TITLE = "Layer activity"
METRICS = {
    "resid_norm": "residual norm",
    "entropy": "attention entropy (nats, mean over heads)",
    "sink_mass": "sink mass (first token, mean over heads)",
    "expert": "top-1 expert",
}


def render(source: Source, prompt: str) -> None:
    activity = cache.activity(source, prompt)
    metrics = [m for m in METRICS if m != "expert" or activity.experts is not None]
    metric = st.selectbox("Signal", metrics, format_func=METRICS.get, key="layers_metric")
    table = activity.table(metric)
    grid = table.pivot(index="layer", columns="position", values="value")
    figure = cache.cell_figure(
        grid.values, activity.tokens, [f"layer {i}" for i in grid.index], f"{METRICS[metric]} (click a cell)"
    )
    event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key="layers_chart")
    clicked = [
        {k: html.unescape(str(v)) for k, v in p.items()}
        for p in (event or {}).get("selection", {}).get("points", [])
    ]
    n_layers, n_tokens = activity.resid_norm.shape
    state = st.session_state
    if state.get("layers_layer", 0) >= n_layers or state.get("layers_token", 0) >= n_tokens:
        state.pop("layers_layer", None), state.pop("layers_token", None)  # another model or prompt
    state.setdefault("layers_layer", n_layers - 1)
    state.setdefault("layers_token", 0)
    selection = [(p["x"], p["y"]) for p in clicked]
    if selection and state.get("layers_clicked") != selection and selection[0][0] in activity.tokens:
        state["layers_clicked"] = selection  # a new click moves the details to that cell
        state["layers_layer"] = int(selection[0][1].split()[-1])
        state["layers_token"] = activity.tokens.index(selection[0][0])
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(n_layers), key="layers_layer")
    position = right.selectbox(
        "Token", range(n_tokens), format_func=activity.tokens.__getitem__, key="layers_token"
    )
    st.metric("Residual norm", f"{float(activity.resid_norm[layer, position]):.4g}")
    st.dataframe(activity.details(layer, position), hide_index=True, key="layers_details")
    st.caption(f"{len(activity.tokens)} tokens; attention statistics are streamed (no full pattern is held).")
