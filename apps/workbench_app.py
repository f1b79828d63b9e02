"""Streamlit app: look at a model's layer activity, heads, routing, compression, KV cache and live
generation, and browse battery results (``workbench app``).

It computes nothing itself: the views call the capture engine and the probes (``apps/data.py``), cached
per model and prompt (``apps/cache.py``).
"""

from __future__ import annotations

import logging

import streamlit as st

import workbench
from apps import cache
from apps.cache import Source
from apps.data import DEFAULT_MODEL, DEFAULT_PROMPT, MODEL_LABEL
from apps.views import VIEWS
from workbench.errors import describe_unexpected, hide_paths
from workbench.models.quantize import offered

TYPED = (
    "model",
    "diff_base",
    "battery_run",
    "battery_compare",
)  # text fields whose paths an error may repeat


def _shown(message: str) -> str:
    """An error as the page shows it: absolute paths other than those the user typed reduced to their
    last part."""
    typed = tuple(v for k in TYPED if isinstance(v := st.session_state.get(k), str))
    return hide_paths(message, keep=typed)


def main() -> None:
    """Render the sidebar (model, prompt, view) and the chosen view."""
    st.set_page_config(page_title="interp workbench", layout="wide")
    name = st.sidebar.text_input(MODEL_LABEL, value=DEFAULT_MODEL, key="model")
    quantize = st.sidebar.selectbox("Quantise on load", ["none", *offered()], key="quantize")
    source = Source(name, "" if quantize == "none" else quantize)
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
        st.error(_shown(str(error)))
    except Exception as error:  # the app's error boundary: one line here, the traceback in the server log
        logging.getLogger("workbench.app").exception("unexpected error in the %r view", title)
        st.error(_shown(f"unexpected error: {describe_unexpected(error)} (the server log has the traceback)"))
    finally:  # a run counter, so that a browser driver can tell when a rerun has finished
        runs = st.session_state["_runs"] = st.session_state.get("_runs", 0) + 1
        st.markdown(f'<span class="wb-run" data-run="{runs}"></span>', unsafe_allow_html=True)


main()
