"""Model card: every setting that shapes the model's behaviour, in one table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import workbench
from apps import cache

TITLE = "Model card"


def render(source: str, prompt: str) -> None:
    card = workbench.card(cache.model(source))
    rows = pd.DataFrame([(s, n, str(v)) for s, n, v in card.rows], columns=["section", "field", "value"])
    st.dataframe(rows, hide_index=True, key="card_table")
