"""Model card: what the model is (the header) and the thirty thinking-parameter factors, grouped by class,
each with its value and source (measured rows on request); and the model's hook points, filtered by a
regular expression, with their shapes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps import cache
from apps.cache import Source
from probes.card import HEADER
from workbench.hooks.points import point_rows

TITLE = "Model card"


def render(source: Source, prompt: str) -> None:
    model = cache.model(source)
    measure = st.toggle("Measure (runs the cheap probes on the held-out sample)", key="card_measure")
    rows = cache.card(source, measure)
    header = rows[rows["class"] == HEADER]
    st.dataframe(header[["factor", "value", "source"]].rename(columns={"factor": "field"}), hide_index=True)
    factors = rows[rows["class"] != HEADER]
    st.dataframe(factors, hide_index=True, key="card_table")
    st.subheader("Hook points")
    pattern = st.text_input("Hook point pattern (regular expression)", value=".*", key="card_pattern")
    points = pd.DataFrame(point_rows(model.hook_points(pattern)), columns=["name", "shape", "meaning"])
    st.dataframe(points, hide_index=True, key="card_points")
