"""Timing helper shared by the benchmarks: methods run round-robin in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def round_robin(methods: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall seconds per method. Each method runs once as a warm-up, then ``rounds`` rounds run every
    method once, in an order rotated each round, so that drift and cache effects hit all of them alike."""
    for run in methods.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for index in range(rounds):
        shift = index % len(order)
        for name in order[shift:] + order[:shift]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
