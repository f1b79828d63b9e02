"""The ``workbench`` command line and its error boundary (:func:`run`).

Usage errors print typer's usage line and what is wrong; a :class:`WorkbenchError` prints one line; both
exit 2. Anything else prints one line and exits 1. ``--debug`` re-raises with the traceback.
"""

from __future__ import annotations

import sys

import typer

from workbench.cli import model_commands, probe_commands, zoo_commands  # noqa: F401  (they register)
from workbench.cli.root import UNEXPECTED_EXIT, USAGE_EXIT, app
from workbench.errors import WorkbenchError, describe_unexpected, one_line

__all__ = ["app", "main_entry", "run"]


def _quiet_libraries() -> None:
    """Keep the hub's retry chatter and transformers' advice off stderr, so errors stay one line."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as tf_logging

    hub_logging.set_verbosity_error()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()


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
