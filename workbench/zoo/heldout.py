"""The zoo's committed held-out sample (five domains) and token windows cut from grouped texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

DOMAINS: tuple[str, ...] = ("code", "english", "russian", "chinese", "arithmetic")
HELDOUT_DIR = Path(__file__).resolve().parent / "heldout"


def load_heldout_sample(directory: Path = HELDOUT_DIR) -> dict[str, list[str]]:
    """A held-out sample as written by ``workbench zoo build``, by domain."""
    return {d: json.loads((directory / f"{d}.json").read_text()) for d in DOMAINS}


def heldout(per_domain: int = 0, chars: int = 0) -> dict[str, list[str]]:
    """The committed held-out sample by domain: at most ``per_domain`` documents each (0: all), each cut
    to ``chars`` characters (0: whole)."""
    sample = load_heldout_sample()
    return {
        d: [t[:chars] if chars else t for t in (docs[:per_domain] if per_domain else docs)]
        for d, docs in sample.items()
    }


def token_streams(tokenizer: Any, docs: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """One long token stream per group: ``<s> doc </s>`` for every document, concatenated."""
    streams = {}
    for domain, texts in docs.items():
        encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
        streams[domain] = torch.tensor([t for ids in encoded for t in [*ids, tokenizer.eos_token_id]])
    return streams


def domain_windows(
    tokenizer: Any, docs: dict[str, list[str]], seq_len: int = 128, per_domain: int = 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_domain`` non-overlapping windows of ``seq_len`` tokens per group, and group ids."""
    rows, labels = [], []
    for d, stream in enumerate(token_streams(tokenizer, docs).values()):
        n = min(per_domain, len(stream) // seq_len)
        rows.append(stream[: n * seq_len].view(n, seq_len))
        labels += [d] * n
    return torch.cat(rows), torch.tensor(labels)
