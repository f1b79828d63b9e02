"""Facts about a tokenizer read from the tokenizer itself: algorithm, special tokens, script coverage."""

from __future__ import annotations

import json
from typing import Any

from workbench.script_sample import SCRIPT_SAMPLE


def _walk_types(node: Any) -> list[str]:
    """All ``type`` values in a serialised tokenizer component (Sequence nodes included)."""
    if isinstance(node, dict):
        found = [node["type"]] if "type" in node else []
        for value in node.values():
            found.extend(_walk_types(value))
        return found
    if isinstance(node, list):
        return [t for item in node for t in _walk_types(item)]
    return []


def tokenizer_algorithm(tokenizer: Any) -> str:
    """``BPE``, ``Unigram``, ``WordPiece`` or ``WordLevel``, with ``byte-level`` / ``byte fallback`` marks.

    Read from the serialised ``tokenizers`` model of a fast tokenizer; slow tokenizers report their class.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return type(tokenizer).__name__
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    name = model.get("type", "?")
    marks = []
    if "ByteLevel" in _walk_types(spec.get("pre_tokenizer")) + _walk_types(spec.get("decoder")):
        marks.append("byte-level")
    if model.get("byte_fallback"):
        marks.append("byte fallback")
    return f"{name} ({', '.join(marks)})" if marks else name


def special_tokens(tokenizer: Any) -> dict[str, str]:
    """BOS/EOS/pad/unk tokens with ids, and whether encoding adds BOS or EOS by itself."""
    facts: dict[str, str] = {}
    for role in ("bos", "eos", "pad", "unk", "cls", "sep"):
        token = getattr(tokenizer, f"{role}_token", None)
        if token is not None:
            facts[role] = f"{token!s} ({getattr(tokenizer, f'{role}_token_id', None)})"
    ids = tokenizer("a")["input_ids"]
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    last = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    facts["adds_prefix"] = str(bool(ids) and first is not None and ids[0] == first)
    facts["adds_suffix"] = str(bool(ids) and last is not None and ids[-1] == last)
    return facts


def word_is_covered(tokenizer: Any, word: str) -> bool:
    """No unknown token, and every token decodes on its own to whole characters (no byte fragments)."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        return False
    return all("\ufffd" not in tokenizer.decode([i]) for i in ids)


def script_coverage(tokenizer: Any) -> dict[str, float]:
    """Per script of :data:`SCRIPT_SAMPLE`, the share of words encoded without unknown or byte tokens."""
    coverage = {}
    for script, sentence in SCRIPT_SAMPLE.items():
        words = sentence.split()
        coverage[script] = sum(word_is_covered(tokenizer, w) for w in words) / len(words)
    return coverage
