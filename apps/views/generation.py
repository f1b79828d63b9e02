"""Live generation: token-by-token self-diagnostics from the streaming generation capture."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps import cache
from apps.cache import Source
from probes.decoding import step_signals
from workbench.capture import CaptureSpec
from workbench.capture.generate import stream_generate

TITLE = "Live generation"


def render(source: Source, prompt: str) -> None:
    model = cache.causal_model(source, "autoregressive generation")
    if model is None:
        return
    left, middle, right = st.columns(3)
    tokens = left.slider("New tokens", 1, 64, 16, key="gen_tokens")
    temperature = middle.slider("Temperature", 0.0, 2.0, 0.7, 0.1, key="gen_temperature")
    seed = right.number_input("Seed", 0, 2**31 - 1, 0, key="gen_seed")
    if not st.button("Generate", key="gen_run"):
        return
    routers = model.hook_points([r"blocks\.\d+\.moe\.hook_router_logits"], missing_ok=True)
    spec = CaptureSpec(points=routers, stats=["sink_mass", "entropy"])
    text, table, chart = st.empty(), st.empty(), st.empty()
    rows = []
    for step in stream_generate(
        model, prompt, spec, max_new_tokens=tokens, temperature=temperature, seed=int(seed)
    ):
        rows.append(step_signals(model, step))
        frame = pd.DataFrame(rows)
        text.text(prompt + "".join(frame.token))
        table.dataframe(frame, hide_index=True)
        chart.line_chart(frame.set_index("step")[["sampling_entropy", "sink_mass", "attention_entropy"]])
    st.session_state["gen_rows"] = rows
