"""``docs/probes/index.md``: every registered probe with its definition, source, needs and parameters,
generated from the registry (``make docs``; a test compares the page with the code)."""

from __future__ import annotations

from dataclasses import Field, fields
from typing import Any

from probes.params import Range
from probes.registry import registry


def _parameter(field: Field[Any]) -> str:
    rule: Range = field.metadata.get("range", Range())
    bounds = rule.describe() or (f"one of {', '.join(rule.choices)}" if rule.choices else "")
    return f"`{field.name} = {field.default!r}`" + (f" ({bounds})" if bounds else "")


def render() -> str:
    """The markdown page."""
    lines = [
        "# Probes",
        "",
        "Generated from the probe registry (`probes/registry.py`) by `make docs`. Every probe runs in a",
        "battery (`[probes.NAME]` in a spec, parameters as keys), from the command line (`workbench probe",
        "run NAME MODEL --set key=value`), in the app's Probes view and from Python",
        "(`workbench.probe(NAME)(model, texts, **params)`). Results on the zoo: [results.md](results.md).",
        "",
        "| probe | table | needs |",
        "|---|---|---|",
    ]
    probes = registry()
    lines += [f"| [{p.name}](#{p.name}) | {p.doc} | {p.needs.words()} |" for p in probes.values()]
    for probe in probes.values():
        params = [_parameter(f) for f in fields(probe.params)]
        lines += ["", f"## {probe.name}", "", probe.doc, "", f"- Definition: {probe.formula}."]
        lines += [f"- Source: {probe.cite}.", f"- Default prompt set: `{probe.prompts}`."]
        lines += [f"- Parameters: {', '.join(params) if params else 'none'}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
