"""Long context: sink mass, key mass and entropy of every head and query of one long prompt, by route,
beside the plain sdpa forward that computes none of them.

Methods, on the Llama-shaped random-init model of ``bench/capture.py`` (d_model 256, 4 layers, 8 heads,
GQA 8/2), one prompt of T tokens: ``sdpa_forward`` (the model's forward, nothing captured),
``eager_patterns`` (every attention pattern materialised; skipped where the patterns alone would not fit
in memory), ``chunked`` (the streamed statistics' chunked path, 256 queries a chunk) and ``fused`` (the
fused kernel's log-sum-exp route). ``--probes`` runs the probes built on those statistics instead: the
sink table (Gu et al. alpha per head, from the streamed key mass) and the eviction simulation with H2O and
SnapKV at a budget of T / 4 (prefill streaming key mass and the last 32 rows twice, 16 continuation
tokens decoded over the pruned and the full cache). Each run is its own subprocess, so its peak RSS (above
the loaded model) is its own; the methods alternate within each round and the ratio to the sdpa forward is
taken per round.

Run: ``.venv/bin/python bench/long_context.py`` (``--lengths 1024 4096`` for fewer; about 15 minutes with
16k on 2 cores; ``--probes``: about 10); it prints the markdown table recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil
import torch
from capture import _ids, _model  # bench/capture.py, beside this script

METHODS = ("sdpa_forward", "eager_patterns", "chunked", "fused")
PROBES = ("sdpa_forward", "sink_table", "eviction_h2o", "eviction_snapkv")
STATS = ["sink_mass", "key_mass", "entropy"]
CONTINUATION = 16  # tokens the eviction simulation decodes after the pruned prompt


def _runner(method: str, hf: Any, ids: torch.Tensor) -> Any:
    import workbench
    from workbench.capture import CaptureSpec, capture

    model = workbench.load(hf)
    if method == "sdpa_forward":

        def forward() -> Any:
            with torch.no_grad():
                return model.base(input_ids=ids)

        return forward
    if method == "sink_table":
        from probes.sinks import sink_table

        spec = CaptureSpec(stats=["key_mass"], batch_size=1)
        return lambda: sink_table(capture(model, ids, spec, progress=False), model.cfg.n_layers)
    if method.startswith("eviction_"):
        from probes.eviction import simulate_eviction

        length = ids.shape[1]
        tokens = torch.cat([ids, ids[:, :CONTINUATION]], dim=1)  # the continuation: the prompt's start again
        return lambda: simulate_eviction(model, tokens, length, method.split("_")[1], length // 4)
    if method == "eager_patterns":
        spec = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"], batch_size=1, memory_budget_gb=1e3)
    else:
        spec = CaptureSpec(stats=STATS, batch_size=1, stat_route=method)
    return lambda: capture(model, ids, spec, progress=False)


def worker(method: str, length: int) -> dict[str, float]:
    """One timed run of one method: seconds and peak RSS above the loaded model (and, below 16k tokens,
    a warm-up run), in MiB."""
    torch.set_num_threads(2)
    hf = _model("llama-long")
    ids = _ids(hf, 1, length)
    run = _runner(method, hf, ids)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if length < 16384:
        run()  # warm-up (kernel and allocator set-up); at 16k one run is all the budget allows
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": (peak - base) / 1024}


def _fits(method: str, length: int) -> bool:
    """Eager patterns need 4 layers x 8 heads x T^2 float32 values held at once (plus the scores)."""
    if method != "eager_patterns":
        return True
    return 2 * 4 * 8 * length**2 * 4 < 0.8 * psutil.virtual_memory().available


def _subprocess(method: str, length: int) -> dict[str, float]:
    args = [sys.executable, __file__, "--worker", method, str(length)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--rounds", type=int, default=3, help="rounds below 16k tokens (16k: one)")
    parser.add_argument("--probes", action="store_true", help="the sink and eviction probes instead")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    print("| tokens | method | seconds (median) | x sdpa forward | peak MiB above load |")
    print("|---|---|---|---|---|")
    chosen = PROBES if args.probes else METHODS
    for length in args.lengths:
        methods = [m for m in chosen if _fits(m, length)]
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
        for _ in range(args.rounds if length < 16384 else 1):
            for method in methods:
                runs[method].append(_subprocess(method, length))
        base = runs["sdpa_forward"]
        for method in chosen:
            if method not in runs:
                need = 2 * 4 * 8 * length**2 * 4 / 2**30
                print(f"| {length} | {method} | does not fit (about {need:.0f} GiB) | | |")
                continue
            seconds = statistics.median(r["seconds"] for r in runs[method])
            ratio = statistics.median(
                r["seconds"] / b["seconds"] for r, b in zip(runs[method], base, strict=True)
            )
            peak = max(r["peak_mib"] for r in runs[method])
            print(f"| {length} | {method} | {seconds:.2f} | {ratio:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
