"""The probe and battery commands: ``probe list | run`` and ``battery run | page | compare``."""

from __future__ import annotations

from typing import Annotated

import typer

from workbench.cli.root import ModelArg, battery_app, console, load_model, print_rows, probe_app, prompt_texts
from workbench.errors import WorkbenchError


@probe_app.command("list")
def probe_list() -> None:
    """Every registered probe (built in and from installed packages): what it needs and its parameters."""
    from dataclasses import fields

    from probes.registry import registry

    rows = [
        {
            "probe": p.name,
            "needs": p.needs.words(),
            "parameters": ", ".join(f"{f.name}={f.default!r}" for f in fields(p.params)) or "-",
            "table": p.doc,
        }
        for p in registry().values()
    ]
    print_rows(rows, "Registered probes (workbench probe run NAME MODEL --set key=value)")


def _setting(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as TOML (``0.5``, ``[0.25, 1]``, ``"x"``), else as a string."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise WorkbenchError(f"--set {text!r}: expected key=value")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


@probe_app.command("run")
def probe_run(
    name: Annotated[str, typer.Argument(help="A registered probe (workbench probe list).")],
    model: ModelArg,
    prompts: Annotated[
        str,
        typer.Option(
            help="heldout (2 per domain, 300 characters), parallel, short, or a .txt / .jsonl file."
        ),
    ] = "",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="A parameter, key=value (repeatable).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Write the table as Parquet.")] = None,
    base: Annotated[
        str | None, typer.Option(help="A pair probe's base checkpoint (the model is the tuned one).")
    ] = None,
) -> None:
    """Run one registered probe on a model and print its summary (the full table with --out)."""
    from probes.params import ParamError
    from probes.registry import NotApplicable, get

    probe = get(name)
    texts = prompt_texts(prompts or probe.prompts)
    try:
        params = probe.parse(dict(_setting(s) for s in set_ or []))
    except ParamError as error:
        raise WorkbenchError(str(error)) from None
    loaded = load_model(model)
    try:
        table = probe(loaded, texts, base=load_model(base) if base else None, **vars(params))
    except NotApplicable as reason:
        raise WorkbenchError(f"{name} does not apply: {reason}") from None
    if out:
        table.to_parquet(out)
    summary = probe.summarise(table.assign(model=loaded.source))
    print_rows(summary.to_dict("records"), f"{name} on {loaded.source}: {probe.doc}")


@battery_app.command("run")
def battery_run(
    spec: Annotated[str | None, typer.Argument(help="Battery spec (TOML); default: the zoo battery.")] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (overrides the spec's output).")] = None,
    ray: Annotated[
        str | None,
        typer.Option(help="Run units as Ray tasks: 'local' (start one here), 'auto' or an address."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a battery (resumable: rerunning continues where a killed run stopped) and print the report path."""
    from workbench.battery import load_spec, run_battery
    from workbench.battery.spec import DEFAULT_SPEC

    run = run_battery(load_spec(spec or DEFAULT_SPEC, out), ray=ray, progress=progress)
    console.print(f"summary: {run / 'summary.md'}")
    print(f"report: {run / 'report.html'}")


@battery_app.command("page")
def battery_page(
    run: Annotated[str, typer.Argument(help="Run directory.")],
    figures: Annotated[str | None, typer.Option(help="Write each probe's figures here as PNG.")] = None,
    link: Annotated[str, typer.Option(help="The figures folder as the page links it.")] = "",
) -> None:
    """Print a run as a markdown page (summaries, definitions, sources, figures): docs/probes/results.md."""
    from workbench.battery.page import render_page

    print(render_page(run, figures, link))


@battery_app.command("compare")
def battery_compare(
    run_a: Annotated[str, typer.Argument(help="First run directory.")],
    run_b: Annotated[str, typer.Argument(help="Second run directory.")],
    out: Annotated[str, typer.Option(help="Where compare.html and compare.md go.")] = "runs/compare",
) -> None:
    """Side-by-side report of two battery runs (two models, two tokenizers, a checkpoint pair)."""
    from workbench.battery import compare_runs

    print(f"report: {compare_runs(run_a, run_b, out)}")
