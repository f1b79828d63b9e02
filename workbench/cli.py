"""The ``workbench`` command line and its error boundary (:func:`run`).

Usage errors print typer's usage line and what is wrong; a :class:`WorkbenchError` prints one line; both
exit 2. Anything else prints one line and exits 1. ``--debug`` re-raises with the traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from workbench.errors import WorkbenchError, describe_unexpected, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Mechanistic-interpretability workbench.")
zoo_app = typer.Typer(no_args_is_help=True, help="The bundled model zoo.")
app.add_typer(zoo_app, name="zoo")
battery_app = typer.Typer(no_args_is_help=True, help="Probe batteries: spec files, resumable runs, reports.")
app.add_typer(battery_app, name="battery")
probe_app = typer.Typer(no_args_is_help=True, help="Registered probes: list them, run one on a model.")
app.add_typer(probe_app, name="probe")
console = Console()
DEFAULT_MODEL = "tiny-moe"
USAGE_EXIT = 2  # usage errors and WorkbenchError
UNEXPECTED_EXIT = 1

ModelArg = Annotated[str, typer.Argument(help="Zoo name, local model directory or hub id.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the repository's own code.")]
PickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle checkpoints.")]
GenericOpt = Annotated[
    bool, typer.Option("--generic", help="Accept an unsupported family (residual points).")
]


def _load(
    source: str,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    generic: bool = False,
    config_ok: bool = False,
    quantization: dict | None = None,
):
    """Load a model for a command; ``config_ok``: a directory with a config and no weights is built on the
    meta device (the card and the hook listing need shapes only); ``quantization``: quantised on load."""
    from workbench.models.load import config_only, load

    device = "meta" if config_ok and config_only(source) else None
    with console.status(f"loading {source}", spinner="dots"):
        return load(
            source,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            allow_generic=generic,
            device=device,
            quantization=quantization,
        )


@app.command()
def card(
    model: ModelArg,
    other: Annotated[
        str | None, typer.Argument(help="A second model: the two cards side by side, differing rows marked.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="rich, json or markdown.")] = "rich",
    measure: Annotated[
        bool, typer.Option("--measure", help="Run the cheap probes and fill the measured rows.")
    ] = False,
    base: Annotated[
        str | None,
        typer.Option(help="A base checkpoint: fill the tuning rows (8, 12, 14) from the diff against it."),
    ] = None,
    diff: Annotated[
        bool,
        typer.Option(
            "--diff", help="With two models: the second's tuning rows from the diff against the first."
        ),
    ] = False,
    trust_remote_code: TrustOpt = False,
    allow_pickle: PickleOpt = False,
) -> None:
    """Print the "thinking parameters" card of a model (or of two, side by side)."""
    from probes.card import card as build_card
    from probes.card import compare

    if fmt not in ("rich", "json", "markdown"):
        raise WorkbenchError(f"unknown format {fmt!r}; use rich, json or markdown")
    if diff and (other is None or base is not None):
        raise WorkbenchError(
            "--diff compares two models (A B): the first is the second's base; not with --base"
        )
    sources = [model] if other is None else [model, other]
    loaded = [
        _load(s, trust_remote_code, allow_pickle, config_ok=not (measure or base or diff)) for s in sources
    ]
    bases = [_load(base, trust_remote_code, allow_pickle)] * len(loaded) if base else [None] * len(loaded)
    if diff:
        bases = [None, loaded[0]]
    cards = []
    for source, this, against in zip(sources, loaded, bases, strict=True):
        busy = measure or against is not None
        with console.status(f"measuring {source}" if busy else f"reading {source}", spinner="dots"):
            cards.append(build_card(this, measure=measure, base=against))
    shown = cards[0] if other is None else compare(*cards)
    if fmt == "json":
        print(shown.to_json())
    elif fmt == "markdown":
        print(shown.to_markdown(), end="")
    else:
        console.print(shown.to_rich())


def _texts(prompts: str) -> dict[str, list[str]]:
    """A built-in prompt set (held-out: cut as the default battery, 2 per domain, 300 characters) or a
    file's, by group."""
    from probes.card_measure import CHARS, PER_DOMAIN
    from workbench.battery.prompts import resolve_prompts
    from workbench.battery.spec import BUILTIN_PROMPTS, PromptSet

    builtin = prompts if prompts in BUILTIN_PROMPTS else None
    cut = {"per_group": PER_DOMAIN, "chars": CHARS} if builtin == "heldout" else {}
    return resolve_prompts(PromptSet(prompts, builtin, None if builtin else prompts, **cut))


