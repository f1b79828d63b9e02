"""The app in a real browser: Playwright drives Debian's chromium against ``workbench app`` on localhost,
opens every view, changes the prompt, clicks a cell for its details, selects a head and an expert, compares
two checkpoints, and saves screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import workbench
from apps.data import DEFAULT_MODEL, MODEL_LABEL
from apps.driver import choose, click, open_view, runs, served, set_prompt, set_text, wait_run
from apps.views import VIEWS
from workbench.zoo import heldout


def _one_error(page: Any, words: list[str]) -> str:
    """The one error the page shows, holding ``words``; no exception element, no server path."""
    shown = page.locator('[data-testid="stAlertContentError"]')
    assert shown.count() == 1 and page.locator('[data-testid="stException"]').count() == 0
    line = shown.inner_text().strip()
    assert all(w in line for w in words) and "\n" not in line, line
    assert str(Path(__file__).resolve().parents[2]) not in line and "site-packages" not in line, line
    return line


@pytest.mark.slow
def test_every_view_in_chromium(
    tmp_path: Path, chromium: str, broken_models: dict[str, tuple[Path, list[str]]]
) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    dialogs: list[str] = []
    with served() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url)
        wait_run(page, 0)
        for title in VIEWS:
            open_view(page, title)
            assert page.get_by_role("heading", name=title).is_visible()
            page.screenshot(path=tmp_path / f"{title.replace(' ', '_')}.png", full_page=True)
        prompt = "A short prompt about the river and the old mill."
        set_prompt(page, prompt)
        open_view(page, "Layer activity")
        before = runs(page)
        page.locator(".js-plotly-plot .scatterlayer .point").nth(5).click(force=True)  # layer 0, token 5
        wait_run(page, before)
        model = workbench.load(DEFAULT_MODEL)
        resid = model.read(prompt, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"][0, 5]
        shown = page.locator('[data-testid="stMetricValue"]').first.inner_text()
        assert float(shown) == pytest.approx(float(resid.norm()), rel=1e-3)  # details of the clicked cell
        open_view(page, "Attention heads")
        choose(page, "Head", "2")
        assert page.get_by_text("Pattern, layer 0 head 2").count() == 1
        open_view(page, "MoE routing")
        choose(page, "Expert", "3")
        assert page.get_by_text("Tokens routed to expert 3").count() == 1
        page.screenshot(path=tmp_path / "expert.png", full_page=True)
        markup = '<script>alert("x")</script> <img src=x onerror=alert(1)> hello'
        set_prompt(page, markup)
        open_view(page, "Layer activity")
        open_view(page, "Live generation")
        click(page, "Generate")
        assert page.get_by_text(markup, exact=False).count() >= 1
        assert page.locator("script:has-text('alert(\"x\")')").count() == 0
        page.screenshot(path=tmp_path / "markup.png", full_page=True)
        set_text(page, MODEL_LABEL, "tiny-llama-dpo")
        open_view(page, "Checkpoint diff")  # the card's base_model, tiny-llama, is the default base
        base, tuned = workbench.load("tiny-llama"), workbench.load("tiny-llama-dpo")
        kl = workbench.probe("diff_outputs")(tuned, heldout(2, 300), base=base).kl.mean()
        shown = page.locator('[data-testid="stMetricValue"]').first.inner_text()
        assert float(shown) == pytest.approx(float(kl), rel=1e-3)
        assert page.get_by_text("KL left after swapping in base blocks", exact=False).count() >= 1
        page.screenshot(path=tmp_path / "diff.png", full_page=True)
        for path, words in broken_models.values():  # one line each, no traceback, no server path
            set_text(page, MODEL_LABEL, str(path))
            _one_error(page, words)
        set_text(page, MODEL_LABEL, "tiny-llama")
        open_view(page, "Model card")
        set_text(page, "Hook point pattern (regular expression)", "(")
        _one_error(page, ["invalid hook point pattern '('"])
        browser.close()
    assert errors == [] and dialogs == []
    assert len(list(tmp_path.glob("*.png"))) == len(VIEWS) + 3
