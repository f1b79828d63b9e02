"""Drive the app in a real browser (Playwright with Debian's chromium, no browser download): start the
server on a free local port, wait for it, and wait for each rerun to finish. Used by the browser test and
``bench/app.py``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(timeout: float = 120.0) -> Iterator[str]:
    """``workbench app`` on 127.0.0.1 and a free port; yields its URL once healthy, stops it on exit."""
    port = free_port()
    command = [sys.executable, "-m", "workbench", "app", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start: {process.stderr.read()[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def runs(page: Any) -> int:
    """How many script runs the page has finished (the app's run counter; 0 before the first)."""
    marker = page.locator("span.wb-run")
    return int(marker.get_attribute("data-run")) if marker.count() else 0


def wait_run(page: Any, after: int, timeout_ms: int = 120_000) -> None:
    """Wait until a run later than ``after`` has finished and no element is stale."""
    page.wait_for_function(
        """n => { const m = document.querySelector('span.wb-run');
                  return m && +m.dataset.run > n && !document.querySelector('[data-stale="true"]'); }""",
        arg=after,
        timeout=timeout_ms,
    )


def open_view(page: Any, title: str) -> None:
    """Choose a view in the sidebar and wait for it (nothing to do when it is the current view)."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    if sidebar.get_by_role("radio", name=title, exact=True).is_checked():
        return
    before = runs(page)
    sidebar.get_by_text(title, exact=True).click()
    wait_run(page, before)


def choose(page: Any, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    before = runs(page)
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_run(page, before)


def set_text(page: Any, label: str, text: str, submit: str = "Enter") -> None:
    """Replace the text of the field labelled ``label`` and apply it (text areas apply with Ctrl+Enter)."""
    before = runs(page)
    field = page.get_by_label(label, exact=True)
    field.fill(text)
    field.press(submit)
    wait_run(page, before)


def set_prompt(page: Any, text: str) -> None:
    """Replace the sidebar prompt."""
    set_text(page, "Prompt", text, submit="Control+Enter")


def click(page: Any, name: str) -> None:
    """Press the button called ``name`` and wait for the run it starts."""
    before = runs(page)
    page.get_by_role("button", name=name).click()
    wait_run(page, before)
