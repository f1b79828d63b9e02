"""``model.cfg`` against each family's own config fields, read here by hand."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.models.tiny import build_tiny


def _by_hand(config: object, *names: str) -> int:
    """The first of ``names`` the config sets (families spell sizes differently)."""
    return next(int(v) for n in names if (v := getattr(config, n, None)) is not None)


def test_cfg_states_the_configs_sizes(tiny: workbench.WorkbenchModel) -> None:
    config, cfg = tiny.config, tiny.cfg
    assert cfg.n_layers == _by_hand(config, "num_hidden_layers", "n_layer") == len(cfg.attention_kinds)
    assert cfg.d_model == _by_hand(config, "hidden_size", "n_embd")
    assert cfg.n_heads == _by_hand(config, "num_attention_heads", "n_head")
    assert cfg.d_vocab == config.vocab_size
    assert cfg.lm_head == (tiny.hf.get_output_embeddings() is not None)
    assert cfg.causal_lm == (cfg.causal and cfg.lm_head)
    with pytest.raises(AttributeError):  # frozen: computed once, read everywhere
        cfg.n_layers = 1  # type: ignore[misc]
    assert tiny.cfg is cfg


def test_cfg_reads_layer_kinds_experts_and_dense_layers() -> None:
    built = build_tiny("gpt_oss")  # layer_types: sliding, full, sliding
    gpt_oss = workbench.load(built).cfg
    assert gpt_oss.attention_kinds == ("sliding", "full", "sliding")
    assert (gpt_oss.n_experts, gpt_oss.top_k) == (
        built.config.num_local_experts,
        built.config.num_experts_per_tok,
    )
    deepseek = build_tiny("deepseek_v3")
    cfg = workbench.load(deepseek).cfg
    dense = deepseek.config.first_k_dense_replace
    assert cfg.moe_layers == tuple(range(dense, deepseek.config.num_hidden_layers)) and dense > 0
    assert cfg.n_shared_experts == deepseek.config.n_shared_experts
    assert dict(cfg.moe_notes)["routed_scaling_factor"] == deepseek.config.routed_scaling_factor
    llama = workbench.load(build_tiny("llama")).cfg
    assert not llama.is_moe and llama.moe_layers == () and set(llama.attention_kinds) == {"full"}
    assert llama.kv_layout == "GQA" and llama.n_kv_heads < llama.n_heads


def test_cfg_of_an_encoder_and_of_a_meta_model() -> None:
    minilm = workbench.load("minilm").cfg
    assert not minilm.causal and not minilm.causal_lm and minilm.n_ctx == 512
    with torch.device("meta"):
        empty = build_tiny("mixtral")
    meta = workbench.load(empty, device="meta").cfg
    assert meta == workbench.load(build_tiny("mixtral")).cfg
