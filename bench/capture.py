"""Capture benchmark: the same spec through HF eager + output flags, the workbench, TransformerBridge
(run_with_cache with names_filter) and nnsight; and streamed statistics vs full patterns at long context.

Time is the median over rounds in which the four methods run round-robin (rotating order, after a warm-up
of each) in one process (:func:`timing.round_robin`), so that machine drift hits every method alike; peak
RSS (``ru_maxrss`` above the loaded model) is measured for each method in a subprocess of its own, so it
belongs to that method alone. The long-context rows (full patterns vs streamed statistics) run each
method in its own subprocess, which gives both its time and its peak. The timing process is a subprocess
too: Linux carries a process's RSS high-water mark over fork and exec, so a parent that had held the
models would raise every later memory subprocess's baseline above its peak.
Run: ``.venv/bin/python bench/capture.py`` (``--quick`` for a smoke run); it prints the markdown tables
recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from timing import round_robin  # bench/timing.py, beside this script

METHODS = ("hf_eager_flags", "workbench", "transformer_bridge", "nnsight")
MEMORY_REPEATS = 3  # runs after the warm-up in each memory subprocess (only its peak RSS is reported)
SPEC_POINTS = [
    r"blocks\.\d+\.hook_resid_post",
    r"blocks\.\d+\.attn\.hook_pattern",
    r"blocks\.\d+\.moe\.hook_(router_logits|expert_indices|expert_weights)",
]


def _model(name: str) -> Any:
    import transformers as tf

    import workbench

    if name == "tiny-moe":
        return workbench.load("tiny-moe").hf
    if name == "gpt2-small-shape":
        torch.manual_seed(0)
        return tf.GPT2LMHeadModel(tf.GPT2Config()).eval()
    if name == "llama-long":
        torch.manual_seed(0)
        config = tf.LlamaConfig(
            vocab_size=4096,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            max_position_embeddings=32768,
        )
        return tf.LlamaForCausalLM(config).eval()
    raise KeyError(name)


def _runner(method: str, hf: Any, ids: torch.Tensor) -> Any:
    import workbench
    from workbench.capture import CaptureSpec, capture
    from workbench.hooks.implementation import attention_implementation

    model = workbench.load(hf)
    points = model.hook_points(SPEC_POINTS, missing_ok=True)
    if method == "hf_eager_flags":
        flags = {"output_router_logits": True} if model.adapter.router_convention else {}

        def run() -> Any:
            with torch.no_grad(), attention_implementation(hf, "eager"):
                return hf(input_ids=ids, output_attentions=True, output_hidden_states=True, **flags)

        return run
    if method == "workbench":
        spec = CaptureSpec(points=points, batch_size=ids.shape[0])
        return lambda: capture(model, ids, spec, progress=False)
    if method == "transformer_bridge":
        bridge_model = workbench.load(copy.deepcopy(hf), backend="tl")
        names = bridge_model.hook_points(points)
        return lambda: bridge_model.read(ids, names)
    if method == "nnsight":
        nn_model = workbench.load(copy.deepcopy(hf), backend="nnsight")
        names = nn_model.hook_points(points)
        return lambda: nn_model.read(ids, names)
    if method == "full_patterns":
        spec = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"], batch_size=1, memory_budget_gb=64)
        return lambda: capture(model, ids, spec, progress=False)
    if method == "streamed_stats":
        spec = CaptureSpec(stats=["sink_mass", "key_mass", "entropy"], batch_size=1, chunk=256)
        return lambda: capture(model, ids, spec, progress=False)
    raise KeyError(method)


def _ids(hf: Any, batch: int, length: int) -> torch.Tensor:
    return torch.randint(
        3, min(hf.config.vocab_size, 4096), (batch, length), generator=torch.Generator().manual_seed(0)
    )


def worker(model_name: str, method: str, batch: int, length: int, repeats: int) -> dict[str, float]:
    """One method on one model in this process: median seconds and peak RSS above the loaded baseline."""
    torch.set_num_threads(2)
    hf = _model(model_name)
    ids = _ids(hf, batch, length)
    run = _runner(method, hf, ids)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        del result
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"median_s": statistics.median(times), "peak_mib": (peak - base) / 1024}


def interleaved_times(
    model_name: str, methods: tuple[str, ...], batch: int, length: int, rounds: int
) -> dict[str, float]:
    """Median seconds per method, the methods run round-robin in this process (:func:`timing.round_robin`:
    a warm-up of each, then ``rounds`` rounds in rotating order) on one model and one batch; ``main`` runs
    it in a subprocess (:func:`measure_times`)."""
    torch.set_num_threads(2)
    hf = _model(model_name)
    ids = _ids(hf, batch, length)
    return round_robin({m: _runner(m, hf, ids) for m in methods}, rounds)


def _subprocess(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(model_name: str, method: str, batch: int, length: int, repeats: int) -> dict[str, float]:
    """Run :func:`worker` in a fresh subprocess."""
    return _subprocess("--worker", model_name, method, str(batch), str(length), str(repeats))


def measure_times(model_name: str, batch: int, length: int, rounds: int) -> dict[str, float]:
    """Run :func:`interleaved_times` of the four methods in a fresh subprocess."""
    return _subprocess("--times", model_name, str(batch), str(length), str(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 timing rounds, not 21; shorter long contexts")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--times", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, method, batch, length, repeats = args.worker
        print(json.dumps(worker(name, method, int(batch), int(length), int(repeats))))
        return
    if args.times:
        name, batch, length, rounds = args.times
        print(json.dumps(interleaved_times(name, METHODS, int(batch), int(length), int(rounds))))
        return
    rounds = 5 if args.quick else 21
    print("| model | batch x tokens | method | median s | ratio to HF | peak MiB above load |")
    print("|---|---|---|---|---|---|")
    for model_name in ("tiny-moe", "gpt2-small-shape"):
        times = measure_times(model_name, 4, 128, rounds)
        peaks = {m: measure(model_name, m, 4, 128, MEMORY_REPEATS)["peak_mib"] for m in METHODS}
        base = times["hf_eager_flags"]
        for method in METHODS:
            print(
                f"| {model_name} | 4 x 128 | {method} | {times[method]:.4f} | {times[method] / base:.2f} "
                f"| {peaks[method]:.0f} |"
            )
    print()
    print("| model | tokens | method | median s | peak MiB above load | memory ratio streamed/full |")
    print("|---|---|---|---|---|---|")
    for length in (1024, 2048) if args.quick else (2048, 4096):
        full = measure("llama-long", "full_patterns", 1, length, 1)
        streamed = measure("llama-long", "streamed_stats", 1, length, 1)
        ratio = streamed["peak_mib"] / max(full["peak_mib"], 1e-9)
        for method, row in (("full_patterns", full), ("streamed_stats", streamed)):
            cells = [
                f"{row['median_s']:.2f}",
                f"{row['peak_mib']:.0f}",
                f"{ratio:.3f}" if row is streamed else "",
            ]
            print(f"| llama-long | {length} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
