"""MoE routing: the token x layer map of top-1 experts, the tokens one expert takes, expert load per
layer, and domain specialisation on the held-out domains."""

from __future__ import annotations

import streamlit as st

from apps import cache, data
from apps.cache import Source
from probes.figures import heatmap, load_bars

TITLE = "MoE routing"


def render(source: Source, prompt: str) -> None:
    model = cache.model(source)
    activity = cache.activity(source, prompt)
    if activity.experts is None:
        st.info(f"{source} has no MoE layers.")
        return
    top1, loads = data.routing(model, activity)
    grid = top1.pivot(index="layer", columns="position", values="value")
    layers = [f"MoE layer {i}" for i in grid.index]
    st.plotly_chart(
        cache.grid_figure(grid.values, activity.tokens, layers, "Top-1 expert", height=300), key="routing_map"
    )
    n_experts = model.cfg.n_experts
    left, right = st.columns(2)
    layer = left.selectbox("MoE layer", range(activity.experts.shape[0]), key="routing_layer")
    expert = right.selectbox("Expert", range(n_experts), key="routing_expert")
    chosen = (activity.experts[layer] == expert).any(-1)
    tokens = [activity.tokens[p] for p in chosen.nonzero().flatten().tolist()]
    st.metric(f"Tokens routed to expert {expert} (any of the top-k)", len(tokens))
    st.dataframe({"token": tokens}, key="routing_tokens")
    st.plotly_chart(load_bars(loads, "Expert load per MoE layer (this prompt)"), key="routing_load")
    if st.toggle("Domain specialisation on the held-out domains", key="routing_spec"):
        table = cache.specialisation(source)
        st.plotly_chart(
            heatmap(table, "domain", "expert", "spec", "Specialisation, last MoE layer"),
            key="routing_spec_map",
        )
