"""Compression depth on the held-out sample: TwoNN ID and effective rank per layer, CKA, logit lens."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps import cache
from apps.cache import Source
from probes.compression import id_summaries
from probes.figures import id_profile, lines_by_group

TITLE = "Compression depth"


def render(source: Source, prompt: str) -> None:
    profile, grid, lens_table = cache.compression(source)
    st.caption("Ten held-out prompts (two per domain), all tokens pooled.")
    summary = id_summaries(profile.twonn_90.tolist())
    st.plotly_chart(id_profile(profile, summary, title="TwoNN ID per layer"), key="compression_id")
    st.plotly_chart(
        lines_by_group(
            profile.assign(series="effective rank"), "layer", "effective_rank", "series", "Effective rank"
        ),
        key="compression_rank",
    )
    layers = [f"layer {i}" for i in range(len(grid))]
    st.plotly_chart(cache.grid_figure(grid, layers, layers, "Linear CKA", height=380), key="compression_cka")
    st.dataframe(pd.DataFrame([summary]), hide_index=True, key="compression_summary")
    st.dataframe(profile, hide_index=True, key="compression_profile")
    if lens_table is not None:
        st.dataframe(lens_table, hide_index=True, key="compression_lens")
