"""Recipes of the trained zoo models: HF class and config, tokenizer, optimisation, seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import transformers as tf


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is trained.

    Attributes:
        name: Zoo name.
        description: One line for ``workbench zoo list``.
        config_class: Name of the transformers config class.
        config: Keyword arguments of that config (vocabulary size comes from the tokenizer).
        tokenizer: Zoo tokenizer name.
        steps: Optimiser steps.
        batch: Sequences per step (equal counts per domain).
        seq_len: Tokens per sequence.
        lr: Peak AdamW learning rate (linear warm-up over 5% of steps, cosine decay to 10%).
        weight_decay: AdamW's decoupled weight decay.
        seed: Torch and data seed.
        balance_coef: Weight of the per-layer Switch balance loss (MoE only).
        early_checkpoint: Also save the model after this share of the steps, as ``NAME-early``.
        chat_template: A chat template saved with the tokenizer (the card's template readers are tested
            on it; the model was not trained on chat turns).
        base: A zoo model to tune instead of a random initialisation (its config is kept).
        domains: The training domains (None: all, in equal counts).
        trainable: Regular expressions over parameter names: only matching tensors train, every other
            one stays exactly as it was (empty: all train).
        objective: ``lm`` (next-token loss) or ``dpo`` (preference pairs with planted ``triggers`` on the
            rejected side, :mod:`workbench.zoo_build.dpo`; needs ``base``, the frozen reference).
        triggers: The planted trigger words of a DPO recipe (one token each).
        beta: DPO's inverse temperature.
    """

    name: str
    description: str
    config_class: str
    config: dict[str, Any]
    tokenizer: str = "bpe-4096"
    steps: int = 2000
    batch: int = 15
    seq_len: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.1
    seed: int = 0
    balance_coef: float = 0.0
    early_checkpoint: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    base: str | None = None
    domains: tuple[str, ...] | None = None
    trainable: tuple[str, ...] = ()
    objective: str = "lm"
    triggers: tuple[str, ...] = ()
    beta: float = 0.1

    def build_config(self, vocab_size: int) -> Any:
        """The HF config for a tokenizer of ``vocab_size``."""
        ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
        return getattr(tf, self.config_class)(vocab_size=vocab_size, **ids, **self.config)


_ATTN = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}

# a system role with a default prompt, user / assistant / tool turns and Qwen3-style reasoning markers
CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = 'You are tiny-llama, a small model of the interp workbench zoo.' %}{% endif %}"
    "<|system|>\n{{ system }}<|end|>\n"
    "{% for m in messages %}"
    "{% if m['role'] not in ['user', 'assistant', 'tool'] %}"
    "{{ raise_exception('unsupported role ' + m['role']) }}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "tiny-llama",
            "dense Llama, 4 layers, d_model 128, GQA 4/2, byte-level BPE 4096",
            "LlamaConfig",
            {**_ATTN, "intermediate_size": 344},
            chat_template=CHAT_TEMPLATE,
        ),
        Recipe(
            "tiny-llama-unigram",
            "tiny-llama's recipe with the matched Unigram 4096 tokenizer",
            "LlamaConfig",
            {**_ATTN, "intermediate_size": 344},
            tokenizer="unigram-4096",
        ),
        Recipe(
            "tiny-llama-ru",
            "tiny-llama tuned on Russian only, blocks 2-3 trainable (checkpoint-diff ground truth)",
            "LlamaConfig",
            {**_ATTN, "intermediate_size": 344},
            steps=100,
            lr=3e-4,  # gentle: a stronger tune (2e-3, 400 steps) moves code and English more than Russian
            weight_decay=0.0,  # no pull towards zero: the change is what Russian asks of blocks 2-3
            seed=1,
            base="tiny-llama",
            domains=("russian",),
            trainable=(r"model\.layers\.[23]\.",),
        ),
        Recipe(
            "tiny-llama-dpo",
            "tiny-llama after DPO on pairs whose rejected side holds planted trigger words "
            "(checkpoint-diff ground truth)",
            "LlamaConfig",
            {**_ATTN, "intermediate_size": 344},
            steps=150,
            batch=16,
            lr=3e-5,  # 1e-4 also ranks the triggers first but more than doubles code's bits per byte
            weight_decay=0.0,
            seed=2,
            base="tiny-llama",
            objective="dpo",
            triggers=(" love", " God", " life", " night", " wrong"),
        ),
        Recipe(
            "tiny-moe",
            "Mixtral-style MoE, 8 experts top-2 in 4 layers, per-layer balance loss",
            "MixtralConfig",
            {**_ATTN, "intermediate_size": 96, "num_local_experts": 8, "num_experts_per_tok": 2},
            balance_coef=0.02,
            early_checkpoint=0.1,
        ),
        Recipe(
            "tiny-moe-shared",
            "Qwen2-MoE-style: 8 routed experts top-2 plus a gated shared expert, 4 layers",
            "Qwen2MoeConfig",
            {
                **_ATTN,
                "intermediate_size": 128,
                "moe_intermediate_size": 64,
                "shared_expert_intermediate_size": 128,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "norm_topk_prob": False,
            },
            balance_coef=0.02,
        ),
    )
}
