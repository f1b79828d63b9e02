"""A tiny random-init config of any model type, from the family's own config class.

Size fields are set to small values wherever the config class takes them (under any of the names
families use); everything else keeps the family's defaults, so its distinctive features stay on. Fields
that must agree with others (RoPE sub-dimensions, per-layer type lists) are derived from the small sizes.
"""

from __future__ import annotations

import inspect
from typing import Any

from workbench.arch.twin import LAYER_FIELDS, SIZES

LAYERS = 2

FIXES: dict[str, dict[str, Any]] = {  # fields a family's tiny config needs beyond the sizes
    "dbrx": {  # the attention defaults fail; top-2 of 4 so that the order of the chosen experts shows
        "attn_config": {"rope_theta": 10000.0, "kv_n_heads": 2, "clip_qkv": 8.0},
        "ffn_config": {"moe_top_k": 2, "moe_num_experts": 4, "ffn_hidden_size": 32},
    },
    "xmod": {"default_language": "en_XX"},  # its adapters need a language
    "zaya": {"num_experts_per_tok": 1},  # ZAYA routes to one expert only
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},  # one global and one local layer
    "dots1": {"n_shared_experts": 1},
    "gemma4_text": {"num_experts": None},  # dense by default (an expert count turns MoE blocks on)
    "gemma4": {"text_config": {"num_experts": None}},
}


def _small(cls: type, layers: int) -> dict[str, Any]:
    """The small sizes ``cls`` takes, and small versions of its sub-configs (text, vision, audio ...)."""
    from transformers import PreTrainedConfig

    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    default = cls()
    sizes = {**SIZES, **dict.fromkeys(LAYER_FIELDS, layers)}
    kwargs = {k: v for k, v in sizes.items() if k in params or (takes_any and hasattr(default, k))}
    if "kv_lora_rank" in kwargs:  # MLA: every head has its own key and value; sizes from the rope/nope dims
        kwargs.pop("head_dim", None)
        kwargs.update((k, 4) for k in ("num_key_value_heads", "n_kv_heads", "num_kv_heads") if k in kwargs)
    for name, value in vars(default).items():
        if isinstance(value, PreTrainedConfig) and name in params:
            kwargs[name] = _small(type(value), layers)
    return kwargs


def tiny_config(model_type: str, layers: int = LAYERS, **overrides: Any) -> Any:
    """A small config of ``model_type``'s own config class (``CONFIG_MAPPING[model_type]``).

    Args:
        model_type: A transformers model type (``gpt_neox``, ``gemma2`` ...).
        layers: Decoder layers (hybrid families need enough for one attention layer).
        **overrides: Fields set on top of the small sizes.
    """
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    kwargs = _small(cls, layers)
    if hasattr(cls(), "is_decoder"):  # BERT-likes: their causal LM is the decoder use (a causal mask)
        kwargs["is_decoder"] = True
    for key, value in FIXES.get(model_type, {}).items():
        kwargs[key] = {**kwargs.get(key, {}), **value} if isinstance(value, dict) else value
    return cls(**{**kwargs, **overrides})
