"""Long context on a GPU: sink mass, key mass and entropy of every head and query of one prompt, through
the fused kernel's log-sum-exp route and the chunked path, beside the plain sdpa forward; a random-init
model of Llama-3-8B's shape in bfloat16 at T = 32k and 128k tokens.

Run (one command, under 5 minutes on one H200): ``python bench/gpu_long_context.py``; it prints the
markdown table recorded in docs/benchmarks.md. ``--dry-run``: the same code path on the CPU with a
4-layer model of the same head layout at T = 256 (the tests run it; the project needs no GPU).
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch
import transformers as tf

from workbench.models.shapes import LLAMA_3_8B

STATS = ["sink_mass", "key_mass", "entropy"]
CHUNKED_UP_TO = 32768  # the chunked path beyond this takes more than the script's time budget


def build(dry_run: bool) -> tuple[Any, torch.device]:
    """The random-init model and its device."""
    torch.manual_seed(0)
    if dry_run:
        shape = {**LLAMA_3_8B, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4}
        shape |= {"num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096}
        device, dtype = torch.device("cpu"), torch.float32
    else:
        shape, device, dtype = LLAMA_3_8B, torch.device("cuda"), torch.bfloat16
    with device:
        hf = tf.LlamaForCausalLM(tf.LlamaConfig(**shape)).to(dtype).eval()
    return hf, device


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(run: Any, device: torch.device) -> tuple[float, float, Any]:
    """Seconds, peak memory (GPU: allocated; CPU: the process's RSS) and the result of one run."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, _peak_mib(device), result


def rows(dry_run: bool, lengths: list[int]) -> list[dict[str, Any]]:
    """One row per length and method: seconds, ratio to the sdpa forward, peak MiB."""
    import workbench
    from workbench.capture import CaptureSpec, capture

    hf, device = build(dry_run)
    model = workbench.load(hf)
    out = []
    for length in lengths:
        ids = torch.randint(3, hf.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
        ids = ids.to(device)

        def forward(ids: torch.Tensor = ids) -> Any:
            with torch.no_grad():
                return model.base(input_ids=ids)

        methods = {"sdpa_forward": forward}
        for route in ("fused", "chunked") if length <= CHUNKED_UP_TO else ("fused",):
            spec = CaptureSpec(stats=STATS, batch_size=1, stat_route=route, memory_budget_gb=1e3)
            methods[route] = lambda s=spec, i=ids: capture(model, i, s, progress=False)
        forward()  # warm-up: kernels, allocator
        base = None
        for name, run in methods.items():
            seconds, peak, result = timed(run, device)
            base = base or seconds
            routes = getattr(result, "meta", {}).get("stat_routes", {})
            out.append(
                {
                    "tokens": length,
                    "method": name,
                    "seconds": seconds,
                    "ratio": seconds / base,
                    "peak_mib": peak,
                    "routes": " + ".join(sorted(set(routes.values()))) or "-",
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, a 4-layer model, T = 256")
    args = parser.parse_args()
    lengths = [256] if args.dry_run else [32768, 131072]
    table = rows(args.dry_run, lengths)
    memory = "RSS" if args.dry_run else "GPU"
    print(f"| tokens | method | seconds | x sdpa forward | peak MiB ({memory}) | routes taken |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['tokens']} | {r['method']} | {r['seconds']:.2f} | {r['ratio']:.2f} | {r['peak_mib']:.0f} "
            f"| {r['routes']} |"
        )


if __name__ == "__main__":
    main()
