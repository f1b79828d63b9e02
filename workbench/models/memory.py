"""What a model will need before its weights are read: parameters x dtype from the config (built on the
meta device, nothing allocated), plus the KV cache for the context asked for, checked against the memory
the target device has free.

``weights = sum over parameters of numel x bytes(dtype)``; ``kv_cache = kv_elements_per_token x
bytes(dtype) x context`` (``model.cfg``: ``2 x layers x kv_heads x head_dim`` for multi-head attention,
the latent for MLA; 0 for an encoder, which keeps no cache). A checkpoint with a ``quantization_config``
is not estimated here: its bytes per weight depend on the quantisation backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.errors import ModelTooLargeError
from workbench.models.model import WorkbenchModel

DEFAULT_CONTEXT = 4096  # tokens of KV cache a load is checked for when the caller does not say
GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model needs: its ``weights`` and the ``kv_cache`` of ``context`` tokens in
    ``dtype``."""

    weights: int
    kv_cache: int
    context: int
    dtype: torch.dtype

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def estimate(
    model: WorkbenchModel, dtype: torch.dtype | None = None, context: int | None = None
) -> MemoryEstimate:
    """The memory a model (typically built on the meta device) needs in ``dtype`` (default: its own) for a
    KV cache of ``context`` tokens (default: :data:`DEFAULT_CONTEXT`, at most its configured positions)."""
    dtype = dtype or next(model.hf.parameters()).dtype
    size = torch.tensor([], dtype=dtype).element_size()
    tensors = [*model.hf.parameters(), *model.hf.buffers()]
    weights = sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in tensors)
    cfg = model.cfg
    context = context or min(DEFAULT_CONTEXT, cfg.n_ctx or DEFAULT_CONTEXT)
    kv = cfg.kv_elements_per_token * size * context if cfg.causal else 0
    return MemoryEstimate(int(weights), int(kv), context, dtype)


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Free memory of a device: ``MemAvailable`` of /proc/meminfo (elsewhere, the free physical pages) for
    the CPU, ``torch.cuda.mem_get_info`` for a CUDA device."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device.index or 0)[0])
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(
    found: MemoryEstimate, label: str, device: str | torch.device = "cpu", available: int | None = None
) -> None:
    """Refuse a model that will not fit, with both numbers and the ways out.

    Raises:
        ModelTooLargeError: ``found.total`` exceeds the device's free memory (``available``: that figure,
            measured when None).
    """
    free = available_bytes(device) if available is None else available
    if found.total <= free:
        return
    dtype = str(found.dtype).removeprefix("torch.")
    raise ModelTooLargeError(
        f"{label} needs {found.total / GB:.1f} GB ({found.weights / GB:.1f} GB of weights in {dtype} + "
        f"{found.kv_cache / GB:.1f} GB of KV cache for {found.context} tokens) but {device} has "
        f"{free / GB:.1f} GB free; load it in a smaller dtype (dtype=torch.bfloat16), as a quantised "
        "checkpoint, or offloaded (device_map='auto' with max_memory and offload_folder)"
    )
