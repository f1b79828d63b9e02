"""A battery run as a markdown page with PNG figures: what ``docs/probes/results.md`` is (the zoo battery
of ``docs/probes/results.toml`` rendered), and what any run can become for a paper's appendix.

Each probe of the run gets a section: its definition and source from the registry, the parameters and
prompt set it ran with, its summary table, its figures and the units that did not apply. Run:
``workbench battery page RUN --figures DIR > page.md`` (figures need the ``docs`` extra and a Chromium:
``BROWSER_PATH=/usr/bin/chromium``).
"""

from __future__ import annotations

from pathlib import Path

from probes.registry import get
from workbench.battery.params import slug
from workbench.battery.report import probe_of, read_manifest, run_tables
from workbench.files import atomic_write
from workbench.tables import markdown_table

FIGURE_SIZE = {"width": 720, "height": 440}


def _parameters(table: dict) -> str:
    shown = {k: v for k, v in table.items() if k not in ("probe", "prompts", "models")}
    return ", ".join(f"`{k} = {v!r}`" for k, v in shown.items()) or "defaults"


def render_page(run: str | Path, figures: str | Path | None = None, link: str = "") -> str:
    """The markdown page of a run; with ``figures`` each probe's figures are written there as PNG and
    linked (``link``: the folder as the page refers to it)."""
    run = Path(run)
    manifest = read_manifest(run)
    spec = manifest["spec"]
    lines = [f"# {manifest['name']}", "", f"A battery run rendered by `workbench battery page` ({run.name})."]
    models = ", ".join(
        f"`{m['name']}`" + (f" ({m['dtype']})" if m.get("dtype") else "") for m in manifest["models"]
    )
    lines += ["", f"Models: {models}. Versions: {manifest['versions']}.", ""]
    skipped = [u for u in manifest["units"] if u["status"] != "done"]
    for label, table in run_tables(run).items():
        probe = get(probe_of(manifest, label))
        entry = spec["probes"][label]
        prompts = entry.get("prompts") or probe.prompts
        lines += [
            f"## {label}",
            "",
            f"{probe.doc}",
            "",
            f"- Definition: {probe.formula}.",
            f"- Source: {probe.cite}.",
        ]
        lines += [f"- Prompt set `{prompts}`; parameters: {_parameters(entry)}.", ""]
        lines += [markdown_table(probe.summarise(table), digits=4), ""]
        for name, figure in probe.figures(table) if figures is not None else []:
            file = f"{slug(f'{label}_{name}')}.png"
            atomic_write(
                Path(figures) / file, lambda p, f=figure: f.write_image(p, format="png", **FIGURE_SIZE)
            )
            lines += [f"![{label}, {name}]({link}{file})", ""]
        missing = [u for u in skipped if u["probe"] == label]
        if missing:
            lines += ["Not run: " + "; ".join(f"{u['model']} ({u['reason']})" for u in missing) + ".", ""]
    return "\n".join(lines)