@app.command("diff")
def diff_command(
    base: Annotated[str, typer.Argument(help="The base checkpoint (zoo name, directory or hub id).")],
    tuned: Annotated[str, typer.Argument(help="The tuned checkpoint, of the same architecture.")],
    prompts: Annotated[
        str, typer.Option(help="heldout (2 per domain, 300 characters), parallel, short, or a file.")
    ] = "heldout",
    out: Annotated[
        str | None, typer.Option(help="A directory for the tables (one Parquet file each).")
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="METHOD:BITS (quanto:8, quanto:4, torchao:8): the second checkpoint quantised on load."
        ),
    ] = None,
) -> None:
    """What tuning (or quantisation) changed between two checkpoints: weights by layer and kind,
    representations and attention by layer, MoE routing, outputs by domain, the tokens that moved most, and
    cross-patching."""
    from pathlib import Path

    from probes.diff import diff

    texts = _texts(prompts)
    from workbench.models.quantize import parse_request

    a, b = _load(base), _load(tuned, quantization=parse_request(quantize or ""))
    with console.status(f"comparing {a.source} and {b.source}", spinner="dots"):
        found = diff(a, b, texts)
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in found.tables().items():
            if len(table.columns):  # a dense pair has no routing table
                table.to_parquet(folder / f"{name}.parquet")
    for heading, table in found.summaries().items():
        _print_rows(table.to_dict("records"), f"{heading}, {b.source} against {a.source}")


@app.command()
def hooks(
    model: ModelArg,
    pattern: Annotated[str, typer.Option(help="Regular expression over hook point names.")] = ".*",
    generic: GenericOpt = False,
) -> None:
    """List a model's hook points with their shapes."""
    from workbench.hooks.points import point_rows

    loaded = _load(model, generic=generic, config_ok=True)
    table = Table(title=f"Hook points: {loaded.source} ({loaded.adapter.family})")
    for column in ("name", "shape", "meaning"):
        table.add_column(column)
    for row in point_rows(loaded.hook_points(pattern)):
        table.add_row(*row.values())
    console.print(table)


def _causal_types(values: list[str] | None) -> list[str] | None:
    """Argument check: each value is a causal-LM model type of the installed transformers."""
    from workbench.families.table import causal_model_types

    unknown = [v for v in values or [] if v not in set(causal_model_types())]
    if unknown:
        raise typer.BadParameter(f"not a causal-LM model type of this transformers: {', '.join(unknown)}")
    return values


@app.command()
def families(
    model_type: Annotated[
        list[str] | None,
        typer.Argument(help="Model types to check (default: every causal-LM type).", callback=_causal_types),
    ] = None,
    out: Annotated[str | None, typer.Option(help="Also write the table as Parquet here.")] = None,
) -> None:
    """Every causal-LM family of the installed transformers: full / partial / none, from exactness checks
    on each family's tiny random-init config."""
    from workbench.families.table import coverage, coverage_frame

    frame = coverage_frame(coverage(model_type or None))
    table = Table(title="Families")
    for column in frame.columns:
        table.add_column(column)
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table)
    if out:
        frame.to_parquet(out)


@app.command()
def main(model: Annotated[str, typer.Argument(help="Model to run on.")] = DEFAULT_MODEL) -> None:
    """The main job: the card of the model and a short per-layer capture summary."""
    from probes.card import card as build_card
    from workbench.summary import DEFAULT_PROMPTS, layer_summary

    loaded = _load(model)
    console.print(build_card(loaded).to_rich())
    with console.status("capturing", spinner="dots"):
        rows = layer_summary(loaded)
    _print_rows(rows, f"Capture summary over {len(DEFAULT_PROMPTS)} prompts (resid_post, attention pattern)")


@app.command()
def tokenizer(
    model: ModelArg,
    texts: Annotated[
        str | None,
        typer.Option(help="A .txt (one text per line) or .jsonl file; default: the parallel sample."),
    ] = None,
    language: Annotated[str | None, typer.Option(help="Language of a .txt file (default: its stem).")] = None,
    reference: Annotated[str, typer.Option(help="Language the premium is relative to.")] = "en",
    out: Annotated[str | None, typer.Option(help="Write the table as Parquet.")] = None,
) -> None:
    """Tokenizer statistics per language: fertility, continued/unknown/byte-fallback shares, premium."""
    from probes.tokenizer import load_texts, tokenizer_table, vocabulary

    loaded = _load(model)
    if loaded.tokenizer is None:
        raise WorkbenchError(f"{loaded.source} has no tokenizer")
    table = tokenizer_table(loaded.tokenizer, load_texts(texts, language), reference)
    if out:
        table.to_parquet(out)
    facts = vocabulary(loaded.tokenizer)
    title = f"{loaded.source}: {facts['algorithm']}, {facts['vocab_size']} tokens; {facts['special_tokens']}"
    _print_rows(table.to_dict("records"), title)


