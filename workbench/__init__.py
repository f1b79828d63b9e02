r"""The interp workbench: hook into a transformer's heads, KV cache, sinks and MoE routers, and probe them.

Library use::

    import workbench
    model = workbench.load("minilm")
    print(workbench.card(model).to_markdown())
    acts = model.read("The cat sat.", [r"blocks\.\d+\.attn\.hook_pattern"])
"""

from workbench._version import __version__
from workbench.arch import SUPPORTED_MODEL_TYPES, adapter_for
from workbench.capture import Capture, CaptureSpec, capture
from workbench.capture.generate import Generation, generate, stream_generate
from workbench.card import Card, card
from workbench.errors import WorkbenchError
from workbench.models import WorkbenchModel, load

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "Capture",
    "CaptureSpec",
    "Card",
    "Generation",
    "WorkbenchError",
    "WorkbenchModel",
    "__version__",
    "adapter_for",
    "capture",
    "card",
    "generate",
    "load",
    "stream_generate",
]
