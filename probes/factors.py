"""The thirty thinking-parameter factors of a model, one row each, numbered and grouped in six classes
(issue 19): its value and where the value was read, or why the checkpoint cannot tell.

Read rows come from the config and ``model.cfg``, the tokenizer, ``generation_config.json``, the chat
template and the model card (:mod:`workbench.models.checkpoint`); measured rows name the registered probe
that measures them and stay unmeasured (``source`` says so) until a measurement fills them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from probes.tokenizer import load_texts, tokenizer_table
from workbench.models.checkpoint import (
    FILTERS,
    LENGTH,
    PENALTIES,
    SAMPLING,
    SELECTION,
    TIME,
    Fact,
    chat_template_facts,
    checkpoint_file,
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


def kv_bytes_per_token(model: WorkbenchModel, dtype: torch.dtype | None = None) -> int:
    """Architectural KV-cache bytes per token: ``2 x layers x kv_heads x head_dim x bytes`` (MLA: latent)."""
    dtype = dtype or next(model.hf.parameters()).dtype
    return model.cfg.kv_elements_per_token * torch.tensor([], dtype=dtype).element_size()


def router_rule(model: WorkbenchModel) -> str:
    """The router's selection rule in words (scoring, where top-k is taken, renormalisation, bias)."""
    conv = model.adapter.router_convention
    if conv is None:
        return "dense (no router)"
    parts = [f"{conv.scoring} scoring", f"top-k on {conv.topk_on}"]
    parts.append("renormalised" if conv.renormalises(model.config) else "not renormalised")
    if conv.correction_bias:
        parts.append("selection bias")
    if conv.group_limited:
        parts.append("group-limited")
    if conv.scaling_factor_attr:
        parts.append(f"x {getattr(model.config, conv.scaling_factor_attr)}")
    if conv.router_bias:
        parts.append("router bias")
    if conv.discovered:
        parts.append("read off the router's output")
    return ", ".join(parts)


def sink_mechanism(model: WorkbenchModel) -> str:
    """Learned sink logits, the zoo's planted sink heads, or emergent sinks only."""
    if model.adapter.learned_sinks:
        return "learned per-head sink logit"
    planted = getattr(model.config, "planted_sink_heads", None)  # zoo ground truth (planted-sink)
    if planted:
        return "planted heads " + ", ".join(f"L{layer}H{head}" for layer, head in planted)
    return "emergent only"


def _measured(probe: str) -> Fact:
    return Fact(None, f"measured: {probe} (not run: `workbench card MODEL --measure` fills it)")


def _no_tokenizer() -> Fact:
    return Fact(None, "not determinable from the checkpoint: no tokenizer")


def _tokenizer_rows(model: WorkbenchModel, template: dict[str, Fact]) -> list[Fact]:
    tokenizer = model.tokenizer
    if tokenizer is None:
        embedding = Fact({"embedding": model.cfg.d_vocab}, "config (no tokenizer)")
        return [embedding, _no_tokenizer(), _no_tokenizer(), _no_tokenizer()]
    markers = special_tokens(tokenizer)
    if template["chat_template"].value:
        markers["chat_turns"] = "chat template present"
    parallel = tokenizer_table(tokenizer, load_texts(), "en")
    scripts = {
        "coverage": {s: round(v, 3) for s, v in script_coverage(tokenizer).items()},
        "premium": {f"{r.language} ({r.script})": round(r.premium, 3) for r in parallel.itertuples()},
    }
    return [
        Fact({"embedding": model.cfg.d_vocab, "tokenizer": len(tokenizer)}, "config, tokenizer"),
        Fact(tokenizer_algorithm(tokenizer), "tokenizer"),
        Fact(scripts, "tokenizer (built-in script sample; premium on the parallel sample, vs en)"),
        Fact(markers, "tokenizer"),
    ]


def _pick(facts: dict[str, Fact] | None, names: tuple[str, ...]) -> Fact:
    """Several generation fields as one row: the values, and the file when it set any of them (None: the
    model does not decode)."""
    if facts is None:
        return Fact(None, "not applicable: no language-model head, so nothing is decoded")
    chosen = {n: facts[n].value for n in names}
    written = sum(facts[n].source == "generation_config.json" for n in names)
    if not written:
        return Fact(chosen, "transformers default")
    rest = "" if written == len(names) else "; the rest transformers default"
    return Fact(chosen, "generation_config.json" + rest)


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


