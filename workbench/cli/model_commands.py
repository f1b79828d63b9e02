"""The model commands: ``card``, ``diff``, ``hooks``, ``families``, ``main`` and ``tokenizer``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from workbench.cli.root import (
    DEFAULT_MODEL,
    GenericOpt,
    ModelArg,
    PickleOpt,
    TrustOpt,
    app,
    console,
    load_model,
    print_rows,
    prompt_texts,
)
from workbench.errors import WorkbenchError


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
        load_model(s, trust_remote_code, allow_pickle, config_ok=not (measure or base or diff))
        for s in sources
    ]
    bases = (
        [load_model(base, trust_remote_code, allow_pickle)] * len(loaded) if base else [None] * len(loaded)
    )
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
            help="METHOD:BITS (quanto:8|4|2, torchao:8, bitsandbytes:8|4): the second checkpoint "
            "quantised on load."
        ),
    ] = None,
) -> None:
    """What tuning (or quantisation) changed between two checkpoints: weights by layer and kind,
    representations, attention, sinks, massive activations and ID by layer, MoE routing, outputs by domain,
    the tokens that moved most, and cross-patching."""
    from pathlib import Path

    from probes.diff import diff
    from workbench.models.quantize import parse_request

    texts = prompt_texts(prompts)
    a, b = load_model(base), load_model(tuned, quantization=parse_request(quantize or ""))
    with console.status(f"comparing {a.source} and {b.source}", spinner="dots"):
        found = diff(a, b, texts)
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in found.tables().items():
            if len(table.columns):  # a dense pair has no routing table
                table.to_parquet(folder / f"{name}.parquet")
    for heading, table in found.summaries().items():
        print_rows(table.to_dict("records"), f"{heading}, {b.source} against {a.source}")


@app.command()
def hooks(
    model: ModelArg,
    pattern: Annotated[str, typer.Option(help="Regular expression over hook point names.")] = ".*",
    generic: GenericOpt = False,
) -> None:
    """List a model's hook points with their shapes."""
    from workbench.hooks.points import point_rows

    loaded = load_model(model, generic=generic, config_ok=True)
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

    loaded = load_model(model)
    console.print(build_card(loaded).to_rich())
    with console.status("capturing", spinner="dots"):
        rows = layer_summary(loaded)
    print_rows(rows, f"Capture summary over {len(DEFAULT_PROMPTS)} prompts (resid_post, attention pattern)")


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

    loaded = load_model(model)
    if loaded.tokenizer is None:
        raise WorkbenchError(f"{loaded.source} has no tokenizer")
    table = tokenizer_table(loaded.tokenizer, load_texts(texts, language), reference)
    if out:
        table.to_parquet(out)
    facts = vocabulary(loaded.tokenizer)
    title = f"{loaded.source}: {facts['algorithm']}, {facts['vocab_size']} tokens; {facts['special_tokens']}"
    print_rows(table.to_dict("records"), title)
