"""Settings of a battery spec beyond the probes' own parameters (:mod:`probes.params`): the run's numbers,
how a prompt set is cut, and the file-name slugs of model names and probe labels."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from probes.params import param

SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SLUG_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64 characters"


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (runs of other characters become ``-``; "" when none is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).lstrip("-._")[:64].rstrip("-")


def is_slug(text: str) -> bool:
    """Whether ``text`` may be used as a file name in a run directory as it is."""
    return SLUG.fullmatch(text) is not None


@dataclass(frozen=True)
class RunParams:
    """Top-level numbers of a spec."""

    seed: int = param(0, low=0)
    threads: int = param(1, low=1, high=1024)


@dataclass(frozen=True)
class PromptParams:
    """How a prompt set is cut: texts per group and characters per text (0: all)."""

    per_group: int = param(0, low=0)
    chars: int = param(0, low=0)
