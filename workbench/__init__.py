r"""The interp workbench: hook into a transformer's heads, KV cache, sinks and MoE routers, and probe them.

Library use::

    import workbench
    model = workbench.load("minilm")
    print(model.cfg.n_layers, workbench.card(model).to_markdown())
    acts = model.read("The cat sat.", [r"blocks\.\d+\.attn\.hook_pattern"])
    table = workbench.probe("sinks")(model, {"mine": ["The cat sat."]})
    tables = workbench.diff(workbench.load("tiny-llama"), workbench.load("tiny-llama-ru"), texts).tables()

The names below are imported when first used (the capture engine's at once: ``workbench.capture`` is also
its subpackage), so that importing any part of the package never imports the layers above it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# transformers imports torchao when it is installed, and torchao's import logs a warning per CUDA kernel
# library a CPU machine cannot load (and torch one per enum it registers): import-time notes, not errors;
# bitsandbytes notes its CPU kernel fallback once and LLM.int8's float16 cast on every forward (documented
# in docs/probes/quantisation.md)
for _name in (
    "torchao",
    "torch.utils._pytree",
    "bitsandbytes.backends.cpu.ops",
    "bitsandbytes.autograd._functions",
):
    logging.getLogger(_name).setLevel(logging.ERROR)

from workbench._version import __version__  # noqa: E402
from workbench.capture import Capture, CaptureSpec, capture  # noqa: E402  (eager: ``capture`` is also the subpackage)

_EXPORTS = {
    "SUPPORTED_MODEL_TYPES": "workbench.arch",
    "adapter_for": "workbench.arch",
    "Generation": "workbench.capture.generate",
    "generate": "workbench.capture.generate",
    "stream_generate": "workbench.capture.generate",
    "Card": "probes.card",
    "card": "probes.card",
    "diff": "probes.diff",
    "WorkbenchError": "workbench.errors",
    "WorkbenchModel": "workbench.models",
    "load": "workbench.models",
    "Probe": "probes.registry",
    "registry": "probes.registry",
}
__all__ = ["Capture", "CaptureSpec", "__version__", "capture", "probe", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:  # a subpackage (workbench.zoo, workbench.intervene ...) on first use
        try:
            return importlib.import_module(f"workbench.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"workbench.{name}":
                raise
            raise AttributeError(f"module 'workbench' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def probe(name: str) -> Any:
    """The registered probe called ``name`` (:mod:`probes.registry`); call it as ``probe(model, texts,
    **params)``."""
    from probes.registry import get

    return get(name)
