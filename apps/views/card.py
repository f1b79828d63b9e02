"""Model card: every setting that shapes the model's behaviour, in one table; and the model's hook points,
filtered by a regular expression, with their shapes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import workbench
from apps import cache
from workbench.hooks.points import point_rows

TITLE = "Model card"


def render(source: str, prompt: str) -> None:
    model = cache.model(source)
    card = workbench.card(model)
    rows = pd.DataFrame([(s, n, str(v)) for s, n, v in card.rows], columns=["section", "field", "value"])
    st.dataframe(rows, hide_index=True, key="card_table")
    st.subheader("Hook points")
    pattern = st.text_input("Hook point pattern (regular expression)", value=".*", key="card_pattern")
    points = pd.DataFrame(point_rows(model.hook_points(pattern)), columns=["name", "shape", "meaning"])
    st.dataframe(points, hide_index=True, key="card_points")
