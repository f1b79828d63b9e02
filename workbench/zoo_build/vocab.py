"""Tokenizers trained on the zoo corpus: byte-level BPE at 1024 / 4096 / 16384 and Unigram at 4096.

The BPE and Unigram tokenizers at 4096 are a matched pair (same corpus, same vocabulary size, same special
tokens) for questions about tokenizer type at equal model size. Every tokenizer has ``<pad>`` (0),
``<s>`` (1), ``</s>`` (2) and ``<unk>`` (3), and prepends ``<s>`` when encoding.
"""

from __future__ import annotations

from collections import Counter

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")


def _untrained(kind: str) -> Tokenizer:
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


def covered_characters(texts: list[str], coverage: float, limit: int) -> set[str]:
    """The most frequent characters covering ``coverage`` of all occurrences (at most ``limit``).

    SentencePiece's ``character_coverage``: Unigram must hold every character it keeps as a piece, so rare
    characters (long tail of Han) are left out of training and become ``<unk>``.
    """
    counts = Counter(ch for text in texts for ch in text)
    total, kept, running = sum(counts.values()), set(), 0
    for ch, n in counts.most_common(limit):
        if running >= coverage * total:
            break
        kept.add(ch)
        running += n
    return kept


def train_tokenizer(
    kind: str, vocab_size: int, texts: list[str], character_coverage: float = 0.9995
) -> PreTrainedTokenizerFast:
    """Train a BPE (byte-level) or Unigram tokenizer and wrap it for transformers.

    Args:
        kind: ``"bpe"`` or ``"unigram"``.
        vocab_size: Vocabulary size including the special tokens.
        texts: Training documents.
        character_coverage: Unigram only: share of character occurrences kept as base pieces.
    """
    tok = _untrained(kind)
    if kind == "bpe":
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        keep = covered_characters(texts, character_coverage, vocab_size // 2)
        texts = ["".join(ch for ch in text if ch in keep) for text in texts]
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token="<unk>", show_progress=False
        )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
