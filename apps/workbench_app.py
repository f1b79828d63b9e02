"""Streamlit app: choose a model and look at its "thinking parameters" card and layer summary.

It computes nothing itself: it calls ``workbench.load``, ``workbench.card`` and the capture summary.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import workbench
from workbench.summary import layer_summary


@st.cache_resource(show_spinner="loading model")
def _load(source: str) -> workbench.WorkbenchModel:
    return workbench.load(source)


def main() -> None:
    """Render the app."""
    st.set_page_config(page_title="interp workbench", layout="wide")
    st.title("interp workbench")
    source = st.text_input("Model (zoo name or local directory)", value="minilm")
    try:
        model = _load(source)
    except workbench.WorkbenchError as exc:
        st.error(str(exc))
        return
    card = workbench.card(model)
    st.subheader("Thinking parameters")
    st.dataframe(
        pd.DataFrame([(s, n, str(v)) for s, n, v in card.rows], columns=["section", "field", "value"]),
        hide_index=True,
    )
    prompt = st.text_area("Prompt", value="The quick brown fox jumps over the lazy dog.")
    if prompt.strip():
        st.subheader("Layer activity")
        st.dataframe(pd.DataFrame(layer_summary(model, [prompt])), hide_index=True)


main()
