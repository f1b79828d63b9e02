"""Intrinsic-dimension benchmark: the workbench's TwoNN and GRIDE against scikit-dimension (and DADApy when
installed) on the same points: time ratio (medians in one run, each method warmed up first) and agreement,
plus the workbench's two k-NN paths on their own (CPU tiles; the chunked top-k path that GPUs take).

Run: ``.venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/compression.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from probes.compression import gride, twonn
from probes.neighbours import knn_distances


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
    print("| data | method | median s | estimate | time ratio to workbench TwoNN | agreement |")
    print("|---|---|---|---|---|---|")
    datasets = {
        "5-d Gaussian in R^256": manifold(5, 5000, 256),
        "10-d Gaussian in R^256": manifold(10, 5000, 256),
        "full-rank Gaussian in R^256": torch.randn(5000, 256, generator=torch.Generator().manual_seed(0)),
    }
    for name, points in datasets.items():
        array = points.numpy().astype(np.float64)
        label = f"{name}, N=5000"
        ours_t, ours = median_time(lambda x=points: twonn(x, 0.9), 9)
        sk_t, sk = median_time(
            lambda a=array: float(skdim.id.TwoNN(discard_fraction=0.1).fit(a).dimension_), 5
        )
        tiles_t, _ = median_time(lambda x=points: knn_distances(x, 2, method="tiles"), 5)
        chunks_t, _ = median_time(lambda x=points: knn_distances(x, 2, method="chunks"), 5)
        g_t, g = median_time(lambda x=points: gride(x, 2), 5)
        rows = [
            ("workbench TwoNN (90%)", ours_t, ours, "1.0", ""),
            ("scikit-dimension TwoNN", sk_t, sk, f"{sk_t / ours_t:.1f}", f"{abs(ours - sk) / sk:.2%}"),
            ("workbench 2-NN distances, CPU tiles", tiles_t, None, "", ""),
            ("workbench 2-NN distances, chunked top-k (GPU path)", chunks_t, None, "", ""),
            ("workbench GRIDE(2,4)", g_t, g, "", ""),
        ]
        if Data is not None:
            d_t, d = median_time(lambda a=array: float(Data(a).compute_id_2NN()[0]), 3)
            rows.append(("DADApy TwoNN", d_t, d, f"{d_t / ours_t:.1f}", f"{abs(ours - d) / d:.2%}"))
        for method, seconds, estimate, ratio, agree in rows:
            shown = "" if estimate is None else f"{estimate:.3f}"
            print(f"| {label} | {method} | {seconds:.3f} | {shown} | {ratio} | {agree} |")


if __name__ == "__main__":
    main()
