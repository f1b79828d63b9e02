"""The probes a battery can run: each turns (model, prompt set, parameters) into one tidy table.

A unit is one probe on one model. Every function here only composes the probe functions of ``probes/``
with the capture engine; the definitions and sources live there. A probe that does not apply to a model
(routing on a dense model, generation on an encoder) raises :class:`NotApplicable`, which the runner
records instead of a table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from probes import compression, decoding, eviction, kvcache, lens, moe, sinks, tokenizer
from workbench.battery import params as P
from workbench.capture import CaptureSpec, capture
from workbench.capture.store import Capture
from workbench.card import card
from workbench.models.model import WorkbenchModel
from workbench.zoo import domain_windows

PATTERN = r"blocks\.\d+\.attn\.hook_pattern"
RESID = r"blocks\.\d+\.hook_resid_post"
ROUTER = r"blocks\.\d+\.moe\.hook_(router_logits|expert_indices|expert_weights|routed_out|shared_out)"


class NotApplicable(Exception):
    """The probe does not apply to this model (the reason is recorded in the manifest)."""


@dataclass
class UnitContext:
    """What a probe function gets: the model, its prompt set by group, parameters, seed, capture store."""

    model: WorkbenchModel
    texts: dict[str, list[str]]
    params: dict[str, Any]
    seed: int = 0
    store: Path | None = None

    @property
    def prompts(self) -> list[str]:
        """All texts, group after group."""
        return [t for texts in self.texts.values() for t in texts]

    @property
    def groups(self) -> list[str]:
        """The group of each text in :attr:`prompts`."""
        return [g for g, texts in self.texts.items() for _ in texts]

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    def capture(self, *points: str) -> Capture:
        """Capture hook points for the prompt set (kept on disk under the store when one is set; a unit
        redone after a kill replaces its own store)."""
        spec, store = CaptureSpec(points=list(points)), self.store
        return capture(
            self.model, self.prompts, spec, out_dir=store, progress=False, overwrite=store is not None
        )

    def windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Token windows of ``seq_len`` per group (``windows`` per group) and their group ids."""
        return domain_windows(
            self.model.tokenizer, self.texts, self.params["seq_len"], self.params["windows"]
        )

    def require(self, need: str) -> None:
        """Raise :class:`NotApplicable` unless the model is ``causal`` (with an LM head) or ``moe``."""
        model = self.model
        if need == "causal" and not model.cfg.causal_lm:
            raise NotApplicable(f"{model.source} is not a causal language model")
        if need == "moe" and not model.cfg.is_moe:
            raise NotApplicable(f"{model.source} has no MoE layers")
        if need == "tokenizer" and model.tokenizer is None:
            raise NotApplicable(f"{model.source} has no tokenizer")


def _card(ctx: UnitContext) -> pd.DataFrame:
    rows = card(ctx.model).rows
    return pd.DataFrame([{"section": s, "field": n, "value": str(v)} for s, n, v in rows])


def _sinks(ctx: UnitContext) -> pd.DataFrame:
    result = ctx.capture(PATTERN)
    return sinks.sink_table(result, ctx.n_layers, causal=ctx.model.cfg.causal, eps=ctx.params["eps"])


def _massive(ctx: UnitContext) -> pd.DataFrame:
    return sinks.massive_table(ctx.capture(RESID), ctx.n_layers)


