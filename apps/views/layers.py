"""Layer activity: a layers x tokens heatmap of residual norm, attention entropy, sink mass or expert
choice, with per-head details for the clicked (or chosen) cell."""

from __future__ import annotations

import streamlit as st

from apps import cache

TITLE = "Layer activity"
METRICS = {
    "resid_norm": "residual norm",
    "entropy": "attention entropy (nats, mean over heads)",
    "sink_mass": "sink mass (first token, mean over heads)",
    "expert": "top-1 expert",
}


def render(source: str, prompt: str) -> None:
    activity = cache.activity(source, prompt)
    metrics = [m for m in METRICS if m != "expert" or activity.experts is not None]
    metric = st.selectbox("Signal", metrics, format_func=METRICS.get, key="layers_metric")
    table = activity.table(metric)
    grid = table.pivot(index="layer", columns="position", values="value")
    figure = cache.grid_figure(
        grid.values, activity.tokens, [f"layer {i}" for i in grid.index], METRICS[metric], height=320
    )
    event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key="layers_chart")
    clicked = (event or {}).get("selection", {}).get("points", []) if event else []
    n_layers = activity.resid_norm.shape[0]
    layer_default = int(clicked[0]["y"].split()[-1]) if clicked else n_layers - 1
    token_default = (
        activity.tokens.index(clicked[0]["x"]) if clicked and clicked[0]["x"] in activity.tokens else 0
    )
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(n_layers), index=layer_default, key="layers_layer")
    position = right.selectbox(
        "Token",
        range(len(activity.tokens)),
        index=token_default,
        format_func=activity.tokens.__getitem__,
        key="layers_token",
    )
    st.metric("Residual norm", f"{float(activity.resid_norm[layer, position]):.4g}")
    st.dataframe(activity.details(layer, position), hide_index=True, key="layers_details")
    st.caption(f"{len(activity.tokens)} tokens; attention statistics are streamed (no full pattern is held).")
