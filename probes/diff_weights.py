"""What tuning changed in the weights: per parameter tensor of two checkpoints of one architecture, the
relative Frobenius norm of the change, the share of entries changed and the effective rank of the change.

For ``W_a`` (the base) and ``W_b`` (the tuned checkpoint), ``D = W_b - W_a``:

- ``relative_change = ||D||_F / ||W_a||_F`` (0 for identical tensors; ``change_norm = ||D||_F``, so that the
  share of the whole change a layer or a kind carries is ``sum ||D||_F^2`` over it divided by the total);
- ``changed_share``: the share of entries with ``D != 0`` (a frozen block: 0; full tuning: about 1);
- ``effective_rank`` of a matrix's change (Roy & Vetterli 2007, "The effective rank: a measure of effective
  dimensionality", EUSIPCO): ``exp(H(s / sum s))`` of its singular values ``s``; a rank-r LoRA update with
  equal singular values gives r, full tuning a large fraction of ``min(rows, cols)``; 0 for no change.

Each tensor gets its block (``layer``, -1 outside the blocks) and ``kind`` from the adapter's own paths:
``attention``, ``mlp``, ``router``, ``experts``, ``norm``, ``embedding``, ``unembedding`` or ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from probes.compression import effective_rank
from probes.figures import bars_by_group
from probes.params import param
from probes.registry import Context, Needs, Probe, per_model
from workbench.arch.trace import is_norm
from workbench.errors import InputError
from workbench.models.model import WorkbenchModel
from workbench.models.quantize import dense, shape_of

KINDS = ("attention", "mlp", "router", "experts", "norm", "embedding", "unembedding", "other")


def _prefix(model: WorkbenchModel) -> str:
    """The base model's name inside the HF model (``model.``, ``transformer.`` ...; empty for itself)."""
    for name, module in model.hf.named_modules():
        if module is model.base:
            return f"{name}." if name else ""
    return ""


def _kind_in_block(model: WorkbenchModel, block: nn.Module, rest: str) -> str:
    adapter = model.adapter
    for kind, path in (
        ("router", adapter.router),
        ("experts", adapter.experts),
        ("experts", adapter.shared_experts),
        ("attention", adapter.attn),
        ("mlp", adapter.mlp),
    ):
        if path and (rest == path or rest.startswith(path + ".")):
            return kind
    owner = block.get_submodule(rest.rsplit(".", 1)[0]) if "." in rest else block
    return "norm" if is_norm(owner) else "other"


def parameter_sites(model: WorkbenchModel) -> dict[str, tuple[int, str]]:
    """Every parameter's (layer, kind) by its name in ``model.hf`` (tied tensors appear once)."""
    prefix, adapter = _prefix(model), model.adapter
    blocks = f"{prefix}{adapter.blocks}."
    block_modules = adapter.block_modules(model.base)
    output = model.hf.get_output_embeddings()
    unembedding = {id(p) for p in output.parameters()} if output is not None else set()
    embedding = {id(p) for p in model.hf.get_input_embeddings().parameters()}
    sites = {}
    for name, parameter in model.hf.named_parameters():
        if name.startswith(blocks):
            index, rest = name[len(blocks) :].split(".", 1)
            sites[name] = (int(index), _kind_in_block(model, block_modules[int(index)], rest))
        elif id(parameter) in embedding:
            sites[name] = (-1, "embedding")
        elif id(parameter) in unembedding:
            sites[name] = (-1, "unembedding")
        else:
            owner = model.hf.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model.hf
            sites[name] = (-1, "norm" if is_norm(owner) else "other")
    return sites


def _flipped(a: WorkbenchModel, b: WorkbenchModel, name: str) -> bool:
    """Whether B holds parameter ``name`` transposed: a GPT-2 ``Conv1D`` ([in, out]) that a quantisation
    backend (bitsandbytes) replaced by a linear layer ([out, in]) on one side only."""
    owner = name.rpartition(".")[0]
    if not name.endswith(".weight") or not owner:
        return False
    kinds = [type(m.hf.get_submodule(owner)).__name__ == "Conv1D" for m in (a, b)]
    return kinds[0] != kinds[1]


def check_same_architecture(a: WorkbenchModel, b: WorkbenchModel) -> None:
    """Refuse two checkpoints whose parameters differ in names or shapes, naming the first difference
    (a ``Conv1D`` weight a backend stored transposed counts in the first's layout).

    Raises:
        InputError: The checkpoints are not of one architecture.
    """
    shapes_a = {n: shape_of(p) for n, p in a.hf.named_parameters()}
    shapes_b = {
        n: shape_of(p)[::-1] if n in shapes_a and _flipped(a, b, n) else shape_of(p)
        for n, p in b.hf.named_parameters()
    }
    missing = sorted(set(shapes_a) ^ set(shapes_b))
    if missing:
        side = "the second" if missing[0] in shapes_a else "the first"
        raise InputError(
            f"not one architecture: {missing[0]} is missing from {side} checkpoint "
            f"({len(missing)} parameter names differ)"
        )
    for name, shape in shapes_a.items():
        if shapes_b[name] != shape:
            raise InputError(
                f"not one architecture: {name} is {shape} in the first, {shapes_b[name]} in the second"
            )


