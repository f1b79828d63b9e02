"""Markdown rendering of tidy tables (lists of row dicts or DataFrames) for model cards and docs."""

from __future__ import annotations

from typing import Any


def markdown_table(rows: Any, index: bool = False, digits: int = 4) -> str:
    """A GitHub markdown table from a list of dicts or a ``pandas.DataFrame`` (``index`` keeps its index)."""
    if hasattr(rows, "to_dict"):
        frame = rows.reset_index() if index else rows
        rows = frame.to_dict("records")
    head = list(rows[0])
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = (f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
