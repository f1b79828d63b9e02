"""Card fields against configs for every family, KV bytes against the formula and the measured cache."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import workbench
from probes.factors import kv_bytes_per_token
from workbench.models.tiny import build_tiny


def formula_kv_bytes(config: object, family: str, element_size: int) -> int:
    """PROBES.md: 2 x layers x kv_heads x head_dim x bytes; MLA: (d_c + d_rope) x layers elements."""
    if family.startswith("deepseek"):
        return (config.kv_lora_rank + config.qk_rope_head_dim) * config.num_hidden_layers * element_size
    if family == "gpt2":
        return 2 * config.n_layer * config.n_head * (config.n_embd // config.n_head) * element_size
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element_size


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_bytes_equal_formula_and_measured_cache(family: str, dtype: torch.dtype) -> None:
    model = workbench.load(build_tiny(family), dtype=dtype)
    element = torch.tensor([], dtype=dtype).element_size()
    expected = formula_kv_bytes(model.config, family, element)
    assert workbench.card(model).get(17)["kv_bytes_per_token"] == expected
    if not model.cfg.causal:
        return
    batch, tokens = 2, 6  # within GPT-OSS's sliding window, so every layer keeps every token
    with torch.no_grad():
        cache = model.hf(
            input_ids=torch.ones(batch, tokens, dtype=torch.long), use_cache=True
        ).past_key_values
    stored = sum(layer.keys.numel() * layer.keys.element_size() for layer in cache.layers)
    stored += sum(layer.values.numel() * layer.values.element_size() for layer in cache.layers)
    assert stored / (batch * tokens) == expected


def test_card_fields_match_config(family: str) -> None:
    model = workbench.load(build_tiny(family))
    config, result = model.config, workbench.card(model)
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    assert result.get("layers") == layers
    assert result.get("heads") == (getattr(config, "num_attention_heads", None) or config.n_head)
    assert result.get("d_model") == (getattr(config, "hidden_size", None) or config.n_embd)
    assert result.get(1)["embedding"] == config.vocab_size
    assert result.get("parameters_total") == sum(p.numel() for p in model.hf.parameters())
    kv_heads = getattr(config, "num_key_value_heads", None) or result.get("heads")
    expected_kind = {"deepseek_v2": "MLA", "deepseek_v3": "MLA"}.get(
        family, "MHA" if kv_heads == result.get("heads") else "GQA"
    )
    assert result.get("attention_kind") == expected_kind
    if result.get("positional") == "rope":
        assert result.get("rope_theta") == config.rope_parameters["rope_theta"]
    assert (result.get(17)["sinks"] != "emergent only") == (family == "gpt_oss")
    if model.adapter.router_convention is None:
        assert result.get("parameters_active_per_token") == result.get("parameters_total")
        return
    experts = next(
        getattr(config, a)
        for a in ("num_local_experts", "num_experts", "n_routed_experts")
        if hasattr(config, a)
    )
    assert result.get(16)["experts"] == experts
    assert result.get(16)["top_k"] == config.num_experts_per_tok
    assert result.get("parameters_active_per_token") < result.get("parameters_total")
    moe_layers, per_expert = routed_expert_shape(config, family)
    idle = moe_layers * (experts - config.num_experts_per_tok) * per_expert  # routed experts left out
    assert result.get("parameters_active_per_token") == result.get("parameters_total") - idle


def routed_expert_shape(config: object, family: str) -> tuple[int, int]:
    """(MoE layers, parameters of one routed expert) from the config's own fields, per family's HF code:
    SwiGLU experts hold gate, up and down projections, 3 x d_model x d_expert, without biases; GPT-OSS's
    fused gate_up (d_model x 2 d_expert + 2 d_expert) and down (d_expert x d_model + d_model) have biases.
    Dense layers: Qwen-MoE's ``mlp_only_layers``, DeepSeek's first ``first_k_dense_replace`` layers."""
    d, layers = config.hidden_size, config.num_hidden_layers
    if family == "gpt_oss":
        e = config.intermediate_size
        return layers, d * 2 * e + 2 * e + e * d + d
    if family in ("qwen2_moe", "qwen3_moe"):
        return layers - len(config.mlp_only_layers), 3 * d * config.moe_intermediate_size
    if family.startswith("deepseek"):
        return layers - config.first_k_dense_replace, 3 * d * config.moe_intermediate_size
    return layers, 3 * d * config.intermediate_size  # Mixtral, OLMoE, Granite-MoE


def test_active_parameters_count_only_top_k_experts() -> None:
    model = workbench.load(build_tiny("mixtral"))
    experts = [layer.mlp.experts for layer in model.hf.model.layers]
    per_layer = sum(p.numel() for p in experts[0].parameters())
    total = sum(p.numel() for p in model.hf.parameters())
    config = model.config
    off = per_layer * len(experts) * (1 - config.num_experts_per_tok / config.num_local_experts)
    assert workbench.card(model).get("parameters_active_per_token") == total - off


@pytest.mark.parametrize(
    ("config", "kib"),
    [
        (tf.GPT2Config(), 36),  # GPT-2 small
        (tf.LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32), 512),  # Llama-2-7B
        (
            tf.LlamaConfig(
                hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8
            ),
            128,
        ),  # Llama-3-8B
        (tf.MistralConfig(), 128),  # Mistral-7B defaults
    ],
)
def test_published_kv_sizes_fp16(config: object, kib: int) -> None:
    """PROBES.md checks, on meta-device models of the published shapes (no weights allocated)."""
    with torch.device("meta"):
        hf = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    model = workbench.load(hf)
    assert kv_bytes_per_token(model) == kib * 1024


def test_minilm_card_real_weights() -> None:
    result = workbench.card(workbench.load("minilm"))
    assert result.get("layers") == 6
    assert result.get("heads") == 12
    assert result.get("d_model") == 384
    assert result.get(2) == "WordPiece"
    assert result.get(1)["embedding"] == 30522
    assert result.get("causal") is False
    assert result.get(3)["coverage"]["Latin"] == 1.0