def _pretraining(card: dict[str, Fact]) -> Fact:
    """The model card's datasets (read), and the loss per byte the held-out sample measures."""
    pending = _measured("loss_per_byte").source
    if card["datasets"].value:
        return Fact({"datasets": card["datasets"].value}, f"model_card; {pending}")
    return Fact(None, pending)


def _checkpoints(model: WorkbenchModel) -> Fact:
    early = f"{model.source}-early"
    if early in zoo():
        return Fact([early], "zoo registry")
    return Fact(None, "not determinable from the checkpoint: revisions live on the hub, not in the files")


def _kv(model: WorkbenchModel) -> Fact:
    cfg = model.cfg
    kinds = {k: cfg.attention_kinds.count(k) for k in dict.fromkeys(cfg.attention_kinds)}
    value = {
        "sinks": sink_mechanism(model),
        "layout": cfg.kv_layout,
        "kv_bytes_per_token": kv_bytes_per_token(model),
        "layers": kinds,
        "sliding_window": cfg.sliding_window,
    }
    if not cfg.causal:
        value["note"] = "encoder: no cache at inference; the bytes are what a cache would hold"
    return Fact(value, "config, adapter")


def _router(model: WorkbenchModel) -> Fact:
    cfg = model.cfg
    if not cfg.is_moe and model.adapter.router_convention is None:
        return Fact({"router": "dense (no router)"}, "adapter")
    return Fact(
        {"router": router_rule(model), "experts": cfg.n_experts, "top_k": cfg.top_k}, "config, adapter"
    )


def _latent(model: WorkbenchModel) -> Fact:
    cfg = model.cfg
    value = {
        "shared_experts": cfg.n_shared_experts,
        "mla": cfg.kv_layout == "MLA",
        "dense_layers": cfg.n_dense_layers,
    }
    return Fact(value, "config, adapter")


def _cross_modal(model: WorkbenchModel) -> Fact:
    """The checkpoint's vision / audio towers (by their model type; read off its config.json too, since a
    text-only class drops them from the loaded config) and the layers that cross-attend to them."""
    config = model.config
    text = getattr(config, "text_config", None) or config
    file = checkpoint_file(model, "config.json")
    saved = json.loads(file.read_text(encoding="utf-8")) if file else {}
    parts: dict[str, Any] = {}
    for name in CROSS_MODAL:
        tower = getattr(config, name, None) or saved.get(name)
        if isinstance(tower, dict):
            parts[name] = tower.get("model_type", "present")
        elif tower is not None:
            parts[name] = getattr(tower, "model_type", None) or type(tower).__name__
    layers = getattr(text, "cross_attention_layers", None)
    if layers:
        parts["cross_attention_layers"] = list(layers)
    elif getattr(config, "add_cross_attention", False) or getattr(config, "is_encoder_decoder", False):
        parts["cross_attention_layers"] = "every layer"
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
    generation = generation_facts(model) if model.cfg.causal_lm else None
    template = chat_template_facts(model)
    card = model_card_facts(model)
    rows: list[tuple[str, str, Fact]] = [
        ("filters", "trigger-word blockers", _pick(generation, FILTERS)),
        ("filters", "extra output heads", _extra_heads(model)),
        ("filters", "pre-output selection", _pick(generation, SELECTION)),
        ("filters", "instruction or preference tuning", _tuning(card, template)),
        ("filters", "default system prompt", template["default_system_prompt"]),
        ("training", "pre-training data", _pretraining(card)),
        ("training", "data depth", _measured("loss_per_byte (by domain)")),
        ("training", "tuning method", card["tuning"]),
        ("training", "specialisation", _measured("loss_per_byte spread, moe_specialisation")),
        (
            "training",
            "weights tuning changed",
            Fact(None, "needs a base checkpoint: `--base` (checkpoint diff)"),
        ),
        ("training", "training checkpoints available", _checkpoints(model)),
        (
            "architecture",
            "MoE router type",
            _router(model),
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