def weight_diff(a: WorkbenchModel, b: WorkbenchModel, ranks: bool = True) -> pd.DataFrame:
    """One row per parameter tensor: ``parameter, layer, kind, size, relative_change, change_norm,
    base_norm, changed_share, effective_rank`` (NaN for vectors, or with ``ranks=False``).

    Raises:
        InputError: The checkpoints are not of one architecture.
    """
    check_same_architecture(a, b)
    weights_a, weights_b = dict(a.hf.named_parameters()), dict(b.hf.named_parameters())
    rows = []
    for name, (layer, kind) in parameter_sites(a).items():
        owner = name.rpartition(".")[0]
        with torch.no_grad():  # a quantised checkpoint: its dequantised values
            before = dense(weights_a[name], a.hf.get_submodule(owner)).double()
            after = dense(weights_b[name], b.hf.get_submodule(owner)).double()
            change = (after.T if _flipped(a, b, name) else after) - before
        norm = float(change.norm())
        matrix = ranks and change.dim() >= 2
        rank = (effective_rank(change.flatten(1)) if norm else 0.0) if matrix else float("nan")
        rows.append(
            {
                "parameter": name,
                "layer": layer,
                "kind": kind,
                "size": "x".join(map(str, before.shape)),
                "relative_change": norm / max(float(before.norm()), 1e-30),
                "change_norm": norm,
                "base_norm": float(before.norm()),
                "changed_share": float((change != 0).double().mean()),
                "effective_rank": rank,
            }
        )
    return pd.DataFrame(rows)


def change_shares(table: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Per ``layer`` or ``kind``: ``share``, the part of the whole change (``sum ||D||_F^2``) it carries
    (shares sum to 1; all 0 for identical checkpoints), and ``relative_change``, its own change relative to
    its size, ``sqrt(sum ||D||_F^2 / sum ||W_a||_F^2)`` (a small router can carry a small share of the
    change and still change the most)."""
    energy = table.assign(energy=table.change_norm**2, size=table.base_norm**2)
    groups = energy.groupby(by, as_index=False)[["energy", "size"]].sum()
    total = float(groups.energy.sum())
    groups["share"] = groups.energy / total if total else 0.0
    groups["relative_change"] = (groups.energy / groups["size"].clip(lower=1e-300)) ** 0.5
    return groups[[by, "share", "relative_change"]]


def prompt_ids(model: WorkbenchModel, texts: dict[str, list[str]]) -> list[torch.Tensor]:
    """Every prompt's token ids, group after group (the base's tokenizer serves both checkpoints)."""
    return [model.encode(t)["input_ids"][0] for group in texts.values() for t in group]


def pair_of(ctx: Context) -> tuple[WorkbenchModel, WorkbenchModel, list[torch.Tensor]]:
    """A pair probe's (base, tuned) checkpoints, checked to be of one architecture, and the prompts' ids.

    Raises:
        InputError: They are not of one architecture, or a prompt is too long for the model.
    """
    assert ctx.base is not None  # Probe.measure refuses a pair probe without a base
    check_same_architecture(ctx.base, ctx.model)
    return ctx.base, ctx.model, prompt_ids(ctx.base, ctx.texts)


@dataclass(frozen=True)
class WeightParams:
    """``ranks``: 1 computes the effective rank of every matrix's change (an SVD each), 0 skips it."""

    ranks: int = param(1, low=0, high=1)


def _shares_by_layer(table: pd.DataFrame) -> pd.DataFrame:
    parts = [change_shares(rows, "layer").assign(model=m) for m, rows in table.groupby("model", sort=False)]
    return pd.concat(parts, ignore_index=True).pivot(index="model", columns="layer", values="share")


DIFF_WEIGHTS = Probe(
    name="diff_weights",
    doc="Per parameter tensor of a tuned checkpoint against its base: relative change, share of entries "
    "changed, effective rank of the change, with its layer and kind.",
    formula="D = W_b - W_a; relative_change = ||D||_F / ||W_a||_F; changed_share = #{D != 0} / size; "
    "effective_rank = exp(H(s / sum s)) over D's singular values; a layer's or kind's share of the change = "
    "sum ||D||_F^2 over it / sum over all",
    cite="effective rank: Roy & Vetterli 2007 (EUSIPCO); norm differences as in the diffing-toolkit "
    "(science-of-finetuning) and Minder et al. 2025",
    run=lambda ctx, params: weight_diff(*pair_of(ctx)[:2], ranks=bool(params.ranks)),
    params=WeightParams,
    needs=Needs(pair=True),
    figures=lambda t: per_model(
        t,
        lambda rows, m: bars_by_group(
            rows.assign(share=rows.change_norm**2 / max(float((rows.change_norm**2).sum()), 1e-300))
            .groupby(["layer", "kind"], as_index=False)
            .share.sum(),
            "layer",
            "share",
            "kind",
            f"Share of the weight change by layer and kind, {m}",
        ),
    ),
    summary=lambda t: _shares_by_layer(t).rename(columns=lambda c: f"layer {c}").reset_index(),
)
