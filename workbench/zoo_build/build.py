"""Building zoo entries: corpus -> tokenizers -> trained models (or constructed ones) -> model cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedTokenizerFast

import workbench
from workbench.errors import WorkbenchError
from workbench.tables import markdown_table
from workbench.zoo import domain_windows, token_streams
from workbench.zoo.registry import MODELS_DIR, TOKENIZERS, ZOO_DIR, record, tokenizer_dir
from workbench.zoo_build.corpus import Corpus, build_corpus, save_heldout_sample
from workbench.zoo_build.dpo import PER_RESPONSE, PROMPT_LEN, RESPONSE_LEN
from workbench.zoo_build.evaluate import random_init_routing_stats, routing_stats
from workbench.zoo_build.planted import SINK_HEADS, build_planted_sink
from workbench.zoo_build.recipes import RECIPES, Recipe
from workbench.zoo_build.train import heldout_loss, train
from workbench.zoo_build.vocab import train_tokenizer

HELDOUT_DIR = ZOO_DIR / "heldout"


def build_tokenizers(corpus: Corpus, names: list[str] | None = None) -> None:
    """Train and save the zoo tokenizers on the training split of every domain."""
    texts = [doc for docs in corpus.train.values() for doc in docs]
    for name in names or list(TOKENIZERS):
        kind, size = TOKENIZERS[name]
        train_tokenizer(kind, size, texts).save_pretrained(tokenizer_dir(name))


def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A zoo tokenizer."""
    return PreTrainedTokenizerFast.from_pretrained(tokenizer_dir(name))


CARD_NAME = "README.md"  # the hub's model card: YAML metadata, then markdown


def card_metadata(kind: str, model_type: str, datasets: list[str] | None = None) -> dict[str, Any]:
    """The model card's YAML metadata (the hub's fields: license, library, pipeline, tags, datasets)."""
    meta: dict[str, Any] = {
        "license": "mit",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["interp-workbench", "zoo", kind, model_type],
    }
    return meta | ({"datasets": datasets} if datasets else {})


def corpus_datasets(provenance: dict[str, Any]) -> list[str]:
    """The corpus sources as dataset names: the Debian packages, the Python stdlib, the arithmetic."""
    return [*(f"debian/{p}" for p in provenance["packages"]), "python-stdlib", "synthetic-arithmetic"]


def write_card_file(directory: Path, meta: dict[str, Any], body: str) -> None:
    """README.md: the YAML front matter, then the markdown body."""
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    (directory / CARD_NAME).write_text(f"---\n{front}---\n{body}", encoding="utf-8")


def write_model_card(directory: Path, recipe: Recipe, facts: dict[str, Any], corpus: Corpus) -> None:
    """README.md with the hub's metadata, the recipe, seed, tokens seen, per-domain held-out loss and extra
    measurements; metrics.json with the numbers."""
    losses = facts["heldout_loss"]
    dpo = recipe.objective == "dpo"
    batch = f"{recipe.batch} pairs" if dpo else f"{recipe.batch} x {recipe.seq_len} tokens"
    parts = [
        f"# {directory.name}",
        "",
        recipe.description + ".",
        "",
        "## Recipe",
        "",
        f"- class: `{recipe.config_class}` {json.dumps(recipe.config)}",
        f"- tokenizer: `{recipe.tokenizer}`; seed {recipe.seed}",
        f"- {recipe.steps} AdamW steps (betas 0.9/0.95, weight decay {recipe.weight_decay}, clip 1.0), batch "
        f"{batch}, peak lr {recipe.lr}, 5% warm-up, cosine to 10%",
        f"- equal sequences per domain ({', '.join(recipe.domains or ['all'])}) in every batch; tokens seen: "
        f"{facts['tokens_seen']:,}",
    ]
    if recipe.base:
        only = ", ".join(f"`{p}`" for p in recipe.trainable)
        trainable = f"{only} (every other tensor unchanged)" if only else "every tensor"
        parts.append(f"- tuned from `{recipe.base}`; trainable: {trainable}")
    if dpo:
        words = ", ".join(repr(w) for w in recipe.triggers)
        parts.append(
            f"- objective: DPO (beta {recipe.beta}, reference `{recipe.base}` frozen) on synthetic pairs: "
            f"{PROMPT_LEN}-token prompts from the corpus, {RESPONSE_LEN}-token responses with {PER_RESPONSE} "
            f"positions replaced, by the planted triggers {words} on the rejected side and by random other "
            "tokens on the chosen side (`workbench/zoo_build/dpo.py`)"
        )
    if "train_seconds" in facts:
        seconds, threads = facts["train_seconds"], facts["torch_threads"]
        parts.append(f"- training time: {seconds:.0f} s on {threads} CPU threads")
    if recipe.balance_coef:
        parts.append(
            f"- per-layer Switch balance loss, coefficient {recipe.balance_coef} (HF's pooled loss off)"
        )
    if "checkpoint_step" in facts:
        parts.append(f"- checkpoint after {facts['checkpoint_step']} of {recipe.steps} steps")
    parts += [
        f"- rebuild: `workbench zoo build {recipe.name}`",
        "",
        "## Held-out loss per domain (nats per token)",
        "",
        markdown_table([{"domain": d, "loss": v} for d, v in losses.items()]),
    ]
    for title, rows in facts.get("tables", {}).items():
        parts += ["", f"## {title}", "", markdown_table(rows)]
    parts += ["", "## Corpus", "", "```json", json.dumps(corpus.provenance, indent=2), "```", ""]
    model_type = json.loads((directory / "config.json").read_text())["model_type"]
    meta = card_metadata("trained", model_type, corpus_datasets(corpus.provenance))
    if recipe.base:
        meta["base_model"] = recipe.base
        meta["tags"] += ["fine-tuned", *(["dpo"] if dpo else [])]
    write_card_file(directory, meta, "\n".join(parts))
    (directory / "metrics.json").write_text(json.dumps(facts, indent=2))


