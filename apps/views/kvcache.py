"""KV cache: its size, how much attention each eviction policy keeps, and an eviction simulator."""

from __future__ import annotations

import streamlit as st

from apps import cache, data
from apps.cache import Source
from probes.factors import kv_bytes_per_token
from probes.figures import policy_curves
from probes.kvcache import POLICIES

TITLE = "KV cache"


def render(source: Source, prompt: str) -> None:
    model = cache.causal_model(source, "KV cache")
    if model is None:
        return
    per_token = kv_bytes_per_token(model)
    tokens = len(cache.activity(source, prompt).tokens)
    context = model.cfg.n_ctx or tokens
    left, middle, right = st.columns(3)
    left.metric("KV bytes per token", f"{per_token:,}")
    middle.metric(f"This prompt ({tokens} tokens)", f"{per_token * tokens:,} B")
    right.metric(f"Full context ({context} tokens)", f"{per_token * context:,} B")
    try:
        patterns, _ = cache.patterns(source, prompt)
    except ValueError as error:
        st.info(str(error))
        return
    layer = st.selectbox("Layer", range(len(patterns)), key="kv_layer")
    curve = data.retention(patterns, layer)
    st.plotly_chart(
        policy_curves(curve, "retained_mass", f"Retained attention mass, layer {layer}"), key="kv_curve"
    )
    st.subheader("Eviction simulator")
    policy = st.selectbox("Policy", POLICIES, index=POLICIES.index("sink_window"), key="kv_policy")
    budget = st.slider("Cache budget (share of the prompt)", 0.05, 1.0, 0.5, 0.05, key="kv_budget")
    try:
        result = cache.eviction(source, prompt, budget, policy)
    except ValueError as error:
        st.info(str(error))
        return
    columns = st.columns(3)
    for column, key in zip(columns, ("perplexity", "kl", "top1_agreement"), strict=True):
        column.metric(key, f"{result[key]:.4g}")