def _kv_retention(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("causal")
    result = ctx.capture(PATTERN)
    rows = []
    for layer in range(ctx.n_layers):
        curve = kvcache.retention_curve(
            result[f"blocks.{layer}.attn.hook_pattern"], tuple(ctx.params["budgets"])
        )
        rows += [{"layer": layer, **row} for row in curve]
    return pd.DataFrame(rows)


def _eviction(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("causal")
    prompt_len, continuation = ctx.params["prompt_len"], ctx.params["continuation"]
    ids = ctx.model.tokenizer("\n".join(ctx.prompts), return_tensors="pt")["input_ids"][
        :, : prompt_len + continuation
    ]
    if ids.shape[1] <= prompt_len:
        raise NotApplicable(
            f"the prompt set gives {ids.shape[1]} tokens; eviction needs more than {prompt_len}"
        )
    return eviction.eviction_table(ctx.model, ids, prompt_len, tuple(ctx.params["budgets"]))


def _moe_capture(ctx: UnitContext) -> tuple[Capture, int, int]:
    ctx.require("moe")
    cfg = ctx.model.cfg
    return ctx.capture(ROUTER, r"blocks\.\d+\.hook_mlp_out"), cfg.n_experts, cfg.top_k


def _moe_routing(ctx: UnitContext) -> pd.DataFrame:
    result, n, k = _moe_capture(ctx)
    return moe.routing_table(result, torch.cat(result.tokens), n, k)


def _moe_load(ctx: UnitContext) -> pd.DataFrame:
    result, n, _ = _moe_capture(ctx)
    return moe.load_table(result, n)


def _moe_specialisation(ctx: UnitContext) -> pd.DataFrame:
    result, n, k = _moe_capture(ctx)
    names = list(ctx.texts)
    token_groups = torch.cat(
        [torch.full((len(t),), names.index(g)) for t, g in zip(result.tokens, ctx.groups, strict=True)]
    )
    tables = []
    for layer in moe.moe_layers(result):
        indices = torch.cat(result[f"blocks.{layer}.moe.hook_expert_indices"])
        tables.append(moe.domain_expert_table(indices, token_groups, n, k, names).assign(layer=layer))
    return pd.concat(tables, ignore_index=True)


def _moe_coactivation(ctx: UnitContext) -> pd.DataFrame:
    result, n, _ = _moe_capture(ctx)
    rows = []
    for layer in moe.moe_layers(result):
        grid = moe.coactivation(torch.cat(result[f"blocks.{layer}.moe.hook_expert_indices"]), n)
        rows += [
            {"layer": layer, "i": i, "j": j, "coact": float(grid[i, j])} for i in range(n) for j in range(n)
        ]
    return pd.DataFrame(rows)


def _compression(ctx: UnitContext) -> pd.DataFrame:
    result = ctx.capture(RESID)
    hidden = [result[f"blocks.{i}.hook_resid_post"] for i in range(ctx.n_layers)]
    return pd.DataFrame(compression.compression_profile(hidden, ctx.params["pooling"]))


def _lens(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("causal")
    ids, _ = ctx.windows()
    table = lens.lens_table(ctx.model, ids)
    if ctx.params["tuned_steps"] > 0:
        order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(ctx.seed))
        tuned = lens.train_tuned_lens(ctx.model, ids[order[::2]], steps=ctx.params["tuned_steps"])
        table = pd.concat(
            [
                lens.lens_table(ctx.model, ids[order[1::2]]),
                lens.lens_table(ctx.model, ids[order[1::2]], tuned),
            ]
        )
    return table.reset_index(drop=True)


def _prediction_depth(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("causal")
    depths = lens.prediction_depth(ctx.model, ctx.windows()[0]).flatten()
    counts = torch.bincount(depths, minlength=ctx.n_layers)
    return pd.DataFrame(
        {"depth": range(len(counts)), "tokens": counts.tolist(), "share": (counts / counts.sum()).tolist()}
    )


def _tokenizer(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("tokenizer")
    facts = tokenizer.vocabulary(ctx.model.tokenizer)
    table = tokenizer.tokenizer_table(ctx.model.tokenizer, ctx.texts, ctx.params["reference"])
    return table.assign(vocab_size=facts["vocab_size"], algorithm=facts["algorithm"])


def _loss_per_byte(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("causal")
    rows = [
        {"group": g, **tokenizer.loss_per_byte(ctx.model, texts, ctx.params["window"])}
        for g, texts in ctx.texts.items()
    ]
    return pd.DataFrame(rows)


def _decoding(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("causal")
    sweeps = {
        k: ctx.params[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty") if ctx.params[k]
    }
    settings = decoding.one_at_a_time({"max_new_tokens": ctx.params["max_new_tokens"]}, **sweeps)
    prompts = [t[: ctx.params["prompt_chars"]] for t in ctx.prompts]
    tokens, runs = decoding.decoding_sweep(
        ctx.model, prompts, settings, ctx.params["samples"], ctx.seed, progress=False
    )
    return decoding.sweep_summary(tokens, runs)


def _batch_invariance(ctx: UnitContext) -> pd.DataFrame:
    ctx.require("tokenizer")
    sizes = tuple(ctx.params["batch_sizes"])
    fillers = sorted(ctx.prompts, key=len, reverse=True)[: max(sizes) - 1]
    return decoding.batch_invariance(ctx.model, ctx.params["prompt"], fillers, sizes)


@dataclass(frozen=True)
class Probe:
    """A battery probe: its function, its default prompt set and its parameter dataclass (from
    :mod:`workbench.battery.params`: each field's type, default and range, which a spec may override)."""

    run: Callable[[UnitContext], pd.DataFrame]
    doc: str
    prompts: str = "heldout"
    params: type = P.NoParams


PROBES: dict[str, Probe] = {
    "card": Probe(_card, "Thinking-parameters card (section, field, value)."),
    "sinks": Probe(
        _sinks, "Gu et al. first-token alpha and sink share per layer and head.", params=P.SinksParams
    ),
    "massive_activations": Probe(_massive, "Sun et al. massive activations per layer and prompt."),
    "kv_retention": Probe(
        _kv_retention,
        "Retained attention mass of the last query per eviction policy and cache budget, per layer.",
        params=P.RetentionParams,
    ),
    "eviction": Probe(
        _eviction,
        "Decoding with a pruned cache: perplexity, KL and top-1 agreement against the full cache.",
        params=P.EvictionParams,
    ),
    "moe_routing": Probe(
        _moe_routing, "Per-layer load entropy, balance losses, z-loss, repetition, consistency."
    ),
    "moe_load": Probe(_moe_load, "Expert load per layer (share of token-slots)."),
    "moe_specialisation": Probe(
        _moe_specialisation, "OLMoE domain specialisation per group, expert and layer."
    ),
    "moe_coactivation": Probe(_moe_coactivation, "OLMoE co-activation of expert pairs per layer."),
    "compression": Probe(
        _compression,
        "Per-layer TwoNN, GRIDE, effective rank, anisotropy, explained variance, prompt entropy.",
        params=P.CompressionParams,
    ),
    "lens": Probe(
        _lens,
        "Logit lens (and tuned lens) KL to the final layer, entropy, top-1 agreement.",
        params=P.LensParams,
    ),
    "prediction_depth": Probe(
        _prediction_depth, "Logit-lens prediction depth distribution.", params=P.WindowParams
    ),
    "tokenizer": Probe(
        _tokenizer,
        "Fertility, shares, tokens per byte and premium per language.",
        "parallel",
        P.TokenizerParams,
    ),
    "loss_per_byte": Probe(_loss_per_byte, "Next-token loss per UTF-8 byte per group.", params=P.LossParams),
    "decoding": Probe(
        _decoding,
        "Seeded decoding sweeps: entropy, distinct-n, repetition, length, internal signals per setting.",
        params=P.DecodingParams,
    ),
    "batch_invariance": Probe(
        _batch_invariance,
        "Logits of a prompt alone vs first in left / right padded batches: max abs difference, argmax flips.",
        params=P.BatchInvarianceParams,
    ),
}
