"""Markdown rendering of tidy tables (lists of row dicts or DataFrames) for model cards and docs."""

from __future__ import annotations

import math
from typing import Any


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        small = value != 0 and abs(value) < 10**-digits  # would print as 0.0000
        return f"{value:.2e}" if small else f"{value:.{digits}f}"
    text = str(value)  # a cell stays on its row: pipes escaped, line breaks written out
    return text.replace("|", "\\|").replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def markdown_table(rows: Any, index: bool = False, digits: int = 4) -> str:
    """A GitHub markdown table from a list of dicts or a ``pandas.DataFrame`` (``index`` keeps its index);
    missing values (NaN) show as ``-``, nonzero values too small for ``digits`` in scientific form, and
    text with pipes or line breaks (token strings) escaped so that every row stays one line."""
    if hasattr(rows, "to_dict"):
        frame = rows.reset_index() if index else rows
        rows = frame.to_dict("records")
    head = list(rows[0])
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = (_cell(v, digits) for v in row.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
