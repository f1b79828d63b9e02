"""The Streamlit app renders the card of the real MiniLM, and one error line for a bad model."""

from __future__ import annotations

from pathlib import Path

import pytest

import workbench

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
APP = str(Path(__file__).resolve().parents[2] / "apps/workbench_app.py")


def test_card_view_shows_the_card_numbers() -> None:
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    card = app.dataframe[0].value
    expected = workbench.card(workbench.load("minilm"))
    assert card.set_index("field").loc["layers", "value"] == str(expected.get("layers"))
    assert len(app.dataframe) == 2 and len(app.dataframe[1].value) == 6


def test_bad_model_shows_one_error() -> None:
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.text_input[0].set_value("/no/such/dir").run()
    assert not app.exception and len(app.error) == 1
