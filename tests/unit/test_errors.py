"""One-line error texts: lines joined, unexpected errors as type and first sentence, server paths hidden
from the app except those its user typed."""

from __future__ import annotations

import pytest

from workbench.errors import describe_unexpected, hide_paths, one_line


def test_one_line_joins_the_lines() -> None:
    assert one_line("  first\n\n  second  \n") == "first second"


def test_unexpected_errors_keep_type_and_first_sentence() -> None:
    assert describe_unexpected(KeyError("sink_rate")) == "KeyError: 'sink_rate'"
    assert describe_unexpected(ValueError("bad shape. Try again.\nmore")) == "ValueError: bad shape"
    assert describe_unexpected(RuntimeError()) == "RuntimeError: no message"


@pytest.mark.parametrize(
    ("text", "keep", "shown"),
    [
        ("No such file: '/srv/app/runs/x/t.parquet'", (), "No such file: '.../t.parquet'"),
        (r"at C:\Users\me\a.txt; ratio 1/2, a/b", (), "at .../a.txt; ratio 1/2, a/b"),
        ("/home/me/model/config.json: bad", ("/home/me/model",), "/home/me/model/config.json: bad"),
        (
            "/home/me/model is broken (/opt/py/site-packages/x.py)",
            ("/home/me/model",),
            "/home/me/model is broken (.../x.py)",
        ),
        ("relative/path and ./here stay", (), "relative/path and ./here stay"),
    ],
)
def test_hide_paths(text: str, keep: tuple[str, ...], shown: str) -> None:
    assert hide_paths(text, keep) == shown
