"""Tokenizer probes: fertility, continued-word share, unknown share, byte fallback, premium, loss per byte.

Definitions follow ``shared/PROBES.md`` ("Tokenizer"). Words are whitespace-separated and each is
tokenized on its own, without special tokens (Rust et al. 2021); scripts written without spaces (Chinese)
need word-segmented text for fertility, as in the built-in parallel sample (``probes/data``: 24 sentences
in English, Spanish, German, Russian, Chinese, Arabic and Hindi, written for this project), and are scored
with the segmentation spaces removed for token counts and the premium.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from probes.figures import bars_by_group
from probes.params import param
from probes.registry import Context, Needs, Probe
from workbench.errors import InputError
from workbench.models.model import WorkbenchModel
from workbench.tokenizer_facts import special_tokens, tokenizer_algorithm, word_is_covered
from workbench.zoo import TOKENIZERS, tokenizer_dir


def vocabulary(tokenizer: Any) -> dict[str, Any]:
    """Vocabulary size (added tokens included), algorithm read from the tokenizer (BPE, byte-level BPE,
    Unigram, WordPiece ...) and the special tokens by role (``"bos <s> (1), eos </s> (2), ..."``, with
    whether encoding adds them before / after the text)."""
    specials = ", ".join(f"{role} {value}" for role, value in special_tokens(tokenizer).items())
    return {
        "vocab_size": len(tokenizer),
        "algorithm": tokenizer_algorithm(tokenizer),
        "special_tokens": specials,
    }


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


# ---------------------------------------------------------------- texts: parallel sample and user files
PARALLEL_SAMPLE = Path(__file__).resolve().parent / "data" / "parallel_sample.jsonl"
UNSPACED_SCRIPTS = {"Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar"}
_SCRIPT_NAMES = {"CJK": "Han"}


def script_of(character: str) -> str | None:
    """Unicode script of a letter (``LATIN SMALL LETTER A`` -> ``Latin``, CJK ideographs -> ``Han``);
    None for digits, punctuation and spaces."""
    if not character.isalpha():
        return None
    first = unicodedata.name(character, "UNKNOWN").split()[0]
    return _SCRIPT_NAMES.get(first, first.title())


def dominant_script(texts: Sequence[str]) -> str:
    """The script of most letters in ``texts`` (``"none"`` when they hold no letters)."""
    counts = Counter(s for text in texts for s in map(script_of, text) if s is not None)
    return counts.most_common(1)[0][0] if counts else "none"


def running_text(text: str) -> str:
    """``text`` as it is written: the word-segmentation spaces of an unspaced script (Chinese in the
    parallel sample is stored segmented, so that fertility has words) are removed."""
    return re.sub(r"(?<=\S) (?=\S)", lambda m: _join(text, m.start()), text)


def _join(text: str, at: int) -> str:
    both = {script_of(text[at - 1]), script_of(text[at + 1])} - {None}
    return "" if both and both <= UNSPACED_SCRIPTS else " "


GROUP_KEYS = ("language", "domain", "group")


def load_texts(path: str | Path | None = None, language: str | None = None) -> dict[str, list[str]]:
    """Texts by language (or domain, or any group): the built-in parallel sample (``path=None``) or a file.

    Formats: ``.txt``, one text per non-empty line, group = ``language`` or the file's stem; ``.jsonl``,
    one object per line, either parallel (``{"en": "...", "fr": "..."}``, every value a string) or
    ``{"language": "fr", "text": "..."}`` (``domain`` or ``group`` may stand for ``language``); ``.parquet``,
    a ``text`` column and optionally one of those group columns.

    Raises:
        InputError: A missing, empty or malformed file (one line naming the file and the line).
    """
    path = Path(path) if path is not None else PARALLEL_SAMPLE
    if not path.is_file():
        raise InputError(f"no text file at {path}")
    if path.suffix == ".parquet":
        return _parquet_texts(path, language)
    lines = [
        (n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
    ]
    texts: dict[str, list[str]] = {}
    if path.suffix == ".txt":
        texts[language or path.stem] = [line.strip() for _, line in lines]
    elif path.suffix == ".jsonl":
        for n, line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{n}: not JSON ({error.msg})") from None
            if not isinstance(row, dict) or not all(isinstance(v, str) for v in row.values()):
                raise InputError(f"{path}:{n}: expected an object of strings")
            group = [k for k in GROUP_KEYS if k in row]
            if (group or "text" in row) and (len(group) != 1 or set(row) != {group[0], "text"}):
                raise InputError(
                    f"{path}:{n}: expected {{text, and one of {', '.join(GROUP_KEYS)}}} or a parallel "
                    f"object, got keys {', '.join(row)}"
                )
            pairs = [(row[group[0]], row["text"])] if group else row.items()
            for lang, text in pairs:
                texts.setdefault(lang, []).append(text)
    else:
        raise InputError(f"{path}: unsupported text file (use .txt, .jsonl or .parquet)")
    return _checked(texts, path)


def _parquet_texts(path: Path, group: str | None) -> dict[str, list[str]]:
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path}: not a readable Parquet file ({type(error).__name__})") from None
    if "text" not in frame.columns:
        raise InputError(f"{path}: no 'text' column (columns: {', '.join(map(str, frame.columns))})")
    key = next((k for k in GROUP_KEYS if k in frame.columns), None)
    labels = frame[key].astype(str) if key else pd.Series([group or path.stem] * len(frame))
    texts: dict[str, list[str]] = {}
    for label, text in zip(labels, frame["text"].astype(str), strict=True):
        texts.setdefault(label, []).append(text)
    return _checked(texts, path)


def _checked(texts: dict[str, list[str]], path: Path) -> dict[str, list[str]]:
    if not any(t.strip() for ts in texts.values() for t in ts):
        raise InputError(f"{path}: no text")
    return texts


def tokenizer_table(tokenizer: Any, texts: dict[str, list[str]], reference: str = "en") -> pd.DataFrame:
    """Per-language tokenizer statistics: one row per language with its script, :func:`fertility`'s
    shares, tokens, UTF-8 bytes, tokens per byte and the premium against ``reference`` (NaN unless the
    reference language is present with as many texts, i.e. the texts are parallel)."""
    ref = texts.get(reference)
    rows = []
    for lang, sentences in texts.items():
        running = [running_text(s) for s in sentences]
        tokens = sequence_length(tokenizer, running)
        parallel = ref is not None and len(ref) == len(sentences)
        rows.append(
            {
                "language": lang,
                "script": dominant_script(sentences),
                "texts": len(sentences),
                **fertility(tokenizer, sentences),
                "tokens": tokens,
                "bytes": sum(len(t.encode()) for t in running),
                "tokens_per_byte": length_inflation(tokenizer, running),
                "premium": premium(tokenizer, running, ref) if parallel else math.nan,
            }
        )
    return pd.DataFrame(rows)


def loss_per_byte(model: WorkbenchModel, texts: Sequence[str], window: int = 128) -> dict[str, float]:
    """Next-token loss normalised by UTF-8 bytes, comparable across tokenizers (bits per byte as in
    Gao et al. 2020, "The Pile"): ``sum_t NLL(x_t | x_<t) / bytes``, in nats and in bits.

    Each text is encoded with the tokenizer's special tokens and scored in windows of ``window`` tokens
    that overlap by one, so every token after the first is predicted exactly once (context is reset at
    each window). The bytes counted are those of the predicted tokens: the whole text when the encoding
    starts with a special token (BOS), otherwise the text after the first token's characters.
    """
    nll, tokens, n_bytes = 0.0, 0, 0
    for text in texts:
        encoded = model.tokenizer(text, return_offsets_mapping=True)
        ids = torch.tensor(encoded["input_ids"], device=model.device)
        first_end = encoded["offset_mapping"][0][1]
        n_bytes += len(text[first_end:].encode())
        for start in range(0, len(ids) - 1, window - 1):
            chunk = ids[start : start + window][None]
            with torch.no_grad():
                logits = model.hf(input_ids=chunk).logits.float()
            nll += float(torch.nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum"))
            tokens += chunk.shape[1] - 1
    if n_bytes == 0:
        raise InputError("no bytes to score: give longer texts")
    return {
        "loss_per_token": nll / tokens,
        "nats_per_byte": nll / n_bytes,
        "bits_per_byte": nll / n_bytes / math.log(2),
        "tokens": tokens,
        "bytes": n_bytes,
    }


# -- registered probes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerParams:
    """The group the premium is measured against, and zoo tokenizers measured beside the model's own (its
    rows then carry a ``tokenizer`` column: the zoo name, or ``own``)."""

    reference: str = param("en", min_len=1)
    tokenizers: tuple[str, ...] = param((), choices=tuple(TOKENIZERS))


def _tokenizer(ctx: Context, params: TokenizerParams) -> pd.DataFrame:
    from transformers import PreTrainedTokenizerFast

    measured = {"own": ctx.model.tokenizer}
    measured |= {n: PreTrainedTokenizerFast.from_pretrained(tokenizer_dir(n)) for n in params.tokenizers}
    tables = []
    for name, tokenizer in measured.items():
        facts = vocabulary(tokenizer)
        table = tokenizer_table(tokenizer, ctx.texts, params.reference)
        table = table.assign(vocab_size=facts["vocab_size"], algorithm=facts["algorithm"])
        tables.append(table.assign(tokenizer=name) if params.tokenizers else table)
    return pd.concat(tables, ignore_index=True)


def _by_tokenizer(table: pd.DataFrame) -> pd.DataFrame:
    """A table whose rows name their tokenizer labelled ``model tokenizer`` (the model alone otherwise)."""
    if "tokenizer" not in table:
        return table
    return table.assign(model=table.model + " " + table.tokenizer)


TOKENIZER = Probe(
    name="tokenizer",
    doc="Fertility, shares, tokens per byte and premium per language.",
    formula="fertility = tokens / words (each word tokenized alone); premium = tokens(language) / "
    "tokens(reference) on parallel sentences; tokens per UTF-8 byte",
    cite="Rust et al. 2021 (fertility, ACL); Petrov et al. 2023, Language Model Tokenizers Introduce "
    "Unfairness Between Languages (premium, NeurIPS)",
    run=_tokenizer,
    params=TokenizerParams,
    needs=Needs(tokenizer=True),
    prompts="parallel",
    figures=lambda t: [
        ("all", bars_by_group(_by_tokenizer(t), "language", "fertility", "model", "Fertility per language"))
    ],
    summary=lambda t: (
        _by_tokenizer(t)
        .pivot_table(index="model", columns="language", values="fertility", sort=False)
        .reset_index()
    ),
)


@dataclass(frozen=True)
class LossParams:
    """Tokens per scored window."""

    window: int = param(128, low=2)


LOSS_PER_BYTE = Probe(
    name="loss_per_byte",
    doc="Next-token loss per UTF-8 byte per group.",
    formula="bits per byte = sum_t NLL(x_t | x_<t) / (bytes x ln 2) over the predicted tokens' bytes",
    cite="Gao et al. 2020, The Pile (arXiv 2101.00027), Sec. 3.1",
    run=lambda ctx, params: pd.DataFrame(
        [{"group": g, **loss_per_byte(ctx.model, texts, params.window)} for g, texts in ctx.texts.items()]
    ),
    params=LossParams,
    needs=Needs(causal_lm=True, tokenizer=True, runs_model=True),
    figures=lambda t: [
        ("all", bars_by_group(t, "group", "bits_per_byte", "model", "Bits per byte per group"))
    ],
    summary=lambda t: t.pivot_table(
        index="model", columns="group", values="bits_per_byte", sort=False
    ).reset_index(),
)