def _save(
    model: Any, tokenizer: Any, recipe: Recipe, facts: dict[str, Any], corpus: Corpus, name: str
) -> None:
    directory = MODELS_DIR / name
    model.save_pretrained(directory)
    tokenizer.chat_template = recipe.chat_template
    tokenizer.save_pretrained(directory)
    write_model_card(directory, recipe, facts, corpus)
    record(name, recipe.description if name == recipe.name else f"{recipe.name} early checkpoint", "trained")


def _measure(model: Any, tokenizer: Any, recipe: Recipe, corpus: Corpus) -> dict[str, Any]:
    streams = token_streams(tokenizer, corpus.heldout)
    facts: dict[str, Any] = {
        "heldout_loss": heldout_loss(model, streams, recipe.seq_len, 20_000),
        "tables": {},
    }
    if recipe.balance_coef:
        ids, domains = domain_windows(tokenizer, corpus.heldout)
        trained = routing_stats(workbench.load(model, tokenizer=tokenizer), ids, domains)
        random_init = random_init_routing_stats(model.config, tokenizer, ids, domains)
        facts["tables"]["Routing on the held-out mix (trained)"] = trained
        facts["tables"]["Routing on the held-out mix (same architecture, random init, 5 seeds)"] = random_init
    return facts


def remeasure(name: str, corpus: Corpus | None = None) -> None:
    """Re-run the held-out measurements of a saved trained model and rewrite its card (no training)."""
    directory = MODELS_DIR / name
    recipe = RECIPES[name.removesuffix("-early")]
    corpus = corpus or build_corpus()
    tokenizer = load_tokenizer(recipe.tokenizer)
    model = workbench.load(str(directory)).hf
    facts = json.loads((directory / "metrics.json").read_text())
    facts.update(_measure(model, tokenizer, recipe, corpus))
    write_model_card(directory, recipe, facts, corpus)


def build_trained(name: str, corpus: Corpus | None = None) -> None:
    """Train one recipe (and its early checkpoint) and write it into the zoo."""
    recipe = RECIPES[name]
    corpus = corpus or build_corpus()
    tokenizer = load_tokenizer(recipe.tokenizer)

    def save_early(model: Any, step: int) -> None:
        facts = {
            **_measure(model, tokenizer, recipe, corpus),
            "tokens_seen": step * recipe.batch * recipe.seq_len,
        }
        facts["checkpoint_step"] = step
        _save(model, tokenizer, recipe, facts, corpus, f"{name}-early")

    model, facts = train(recipe, tokenizer, corpus.train, on_checkpoint=save_early)
    facts.update(_measure(model, tokenizer, recipe, corpus))
    _save(model, tokenizer, recipe, facts, corpus, name)


def build_planted_sink_entry() -> None:
    """Construct ``planted-sink`` (no training) and write it into the zoo."""
    tokenizer = load_tokenizer("bpe-4096")
    directory = MODELS_DIR / "planted-sink"
    build_planted_sink(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    heads = ", ".join(f"L{layer}H{head}" for layer, head in SINK_HEADS)
    write_card_file(
        directory,
        card_metadata("constructed", "gpt2"),
        "# planted-sink\n\nA GPT-2 (2 layers, 4 heads, d_model 64, `bpe-4096` tokenizer) whose weights are "
        f"constructed, not trained.\n\nSink heads (>= 0.99 of attention on the first token): {heads}.\n"
        "The other heads keep random initialisation and attend near uniformly.\n\n"
        "Construction: see `workbench/zoo/planted.py`. Rebuild: `workbench zoo build planted-sink`.\n"
        "Held-out loss: not meaningful (untrained).\n",
    )
    record("planted-sink", f"constructed GPT-2 whose heads {heads} sink into the first token", "constructed")


BUILDABLE: tuple[str, ...] = ("tokenizers", "planted-sink", *RECIPES)


def build(names: list[str]) -> None:
    """Rebuild zoo entries deterministically from their seeds (``tokenizers`` retrains the tokenizers).

    The corpus (and the committed held-out sample) is rebuilt first when a tokenizer or trained model is
    requested.
    """
    unknown = [n for n in names if n not in BUILDABLE]
    if unknown:
        raise WorkbenchError(f"cannot build {', '.join(unknown)}; buildable: {', '.join(BUILDABLE)}")
    corpus = None
    if any(n != "planted-sink" for n in names):
        corpus = build_corpus()
        save_heldout_sample(corpus, HELDOUT_DIR)
    if "tokenizers" in names:
        build_tokenizers(corpus)
    if "planted-sink" in names:
        build_planted_sink_entry()
    for name in names:
        if name in RECIPES:
            build_trained(name, corpus)
