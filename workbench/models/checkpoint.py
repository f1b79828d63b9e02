"""What a checkpoint says beside its weights, read from its own files (a local directory or the hub cache):
its generation defaults (``generation_config.json``), its chat template (roles, default system prompt,
reasoning markers), its model card's YAML metadata (``README.md``) and its quantisation config.

Every value comes with where it was read (:class:`Fact`): a file, the tokenizer, the config, or why it
cannot be determined from the checkpoint. These are the card's read rows (issue 19); nothing here needs
the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import GenerationConfig

from workbench.models.gguf import tensor_types
from workbench.models.model import WorkbenchModel
from workbench.models.quantize import bits_of, group_size, quantised_modules

# generation_config fields per card factor (transformers 5 names); presence / frequency penalties are not
# GenerationConfig fields (they are serving-engine settings), so the card says so
FILTERS = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "stop_strings")
SELECTION = (
    "num_beams",
    "num_beam_groups",
    "penalty_alpha",
    "guidance_scale",
    "num_return_sequences",
    "watermarking_config",
)
SAMPLING = ("do_sample", "temperature", "top_p", "top_k", "min_p")
LENGTH = ("max_new_tokens", "max_length", "min_new_tokens", "min_length")
PENALTIES = ("repetition_penalty", "no_repeat_ngram_size", "encoder_repetition_penalty", "length_penalty")
TIME = ("max_time",)
TUNING_TAGS = ("sft", "dpo", "rlhf", "ppo", "orpo", "kto", "grpo", "simpo", "reward-model")
REASONING_MARKERS = ("<think>", "</think>", "enable_thinking", "reasoning_content")
ROLES = ("system", "user", "assistant", "tool")
_MARK = "\u27e6probe\u27e7"  # text no template holds, to find what a template adds around a message


@dataclass(frozen=True)
class Fact:
    """A value and where it was read: ``generation_config.json``, ``transformers default``,
    ``chat_template``, ``model_card``, ``config``, or ``not determinable from the checkpoint: why``."""

    value: Any
    source: str


def checkpoint_file(model: WorkbenchModel, name: str) -> Path | None:
    """A file of the checkpoint the model was loaded from (its directory, else the hub cache), or None."""
    where = getattr(model.hf, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if not where:
        return None
    path = Path(where)
    if path.is_dir():
        return path / name if (path / name).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(str(where), name)
    return Path(found) if isinstance(found, str) else None


def generation_facts(model: WorkbenchModel) -> dict[str, Fact]:
    """Every decoding field of the card: the value ``generate`` uses, from ``generation_config.json`` when
    the file sets it, else the default ``generate`` applies to a field left unset (None: no default)."""
    file = checkpoint_file(model, "generation_config.json")
    written = json.loads(file.read_text(encoding="utf-8")) if file else {}
    config = getattr(model.hf, "generation_config", None) or GenerationConfig()
    applied = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    facts = {}
    for name in (*FILTERS, *SELECTION, *SAMPLING, *LENGTH, *PENALTIES, *TIME):
        value = getattr(config, name, None)
        if hasattr(value, "to_dict"):  # a watermarking config object
            value = value.to_dict()
        if name in written:
            facts[name] = Fact(value, "generation_config.json")
        else:
            facts[name] = Fact(applied.get(name) if value is None else value, "transformers default")
    return facts


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False))
    except Exception:  # a template that refuses a role raises (often a jinja "raise_exception")
        return None


def _shared(a: str, b: str) -> int:
    """Length of the common prefix of two strings."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _default_system_prompt(tokenizer: Any) -> str | None:
    """The text a template puts in the system turn when no system message is given: one user message
    rendered alone and after a marked system message; what the alone rendering holds where the marked one
    has the system text (between their common prefix and suffix) is the default."""
    system = _MARK * 2
    alone = _render(tokenizer, [{"role": "user", "content": _MARK}])
    marked = _render(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": _MARK}])
    if alone is None or marked is None or system not in marked:
        return None
    prefix = _shared(alone, marked)
    tail = _shared(alone[prefix:][::-1], marked[prefix:][::-1])
    middle = alone[prefix : len(alone) - tail].strip()
    return middle or None


def chat_template_facts(model: WorkbenchModel) -> dict[str, Fact]:
    """Whether the tokenizer has a chat template, which roles it renders, the system prompt it injects
    when none is given, and the reasoning markers it holds."""
    tokenizer = model.tokenizer
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        why = "no tokenizer" if tokenizer is None else "the tokenizer has no chat template"
        missing = Fact(None, f"not determinable from the checkpoint: {why}")
        return {k: missing for k in ("chat_template", "roles", "default_system_prompt", "reasoning_markers")}
    text = template if isinstance(template, str) else json.dumps(template)
    roles = [r for r in ROLES if _render(tokenizer, [{"role": r, "content": _MARK}]) is not None]
    return {
        "chat_template": Fact(True, "chat_template"),
        "roles": Fact(roles, "chat_template (rendered one message per role)"),
        "default_system_prompt": Fact(_default_system_prompt(tokenizer), "chat_template (rendered)"),
        "reasoning_markers": Fact([m for m in REASONING_MARKERS if m in text], "chat_template"),
    }


def model_card_facts(model: WorkbenchModel) -> dict[str, Fact]:
    """The model card's YAML front matter (``README.md``): datasets, base model, license, tags and the
    tuning methods its tags name."""
    file = checkpoint_file(model, "README.md")
    if file is None:
        missing = Fact(None, "not determinable from the checkpoint: no README.md model card")
        return {k: missing for k in ("datasets", "base_model", "license", "tags", "tuning")}
    from huggingface_hub import metadata_load

    meta = metadata_load(file) or {}
    tags = [str(t) for t in meta.get("tags") or []]
    return {
        "datasets": Fact(meta.get("datasets"), "model_card"),
        "base_model": Fact(meta.get("base_model"), "model_card"),
        "license": Fact(meta.get("license"), "model_card"),
        "tags": Fact(tags, "model_card"),
        "tuning": Fact([t for t in tags if t.lower() in TUNING_TAGS], "model_card (tags)"),
    }


def quantization_facts(model: WorkbenchModel) -> Fact:
    """The config's ``quantization_config`` (method, bits, group size, modules left unquantised), or that
    the checkpoint is not quantised."""
    config = getattr(model.config, "quantization_config", None)
    if config is None:
        return Fact(None, "config: no quantization_config (weights as stored)")
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    name = getattr(model.config, "gguf_file", None)
    file = checkpoint_file(model, name) if name else None
    if file is not None:  # a GGUF file: dequantised to float32 on load; its stored types per tensor kind
        value = {"quant_method": "gguf", "file": name, "types": tensor_types(file)}
        return Fact(value, "GGUF file (tensor types), dequantised to float32 by transformers")
    method = raw.get("quant_method")
    value = {"quant_method": getattr(method, "value", method), "bits": bits_of(raw)}
    value |= {k: raw[k] for k in ("group_size", "modules_to_not_convert") if raw.get(k) is not None}
    if getattr(method, "value", method) == "bitsandbytes":  # the number format beside the bits
        value["format"] = raw.get("bnb_4bit_quant_type") if raw.get("load_in_4bit") else "LLM.int8"
    names = quantised_modules(model.hf)
    if names and (groups := group_size(model.hf)) is not None:
        value["group_size"] = groups  # what the stored scales say, over a config's default
    if not names:  # a config read alone (meta device): what it says
        return Fact({k: v for k, v in value.items() if v is not None}, "config (quantization_config)")
    blocks = f".{model.adapter.blocks}."
    value |= {
        "quantised_modules": len(names),
        "outside_blocks": sorted(n for n in names if blocks not in f".{n}"),
    }
    return Fact(value, "config (quantization_config); the loaded modules' weight types")
