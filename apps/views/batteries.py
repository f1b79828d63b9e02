"""Battery results: browse one run's tables, summaries and figures, or two runs side by side."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.cache import Source
from probes.registry import get
from workbench.battery.report import combined_tables, probe_of, summary_table
from workbench.errors import WorkbenchError

TITLE = "Battery results"


def render(source: Source, prompt: str) -> None:
    first = st.text_input("Run directory", value="runs/default", key="battery_run")
    second = st.text_input("Compare with (optional)", value="", key="battery_compare")
    runs = [Path(first)] + ([Path(second)] if second.strip() else [])
    try:
        _, manifest, tables = combined_tables(runs)
    except WorkbenchError as error:
        st.info(f"{error}. Run `workbench battery run` (or `make run`) first.")
        return
    name = st.selectbox("Probe", list(tables), key="battery_probe")
    probe, table = probe_of(manifest, name), tables[name]
    st.dataframe(summary_table(probe, table), hide_index=True, key="battery_summary")
    for index, (_, figure) in enumerate(get(probe).figures(table)):
        st.plotly_chart(figure, key=f"battery_figure_{index}")
    with st.expander(f"Table ({len(table)} rows)"):
        st.dataframe(table, hide_index=True, key="battery_table")
