"""Battery reports: a self-contained offline HTML page (plotly.js inline, no network) and a markdown
summary for one run, and the same side by side for two runs."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
from plotly.offline import get_plotlyjs

from probes.registry import get, registry
from workbench.battery.params import is_slug
from workbench.errors import InputError
from workbench.files import atomic_write_text
from workbench.tables import markdown_table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
nav { display: flex; flex-wrap: wrap; gap: 0.3em 1em; } .figure { display: inline-block; width: 540px; }
"""
FULL_ROWS = 400  # rows of a full table shown in the page (the Parquet file has all)


def run_tables(run: Path) -> dict[str, pd.DataFrame]:
    """The merged table of every probe of a run, by probe label (spec order).

    Raises:
        InputError: A table that is not readable Parquet.
    """
    tables = {}
    for name in read_manifest(run)["spec"]["probes"]:
        path = Path(run) / "tables" / f"{name}.parquet"
        if path.exists():
            try:
                tables[name] = pd.read_parquet(path)
            except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
                raise InputError(f"{path}: not a readable Parquet table ({type(error).__name__})") from None
    return tables


def read_manifest(run: Path) -> dict:
    """A run's manifest, checked as far as reading the run needs: a ``spec`` whose probe labels are file
    names (a manifest from elsewhere cannot point outside the run) and whose probe tables are tables.

    Raises:
        InputError: No manifest, damaged JSON, or a manifest of the wrong shape.
    """
    path = Path(run) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{run} is not a battery run (no manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: damaged manifest") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise InputError(f"{path}: not a battery manifest ({problem})")
    return manifest


def _manifest_problem(manifest: object) -> str:
    """What is wrong with the shape of a manifest read from a run directory ("" when nothing): its probe
    labels must be file names (a manifest from elsewhere cannot point outside the run) naming known probes,
    and its units and versions what the reports read."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("name"), str):
        return "no name"
    probes = manifest.get("spec", {}).get("probes") if isinstance(manifest.get("spec"), dict) else None
    if not isinstance(probes, dict) or not all(is_slug(n) and isinstance(t, dict) for n, t in probes.items()):
        return "spec.probes must map file-name labels to tables"
    if any(t.get("probe", n) not in registry() for n, t in probes.items()):
        return "spec.probes names an unknown probe"
    units = manifest.get("units")
    keys = ("probe", "model", "status", "reason")
    if not isinstance(units, list) or not all(
        isinstance(u, dict) and all(isinstance(u.get(k, ""), str) for k in keys) for u in units
    ):
        return "units must be a list of tables of strings"
    if not isinstance(manifest.get("versions"), dict):
        return "no versions"
    return ""


def probe_of(manifest: dict, name: str) -> str:
    """The registry probe behind a probe label of the run's spec."""
    return manifest["spec"]["probes"][name].get("probe", name)


def summary_table(probe: str, table: pd.DataFrame) -> pd.DataFrame:
    """The probe's summary of a table (its first rows when the probe has none)."""
    return get(probe).summarise(table)


def _section(name: str, probe: str, table: pd.DataFrame) -> str:
    figures = get(probe).figures(table)
    config = {"displaylogo": False}
    divs = "".join(
        f'<div class="figure">{f.to_html(full_html=False, include_plotlyjs=False, config=config)}</div>'
        for _, f in figures
    )
    summary = summary_table(probe, table).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
    full = table.head(FULL_ROWS).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
    label = html.escape(name)
    return (
        f'<section id="{label}"><h2>{label}</h2><p>{html.escape(get(probe).doc)}</p>'
        f"{divs}<h3>Summary</h3>{summary}"
        f"<details><summary>Table ({len(table)} rows; tables/{label}.parquet)</summary>{full}</details>"
        "</section>"
    )


def _page(title: str, intro: str, sections: list[str], names: list[str]) -> str:
    nav = "".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in names)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head>"
        f"<body><h1>{html.escape(title)}</h1>{intro}<nav>{nav}</nav>{''.join(sections)}</body></html>"
    )


