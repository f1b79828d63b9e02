"""Intrinsic-dimension benchmark: the workbench's TwoNN and GRIDE against scikit-dimension (and DADApy when
installed) on the same points: time ratio (medians in one run) and agreement.

Run: ``.venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/compression.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from probes.compression import gride, twonn


def manifold(dim: int, n: int, ambient: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(ambient, ambient, generator=generator)).Q[:dim]
    return torch.randn(n, dim, generator=generator) @ basis


def median_time(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    value = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    import skdim

    torch.set_num_threads(2)
    try:
        from dadapy import Data
    except ImportError:
        Data = None
    print("| data | method | median s | estimate | ratio to workbench time | agreement |")
    print("|---|---|---|---|---|---|")
    for dim in (5, 10):
        points = manifold(dim, 5000, 256)
        array = points.numpy().astype(np.float64)
        label = f"{dim}-d Gaussian in R^256, N=5000"
        ours_t, ours = median_time(lambda x=points: twonn(x, 0.9), 3)
        sk_t, sk = median_time(
            lambda a=array: float(skdim.id.TwoNN(discard_fraction=0.1).fit(a).dimension_), 1
        )
        g_t, g = median_time(lambda x=points: gride(x, 2), 3)
        rows = [
            ("workbench TwoNN (90%)", ours_t, ours, "1.0", ""),
            ("scikit-dimension TwoNN", sk_t, sk, f"{sk_t / ours_t:.1f}", f"{abs(ours - sk) / sk:.2%}"),
            ("workbench GRIDE(2,4)", g_t, g, "", ""),
        ]
        if Data is not None:
            d_t, d = median_time(lambda a=array: float(Data(a).compute_id_2NN()[0]), 1)
            rows.append(("DADApy TwoNN", d_t, d, f"{d_t / ours_t:.1f}", f"{abs(ours - d) / d:.2%}"))
        for method, seconds, estimate, ratio, agreement in rows:
            print(f"| {label} | {method} | {seconds:.3f} | {estimate:.3f} | {ratio} | {agreement} |")


if __name__ == "__main__":
    main()
