"""The root of the ``workbench`` command line: the typer apps, the console, the argument types the
commands share, and the helpers that load a model, read a prompt set and print rows."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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


def load_model(
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


def prompt_texts(prompts: str) -> dict[str, list[str]]:
    """A built-in prompt set (held-out: cut as the default battery, 2 per domain, 300 characters) or a
    file's, by group."""
    from probes.card_measure import CHARS, PER_DOMAIN
    from workbench.battery.prompts import resolve_prompts
    from workbench.battery.spec import BUILTIN_PROMPTS, PromptSet

    builtin = prompts if prompts in BUILTIN_PROMPTS else None
    cut = {"per_group": PER_DOMAIN, "chars": CHARS} if builtin == "heldout" else {}
    return resolve_prompts(PromptSet(prompts, builtin, None if builtin else prompts, **cut))


def print_rows(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
