"""Tokenizer and decoding results on the zoo, as markdown sections of ``docs/probes/results.md``.

Called by :mod:`probes.report` (``.venv/bin/python -m probes.report``); the figures go to the same dict.
"""

from __future__ import annotations

import pandas as pd
import torch
from transformers import PreTrainedTokenizerFast

from probes import compression, lens
from probes.decoding import batch_invariance, decoding_sweep, one_at_a_time, sweep_summary
from probes.figures import bars_by_group, lines_by_group
from probes.sinks import sink_rate, sink_table
from probes.tokenizer import length_inflation, load_texts, loss_per_byte, tokenizer_table, vocabulary
from workbench.capture import CaptureSpec, capture
from workbench.models import load
from workbench.tables import markdown_table
from workbench.zoo import DOMAINS, domain_windows, heldout, tokenizer_dir
from workbench.zoo.registry import zoo

MATCHED_TOKENIZERS = ("bpe-1024", "bpe-4096", "bpe-16384", "unigram-4096")
MATCHED_MODELS = ("tiny-llama", "tiny-llama-unigram")
DECODING_PROMPTS = ["The old man said", "def parse(line):", "Сегодня утром", "12 + 7 ="]


def _heldout() -> dict[str, list[str]]:
    return heldout()


def _tokenizers() -> dict[str, object]:
    found = {
        name: PreTrainedTokenizerFast.from_pretrained(tokenizer_dir(name)) for name in MATCHED_TOKENIZERS
    }
    return {**found, "minilm (WordPiece 30522)": load("minilm").tokenizer}


def _internal_signals(name: str, texts: list[str]) -> dict[str, float | int | None]:
    """Sink rate, ID peak and logit-lens depth of one model on ``texts`` (other probes' headlines)."""
    model = load(name)
    n_layers = model.cfg.n_layers
    points = [r"blocks\.\d+\.attn\.hook_pattern", r"blocks\.\d+\.hook_resid_post"]
    result = capture(model, texts, CaptureSpec(points=points), progress=False)
    alphas = torch.tensor(sink_table(result, n_layers).alpha.values).view(1, n_layers, -1)
    hidden = [result[f"blocks.{i}.hook_resid_post"] for i in range(n_layers)]
    profile = [r["twonn_90"] for r in compression.compression_profile(hidden, "all")]
    ids, _ = domain_windows(model.tokenizer, _heldout(), seq_len=64, per_domain=4)
    logit_lens = lens.lens_table(model, ids)
    return {
        "model": name,
        "sink_rate_eps0.3": round(sink_rate(alphas), 1),
        **compression.id_summaries(profile),
        "logit_lens_kl_mean": float(logit_lens.kl_to_final[:-1].mean()),
        "prediction_depth_mean": float(lens.prediction_depth(model, ids).float().mean()),
    }


def tokenizer_section(figures: dict[str, object]) -> str:
    """Matched tokenizers on the parallel sample and the held-out domains; matched models side by side."""
    parallel, heldout, tokenizers = load_texts(), _heldout(), _tokenizers()
    per_language = pd.concat(
        [tokenizer_table(tok, parallel).assign(tokenizer=name) for name, tok in tokenizers.items()]
    )
    fertility = per_language.pivot(index="tokenizer", columns="language", values="fertility")
    premium = per_language.pivot(index="tokenizer", columns="language", values="premium")
    shares = per_language.groupby("tokenizer")[
        ["continued_share", "unknown_share", "byte_fallback_share"]
    ].mean()
    per_domain = pd.DataFrame(
        {d: {n: length_inflation(t, heldout[d]) for n, t in tokenizers.items()} for d in DOMAINS}
    ).rename_axis("tokenizer")
    figures["fertility_by_language"] = bars_by_group(
        per_language,
        "language",
        "fertility",
        "tokenizer",
        "Fertility (tokens per word) on the parallel sample",
    )
    bpb = pd.DataFrame(
        [
            {"model": m, "domain": d, **loss_per_byte(load(m), heldout[d])}
            for m in MATCHED_MODELS
            for d in DOMAINS
        ]
    )
    figures["bits_per_byte_matched"] = bars_by_group(
        bpb, "domain", "bits_per_byte", "model", "Held-out bits per byte, BPE vs Unigram at 4096"
    )
    texts = [doc[:300] for docs in heldout.values() for doc in docs[:4]]
    signals = [_internal_signals(m, texts) for m in MATCHED_MODELS]
    facts = [{"tokenizer": n, **vocabulary(t)} for n, t in tokenizers.items()]
    return (
        "### The tokenizers\n\n"
        + markdown_table(facts)
        + "\n\n### Fertility per language (parallel sample: 24 sentences in 7 languages)\n\n"
        + markdown_table(fertility, index=True, digits=2)
        + "\n\n### Premium against English (tokens for the same sentences / English tokens)\n\n"
        + markdown_table(premium, index=True, digits=2)
        + "\n\n### Word shares (means over the 7 languages)\n\n"
        + markdown_table(shares, index=True, digits=3)
        + "\n\n### Tokens per UTF-8 byte on the held-out domains (lower compresses more)\n\n"
        + markdown_table(per_domain, index=True, digits=3)
        + "\n\n### Matched models (same recipe, BPE 4096 vs Unigram 4096): "
        + "loss per byte, all held-out text\n\n"
        + markdown_table(
            bpb[["model", "domain", "loss_per_token", "bits_per_byte", "tokens", "bytes"]], digits=3
        )
        + "\n\n### Matched models: internal signals side by side (20 held-out prompts)\n\n"
        + markdown_table(signals, digits=3)
        + "\n"
    )


def decoding_section(figures: dict[str, object]) -> str:
    """Sweeps of every decoding parameter on tiny-llama and tiny-moe; batch invariance of every zoo model."""
    settings = one_at_a_time(
        {"max_new_tokens": 24},
        temperature=[0.2, 0.7, 1.0, 1.5],
        top_p=[0.5, 0.9],
        top_k=[5, 50],
        repetition_penalty=[1.3],
        max_new_tokens=[8],
    )
    parts = []
    for name in ("tiny-llama", "tiny-moe"):
        tokens, runs = decoding_sweep(load(name), DECODING_PROMPTS, settings, samples=4, progress=False)
        summary = sweep_summary(tokens, runs).drop(columns=["setting"])
        if name == "tiny-llama":
            by_temperature = summary[summary.sweep == "temperature"].melt(
                id_vars="temperature", value_vars=["sampling_entropy", "model_entropy"], var_name="entropy"
            )
            figures["entropy_by_temperature_tiny-llama"] = lines_by_group(
                by_temperature, "temperature", "value", "entropy", "Next-token entropy of samples, tiny-llama"
            )
        parts.append(
            f"### Sweep on {name} (4 prompts x 4 seeds per setting)\n\n" + markdown_table(summary, digits=3)
        )
    fillers = [doc[:300] for docs in _heldout().values() for doc in docs[:2]]
    invariance = []
    for name in sorted(zoo()):
        for dtype in (torch.float32, torch.bfloat16):
            table = batch_invariance(load(name, dtype=dtype), "The cat sat on the mat.", fillers)
            invariance.append(table.assign(model=name, dtype=str(dtype).removeprefix("torch.")))
    columns = [
        "model",
        "dtype",
        "side",
        "batch_size",
        "max_abs_diff",
        "argmax_flips",
        "positions",
        "pad_tokens",
    ]
    parts.append(
        "### Batch invariance (a short prompt alone vs first in padded batches of longer prompts)\n\n"
        + markdown_table(pd.concat(invariance)[columns], digits=7)
    )
    return "\n\n".join(parts) + "\n"
