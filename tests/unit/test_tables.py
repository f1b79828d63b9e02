"""Markdown tables of token text: every row stays one line of the table."""

from __future__ import annotations

import math

from workbench.tables import markdown_table


def test_token_text_stays_in_its_cell() -> None:
    rows = [{"token": "\n    ", "other": "a|b\tc\r"}, {"token": " love", "other": math.nan}]
    lines = markdown_table(rows).splitlines()
    assert lines == [
        "| token | other |",
        "|---|---|",
        "| \\n     | a\\|b\\tc\\r |",
        "|  love | - |",
    ]
