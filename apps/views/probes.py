"""Any registered probe on the sidebar's model: its parameters as a form (read from its parameter
dataclass), its prompt set, and its table, summary and figures as the battery shows them."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, get_args, get_origin, get_type_hints

import streamlit as st

from apps import cache
from apps.cache import Source
from probes.params import ParamError, Range
from probes.registry import NotApplicable, Probe, registry
from workbench.battery.prompts import resolve_prompts
from workbench.battery.spec import PromptSet
from workbench.errors import InputError

TITLE = "Probes"
PROMPT_SETS = ("the sidebar prompt", "held-out sample (2 per domain)", "parallel sentences")


def _field(probe: Probe, name: str, hint: Any, default: Any, rule: Range) -> Any:
    """One widget per parameter: numbers as number inputs, choices as a select box, lists as
    comma-separated text (checked by the probe's own parser afterwards)."""
    key = f"probe_{probe.name}_{name}"
    if get_origin(hint) is tuple:
        text = st.text_input(f"{name} (comma-separated)", ", ".join(map(str, default)), key=key)
        item = get_args(hint)[0]
        try:
            return [item(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ParamError(f"{probe.name}.{name}: expected {item.__name__} values, got {text!r}") from None
    if hint is str and rule.choices:
        return st.selectbox(name, rule.choices, index=rule.choices.index(default), key=key)
    if hint is str:
        return st.text_input(name, default, key=key)
    step = 1 if hint is int else 0.05
    return st.number_input(name, value=default, step=step, key=key)


def _params(probe: Probe) -> dict[str, Any]:
    hints = get_type_hints(probe.params)
    return {
        f.name: _field(probe, f.name, hints[f.name], f.default, f.metadata.get("range", Range()))
        for f in fields(probe.params)
        if f.default is not MISSING
    }


def _texts(choice: str, prompt: str) -> dict[str, list[str]]:
    """The chosen prompt set, cut as the default battery and ``workbench probe run`` cut it."""
    if choice == PROMPT_SETS[0]:
        return {"prompt": [prompt]}
    if choice == PROMPT_SETS[1]:
        return resolve_prompts(PromptSet("heldout", "heldout", per_group=2, chars=300))
    return resolve_prompts(PromptSet("parallel", "parallel"))


def render(source: Source, prompt: str) -> None:
    probes = registry()
    name = st.selectbox("Probe", list(probes), key="probe_name")
    probe = probes[name]
    st.caption(f"{probe.doc} Formula: {probe.formula}. Source: {probe.cite}. Needs: {probe.needs.words()}.")
    default = PROMPT_SETS[2] if probe.prompts == "parallel" else PROMPT_SETS[1]
    choice = st.selectbox("Prompts", PROMPT_SETS, index=PROMPT_SETS.index(default), key="probe_prompts")
    try:
        values = _params(probe)
    except ParamError as error:
        st.error(str(error))
        return
    if not st.button("Run", key="probe_run"):
        return
    try:
        table = probe(cache.model(source), _texts(choice, prompt), **values)
    except NotApplicable as reason:
        st.info(f"{name} does not apply: {reason}")
        return
    except ParamError as error:
        raise InputError(str(error)) from None
    shown = table.assign(model=str(source))
    st.dataframe(probe.summarise(shown), hide_index=True, key="probe_summary")
    for index, (_, figure) in enumerate(probe.figures(shown)):
        st.plotly_chart(figure, key=f"probe_figure_{index}")
    with st.expander(f"Table ({len(table)} rows)"):
        st.dataframe(table, hide_index=True, key="probe_table")
