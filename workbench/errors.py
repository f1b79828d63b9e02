"""User-facing errors: each one prints as a single line on stderr (exit code 2) from the CLI."""

from __future__ import annotations

import re


class WorkbenchError(Exception):
    """Base class for errors caused by the user's input (shown as one line, no traceback)."""


class ModelNotFoundError(WorkbenchError):
    """A model source (zoo name, local directory or hub id) could not be resolved."""


class UnsupportedFamilyError(WorkbenchError):
    """The model's family has no architecture adapter."""


class UnsafeCheckpointError(WorkbenchError):
    """A pickle checkpoint was found and loading it was not explicitly allowed."""


class HookPointError(WorkbenchError):
    """A hook point name does not exist for this model, or the backend cannot serve it."""


class InputError(WorkbenchError):
    """A prompt or input batch is empty, too long or malformed."""


class ModelTooLargeError(WorkbenchError):
    """A model whose weights and KV cache would not fit in the memory available (refused before loading)."""


class CheckpointError(WorkbenchError):
    """A model's config or weights exist but cannot be read (corrupt, truncated, unknown to transformers)."""


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for naming a bad value in a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def one_line(text: str) -> str:
    """``text`` with its lines joined by spaces (an error shown on one line)."""
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


_ABSOLUTE_PATH = re.compile(r"(?<![\w.\0])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\:]+[/\\])+([^\s'\"/\\:]*)")


def hide_paths(text: str, keep: tuple[str, ...] = ()) -> str:
    """``text`` with every absolute path reduced to ``.../last-part``, except the paths in ``keep``.

    The app shows errors with this, so that a page never shows the server's file layout beyond the paths
    its user typed.
    """
    kept = {f"\0{i}\0": path for i, path in enumerate(p for p in keep if p)}
    for marker, path in kept.items():
        text = text.replace(path, marker)
    text = _ABSOLUTE_PATH.sub(lambda match: f".../{match.group(1)}", text)
    for marker, path in kept.items():
        text = text.replace(marker, path)
    return text


def describe_unexpected(error: BaseException) -> str:
    """One line for an exception no check anticipated: ``"TypeName: first sentence"``."""
    detail = one_line(str(error)).split(". ")[0] or "no message"
    return f"{type(error).__name__}: {detail}"
