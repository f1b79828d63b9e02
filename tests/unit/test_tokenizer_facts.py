"""Tokenizer facts on tokenizers built in the test (planted vocabularies)."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tokenizers import decoders as dec
from transformers import PreTrainedTokenizerFast

from workbench.script_sample import SCRIPT_SAMPLE
from workbench.tokenizer_facts import script_coverage, special_tokens, tokenizer_algorithm

CORPUS = ["the quick brown fox jumps over the lazy dog"] * 20
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def byte_level_bpe() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = dec.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return _wrap(tok)


def unigram() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        CORPUS, trainers.UnigramTrainer(vocab_size=60, special_tokens=SPECIALS, unk_token="<unk>")
    )
    return _wrap(tok)


def word_level_with_every_word() -> PreTrainedTokenizerFast:
    words = sorted({w for s in SCRIPT_SAMPLE.values() for w in s.split()})
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _wrap(tok)


def test_algorithm_is_read_from_the_tokenizer() -> None:
    assert tokenizer_algorithm(byte_level_bpe()) == "BPE (byte-level)"
    assert tokenizer_algorithm(unigram()) == "Unigram"
    assert tokenizer_algorithm(word_level_with_every_word()) == "WordLevel"


def test_coverage_extremes() -> None:
    full = script_coverage(word_level_with_every_word())
    assert set(full.values()) == {1.0}
    latin_only = script_coverage(unigram())  # trained on English only: other scripts map to <unk>
    assert latin_only["Cyrillic"] == 0.0 and latin_only["Han"] == 0.0
    # of the 13 words of "The quick brown fox jumps over the lazy dog near the river bank.", only "The"
    # (no capital T in the corpus) and "bank." (no '.') hold a character the corpus never showed
    assert latin_only["Latin"] == 11 / 13
    byte_level = script_coverage(byte_level_bpe())  # never unknown, but Cyrillic falls apart into bytes
    assert byte_level["Cyrillic"] == 0.0 and byte_level["Latin"] > 0.9
    assert byte_level["Latin"] == 1.0  # ASCII: every byte token is a whole character


def test_special_tokens_and_automatic_prefix() -> None:
    facts = special_tokens(byte_level_bpe())
    assert facts["bos"] == "<s> (1)" and facts["pad"] == "<pad> (3)"
    assert facts["adds_prefix"] == "False"