def _unit_list(title: str, units: list[dict]) -> str:
    """A collapsed HTML list of units with their reasons ("" when there are none)."""
    if not units:
        return ""
    items = "".join(
        f"<li>{html.escape(u['probe'])} on {html.escape(u['model'])}: {html.escape(u['reason'])}</li>"
        for u in units
    )
    return f"<details><summary>{title}</summary><ul>{items}</ul></details>"


def write_report(run: str | Path) -> Path:
    """Write ``report.html`` and ``summary.md`` for a finished run; return the HTML path."""
    run = Path(run)
    manifest = read_manifest(run)
    tables = run_tables(run)
    by_status = {k: [u for u in manifest["units"] if u["status"] == k] for k in ("skipped", "failed")}
    intro = (
        f"<p>{len(manifest['units'])} units, {len(by_status['skipped'])} not applicable, "
        f"{len(by_status['failed'])} failed; versions: {html.escape(json.dumps(manifest['versions']))}</p>"
    )
    for status, title in (("failed", "Failed"), ("skipped", "Not applicable")):
        intro += _unit_list(title, by_status[status])
    sections = [_section(n, probe_of(manifest, n), t) for n, t in tables.items()]
    page = _page(f"Battery: {manifest['name']}", intro, sections, list(tables))
    atomic_write_text(run / "report.html", page)
    lines = [
        f"# Battery: {manifest['name']}",
        "",
        f"Tables: `{run / 'tables'}`; report: `{run / 'report.html'}`.",
        "",
    ]
    if by_status["failed"]:
        lines += ["## Failed units", ""]
        lines += [f"- {u['probe']} on {u['model']}: {u['reason']}" for u in by_status["failed"]] + [""]
    for name, table in tables.items():
        lines += [
            f"## {name}",
            "",
            markdown_table(summary_table(probe_of(manifest, name), table), digits=4),
            "",
        ]
    atomic_write_text(run / "summary.md", "\n".join(lines))
    return run / "report.html"


def combined_tables(runs: list[Path]) -> tuple[list[str], dict, dict[str, pd.DataFrame]]:
    """The probes every run has, each as one table; with several runs the model labels are prefixed by the
    run's name (``A:`` / ``B:`` ... when the names clash). Returns the labels, the first manifest and the
    tables by probe label."""
    manifests = [read_manifest(r) for r in runs]
    labels = [m["name"] for m in manifests]
    if len(set(labels)) < len(labels):
        labels = [chr(ord("A") + i) for i in range(len(runs))]
    tables = [run_tables(r) for r in runs]
    common = [n for n in tables[0] if all(n in t for t in tables)]
    if not common:
        raise InputError(f"{', '.join(map(str, runs))} share no probe")
    if len(runs) == 1:
        return labels, manifests[0], {n: tables[0][n] for n in common}
    return (
        labels,
        manifests[0],
        {
            name: pd.concat(
                [
                    t[name].assign(model=f"{label}:" + t[name].model)
                    for t, label in zip(tables, labels, strict=True)
                ],
                ignore_index=True,
            )
            for name in common
        },
    )


def compare_runs(run_a: str | Path, run_b: str | Path, out: str | Path) -> Path:
    """Side-by-side report of two runs: every probe both ran, with the model labels prefixed by the run's
    name (``A:tiny-llama`` ...), as ``compare.html`` and ``compare.md`` in ``out``; return the HTML path."""
    runs = [Path(run_a), Path(run_b)]
    labels, manifest, tables = combined_tables(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections, lines = [], [f"# Comparison: {labels[0]} vs {labels[1]}", ""]
    for name, both in tables.items():
        probe = probe_of(manifest, name)
        sections.append(_section(name, probe, both))
        lines += [f"## {name}", "", markdown_table(summary_table(probe, both), digits=4), ""]
    described = [
        f"{html.escape(str(r))} ({html.escape(label)})" for r, label in zip(runs, labels, strict=True)
    ]
    intro = f"<p>{described[0]} vs {described[1]}</p>"
    title = f"Comparison: {labels[0]} vs {labels[1]}"
    atomic_write_text(out / "compare.html", _page(title, intro, sections, list(tables)))
    atomic_write_text(out / "compare.md", "\n".join(lines))
    return out / "compare.html"
