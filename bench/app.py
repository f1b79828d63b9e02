"""App latency in a real browser (Playwright + Debian's chromium) on the default zoo model (tiny-moe):
the first view of a fresh server and of a new session on a warm one, and interactions (choosing a head,
an expert, a view), each beside the uncached library computation it would need without the app's caches.

Run: ``.venv/bin/python bench/app.py``; it prints the markdown table recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time

from playwright.sync_api import sync_playwright

import workbench
from apps import data
from apps.data import DEFAULT_MODEL, DEFAULT_PROMPT
from apps.driver import CHROMIUM, choose, open_view, served, wait_run

REPEATS = 5


def first_view(browser: object, url: str) -> float:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.perf_counter()
    page.goto(url)
    wait_run(page, 0)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def timed(action: object) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        with served() as url:
            rows.append(("first view, fresh server (model load included)", first_view(browser, url), None))
            warm = statistics.median(first_view(browser, url) for _ in range(REPEATS))
            rows.append(("first view, new session on a warm server", warm, None))
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            wait_run(page, 0)
            open_view(page, "Attention heads")
            heads = [timed(lambda h=h: choose(page, "Head", str(h % 4))) for h in range(1, REPEATS + 1)]
            open_view(page, "MoE routing")
            experts = [timed(lambda e=e: choose(page, "Expert", str(e))) for e in range(1, REPEATS + 1)]
            views = [timed(lambda v=v: open_view(page, v)) for v in ("Layer activity", "MoE routing") * 3]
        browser.close()
    model = workbench.load(DEFAULT_MODEL)
    patterns = statistics.median(
        timed(lambda: data.attention_patterns(model, DEFAULT_PROMPT)) for _ in range(REPEATS)
    )
    activity = statistics.median(
        timed(lambda: data.layer_activity(model, DEFAULT_PROMPT)) for _ in range(REPEATS)
    )
    rows += [
        ("choose a head (Attention heads)", statistics.median(heads), patterns),
        ("choose an expert (MoE routing)", statistics.median(experts), activity),
        ("switch view (Layer activity <-> MoE routing)", statistics.median(views), activity),
    ]
    print("| step | app s (median) | uncached library computation s | ratio |")
    print("|---|---|---|---|")
    for step, seconds, baseline in rows:
        extra = f"{baseline:.3f} | {seconds / baseline:.1f}" if baseline else "- | -"
        print(f"| {step} | {seconds:.2f} | {extra} |")


if __name__ == "__main__":
    main()
