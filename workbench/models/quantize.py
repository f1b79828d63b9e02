"""Quantised loading on the CPU: a ``{"method", "bits"}`` request turned into the transformers
``quantization_config`` of a backend that runs here, and what a loaded model's quantisation is.

Backends (checked on this CPU with transformers 5.24): ``quanto`` (optimum-quanto; weights int8, int4,
int2; ``QLinear`` modules), ``torchao`` (weight-only int8 per row; its int4 needs the mslk kernels,
which the CPU build lacks) and ``bitsandbytes`` (LLM.int8 with its outlier threshold 6, or NF4 in blocks
of 64 computing in float32). Each quantises the linear layers of the blocks on load and leaves the
embeddings, the LM head and the norms in floating point. (HQQ: transformers 5.24 refuses to load it.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError

BACKENDS = {"quanto": (8, 4, 2), "torchao": (8,), "bitsandbytes": (8, 4)}
PACKAGES = {"quanto": "optimum-quanto", "torchao": "torchao", "bitsandbytes": "bitsandbytes"}


def quantization_config(request: Any) -> Any:
    """A transformers quantisation config from ``{"method": "quanto" | "torchao" | "bitsandbytes", "bits":
    N}`` (a transformers config object passes through).

    Raises:
        WorkbenchError: An unknown method, bits the backend does not offer, or the backend not installed.
    """
    if not isinstance(request, dict):
        return request
    method, bits = check_request(request)
    import transformers as tf

    try:
        if method == "quanto":
            import optimum.quanto  # noqa: F401  (the backend transformers calls)

            return tf.QuantoConfig(weights=f"int{bits}")
        if method == "bitsandbytes":
            import bitsandbytes  # noqa: F401

            if bits == 8:
                return tf.BitsAndBytesConfig(load_in_8bit=True)
            return tf.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
            )
        from torchao.quantization import Int8WeightOnlyConfig

        return tf.TorchAoConfig(Int8WeightOnlyConfig())
    except ImportError:
        package = PACKAGES[method]
        raise WorkbenchError(f"quantization with {method} needs {package}: pip install {package}") from None


def check_request(request: dict[str, Any]) -> tuple[str, int]:
    """``(method, bits)`` of a request that a backend here offers.

    Raises:
        WorkbenchError: Unknown keys, an unknown method, or bits the backend does not offer.
    """
    method, bits = request.get("method"), request.get("bits", 8)
    if set(request) - {"method", "bits"} or method not in BACKENDS or bits not in BACKENDS[method]:
        choices = "; ".join(f"{m}: bits {', '.join(map(str, b))}" for m, b in BACKENDS.items())
        raise WorkbenchError(f"quantization {request!r}: expected {{method, bits}} with {choices}")
    return method, bits


def check_quantised(model: nn.Module, request: Any) -> None:
    """Refuse a quantisation request that converted no module (quanto and torchao convert ``nn.Linear``
    only: GPT-2's ``Conv1D`` projections stay as they are).

    Raises:
        WorkbenchError: No module's weight is stored quantised.
    """
    if not quantised_modules(model):
        raise WorkbenchError(
            f"quantization {request!r} converted no module of this model (the backend converts nn.Linear "
            "layers only); try another backend (bitsandbytes also converts Conv1D)"
        )


def use_reference_kernels(model: nn.Module) -> None:
    """Run bitsandbytes' 4-bit layers through its reference path (dequantise, then a matmul in the compute
    dtype): its AVX512-BF16 CPU kernel repacks the weight on the first forward, fails on layers whose
    output size is not a multiple of 32 (tiny-llama's 344) and computes in bfloat16."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def parse_request(text: str) -> dict[str, Any] | None:
    """The request written ``METHOD:BITS`` (``quanto:4``; the CLI's ``--quantize``, the app's field); None
    for an empty text.

    Raises:
        WorkbenchError: Not ``METHOD:BITS``, or a request no backend here offers.
    """
    if not text:
        return None
    method, _, bits = text.partition(":")
    if not bits.isdigit():
        raise WorkbenchError(f"quantization {text!r}: expected METHOD:BITS, e.g. quanto:8")
    request = {"method": method, "bits": int(bits)}
    check_request(request)
    return request


def offered() -> list[str]:
    """Every ``METHOD:BITS`` a backend here offers."""
    return [f"{method}:{bits}" for method, widths in BACKENDS.items() for bits in widths]


def loaded_quantised(model: nn.Module) -> bool:
    """Whether transformers loaded ``model`` through a quantisation backend (which then fixes its dtypes:
    a bitsandbytes model refuses a cast)."""
    return getattr(model, "hf_quantizer", None) is not None


def is_quantised(module: nn.Module) -> bool:
    """Whether a module's weight is stored quantised: a tensor subclass (quanto's ``WeightQBytesTensor``,
    torchao's ``Int8Tensor`` ...) or integer codes (bitsandbytes' ``Int8Params``, packed ``Params4bit``)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return False
    return type(weight.data) is not torch.Tensor or not weight.dtype.is_floating_point


def dense(tensor: torch.Tensor, owner: nn.Module | None = None) -> torch.Tensor:
    """A stored-quantised weight's dequantised values (the tensor itself when it is a plain one); ``owner``,
    the module holding it, keeps LLM.int8's row scales once it has run a forward."""
    if getattr(tensor, "quant_state", None) is not None:  # bitsandbytes 4-bit: packed codes, absmax per block
        from bitsandbytes.functional import dequantize_4bit

        return dequantize_4bit(tensor.data, tensor.quant_state)
    scales = getattr(tensor, "SCB", None)
    if scales is None and tensor.dtype == torch.int8:  # after a forward the scales live in the layer's state
        scales = getattr(getattr(owner, "state", None), "SCB", None)
        if scales is None:
            raise ValueError("an LLM.int8 weight without its row scales: pass the layer as owner")
    if scales is not None:  # bitsandbytes LLM.int8: int8 codes, absmax per row
        return tensor.data.float() * scales.float()[:, None] / 127
    if type(tensor.data) is not torch.Tensor and hasattr(tensor, "dequantize"):
        return tensor.dequantize()
    return tensor


def shape_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """A weight's logical shape (bitsandbytes' 4-bit codes are packed into a column)."""
    state = getattr(tensor, "quant_state", None)
    return tuple(state.shape if state is not None else tensor.shape)


def quantised_modules(model: nn.Module) -> list[str]:
    """The names of the modules whose weights are stored quantised."""
    return [name for name, module in model.named_modules() if is_quantised(module)]


def group_size(model: nn.Module) -> str | list[int] | None:
    """How many weights share one scale in the stored-quantised modules, from their scales (quanto's
    ``_scale``, torchao's ``scale``, LLM.int8's row absmax, NF4's ``blocksize``): ``"per row"`` when each
    output row has one, else the distinct group sizes; None when no module's scale is readable."""
    sizes, per_row = set(), True
    for module in model.modules():
        if not is_quantised(module):
            continue
        state = getattr(module.weight, "quant_state", None)
        if state is not None:  # bitsandbytes 4-bit: blocks along the flattened weight
            sizes.add(state.blocksize)
            per_row = False
            continue
        if module.weight.dtype == torch.int8 and hasattr(module, "state"):  # LLM.int8: one absmax a row
            sizes.add(module.in_features)
            continue
        weight = module.weight.data
        scale = next(
            (s for a in ("_scale", "scale") if isinstance(s := getattr(weight, a, None), torch.Tensor)), None
        )
        if scale is None:
            return None
        sizes.add(weight.numel() // scale.numel())
        per_row &= scale.numel() == weight.shape[0]
    if not sizes:
        return None
    return "per row" if per_row else sorted(sizes)


def bits_of(raw: dict[str, Any]) -> int | None:
    """Weight bits a ``quantization_config`` dict states (``bits``, quanto's ``weights = "int8"``,
    torchao's ``Int8WeightOnlyConfig``, bitsandbytes' ``load_in_4bit``)."""
    if raw.get("bits"):
        return int(raw["bits"])
    weights = raw.get("weights")
    if isinstance(weights, str) and weights.startswith(("int", "float")):
        return int("".join(c for c in weights if c.isdigit()) or 0) or None
    kind = str(((raw.get("quant_type") or {}).get("default") or {}).get("_type", ""))
    for bits in (8, 4, 2):
        if f"Int{bits}" in kind or f"int{bits}" in kind:
            return bits
    return 4 if raw.get("load_in_4bit") else 8 if raw.get("load_in_8bit") else None
