"""Streamlit app: look at a model's layer activity, heads, routing, compression, KV cache and live
generation, and browse battery results (``workbench app``).

It computes nothing itself: the views call the capture engine and the probes (``apps/data.py``), cached
per model and prompt (``apps/cache.py``).
"""

from __future__ import annotations

import streamlit as st

import workbench
from apps import cache
from apps.data import DEFAULT_MODEL, DEFAULT_PROMPT
from apps.views import VIEWS


def main() -> None:
    """Render the sidebar (model, prompt, view) and the chosen view."""
    st.set_page_config(page_title="interp workbench", layout="wide")
    source = st.sidebar.text_input("Model (zoo name or local directory)", value=DEFAULT_MODEL, key="model")
    prompt = st.sidebar.text_area("Prompt", value=DEFAULT_PROMPT, key="prompt")
    title = st.sidebar.radio("View", list(VIEWS), key="view")
    st.title(title)
    try:
        model = cache.model(source)
        if title != "Battery results" and not prompt.strip():
            raise workbench.WorkbenchError("empty prompt: type a prompt in the sidebar")
        if title != "Battery results":
            model.encode(prompt)  # one-line errors for an over-long prompt, before any view computes
        VIEWS[title].render(source, prompt)
    except workbench.WorkbenchError as error:
        st.error(str(error))
    finally:  # a run counter, so that a browser driver can tell when a rerun has finished
        runs = st.session_state["_runs"] = st.session_state.get("_runs", 0) + 1
        st.markdown(f'<span class="wb-run" data-run="{runs}"></span>', unsafe_allow_html=True)


main()