def _print_rows(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


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
    _print_rows(rows, "Registered probes (workbench probe run NAME MODEL --set key=value)")


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
    texts = _texts(prompts or probe.prompts)
    try:
        params = probe.parse(dict(_setting(s) for s in set_ or []))
    except ParamError as error:
        raise WorkbenchError(str(error)) from None
    loaded = _load(model)
    try:
        table = probe(loaded, texts, base=_load(base) if base else None, **vars(params))
    except NotApplicable as reason:
        raise WorkbenchError(f"{name} does not apply: {reason}") from None
    if out:
        table.to_parquet(out)
    summary = probe.summarise(table.assign(model=loaded.source))
    _print_rows(summary.to_dict("records"), f"{name} on {loaded.source}: {probe.doc}")


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


@app.command("app")
def app_command(
    address: Annotated[str, typer.Option(help="Address to bind (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
) -> None:
    """Start the Streamlit app (layer activity, heads, routing, compression, KV cache, live generation,
    battery results)."""
    from pathlib import Path

    from streamlit.web import bootstrap

    import apps.data  # imported here so that the first page does not wait for torch & co.

    script = str(Path(apps.data.__file__).resolve().parent / "workbench_app.py")
    flags = {
        "server_address": address,
        "server_port": port,
        "server_headless": True,
        "server_fileWatcherType": "none",
        "browser_gatherUsageStats": False,
        "client_toolbarMode": "viewer",
        "client_showErrorDetails": "none",  # the app shows its own one-line errors, never a traceback
    }
    bootstrap.load_config_options(flag_options=flags)
    bootstrap.run(script, False, [], flags)


def _quiet_libraries() -> None:
    """Keep the hub's retry chatter and transformers' advice off stderr, so errors stay one line."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as tf_logging

    hub_logging.set_verbosity_error()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()


@zoo_app.command("list")
def zoo_list() -> None:
    """List the zoo with sizes, provenance and hash status."""
    from workbench.zoo.registry import WEIGHTS, check, zoo

    table = Table(title="Model zoo")
    for column in ("name", "kind", "MB", "status", "description"):
        table.add_column(column)
    for entry in zoo().values():
        weights = entry.path() / WEIGHTS
        size = f"{weights.stat().st_size / 1e6:.1f}" if weights.is_file() else "-"
        table.add_row(entry.name, entry.kind, size, check(entry) or "ok", entry.description)
    console.print(table)


@zoo_app.command("verify")
def zoo_verify() -> None:
    """Check every zoo model's weights against the recorded sha256; exit 2 on any mismatch."""
    from workbench.zoo.registry import check, zoo

    problems = {name: check(entry) for name, entry in zoo().items()}
    for name, problem in problems.items():
        console.print(f"{name}: {problem or 'ok'}")
    bad = [n for n, p in problems.items() if p]
    if bad:
        raise WorkbenchError(f"zoo verification failed for {', '.join(bad)}")


def _buildable(names: list[str]) -> list[str]:
    """Reject names ``zoo build`` cannot make at parse time, so a typo is a usage error."""
    from workbench.zoo_build.build import BUILDABLE

    unknown = [n for n in names if n not in BUILDABLE]
    if unknown:
        raise typer.BadParameter(f"cannot build {', '.join(unknown)}; buildable: {', '.join(BUILDABLE)}")
    return names


@zoo_app.command("build")
def zoo_build(
    names: Annotated[
        list[str], typer.Argument(help="Entries to rebuild (or 'tokenizers').", callback=_buildable)
    ],
) -> None:
    """Rebuild zoo entries from their seeds (fetches the corpus with apt-get; trains on this CPU)."""
    from workbench.zoo_build.build import build

    build(names)


def _context(args: list[str]) -> typer.Context:
    """A context of the deepest (sub)command named in ``args``, for errors typer raises without one."""
    command = typer.main.get_command(app)
    path = ["workbench"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command, path = sub, [*path, arg]
    return typer.Context(command, info_name=" ".join(path))


def _show_usage_error(exc: typer.TyperException, args: list[str]) -> None:
    """Typer's usage line, the help hint and one line saying what is wrong, on stderr."""
    ctx = getattr(exc, "ctx", None) or _context(args)
    # a group called without a command: typer has printed its help already (typer's rich_utils tells this
    # case by the class name too, its class living in typer's private vendored click)
    bare_group = type(exc).__name__ == "NoArgsIsHelpError"
    message = "Missing command." if bare_group else exc.format_message()
    hint = f"Try '{ctx.command_path} --help' for help."
    print(f"{ctx.get_usage()}\n{hint}\n\nError: {message}", file=sys.stderr)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: the one error boundary of the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``); ``--debug`` anywhere shows tracebacks and library logs.

    Returns:
        0 on success, 2 for usage errors and :class:`WorkbenchError`, 1 for anything unexpected, or the
        code a command exits with.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not debug:
        _quiet_libraries()
    try:
        app(args=args, prog_name="workbench", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("workbench: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # typer's vendored click: missing, unknown or bad arguments
        _show_usage_error(exc, args)
        return USAGE_EXIT
    except WorkbenchError as exc:
        if debug:
            raise
        print(f"workbench: error: {one_line(str(exc))}", file=sys.stderr)
        return USAGE_EXIT
    except Exception as exc:
        if debug:
            raise
        hint = "run with --debug for the traceback"
        print(f"workbench: unexpected error: {describe_unexpected(exc)} ({hint})", file=sys.stderr)
        return UNEXPECTED_EXIT
    return 0


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(run())
