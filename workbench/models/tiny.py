"""Random-init tiny configs of the real HF classes, one per supported family (for tests and benchmarks).

Each config keeps the family's distinctive features switched on (GQA, MoE with top-k < experts, shared
experts, MLA, group-limited routing, learned sinks with sliding layers, muP multipliers) at a size that
runs in milliseconds on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf

VOCAB = 512
_IDS: dict[str, Any] = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_COMMON: dict[str, Any] = {
    **_IDS,
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
_MOE: dict[str, Any] = {"num_experts_per_tok": 2}


def tiny_config(family: str) -> Any:
    """A small config of the family's real HF config class."""
    c = _COMMON
    if family == "gpt2":
        return tf.GPT2Config(**_IDS, vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=256)
    if family == "llama":
        return tf.LlamaConfig(**c)
    if family == "mixtral":
        return tf.MixtralConfig(**c, **_MOE, num_local_experts=4)
    if family == "olmoe":
        return tf.OlmoeConfig(**c, **_MOE, num_experts=8)
    if family == "qwen2_moe":
        return tf.Qwen2MoeConfig(
            **c,
            **_MOE,
            num_experts=4,
            moe_intermediate_size=48,
            shared_expert_intermediate_size=64,
            mlp_only_layers=[0],
        )
    if family == "qwen3_moe":
        return tf.Qwen3MoeConfig(**c, **_MOE, num_experts=4, moe_intermediate_size=48, norm_topk_prob=True)
    if family in ("deepseek_v2", "deepseek_v3"):
        mla = {
            "kv_lora_rank": 32,
            "q_lora_rank": None if family == "deepseek_v2" else 48,
            "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 16,
            "v_head_dim": 16,
            "n_routed_experts": 8,
            "n_shared_experts": 1,
            "moe_intermediate_size": 32,
            "first_k_dense_replace": 1,
            "n_group": 4,
            "topk_group": 2,
            "routed_scaling_factor": 2.5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        }
        common = {**c, "num_key_value_heads": 4, **_MOE, **mla}
        if family == "deepseek_v2":
            return tf.DeepseekV2Config(**common, topk_method="group_limited_greedy")
        return tf.DeepseekV3Config(**common, norm_topk_prob=True)
    if family == "gpt_oss":
        return tf.GptOssConfig(
            **{**c, "head_dim": 16},
            **_MOE,
            num_local_experts=4,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={  # YaRN as released, scaled down: 8 original positions x 32 = 256
                "rope_type": "yarn",
                "rope_theta": 150000.0,
                "factor": 32.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
                "original_max_position_embeddings": 8,
            },
        )
    if family == "granitemoe":
        return tf.GraniteMoeConfig(
            **c,
            **_MOE,
            num_local_experts=4,
            embedding_multiplier=2.0,
            residual_multiplier=0.5,
            attention_multiplier=0.2,
            logits_scaling=4.0,
        )
    if family == "bert":
        return tf.BertConfig(
            pad_token_id=0,
            vocab_size=VOCAB,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=96,
            max_position_embeddings=256,
        )
    raise KeyError(f"no tiny config for family {family!r}")


TINY_FAMILIES: tuple[str, ...] = (
    "gpt2",
    "llama",
    "mixtral",
    "olmoe",
    "qwen2_moe",
    "qwen3_moe",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
    "granitemoe",
    "bert",
)


def build_tiny(family: str, seed: int = 0, attn_implementation: str | None = None, **overrides: Any) -> Any:
    """A random-init model of the family's real HF class (causal LM head; BERT: ``BertModel``), in eval mode.

    Args:
        family: One of :data:`TINY_FAMILIES`.
        seed: Torch seed for the initialisation.
        attn_implementation: ``"eager"``, ``"sdpa"`` or None for the class default.
        **overrides: Config attributes set on the tiny config before the model is built (e.g.
            ``num_experts_per_tok=4``).
    """
    config = tiny_config(family)
    for key, value in overrides.items():
        setattr(config, key, value)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    cls = tf.BertModel if family == "bert" else tf.AutoModelForCausalLM
    model = cls.from_config(config) if cls is tf.AutoModelForCausalLM else cls(config)
    if family == "deepseek_v3":  # a non-zero correction bias, so that selection differs from the weights
        for layer in model.model.layers[config.first_k_dense_replace :]:
            layer.mlp.gate.e_score_correction_bias.normal_(0, 0.1)
    return model.eval()
