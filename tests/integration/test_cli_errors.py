"""CLI usage errors: every command and group, enumerated from the typer app, exits 2 with its usage line.

Each leaf command gets a missing argument (a required argument, else an option's value), an unknown
option and bad values (a flag given a value, a non-number for a numeric option, a value its callback
rejects, an extra argument); each group gets no command and an unknown command. New commands are covered
without touching this file; a command offering no bad-value case fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from types import UnionType
from typing import Any

import pytest
import typer

from workbench.cli import app, run

PLACEHOLDER = "x"


@dataclass(frozen=True)
class Case:
    """One invocation that must be a usage error: arguments, usage path and the expected error text."""

    args: tuple[str, ...]
    path: tuple[str, ...]
    expect: str

    def __str__(self) -> str:
        return " ".join(self.args) or "(none)"


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (sub)command of the click tree typer builds, groups included, with its name path."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def _numeric(hint: Any) -> bool:
    """Whether a parameter's annotation is a number (``int``, ``float``, optionally ``| None``)."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_numeric(h) for h in typing.get_args(hint) if h is not type(None))
    return hint in (int, float)


def _leaf_cases(path: tuple[str, ...], command: Any) -> list[Case]:
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option"]
    valued = [o for o in options if not o.is_flag]
    hints = typing.get_type_hints(command.callback)
    filled = (*path, *[PLACEHOLDER for _ in arguments])
    cases = [Case((*filled, "--no-such-option"), path, "No such option")]
    if any(a.required for a in arguments):
        cases.append(Case(path, path, "Missing argument"))
    elif valued:
        cases.append(Case((*path, valued[0].opts[0]), path, "requires an argument"))
    bad = [Case((*filled, f"{o.opts[0]}=bogus"), path, "does not take a value") for o in options if o.is_flag]
    bad += [
        Case((*filled, o.opts[0], "notanumber"), path, "Invalid value")
        for o in valued
        if _numeric(hints[o.name])
    ]
    bad += [
        Case((*path, *["no-such-value" if a is p else PLACEHOLDER for a in arguments]), path, "Invalid value")
        for p in arguments
        if p.callback is not None
    ]
    if all(a.nargs != -1 for a in arguments):
        bad.append(Case((*filled, "unexpected-extra"), path, "unexpected extra argument"))
    assert bad, f"`workbench {' '.join(path)}` offers no bad-value case; extend _leaf_cases"
    return cases + bad


def _cases() -> list[Case]:
    cases: list[Case] = []
    for path, command in _walk(typer.main.get_command(app)):
        if hasattr(command, "commands"):
            cases.append(Case(path, path, "Missing command"))
            cases.append(Case((*path, "no-such-command"), path, "No such command"))
        else:
            cases.extend(_leaf_cases(path, command))
    return cases


CASES = _cases()


def test_every_command_is_enumerated() -> None:
    """The enumeration reaches nested commands (a guard against walking only the top level)."""
    paths = {case.path for case in CASES}
    expected = {("card",), ("app",), ("battery", "run"), ("battery", "compare"), ("zoo", "list")}
    assert expected | {("zoo", "verify"), ("zoo", "build"), (), ("zoo",), ("battery",)} <= paths


@pytest.mark.parametrize("case", CASES, ids=str)
def test_usage_error_exits_2_with_usage_line(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(list(case.args)) == 2
    captured = capsys.readouterr()
    usage = " ".join(("Usage: workbench", *case.path))
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith(usage), captured.err
    assert lines[-1].startswith("Error: ") and case.expect in lines[-1], captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("args", [["battery"], ["app", "--port", "notanumber"]], ids=str)
def test_usage_error_in_a_real_process_has_no_traceback(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 2, result.stderr
    assert "Usage: workbench" in result.stderr and "Traceback" not in result.stdout + result.stderr
