"""Battery benchmark: the default battery (every probe on the bundled zoo) run serially in one process
(2 torch threads) and as Ray tasks on a local 2-CPU cluster (1 thread per task, two at a time), from
scratch each time, in one run; wall time, units per second and the ratio.

Run: ``.venv/bin/python bench/battery.py``; it prints the markdown table recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from workbench.battery import load_spec, run_battery
from workbench.battery.runner import plan
from workbench.battery.spec import DEFAULT_SPEC


def timed(**options: object) -> float:
    with tempfile.TemporaryDirectory() as out:
        spec = load_spec(DEFAULT_SPEC, Path(out) / "run")
        threads = options.pop("threads", spec.threads)
        spec = dataclasses.replace(spec, threads=threads)
        start = time.perf_counter()
        run_battery(spec, progress=False, **options)
        return time.perf_counter() - start


def main() -> None:
    units = len(plan(load_spec(DEFAULT_SPEC)))
    serial = timed()
    distributed = timed(ray="local", threads=1)
    print("| run | wall s | units / s | ratio to serial |")
    print("|---|---|---|---|")
    print(f"| serial, 2 threads | {serial:.1f} | {units / serial:.2f} | 1.00 |")
    ratio = serial / distributed
    print(f"| Ray local, 2 tasks x 1 thread | {distributed:.1f} | {units / distributed:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
