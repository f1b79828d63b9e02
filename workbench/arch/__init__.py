"""Architecture adapters: a family's file in this package holds only what the model cannot show (router
conventions, MLA, learned sinks ...); every other family's adapter is discovered from the model itself
(:mod:`workbench.arch.discover`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workbench.arch import bloom, falcon, gpt_neo, gpt_neox_japanese, mpt, openai, roformer, xglm
from workbench.arch.base import ArchAdapter, RouterConvention, Site
from workbench.arch.bert import BertAdapter
from workbench.arch.deepseek_v2 import DeepseekV2Adapter
from workbench.arch.deepseek_v3 import DeepseekV3Adapter
from workbench.arch.discover import DiscoveredAdapter, Layout, discover_layout
from workbench.arch.generic import GenericAdapter
from workbench.arch.gpt2 import GPT2Adapter
from workbench.arch.gpt_oss import GptOssAdapter
from workbench.arch.granitemoe import GraniteMoeAdapter
from workbench.arch.interface import bert_self_attention_forward, route_attention
from workbench.arch.llama import LlamaAdapter
from workbench.arch.mixtral import MixtralAdapter
from workbench.arch.olmoe import OlmoeAdapter
from workbench.arch.qwen2_moe import Qwen2MoeAdapter
from workbench.arch.qwen3_moe import Qwen3MoeAdapter
from workbench.arch.twin import real_sizes, twin_of
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
# families whose attention modules compute attention inline: routed through the interface on load
ROUTED = {
    "bloom": (bloom.ATTENTION_CLASS, bloom.attention_forward),
    "falcon": (falcon.ATTENTION_CLASS, falcon.attention_forward),
    "gpt_neo": (gpt_neo.ATTENTION_CLASS, gpt_neo.attention_forward),
    "mpt": (mpt.ATTENTION_CLASS, mpt.attention_forward),
    "xglm": (xglm.ATTENTION_CLASS, xglm.attention_forward),
    "openai-gpt": (openai.ATTENTION_CLASS, openai.attention_forward),
    "gpt_neox_japanese": (gpt_neox_japanese.ATTENTION_CLASS, gpt_neox_japanese.attention_forward),
    "megatron-bert": ("MegatronBertSelfAttention", bert_self_attention_forward),
    "rembert": ("RemBertSelfAttention", bert_self_attention_forward),
    "roformer": (roformer.ATTENTION_CLASS, roformer.attention_forward),
    "trocr": ("TrOCRAttention", xglm.attention_forward),  # XGLM's attention, as BART's once was
}
BY_MODEL_TYPE: dict[str, type[ArchAdapter]] = {t: a for a in ADAPTERS for t in a.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(BY_MODEL_TYPE))


def discoverable(model_type: str | None) -> bool:
    """Whether a family may be served: it has a file here, or transformers has a causal LM for it (its
    adapter is then discovered when the model is loaded)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in BY_MODEL_TYPE or model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def unsupported_message(model_type: str | None, why: str = "transformers has no causal LM for it") -> str:
    """The one-line error for a family the workbench cannot serve."""
    return (
        f"unsupported model family {model_type!r}: {why} "
        "(allow_generic=True / --generic gives residual-stream points only)"
    )


_LAYOUTS: dict[tuple[type, str], Layout] = {}


def _discover(model: nn.Module, model_type: str | None) -> Layout:
    """The model's layout from its dry forward; on the meta device, from a small CPU twin's
    (:mod:`workbench.arch.twin`) with the model's own sizes."""
    if not any(p.device.type == "meta" for p in model.parameters()):
        return discover_layout(model)
    with torch.device("cpu"):  # also inside a caller's meta-device context
        twin = twin_of(model)
        if model_type in ROUTED:
            route_attention(twin, *ROUTED[model_type])
        return real_sizes(discover_layout(twin), twin, model)


def adapter_for(model: nn.Module, *, allow_generic: bool = False) -> ArchAdapter:
    """The adapter for an HF model: its family's file by ``config.model_type``, else one discovered from a
    dry forward (cached per model class and config).

    Args:
        model: A transformers ``PreTrainedModel``.
        allow_generic: Return a structure-based :class:`GenericAdapter` when discovery fails instead of
            raising.

    Raises:
        UnsupportedFamilyError: Discovery failed and ``allow_generic`` is False.
    """
    config: Any = model.config
    model_type = getattr(config, "model_type", None)
    if model_type in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[model_type]()
    if model_type in ROUTED:
        route_attention(model, *ROUTED[model_type])
    key = (type(model), config.to_json_string(use_diff=False))
    try:
        if key not in _LAYOUTS:
            _LAYOUTS[key] = _discover(model, model_type)
        return DiscoveredAdapter(str(model_type), _LAYOUTS[key])
    except UnsupportedFamilyError as error:
        if allow_generic:
            return GenericAdapter(getattr(model, "base_model", model), config)
        refusal = UnsupportedFamilyError(unsupported_message(model_type, str(error)))
        refusal.reason = str(error)  # the discovery's own words, for the coverage table
        raise refusal from None


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_TYPES",
    "ArchAdapter",
    "DiscoveredAdapter",
    "GenericAdapter",
    "RouterConvention",
    "Site",
    "adapter_for",
    "discoverable",
    "unsupported_message",
]
