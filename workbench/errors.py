"""User-facing errors: each one prints as a single line on stderr (exit code 2) from the CLI."""

from __future__ import annotations


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


class CheckpointError(WorkbenchError):
    """A model's config or weights exist but cannot be read (corrupt, truncated, unknown to transformers)."""
