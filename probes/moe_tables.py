"""MoE probes as tables: captured router outputs (ranked expert ids, logits, shared-expert outputs) turned
into per-layer tables, and the registered MoE probes. The definitions are in :mod:`probes.moe`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from probes.figures import bars_by_group, heatmap, lines_by_group
from probes.moe import (
    coactivation,
    consecutive_repetition,
    cross_layer_consistency,
    domain_specialisation,
    expert_importance,
    expert_load,
    hf_pooled_balance_loss,
    load_entropy,
    router_saturation,
    router_z_loss,
    selection_counts,
    shared_expert_share,
    switch_balance_loss,
    vocabulary_specialisation,
)
from probes.params import param
from probes.registry import Context, Needs, NotApplicable, Probe, last_layer, per_model
from workbench.capture import CaptureSpec, capture
from workbench.capture.store import Capture
from workbench.models import load

ROUTER = r"blocks\.\d+\.moe\.hook_(router_logits|expert_indices|expert_weights|routed_out|shared_out)"
MLP_OUT = r"blocks\.\d+\.hook_mlp_out"
INDICES = r"blocks\.\d+\.moe\.hook_expert_indices"


def domain_expert_table(
    indices: torch.Tensor, token_domains: torch.Tensor, n_experts: int, top_k: int, names: list[str]
) -> pd.DataFrame:
    """Domain specialisation per (domain, expert) from captured ids. Columns: ``domain, expert, spec``."""
    rows = []
    for d, name in enumerate(names):
        spec = domain_specialisation(selection_counts(indices[token_domains == d], n_experts), top_k)
        rows += [{"domain": name, "expert": e, "spec": float(v)} for e, v in enumerate(spec)]
    return pd.DataFrame(rows)


def moe_layers(result: Capture) -> list[int]:
    """Layers whose expert ids are in a capture."""
    return sorted({int(x.split(".")[1]) for x in result.names if x.endswith("moe.hook_expert_indices")})


def routing_table(result: Capture, token_ids: torch.Tensor, n_experts: int, top_k: int) -> pd.DataFrame:
    """Per MoE layer, from a capture of ``moe.hook_*`` (and ``hook_mlp_out`` for shared experts): load
    entropy, Switch loss, the HF pooled loss (one value for all layers), z-loss, consecutive repetition
    (rep1, rep2: top-1 / any of the top-k repeated by the next token), vocabulary specialisation, top-1
    consistency with the next layer and the shared-expert share where present.

    Args:
        result: The capture.
        token_ids: [tokens] the captured token ids, row-major (as the router's tokens axis).
        n_experts: Routed experts per layer.
        top_k: Experts per token.
    """
    layers = moe_layers(result)
    logits = {i: torch.cat(result[f"blocks.{i}.moe.hook_router_logits"]) for i in layers}
    indices = {i: torch.cat(result[f"blocks.{i}.moe.hook_expert_indices"]) for i in layers}
    pooled = hf_pooled_balance_loss(list(logits.values()), top_k, n_experts)
    rows = []
    for i in layers:
        load = expert_load(indices[i], n_experts)
        reps = [consecutive_repetition(x) for x in result[f"blocks.{i}.moe.hook_expert_indices"]]
        row = {
            "layer": i,
            "load_entropy": load_entropy(load),
            "switch_loss": float(switch_balance_loss(logits[i], indices[i], n_experts)),
            "hf_pooled_loss": pooled,
            "z_loss": router_z_loss(logits[i]),
            "rep1": sum(r["rep1"] for r in reps) / len(reps),
            "rep2": sum(r["repk"] for r in reps) / len(reps),
            "vocab_spec": vocabulary_specialisation(indices[i], token_ids, n_experts),
            "next_layer_consistency": (
                cross_layer_consistency(indices[i][:, 0], indices[i + 1][:, 0], n_experts)
                if i + 1 in layers
                else math.nan
            ),
            "shared_share": math.nan,
        }
        if f"blocks.{i}.moe.hook_shared_out" in result:
            mlp_out = torch.cat(result[f"blocks.{i}.hook_mlp_out"])
            routed = (  # Llama 4's experts give no per-token sum: the routed part is what the shared leaves
                torch.cat(result[f"blocks.{i}.moe.hook_routed_out"])
                if f"blocks.{i}.moe.hook_routed_out" in result
                else mlp_out - torch.cat(result[f"blocks.{i}.moe.hook_shared_out"])
            )
            row["shared_share"] = shared_expert_share(mlp_out, routed)
        rows.append(row)
    return pd.DataFrame(rows)


def load_table(result: Capture, n_experts: int) -> pd.DataFrame:
    """Expert load per layer from a capture of ``moe.hook_expert_indices``. Columns: ``layer, expert,
    load``."""
    rows = []
    for i in moe_layers(result):
        load = expert_load(torch.cat(result[f"blocks.{i}.moe.hook_expert_indices"]), n_experts)
        rows += [{"layer": i, "expert": e, "load": float(v)} for e, v in enumerate(load)]
    return pd.DataFrame(rows)


# -- registered probes ----------------------------------------------------------------------------------

MOE = Needs(moe=True, points=(INDICES,))


def _routing(ctx: Context) -> pd.DataFrame:
    result, cfg = ctx.capture(ROUTER, MLP_OUT), ctx.model.cfg
    return routing_table(result, torch.cat(result.tokens), cfg.n_experts, cfg.top_k)


def _specialisation(ctx: Context, params: object) -> pd.DataFrame:
    result, cfg = ctx.capture(INDICES), ctx.model.cfg
    names = list(ctx.texts)
    token_groups = torch.cat(
        [torch.full((len(t),), names.index(g)) for t, g in zip(result.tokens, ctx.groups, strict=True)]
    )
    tables = []
    for layer in moe_layers(result):
        indices = torch.cat(result[f"blocks.{layer}.moe.hook_expert_indices"])
        table = domain_expert_table(indices, token_groups, cfg.n_experts, cfg.top_k, names)
        tables.append(table.assign(layer=layer))
    return pd.concat(tables, ignore_index=True)


def _coactivation(ctx: Context, params: object) -> pd.DataFrame:
    result, n = ctx.capture(INDICES), ctx.model.cfg.n_experts
    rows = []
    for layer in moe_layers(result):
        grid = coactivation(torch.cat(result[f"blocks.{layer}.moe.hook_expert_indices"]), n)
        rows += [
            {"layer": layer, "i": i, "j": j, "coact": float(grid[i, j])} for i in range(n) for j in range(n)
        ]
    return pd.DataFrame(rows)


MOE_ROUTING = Probe(
    name="moe_routing",
    doc="Per-layer load entropy, balance losses, z-loss, repetition, consistency.",
    formula="load_i = share of token-slots on expert i, H(load); Switch loss E sum_i f_i P_i; z-loss "
    "mean (logsumexp logits)^2; rep1 = P(top-1 of token t+1 = top-1 of token t); consistency = "
    "I(top1_l; top1_l+1) / H(top1_l); shared share = |shared| / (|shared| + |routed|)",
    cite="Fedus et al. 2022 (Switch Transformers, JMLR), Eq. 4; Zoph et al. 2022 (ST-MoE z-loss, arXiv "
    "2202.08906), Eq. 5; Muennighoff et al. 2024 (OLMoE, arXiv 2409.02060), Sec. 5",
    run=lambda ctx, params: _routing(ctx),
    needs=MOE,
    figures=lambda t: [
        ("all", lines_by_group(t, "layer", "load_entropy", "model", "Expert-load entropy per layer"))
    ],
    summary=lambda t: t.groupby("model", sort=False, as_index=False)[
        ["load_entropy", "switch_loss", "z_loss", "rep1"]
    ].mean(),
)

MOE_LOAD = Probe(
    name="moe_load",
    doc="Expert load per layer (share of token-slots).",
    formula="load_i = #{(t, j): indices[t, j] = i} / (tokens x k)",
    cite="Fedus et al. 2022 (Switch Transformers); Muennighoff et al. 2024 (OLMoE), Sec. 5",
    run=lambda ctx, params: load_table(ctx.capture(INDICES), ctx.model.cfg.n_experts),
    needs=MOE,
    figures=lambda t: per_model(
        t.assign(layer=[f"layer {x}" for x in t.layer]),
        lambda r, m: bars_by_group(r, "expert", "load", "layer", f"Expert load, {m}"),
    ),
    summary=lambda t: t.groupby("model", sort=False, as_index=False).agg(
        min_load=("load", "min"), max_load=("load", "max")
    ),
)

MOE_SPECIALISATION = Probe(
    name="moe_specialisation",
    doc="OLMoE domain specialisation per group, expert and layer.",
    formula="spec(d, e) = k x count_d(e) / slots_d: the share of group d's tokens whose top-k holds expert e "
    "(a uniform router gives k / E)",
    cite="Muennighoff et al. 2024 (OLMoE, arXiv 2409.02060), Sec. 5.2",
    run=_specialisation,
    needs=MOE,
    figures=lambda t: per_model(
        last_layer(t),
        lambda r, m: heatmap(r, "domain", "expert", "spec", f"Domain specialisation, last layer, {m}"),
    ),
    summary=lambda t: t.groupby(["model", "domain"], sort=False, as_index=False).spec.max(),
)

MOE_COACTIVATION = Probe(
    name="moe_coactivation",
    doc="OLMoE co-activation of expert pairs per layer.",
    formula="coact(i -> j) = N(i and j in one token's top-k) / N(i in a token's top-k), all pairs",
    cite="Muennighoff et al. 2024 (OLMoE, arXiv 2409.02060), Sec. 5.4",
    run=_coactivation,
    needs=MOE,
    figures=lambda t: per_model(
        last_layer(t), lambda r, m: heatmap(r, "i", "j", "coact", f"Co-activation, last layer, {m}")
    ),
    summary=lambda t: t[t.i != t.j].groupby("model", sort=False, as_index=False).coact.max(),
)


@dataclass(frozen=True)
class ImportanceParams:
    """The MoE layer whose experts are masked one at a time (-1: the last), and the windows per group."""

    layer: int = param(-1, low=-1)
    seq_len: int = param(64, low=2)
    windows: int = param(4, low=1)


def _importance(ctx: Context, params: ImportanceParams) -> pd.DataFrame:
    layers = ctx.model.cfg.moe_layers
    layer = layers[-1] if params.layer == -1 else params.layer
    if layer not in layers:
        raise NotApplicable(f"layer {layer} of {ctx.model.source} is not an MoE layer (MoE: {list(layers)})")
    ids, groups = ctx.windows(params.seq_len, params.windows)
    return expert_importance(ctx.model, ids, groups, layer, names=list(ctx.texts)).assign(layer=layer)


EXPERT_IMPORTANCE = Probe(
    name="expert_importance",
    doc="Loss increase per group when each expert of one MoE layer is masked.",
    formula="delta(d, i) = mean NLL on group d with expert i masked (the router renormalises over the "
    "rest) - mean NLL unmasked",
    cite="Muennighoff et al. 2024 (OLMoE, arXiv 2409.02060), Sec. 5 (expert ablation)",
    run=_importance,
    params=ImportanceParams,
    needs=Needs(moe=True, causal_lm=True, tokenizer=True, runs_model=True),
    figures=lambda t: per_model(
        t, lambda r, m: heatmap(r, "domain", "expert", "delta_loss", f"Loss increase when masked, {m}")
    ),
    summary=lambda t: t.loc[t.groupby(["model", "domain"], sort=False).delta_loss.idxmax()],
)


@dataclass(frozen=True)
class SaturationParams:
    """The final checkpoint the routing is compared with (a zoo name, directory or hub id)."""

    reference: str = param("", min_len=0)


def _saturation(ctx: Context, params: SaturationParams) -> pd.DataFrame:
    if not params.reference:
        raise NotApplicable("router saturation needs reference = the final checkpoint")
    early = ctx.capture(INDICES)
    spec = CaptureSpec(points=[INDICES])
    final = capture(load(params.reference), ctx.prompts, spec, progress=False)
    return pd.DataFrame(
        [
            {
                "layer": layer,
                "reference": params.reference,
                "saturation": router_saturation(
                    torch.cat(early[f"blocks.{layer}.moe.hook_expert_indices"]),
                    torch.cat(final[f"blocks.{layer}.moe.hook_expert_indices"]),
                ),
            }
            for layer in moe_layers(early)
        ]
    )


ROUTER_SATURATION = Probe(
    name="router_saturation",
    doc="Router saturation: overlap of each token's top-k with the final checkpoint's, per layer.",
    formula="saturation = mean over tokens of |topk_early(t) & topk_final(t)| / k",
    cite="Muennighoff et al. 2024 (OLMoE, arXiv 2409.02060), Sec. 5.1",
    run=_saturation,
    params=SaturationParams,
    needs=Needs(moe=True, points=(INDICES,), runs_model=True),
    figures=lambda t: [("all", lines_by_group(t, "layer", "saturation", "model", "Router saturation"))],
)
