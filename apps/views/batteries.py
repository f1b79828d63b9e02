"""Battery results: browse one run's tables, summaries and figures, or two runs side by side."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.battery.report import probe_of, read_manifest, run_tables, summary_table
from workbench.battery.views import FIGURES
from workbench.errors import WorkbenchError

TITLE = "Battery results"


def render(source: str, prompt: str) -> None:
    first = st.text_input("Run directory", value="runs/default", key="battery_run")
    second = st.text_input("Compare with (optional)", value="", key="battery_compare")
    try:
        runs = [Path(first)] + ([Path(second)] if second.strip() else [])
        manifests = [read_manifest(r) for r in runs]
        tables = [run_tables(r) for r in runs]
    except WorkbenchError as error:
        st.info(f"{error}. Run `workbench battery run` (or `make run`) first.")
        return
    names = [n for n in tables[0] if all(n in t for t in tables)]
    if not names:
        st.info("no probe in common")
        return
    name = st.selectbox("Probe", names, key="battery_probe")
    probe = probe_of(manifests[0], name)
    labels = [
        m["name"] if len(runs) == 1 or manifests[0]["name"] != manifests[1]["name"] else str(i)
        for i, m in enumerate(manifests)
    ]
    table = pd.concat(
        [
            t[name].assign(model=(f"{label}:" if len(runs) > 1 else "") + t[name].model)
            for t, label in zip(tables, labels, strict=True)
        ],
        ignore_index=True,
    )
    st.dataframe(summary_table(probe, table), hide_index=True, key="battery_summary")
    for index, (_, figure) in enumerate(FIGURES.get(probe, lambda t: [])(table)):
        st.plotly_chart(figure, key=f"battery_figure_{index}")
    with st.expander(f"Table ({len(table)} rows)"):
        st.dataframe(table, hide_index=True, key="battery_table")
