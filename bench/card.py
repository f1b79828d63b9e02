"""The card of a model that does not fit: ``workbench card DIR`` on a directory holding only a
Llama-3-70B-sized ``config.json`` (built on the meta device), as whole processes, beside the floor any such
command pays: a Python that only imports transformers' Llama modeling code. Runs alternate (A B A B ...);
peak memory is each process's own high-water mark.

Run: ``.venv/bin/python bench/card.py``; it prints the markdown table recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import transformers as tf

from workbench.models.shapes import LLAMA_3_70B

ROUNDS = 5
PEAK = "import re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def llama_70b(root: Path) -> Path:
    """A directory with only the config of Llama-3-70B's published shape."""
    tf.LlamaConfig(**LLAMA_3_70B).save_pretrained(root / "llama-3-70b")
    return root / "llama-3-70b"


def timed(code: str) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of ``python -c code``."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, int(out.split()[-1]) / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = llama_70b(Path(tmp))
        commands = {
            "import transformers' Llama modeling code (the floor)": (
                f"from transformers.models.llama import modeling_llama\n{PEAK}"
            ),
            "`workbench card DIR --format json`": (
                "import contextlib, io\nfrom workbench.cli import run\n"
                "with contextlib.redirect_stdout(io.StringIO()):\n"
                f"    assert run(['card', {str(directory)!r}, '--format', 'json']) == 0\n{PEAK}"
            ),
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for code in commands.values():  # warm-up: the page cache holds the libraries after it
            timed(code)
        for _ in range(ROUNDS):
            for name, code in commands.items():
                runs[name].append(timed(code))
    floor = [t for t, _ in runs[next(iter(commands))]]
    print("| command | wall s (median, min-max) | x the floor | peak MiB |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        seconds = [t for t, _ in values]
        ratio = statistics.median(t / f for t, f in zip(seconds, floor, strict=True))
        print(
            f"| {name} | {statistics.median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
            f"{ratio:.2f} | {max(m for _, m in values):.0f} |"
        )


if __name__ == "__main__":
    main()
