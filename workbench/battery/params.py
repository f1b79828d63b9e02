"""Typed parameters of a battery spec: one frozen dataclass per probe (and for the run and prompt-set
settings), each field with its type, default and range. The spec validator reads these definitions and
nothing else, so a parameter's type and range are stated once.

A field's type is ``int``, ``float`` (an int is accepted), ``str`` or a tuple of one of those (a list in
the spec); its
:class:`Range` bounds a number (each item of a list), lists the allowed strings, or bounds the length of a
string or a list.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

from workbench.errors import shown

SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SLUG_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64 characters"


class ParamError(ValueError):
    """A value outside its parameter's type or range; the message names the key and the problem."""


@dataclass(frozen=True)
class Range:
    """What values a field allows beyond its type (None: no bound)."""

    low: float | None = None
    high: float | None = None
    above: bool = False  # low is exclusive
    below: bool = False  # high is exclusive
    choices: tuple[str, ...] | None = None
    min_len: int = 0  # a string's characters or a list's items

    def describe(self) -> str:
        """The allowed values in words (``> 0 and <= 1``)."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.above else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.below else '<='} {self.high:g}")
        return " and ".join(parts)

    def admits(self, value: float) -> bool:
        """Whether a number lies within the bounds."""
        low_ok = self.low is None or (value > self.low if self.above else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.below else value <= self.high)
        return low_ok and high_ok


def param(default: Any, **bounds: Any) -> Any:
    """A dataclass field with its default and :class:`Range` (keyword arguments of ``Range``)."""
    return field(default=default, metadata={"range": Range(**bounds)})


def _scalar(value: Any, kind: type, rule: Range, at: str) -> Any:
    numeric = (int, float) if kind is float else (kind,)
    if not isinstance(value, numeric) or (isinstance(value, bool) and kind is not bool):
        names = "int or float" if kind is float else kind.__name__
        raise ParamError(f"{at}: expected {names}, got {type(value).__name__} {shown(value)}")
    if kind is str:
        if rule.choices is not None and value not in rule.choices:
            raise ParamError(f"{at}: expected one of {', '.join(rule.choices)}, got {shown(value)}")
        if len(value) < rule.min_len:
            raise ParamError(f"{at}: expected at least {rule.min_len} character(s), got {shown(value)}")
    elif kind in (int, float) and not rule.admits(value):
        what = "an int" if kind is int else "a number"
        raise ParamError(f"{at}: expected {what} {rule.describe()}, got {shown(value)}")
    return value


def check(value: Any, hint: Any, rule: Range, at: str) -> Any:
    """``value`` if it has the type ``hint`` (``int``, ``float``, ``str``, ``bool``, or ``tuple[T, ...]``,
    given as a list) and lies in ``rule``; otherwise :class:`ParamError` naming ``at``."""
    if get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise ParamError(f"{at}: expected a list, got {type(value).__name__} {shown(value)}")
        if len(value) < rule.min_len:
            raise ParamError(f"{at}: expected at least {rule.min_len} item(s), got {shown(value)}")
        item = get_args(hint)[0]
        return tuple(_scalar(v, item, rule, f"{at}[{i}]") for i, v in enumerate(value))
    return _scalar(value, hint, rule, at)


def parse(cls: type, table: dict[str, Any], at: str) -> Any:
    """An instance of the parameter dataclass ``cls`` from a spec table (missing keys take defaults).

    Raises:
        ParamError: An unknown key, or a value of the wrong type or out of range (one line naming it).
    """
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ParamError(f"{at}.{key}: unknown key (known: {', '.join(sorted(known)) or 'none'})")
    hints = get_type_hints(cls)
    values = {}
    for name, spec_field in known.items():
        if name in table:
            rule = spec_field.metadata.get("range", Range())
            values[name] = check(table[name], hints[name], rule, f"{at}.{name}")
    return cls(**values)


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (runs of other characters become ``-``; "" when none is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).lstrip("-._")[:64].rstrip("-")


def is_slug(text: str) -> bool:
    """Whether ``text`` may be used as a file name in a run directory as it is."""
    return SLUG.fullmatch(text) is not None


# -- run and prompt-set settings ------------------------------------------------------------------------


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


# -- probes ---------------------------------------------------------------------------------------------

SHARE = {"low": 0, "high": 1, "above": True}  # a budget: a share of the prompt, > 0 and <= 1


@dataclass(frozen=True)
class NoParams:
    """A probe without parameters."""


@dataclass(frozen=True)
class SinksParams:
    """``eps``: the alpha above which a head counts as a sink on a prompt."""

    eps: float = param(0.3, low=0, high=1, below=True)


@dataclass(frozen=True)
class RetentionParams:
    """``budgets``: cache budgets as shares of each prompt's length."""

    budgets: tuple[float, ...] = param((0.1, 0.25, 0.5, 1.0), min_len=1, **SHARE)


@dataclass(frozen=True)
class EvictionParams:
    """Prompt tokens (pruned), continuation tokens (scored) and cache budgets (shares of the prompt)."""

    prompt_len: int = param(64, low=1)
    continuation: int = param(16, low=1)
    budgets: tuple[float, ...] = param((0.25, 0.5, 1.0), min_len=1, **SHARE)


@dataclass(frozen=True)
class CompressionParams:
    """How each prompt's positions are pooled."""

    pooling: str = param("all", choices=("all", "last", "mean"))


@dataclass(frozen=True)
class WindowParams:
    """Token windows per group and their length."""

    seq_len: int = param(64, low=2)
    windows: int = param(4, low=1)


@dataclass(frozen=True)
class LensParams(WindowParams):
    """Windows, and tuned-lens training steps (0: logit lens only)."""

    tuned_steps: int = param(0, low=0)


@dataclass(frozen=True)
class TokenizerParams:
    """The group the premium is measured against."""

    reference: str = param("en", min_len=1)


@dataclass(frozen=True)
class LossParams:
    """Tokens per scored window."""

    window: int = param(128, low=2)


@dataclass(frozen=True)
class DecodingParams:
    """The swept settings (one at a time; an empty list sweeps nothing), tokens, samples, prompt cut."""

    temperature: tuple[float, ...] = param((0.2, 0.7, 1.0, 1.5), low=0, above=True)
    top_p: tuple[float, ...] = param((0.9,), **SHARE)
    top_k: tuple[int, ...] = param((50,), low=1)
    repetition_penalty: tuple[float, ...] = param((1.3,), low=0, above=True)
    max_new_tokens: int = param(16, low=1)
    samples: int = param(2, low=1)
    prompt_chars: int = param(80, low=1)


@dataclass(frozen=True)
class BatchInvarianceParams:
    """The prompt compared alone and batched, and the batch sizes."""

    prompt: str = param("The cat sat on the mat.", min_len=1)
    batch_sizes: tuple[int, ...] = param((2, 4), low=1, min_len=1)
