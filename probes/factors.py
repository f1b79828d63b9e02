"""The thirty thinking-parameter factors of a model, one row each, numbered and grouped in six classes
(issue 19): its value and where the value was read, or why the checkpoint cannot tell.

Read rows come from the config and ``model.cfg``, the tokenizer, ``generation_config.json``, the chat
template and the model card (:mod:`workbench.models.checkpoint`); measured rows name the registered probe
that measures them and stay unmeasured (``source`` says so) until a measurement fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.models.checkpoint import (
    FILTERS,
    LENGTH,
    PENALTIES,
    SAMPLING,
    SELECTION,
    TIME,
    Fact,
    chat_template_facts,
    generation_facts,
    model_card_facts,
)
from workbench.models.model import WorkbenchModel
from workbench.tokenizer_facts import script_coverage, special_tokens, tokenizer_algorithm
from workbench.zoo import zoo

CLASSES = ("tokenizer", "filters", "training", "architecture", "decoding", "introspection")
EXTRA_HEADS = ("score", "v_head", "value_head", "classifier", "reward_head", "qa_outputs")
CROSS_MODAL = ("vision_config", "audio_config", "speech_config", "image_config", "vision_tower")
TRAINING_ONLY = ("gradient_checkpointing", "attention_dropout", "hidden_dropout", "dropout", "use_cache")
STREAMED = "streamed per generated token: sink mass, attention entropy, routing entropy, residual norm"


@dataclass(frozen=True)
class Factor:
    """One row of the card: ``number`` (1-30), its ``cls`` (one of :data:`CLASSES`), the factor's
    ``name``, its ``value`` and its ``source``."""

    number: int
    cls: str
    name: str
    value: Any
    source: str


def _measured(probe: str) -> Fact:
    return Fact(None, f"measured: {probe} (not run; `workbench card MODEL --measure` fills it)")


def _no_tokenizer() -> Fact:
    return Fact(None, "not determinable from the checkpoint: no tokenizer")


def _tokenizer_rows(model: WorkbenchModel, template: dict[str, Fact]) -> list[Fact]:
    tokenizer = model.tokenizer
    if tokenizer is None:
        return [Fact(model.cfg.d_vocab, "config"), _no_tokenizer(), _no_tokenizer(), _no_tokenizer()]
    markers = special_tokens(tokenizer)
    if template["chat_template"].value:
        markers["chat_turns"] = "chat template present"
    return [
        Fact({"embedding": model.cfg.d_vocab, "tokenizer": len(tokenizer)}, "config, tokenizer"),
        Fact(tokenizer_algorithm(tokenizer), "tokenizer"),
        Fact(
            {s: round(v, 3) for s, v in script_coverage(tokenizer).items()},
            "tokenizer (built-in script sample)",
        ),
        Fact(markers, "tokenizer"),
    ]


def _pick(facts: dict[str, Fact], names: tuple[str, ...]) -> Fact:
    """Several generation fields as one row: the values, and the file when it set any of them."""
    chosen = {n: facts[n].value for n in names}
    written = any(facts[n].source == "generation_config.json" for n in names)
    return Fact(chosen, "generation_config.json" if written else "transformers default")


def _extra_heads(model: WorkbenchModel) -> Fact:
    names = {n.split(".")[-1] for n, _ in model.hf.named_modules()}
    found = sorted(h for h in EXTRA_HEADS if h in names)
    return Fact(found or "none beside the LM head", "weights (module names)")


def _tuning(card: dict[str, Fact], template: dict[str, Fact]) -> Fact:
    if card["tags"].value is None and not template["chat_template"].value:
        return Fact(None, "not determinable from the checkpoint: no model card and no chat template")
    value = {
        "base_model": card["base_model"].value,
        "tuning_tags": card["tuning"].value,
        "chat_template": bool(template["chat_template"].value),
    }
    return Fact(value, "model_card, chat_template")


def _checkpoints(model: WorkbenchModel) -> Fact:
    early = f"{model.source}-early"
    if early in zoo():
        return Fact([early], "zoo registry")
    return Fact(None, "not determinable from the checkpoint: revisions live on the hub, not in the files")


def _kv(model: WorkbenchModel) -> Fact:
    cfg = model.cfg
    kinds = {k: cfg.attention_kinds.count(k) for k in dict.fromkeys(cfg.attention_kinds)}
    sinks = "learned per-head sink logit" if model.adapter.learned_sinks else "emergent only"
    value = {"sinks": sinks, "layout": cfg.kv_layout, "elements_per_token": cfg.kv_elements_per_token}
    return Fact({**value, "layers": kinds, "sliding_window": cfg.sliding_window}, "config, adapter")


def _latent(model: WorkbenchModel) -> Fact:
    cfg = model.cfg
    value = {
        "shared_experts": cfg.n_shared_experts,
        "mla": cfg.kv_layout == "MLA",
        "dense_layers": cfg.n_dense_layers,
    }
    return Fact(value, "config, adapter")


def _cross_modal(model: WorkbenchModel) -> Fact:
    config = model.config
    parts = [name for name in CROSS_MODAL if getattr(config, name, None) is not None]
    if getattr(config, "add_cross_attention", False) or getattr(config, "is_encoder_decoder", False):
        parts.append("cross-attention layers")
    return Fact(parts or "none", "config")


def _training_only(model: WorkbenchModel) -> Fact:
    config = model.config
    found = {n: getattr(config, n) for n in TRAINING_ONLY if getattr(config, n, None) is not None}
    return Fact({**found, "effect": "none at inference (eval mode, no gradients)"}, "config")


def _roles(template: dict[str, Fact], role: str) -> Fact:
    roles = template["roles"]
    if roles.value is None:
        return roles
    return Fact(role in roles.value, roles.source)


def _multiple_roles(template: dict[str, Fact]) -> Fact:
    roles = template["roles"]
    if roles.value is None:
        return roles
    return Fact([r for r in roles.value if r in ("assistant", "tool")], roles.source)


def factors(model: WorkbenchModel) -> list[Factor]:
    """The thirty rows, numbered as in issue 19; measured rows are left to the measuring probes."""
    generation = generation_facts(model)
    template = chat_template_facts(model)
    card = model_card_facts(model)
    router = model.adapter.router_convention
    rows: list[tuple[str, str, Fact]] = [
        ("filters", "trigger-word blockers", _pick(generation, FILTERS)),
        ("filters", "extra output heads", _extra_heads(model)),
        ("filters", "pre-output selection", _pick(generation, SELECTION)),
        ("filters", "instruction or preference tuning", _tuning(card, template)),
        ("filters", "default system prompt", template["default_system_prompt"]),
        (
            "training",
            "pre-training data",
            card["datasets"] if card["datasets"].value else _measured("loss_per_byte"),
        ),
        ("training", "data depth", _measured("loss_per_byte (by domain)")),
        ("training", "tuning method", card["tuning"]),
        ("training", "specialisation", _measured("loss_per_byte spread; moe_specialisation")),
        (
            "training",
            "weights tuning changed",
            Fact(None, "needs a base checkpoint: `--base` (checkpoint diff)"),
        ),
        ("training", "training checkpoints available", _checkpoints(model)),
        (
            "architecture",
            "MoE router type",
            Fact(router.scoring if router else "dense (no router)", "adapter"),
        ),
        ("architecture", "attention sinks and KV cache", _kv(model)),
        ("architecture", "latent routing", _latent(model)),
        ("architecture", "cross-modal parts", _cross_modal(model)),
        ("architecture", "training-only settings", _training_only(model)),
        ("decoding", "temperature, top-p, top-k, min-p", _pick(generation, SAMPLING)),
        ("decoding", "max_new_tokens, min_length", _pick(generation, LENGTH)),
        ("decoding", "repetition penalties", _pick(generation, PENALTIES)),
        ("decoding", "max_time", _pick(generation, TIME)),
        ("decoding", "batch effects", _measured("batch_invariance")),
        ("introspection", "access to its own internals", Fact(STREAMED, "the workbench's live diagnostics")),
        ("introspection", "persona support (system role)", _roles(template, "system")),
        ("introspection", "reasoning markers", template["reasoning_markers"]),
        ("introspection", "multiple roles", _multiple_roles(template)),
        ("introspection", "semantic compression depth", _measured("compression, cka")),
    ]
    tokenizer = _tokenizer_rows(model, template)
    names = ("vocabulary size", "algorithm", "script support", "segment markers")
    table = [("tokenizer", n, f) for n, f in zip(names, tokenizer, strict=True)] + rows
    return [Factor(i, cls, name, fact.value, fact.source) for i, (cls, name, fact) in enumerate(table, 1)]
