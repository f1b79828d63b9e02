"""Architecture adapters: one module per family, looked up by ``config.model_type``."""

from __future__ import annotations

from typing import Any

from torch import nn

from workbench.arch.base import ArchAdapter, RouterConvention, Site
from workbench.arch.bert import BertAdapter
from workbench.arch.deepseek_v2 import DeepseekV2Adapter
from workbench.arch.deepseek_v3 import DeepseekV3Adapter
from workbench.arch.generic import GenericAdapter
from workbench.arch.gpt2 import GPT2Adapter
from workbench.arch.gpt_oss import GptOssAdapter
from workbench.arch.granitemoe import GraniteMoeAdapter
from workbench.arch.llama import LlamaAdapter
from workbench.arch.mixtral import MixtralAdapter
from workbench.arch.olmoe import OlmoeAdapter
from workbench.arch.qwen2_moe import Qwen2MoeAdapter
from workbench.arch.qwen3_moe import Qwen3MoeAdapter
from workbench.errors import UnsupportedFamilyError

ADAPTERS: tuple[type[ArchAdapter], ...] = (
    GPT2Adapter,
    LlamaAdapter,
    MixtralAdapter,
    OlmoeAdapter,
    Qwen2MoeAdapter,
    Qwen3MoeAdapter,
    DeepseekV2Adapter,
    DeepseekV3Adapter,
    GptOssAdapter,
    GraniteMoeAdapter,
    BertAdapter,
)
BY_MODEL_TYPE: dict[str, type[ArchAdapter]] = {t: a for a in ADAPTERS for t in a.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(BY_MODEL_TYPE))


def unsupported_message(model_type: str | None) -> str:
    """The one-line error for a family without an adapter."""
    return (
        f"unsupported model family {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
        "(allow_generic=True / --generic gives residual-stream points only)"
    )


def adapter_for(model: nn.Module, *, allow_generic: bool = False) -> ArchAdapter:
    """The adapter for an HF model, by ``config.model_type``.

    Args:
        model: A transformers ``PreTrainedModel``.
        allow_generic: Return a structure-based :class:`GenericAdapter` for unknown families instead of
            raising.

    Raises:
        UnsupportedFamilyError: The family is unknown and ``allow_generic`` is False.
    """
    config: Any = model.config
    model_type = getattr(config, "model_type", None)
    if model_type in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[model_type]()
    if allow_generic:
        return GenericAdapter(getattr(model, "base_model", model), config)
    raise UnsupportedFamilyError(unsupported_message(model_type))


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_TYPES",
    "ArchAdapter",
    "GenericAdapter",
    "RouterConvention",
    "Site",
    "adapter_for",
    "unsupported_message",
]
