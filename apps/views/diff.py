"""Checkpoint diff: what tuning (or quantisation: the sidebar's "Quantise on load") changed between a
base checkpoint and the sidebar's model, each measure a registered pair probe's table and figure: weights
by layer and kind, CKA by layer, KL and bits per byte by domain, the tokens that moved, the
activation-difference lens, attention per head, MoE routing per layer, sinks, massive activations and ID
per layer, and cross-patching."""

from __future__ import annotations

import streamlit as st

from apps import cache
from apps.cache import Source
from probes.diff_weights import change_shares
from probes.registry import get
from workbench.models.checkpoint import model_card_facts
from workbench.zoo.registry import zoo

TITLE = "Checkpoint diff"
PROMPTS = ("held-out sample", "the sidebar prompt")


def default_base(source: Source) -> str:
    """For a quantised model its unquantised self; else the model card's ``base_model``, else the zoo's
    early checkpoint of ``source``, else ``source``."""
    if source.quantize:
        return source.name
    base = model_card_facts(cache.model(source))["base_model"].value
    if isinstance(base, str) and base:
        return base
    return f"{source.name}-early" if f"{source.name}-early" in zoo() else source.name


def _figures(probe: str, table: object) -> None:
    for label, figure in get(probe).figures(table):
        st.plotly_chart(figure, key=f"diff_{probe}_{label}")


def render(source: Source, prompt: str) -> None:
    if st.session_state.get("diff_for") != source:  # a new sidebar model: its default base
        st.session_state["diff_base"] = default_base(source)
        st.session_state["diff_for"] = source
    base = Source(st.text_input("Base checkpoint (zoo name or local directory)", key="diff_base"))
    on = st.radio("Prompts", PROMPTS, horizontal=True, key="diff_prompts")
    tables = cache.diff(base, source, prompt if on == PROMPTS[1] else None)
    label = f"{source}-vs-{base}"
    tables = {name: table.assign(model=label) for name, table in tables.items() if len(table.columns)}
    outputs = tables["outputs"]
    left, middle, right = st.columns(3)
    left.metric("Mean KL(base || tuned), nats", f"{outputs.kl.mean():.4g}")
    by_layer = change_shares(tables["weights"], "layer")
    most = by_layer.sort_values("share").iloc[-1]
    middle.metric("Layer with most weight change", f"{int(most.layer)} ({most.share:.0%})")
    cka = tables["representations"].set_index("layer").cka
    right.metric("Lowest CKA (layer)", f"{cka.min():.4f} ({int(cka.idxmin())})")
    st.subheader("Weights")
    st.dataframe(change_shares(tables["weights"], "kind"), hide_index=True, key="diff_kinds")
    _figures("diff_weights", tables["weights"])
    st.subheader("Representations")
    _figures("diff_representations", tables["representations"])
    st.subheader("Outputs")
    st.dataframe(outputs.drop(columns="model"), hide_index=True, key="diff_outputs")
    tokens = tables["tokens"]
    left, right = st.columns(2)
    for column, direction in ((left, "rose"), (right, "fell")):
        column.caption(f"Tokens whose logits {direction} most")
        rows = tokens[tokens.direction == direction][["token", "change"]]
        column.dataframe(rows, hide_index=True, key=f"diff_tokens_{direction}")
    if "lens" in tables:
        st.caption("Activation-difference lens (first positions, middle block)")
        st.dataframe(tables["lens"].drop(columns="model"), hide_index=True, key="diff_lens")
    st.subheader("Attention")
    _figures("diff_attention", tables["attention"])
    if "routing" in tables:
        st.subheader("MoE routing")
        st.dataframe(tables["routing"].drop(columns="model"), hide_index=True, key="diff_routing")
    st.subheader("Sinks, massive activations and intrinsic dimension")
    st.dataframe(tables["internals"].drop(columns="model"), hide_index=True, key="diff_internals")
    _figures("diff_internals", tables["internals"])
    st.subheader("Where the change lives (cross-patching)")
    _figures("diff_patching", tables["patching"])
