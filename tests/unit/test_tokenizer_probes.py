"""Tokenizer probes on tokenizers built in the test."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from probes.tokenizer import fertility, length_inflation, premium

TEXTS = ["the cat sat on the mat", "a quick brown fox jumps", "tokenizers split words into pieces"]
SPECIALS = ["<unk>", "<pad>"]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


def character_tokenizer() -> PreTrainedTokenizerFast:
    chars = sorted({c for t in TEXTS for c in t if not c.isspace()})
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split("", "isolated")]
    )
    return _wrap(tok)


def word_tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for t in TEXTS for w in t.split()})
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _wrap(tok)


def test_character_tokenizer_fertility_is_mean_word_length() -> None:
    words = [w for t in TEXTS for w in t.split()]
    stats = fertility(character_tokenizer(), TEXTS)
    assert stats["fertility"] == pytest.approx(sum(map(len, words)) / len(words))
    assert stats["unknown_share"] == 0


def test_whole_word_vocabulary_gives_fertility_one() -> None:
    stats = fertility(word_tokenizer(), TEXTS)
    assert stats["fertility"] == 1.0 and stats["continued_share"] == 0.0
    unknown = fertility(word_tokenizer(), ["the zebra sat"])
    assert unknown["unknown_share"] == pytest.approx(1 / 3)


def test_premium_and_inflation() -> None:
    tok = character_tokenizer()
    assert premium(tok, TEXTS, TEXTS) == 1.0
    assert length_inflation(tok, ["abc def"]) == pytest.approx(6 / 7)
