"""The zoo commands (``zoo list | verify | build``) and ``app``, which serves the Streamlit app."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from workbench.cli.root import app, console, zoo_app
from workbench.errors import WorkbenchError


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
