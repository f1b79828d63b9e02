"""Typed probe parameters: each probe's frozen dataclass states every field's type, default and range
once; the battery spec's table, the CLI's ``--set key=value`` options and the app's form are all read and
checked through :func:`parse`.

A field's type is ``int``, ``float`` (an int is accepted), ``str`` or a tuple of one of those (a list in
the spec); its
:class:`Range` bounds a number (each item of a list), lists the allowed strings, or bounds the length of a
string or a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

from workbench.errors import shown


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


SHARE = {"low": 0, "high": 1, "above": True}  # a budget: a share of the prompt, > 0 and <= 1


@dataclass(frozen=True)
class NoParams:
    """A probe without parameters."""
