"""Tokenizer probes: fertility, continued-word share, unknown share, byte fallback, premium.

Definitions follow ``shared/PROBES.md`` ("Tokenizer"). Words are whitespace-separated and each is
tokenized on its own, without special tokens (Rust et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.tokenizer_facts import word_is_covered


def _pieces(tokenizer: Any, word: str) -> list[int]:
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def fertility(tokenizer: Any, texts: Sequence[str]) -> dict[str, float]:
    """Subword statistics over the words of ``texts`` (Rust et al. 2021, "How Good is Your Tokenizer?").

    - ``fertility``: mean number of tokens per word (a character tokenizer gives the mean word length; a
      vocabulary holding every word gives 1);
    - ``continued_share``: share of words split into two or more tokens;
    - ``unknown_share``: share of words containing the unknown token;
    - ``byte_fallback_share``: share of words with a token that does not decode to whole characters on its
      own (byte fallback or byte-level fragments).
    """
    words = [w for text in texts for w in text.split()]
    if not words:
        raise ValueError("no words in the given texts")
    lengths = [len(_pieces(tokenizer, w)) for w in words]
    unk = tokenizer.unk_token_id
    unknown = [unk is not None and unk in _pieces(tokenizer, w) for w in words]
    fragments = [not word_is_covered(tokenizer, w) and not u for w, u in zip(words, unknown, strict=True)]
    return {
        "fertility": sum(lengths) / len(words),
        "continued_share": sum(n >= 2 for n in lengths) / len(words),
        "unknown_share": sum(unknown) / len(words),
        "byte_fallback_share": sum(fragments) / len(words),
        "words": float(len(words)),
    }


def sequence_length(tokenizer: Any, texts: Sequence[str]) -> int:
    """Total tokens for ``texts`` encoded whole (no special tokens)."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def premium(tokenizer: Any, texts: Sequence[str], english: Sequence[str]) -> float:
    """Tokenization premium (Petrov et al. 2023): tokens for a text in a language over tokens for the same
    text in English (parallel sentences); 1 is parity."""
    return sequence_length(tokenizer, texts) / sequence_length(tokenizer, english)


def length_inflation(tokenizer: Any, texts: Sequence[str]) -> float:
    """Tokens per UTF-8 byte (lower is more compression); comparable across tokenizers of one text."""
    return sequence_length(tokenizer, texts) / sum(len(t.encode()) for t in texts)
