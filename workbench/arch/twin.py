"""Discovery on the meta device: a small CPU twin of the model shows the layout, the model's own config
the sizes.

A model built on the meta device (a directory holding only a 70B or 600B model's config) cannot run its
dry forward: HF's masking and routing code read tensor values. The twin is the same model class built on
the CPU from the same config with every width shrunk (:data:`SIZES`, under any of the names families
use), its layer count, layer types, routing and attention options kept. Discovery on the twin gives the
module paths, block kinds and router convention; the head counts, head sizes, widths and expert counts
are the meta model's own, read from the config field that held the twin's value (or the embedding's
width), so that ``workbench card`` and ``workbench hooks`` describe the real model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

VOCAB = 512
# the names families use for each size (the first name of a fact is the usual one)
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers", "encoder_layers")
HEAD_FIELDS = ("num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads")
KV_HEAD_FIELDS = ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num")
EXPERT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
TOP_K_FIELDS = ("num_experts_per_tok", "moe_topk", "moe_k", "top_k")
SIZES: dict[str, Any] = {
    "vocab_size": VOCAB,
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "dim", "embed_dim", "model_dim", "emb_dim"), 64),
    **dict.fromkeys(LAYER_FIELDS, 2),
    **dict.fromkeys(HEAD_FIELDS, 4),
    "encoder_attention_heads": 4,
    **dict.fromkeys(KV_HEAD_FIELDS, 2),
    **dict.fromkeys(
        ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size", "decoder_ffn_dim"), 96
    ),
    "encoder_ffn_dim": 96,
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"), 128),
    "head_dim": 16,
    "rotary_dim": 8,  # GPT-J, CodeGen: RoPE on part of each 16-wide head
    **dict.fromkeys(EXPERT_FIELDS, 4),
    **dict.fromkeys(TOP_K_FIELDS, 2),
    **dict.fromkeys(
        (
            "moe_intermediate_size",
            "shared_expert_intermediate_size",
            "expert_intermediate_size",
            "expert_ffn_hidden_size",
        ),
        32,
    ),
    "vocab_size_per_layer_input": VOCAB,  # Gemma 4's per-layer embeddings
    "encoder_hash_byte_group_vocab": VOCAB,  # BLT's hash embeddings
    "kv_lora_rank": 16,
    "q_lora_rank": 24,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "n_group": 2,
    "topk_group": 1,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "sliding_window": 8,
    # weights large enough that attention scores reach tens: soft-capping, clipping and sinks then show
    # in the checks (at the usual 0.02 scores stay near zero, where tanh capping is the identity)
    "initializer_range": 0.2,
}

FACT_FIELDS: dict[str, tuple[str, ...]] = {  # config fields that may hold each size fact, in order
    "n_heads": HEAD_FIELDS,
    "n_kv_heads": KV_HEAD_FIELDS,
    "head_dim": ("head_dim", "qk_head_dim", "attention_head_dim", "kv_channels"),
    "v_head_dim": ("v_head_dim", "head_dim", "attention_head_dim", "kv_channels"),
    "n_experts": EXPERT_FIELDS,
    "top_k": TOP_K_FIELDS,
}


def small_config(config: Any) -> Any:
    """The config with its widths shrunk (sub-configs too), everything else kept."""
    from transformers import PreTrainedConfig

    values = config.to_dict()
    small = {
        k: v for k, v in SIZES.items() if k in values and k not in LAYER_FIELDS and values[k] is not None
    }
    if "kv_lora_rank" in small:  # MLA: every head has its own key and value
        small.pop("head_dim", None)
        small.update((k, 4) for k in FACT_FIELDS["n_kv_heads"] if k in small)
    for name, value in vars(config).items():
        if isinstance(value, PreTrainedConfig):
            small[name] = small_config(value)
    return type(config)(**{**values, **small})


def twin_of(model: nn.Module) -> nn.Module:
    """A CPU twin of a meta-device model: the same class, the same config with small widths."""
    torch.manual_seed(0)
    with torch.device("cpu"):
        return type(model)(small_config(model.config)).eval()


def _field(config: Any, name: str) -> Any:
    try:  # some configs refuse global reads of per-layer fields (Gemma 4 unified's head_dim)
        return getattr(config, name, None)
    except Exception:
        return None


def _fact(name: str, value: int, twin: Any, real: Any) -> int | None:
    """The real config's value of the first field that held ``value`` in the twin's config."""
    for field in FACT_FIELDS[name]:
        if _field(twin, field) == value and isinstance(_field(real, field), int):
            return int(_field(real, field))
    return None


def real_sizes(layout: Any, twin: nn.Module, model: nn.Module) -> Any:
    """The twin's layout with the meta model's sizes: widths from its embedding, head counts, head
    sizes and expert counts from the config fields that held the twin's (derived where no field did:
    ``d_model // n_heads``; one kv head stays one, as many as the query heads stay as many)."""
    small, real = twin.config.get_text_config(), model.config.get_text_config()
    embed = model.get_input_embeddings()
    d_model = int(embed.weight.shape[1]) if getattr(embed, "weight", None) is not None else layout.d_model
    heads = _fact("n_heads", layout.n_heads, small, real) or layout.n_heads
    kv = _fact("n_kv_heads", layout.n_kv_heads, small, real)
    if kv is None:
        kv = heads if layout.n_kv_heads == layout.n_heads else layout.n_kv_heads
    derived = d_model // heads
    head_dim = _fact("head_dim", layout.head_dim, small, real)
    if head_dim is None:
        head_dim = derived if layout.head_dim * layout.n_heads == layout.d_model else layout.head_dim
    v_head_dim = _fact("v_head_dim", layout.v_head_dim, small, real)
    if v_head_dim is None:
        v_head_dim = head_dim if layout.v_head_dim == layout.head_dim else layout.v_head_dim
    experts = _fact("n_experts", layout.n_experts, small, real) if layout.n_experts else 0
    top_k = _fact("top_k", layout.top_k, small, real) if layout.top_k else 0
    return replace(
        layout,
        d_model=d_model,
        n_heads=heads,
        n_kv_heads=kv,
        head_dim=head_dim,
        v_head_dim=v_head_dim,
        n_experts=experts or layout.n_experts,
        top_k=top_k or layout.top_k,
    )
