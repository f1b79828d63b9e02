"""Intrinsic-dimension benchmark: the workbench's TwoNN and GRIDE against scikit-dimension (and DADApy when
installed) on the same points: time ratio (medians of round-robin rounds in one run, each method warmed up
first) and agreement, plus the parts of the workbench's exact k-NN: the fp32 candidate search on each path
(CPU tiles; the chunked top-k path that GPUs take) and the float64 refinement of the candidates.

Run: ``.venv/bin/pip install -e ".[bench]" && .venv/bin/python bench/compression.py``. DADApy pins
numpy < 2 and jax 0.4.30, so it is not in the bench extra; install it in a separate environment to add its
rows.
"""

from __future__ import annotations

import numpy as np
import torch
from timing import round_robin  # bench/timing.py, beside this script

from probes.compression import gride, twonn
from probes.neighbour_kernels import TileFolder
from probes.neighbours import _chunk_candidates, _refine, knn


def manifold(dim: int, n: int, ambient: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(ambient, ambient, generator=generator)).Q[:dim]
    return torch.randn(n, dim, generator=generator) @ basis


def rows_for(label: str, points: torch.Tensor) -> list[tuple[str, float | None, float | None, str, str]]:
    """Timed rows (method, median s, estimate, ratio, agreement) for one data set."""
    import skdim

    array = points.numpy().astype(np.float64)
    centred = points - points.mean(0)
    norms = centred.square().sum(1)
    every = torch.arange(points.shape[0])
    _, candidates = TileFolder(centred, norms, 4, 1024).run()
    methods = {
        "workbench TwoNN (90%), exact k-NN": lambda: twonn(points, 0.9),
        "scikit-dimension TwoNN": lambda: skdim.id.TwoNN(discard_fraction=0.1).fit(array).dimension_,
        "workbench k-NN: fp32 candidates (m = 4), CPU tiles": lambda: TileFolder(
            centred, norms, 4, 1024
        ).run(),
        "workbench k-NN: fp32 candidates (m = 4), chunked top-k (GPU path)": lambda: _chunk_candidates(
            centred, norms, every, 4, 1024
        ),
        "workbench k-NN: float64 refinement of the candidates": lambda: _refine(points, every, candidates, 2),
        "workbench GRIDE(2,4)": lambda: gride(points, 2),
    }
    estimates = {
        "workbench TwoNN (90%), exact k-NN": twonn(points, 0.9),
        "scikit-dimension TwoNN": float(skdim.id.TwoNN(discard_fraction=0.1).fit(array).dimension_),
        "workbench GRIDE(2,4)": gride(points, 2),
    }
    try:
        from dadapy import Data

        methods["DADApy TwoNN"] = lambda: Data(array, verbose=False).compute_id_2NN()
        estimates["DADApy TwoNN"] = float(Data(array, verbose=False).compute_id_2NN()[0])
        estimates["DADApy GRIDE(2,4)"] = float(Data(array, verbose=False).return_id_scaling_gride(4)[0][1])
    except ImportError:
        pass
    times = round_robin(methods, rounds=9)
    ours, ours_t = estimates["workbench TwoNN (90%), exact k-NN"], times["workbench TwoNN (90%), exact k-NN"]
    rows = []
    for method in [*methods, *(m for m in estimates if m not in methods)]:
        estimate, seconds = estimates.get(method), times.get(method)
        reference = estimates["workbench GRIDE(2,4)"] if "GRIDE" in method else ours
        compared = method.startswith(("scikit", "DADApy"))
        ratio = f"{seconds / ours_t:.1f}" if compared and seconds is not None else ""
        agreement = f"{abs(reference - estimate) / estimate:.2%}" if compared else ""
        rows.append((method, seconds, estimate, ratio, agreement))
    again = knn(points, 2).searched_again
    rows.append(
        (f"rows searched again (float64 expansion, direct): {again[0]}, {again[1]}", None, None, "", "")
    )
    return rows


def main() -> None:
    torch.set_num_threads(2)
    print("| data | method | median s | estimate | time ratio to workbench TwoNN | agreement |")
    print("|---|---|---|---|---|---|")
    datasets = {
        "5-d Gaussian in R^256": manifold(5, 5000, 256),
        "10-d Gaussian in R^256": manifold(10, 5000, 256),
        "full-rank Gaussian in R^256": torch.randn(5000, 256, generator=torch.Generator().manual_seed(0)),
    }
    for name, points in datasets.items():
        label = f"{name}, N=5000"
        for method, seconds, estimate, ratio, agreement in rows_for(label, points):
            timed = "" if seconds is None else f"{seconds:.4f}"
            shown = "" if estimate is None else f"{estimate:.3f}"
            print(f"| {label} | {method} | {timed} | {shown} | {ratio} | {agreement} |")


if __name__ == "__main__":
    main()
