"""Capture store integrity benchmark: what verifying shard checksums costs beside reading the shards.

Writes a capture store of random fp32 tensors (about 1 GB by default, 8 shards) in a temporary directory
through ``Capture`` itself, then times, round-robin in one process (``round_robin`` in bench/timing.py,
medians after a warm-up of each):

- open / copy, no verification: every tensor of every shard through ``safetensors.safe_open``, in the
  order ``Capture`` reads them (what a store read did before checksums). ``get_tensor`` returns a tensor
  over the memory map without touching its bytes, so "open" reads only the headers; "copy" also copies
  every tensor's bytes into one reused buffer (cloning instead allocates fresh pages, whose faults vary
  2-10x from run to run with the allocator's state);
- open / copy, verified: the same through ``Capture.load`` and ``capture[name]`` for every point (the
  xxh3_128 of each shard on first read, then the same reads);
- hash of the shard files: ``file_digest`` alone (the verification, file reads included);
- hash of bytes in memory: ``xxhash.xxh3_128`` over the shards' bytes already read.

The shards sit in the page cache (just written), so the reads measure memory bandwidth, not the disk.

Run: ``.venv/bin/python bench/store.py`` (``--gb`` for another size, ``--rounds`` for more rounds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import xxhash
from safetensors import safe_open
from timing import round_robin  # bench/timing.py, beside this script

from workbench.capture.store import MANIFEST, TOKENS, Capture, file_digest

NAMES = 8
PROMPTS_PER_SHARD = 8
POSITIONS, WIDTH = 128, 4096  # one tensor: 2 MiB of fp32


def write_store(directory: Path, gigabytes: float) -> Capture:
    """A store of random tensors, ``NAMES`` points per prompt, one shard per ``PROMPTS_PER_SHARD`` prompts."""
    per_prompt = NAMES * POSITIONS * WIDTH * 4
    prompts = max(PROMPTS_PER_SHARD, round(gigabytes * 1e9 / per_prompt))
    names = [f"blocks.{i}.hook_resid_post" for i in range(NAMES)]
    store = Capture(names, {"prompts": None}, directory)
    generator = torch.Generator().manual_seed(0)
    for _ in range(0, prompts, PROMPTS_PER_SHARD):
        values = {
            n: [torch.randn(POSITIONS, WIDTH, generator=generator) for _ in range(PROMPTS_PER_SHARD)]
            for n in names
        }
        store.append(values, [torch.arange(POSITIONS) for _ in range(PROMPTS_PER_SHARD)])
        store.spill()
    store.save(directory)
    return store


_BUFFER = torch.empty(POSITIONS * WIDTH * 4, dtype=torch.uint8)


def _into_buffer(tensor: torch.Tensor) -> None:
    """Read every byte of a tensor into one reused buffer (no allocation, so no fresh-page faults)."""
    data = tensor.reshape(-1).view(torch.uint8)
    _BUFFER[: data.numel()].copy_(data)


def read_plain(directory: Path, copy: bool) -> None:
    """Every tensor of the store in ``Capture``'s order (tokens, then point by point), through
    ``safe_open`` handles without verification (copied when ``copy``)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    handles = [(safe_open(str(directory / s["file"]), framework="pt"), s) for s in manifest["shards"]]
    for name in [TOKENS, *manifest["names"]]:
        for handle, shard in handles:
            for index in range(*shard["prompts"]):
                tensor = handle.get_tensor(f"{name}|{index}")
                if copy:
                    _into_buffer(tensor)


def read_verified(directory: Path, copy: bool) -> None:
    """Every tensor of the store through ``Capture`` (checksums verified; copied when ``copy``)."""
    store = Capture.load(directory)
    for tensors in [store.tokens, *(store[name] for name in store.names)]:
        for tensor in tensors:
            if copy:
                _into_buffer(tensor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="store size in GB (1e9 bytes)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # copies are memory-bound; 2 threads on 2 shared cores ran them at 0.2 GB/s
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        directory = Path(tmp) / "cap"
        write_store(directory, args.gb)
        shards = sorted(directory.glob("shard-*.safetensors"))
        size = sum(p.stat().st_size for p in shards)
        contents = [p.read_bytes() for p in shards]
        methods = {
            "open, no verification": lambda: read_plain(directory, copy=False),
            "open, verified (xxh3_128)": lambda: read_verified(directory, copy=False),
            "copy, no verification": lambda: read_plain(directory, copy=True),
            "copy, verified (xxh3_128)": lambda: read_verified(directory, copy=True),
            "hash of the shard files": lambda: [file_digest(p) for p in shards],
            "hash of bytes in memory": lambda: [xxhash.xxh3_128_hexdigest(b) for b in contents],
        }
        medians = round_robin(methods, args.rounds)
    print(f"store: {size / 1e9:.3f} GB in {len(shards)} shards; medians of {args.rounds} rounds")
    print("| method | median s | GB/s |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {size / 1e9 / seconds:.2f} |")
    for read in ("open", "copy"):
        overhead = medians[f"{read}, verified (xxh3_128)"] / medians[f"{read}, no verification"] - 1
        print(f"{read}: verified vs not {overhead:+.0%}")


if __name__ == "__main__":
    main()
