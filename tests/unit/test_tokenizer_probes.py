"""Tokenizer probes on tokenizers built in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from probes.tokenizer import (
    dominant_script,
    fertility,
    length_inflation,
    load_texts,
    premium,
    running_text,
    tokenizer_table,
    vocabulary,
)
from workbench.errors import InputError

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


def test_parallel_sample_covers_six_languages_and_five_scripts() -> None:
    texts = load_texts()
    assert (
        len(texts) >= 6 and {len(v) for v in texts.values()} == {len(texts["en"])} and len(texts["en"]) >= 20
    )
    scripts = {dominant_script(v) for v in texts.values()}
    assert {"Latin", "Cyrillic", "Han", "Arabic", "Devanagari"} <= scripts


def test_running_text_drops_only_segmentation_spaces() -> None:
    assert running_text("我们 在 市场。 OK now") == "我们在市场。 OK now"
    assert running_text("the cat sat") == "the cat sat"


def test_user_files_txt_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "fr.txt").write_text("le chat\n\nle chien\n", encoding="utf-8")
    assert load_texts(tmp_path / "fr.txt") == {"fr": ["le chat", "le chien"]}
    rows = [{"en": "the cat", "fr": "le chat"}, {"language": "de", "text": "die Katze"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert load_texts(tmp_path / "p.jsonl") == {"en": ["the cat"], "fr": ["le chat"], "de": ["die Katze"]}
    (tmp_path / "bad.jsonl").write_text('{"en": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not JSON"):
        load_texts(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="no text file"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "x.csv").write_text("a", encoding="utf-8")
    with pytest.raises(InputError, match="unsupported"):
        load_texts(tmp_path / "x.csv")


def test_table_premium_is_token_ratio_on_parallel_text() -> None:
    tok = character_tokenizer()
    table = tokenizer_table(tok, {"en": ["the cat", "a fox"], "xx": ["the cat sat", "a fox"]}).set_index(
        "language"
    )
    assert table.loc["xx", "premium"] == pytest.approx(len("thecatsat" + "afox") / len("thecat" + "afox"))
    assert table.loc["en", "fertility"] == pytest.approx(len("thecatafox") / 4)
    unpaired = tokenizer_table(tok, {"en": ["the cat"], "xx": ["a", "b"]}).set_index("language")
    assert math.isnan(unpaired.loc["xx", "premium"])


def test_vocabulary_facts() -> None:
    facts = vocabulary(word_tokenizer())
    assert facts["vocab_size"] == 2 + len({w for t in TEXTS for w in t.split()})
    assert facts["algorithm"] == "WordLevel" and "unk <unk>" in facts["special_tokens"]


def test_parquet_and_domain_keyed_files(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["a b", "c"], "domain": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    assert load_texts(tmp_path / "t.parquet") == {"x": ["a b"], "y": ["c"]}
    pd.DataFrame({"prompt": ["a"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no 'text' column"):
        load_texts(tmp_path / "bad.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        load_texts(tmp_path / "broken.parquet")
    (tmp_path / "d.jsonl").write_text('{"domain": "code", "text": "x = 1"}\n', encoding="utf-8")
    assert load_texts(tmp_path / "d.jsonl") == {"code": ["x = 1"]}
