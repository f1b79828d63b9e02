"""The card's tuning rows measured against a base checkpoint: what the checkpoint diff says about rows 8
(instruction or preference tuning), 12 (tuning method) and 14 (weights tuning changed), each from the
registered pair probes' own tables (so a card and the probes run directly give the same numbers).

- 8: KL(base || tuned) by domain and the tokens whose logits fell and rose most (``diff_outputs``,
  ``diff_tokens``): a preference tune that blocks words shows them falling;
- 12: how much of the model the tuning touched (``diff_weights``): the share of tensors and of entries
  changed, the kinds left exactly as they were, and the median effective rank of the matrix changes over
  their smaller side (about 1 for full-rank tuning, small for a LoRA-like update);
- 14: the share of the change (``sum ||D||_F^2``) per layer and per kind, and the layers left unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from probes.diff import output_diff
from probes.diff_weights import change_shares, prompt_ids
from probes.factors import Factor
from probes.registry import get
from workbench.models.model import WorkbenchModel

ROWS = (8, 12, 14)


def _shares(table: pd.DataFrame, by: str) -> dict[str, float]:
    return {str(k): round(float(v), 4) for k, v in change_shares(table, by).set_index(by).share.items()}


def _method(weights: pd.DataFrame) -> dict[str, Any]:
    changed = weights.change_norm > 0
    sizes = weights["size"].str.split("x").map(lambda dims: [int(d) for d in dims])
    entries = sizes.map(lambda dims: pd.Series(dims).prod())
    matrices = weights[changed & (sizes.map(len) >= 2)]
    ratio = matrices.effective_rank / sizes[matrices.index].map(lambda dims: min(dims[0], dims[-1]))
    untouched = sorted(set(weights.kind) - set(weights[changed].kind))
    return {
        "tensors_changed": round(float(changed.mean()), 4),
        "entries_changed": round(float((weights.changed_share * entries).sum() / entries.sum()), 4),
        "kinds_unchanged": untouched,
        "median_rank_ratio": round(float(ratio.median()), 4) if len(ratio) else None,
    }


def _layers(weights: pd.DataFrame) -> dict[str, Any]:
    by_layer = change_shares(weights, "layer").set_index("layer").share
    return {
        "by_layer": _shares(weights, "layer"),
        "by_kind": _shares(weights, "kind"),
        "unchanged_layers": [int(layer) for layer, share in by_layer.items() if share == 0 and layer >= 0],
    }


def _merged(row: Factor, value: dict[str, Any], source: str) -> Factor:
    read = (
        row.value if isinstance(row.value, dict) else ({"read": row.value} if row.value is not None else {})
    )
    kept = row.source if row.value is not None else ""
    return replace(row, value={**read, **value}, source="; ".join(s for s in (kept, source) if s))


def tuning_rows(
    model: WorkbenchModel, base: WorkbenchModel, factors: list[Factor], texts: dict[str, list[str]]
) -> list[Factor]:
    """The card's factors with rows 8, 12 and 14 measured against ``base`` on ``texts``.

    Raises:
        InputError: The checkpoints are not of one architecture.
    """
    weights = get("diff_weights")(model, texts, base=base)
    outputs, tokens = output_diff(base, model, texts, prompt_ids(base, texts), top=5)  # both probes' tables
    moved = {d: rows.token.tolist() for d, rows in tokens.groupby("direction", sort=False)}
    source = f"measured: {{}} against {base.source}"
    measured = {
        8: (
            {
                "kl_by_domain": {r.group: round(float(r.kl), 4) for r in outputs.itertuples()},
                "fell_most": moved.get("fell", []),
                "rose_most": moved.get("rose", []),
            },
            source.format("diff_outputs, diff_tokens"),
        ),
        12: (_method(weights), source.format("diff_weights")),
        14: (_layers(weights), source.format("diff_weights")),
    }
    return [_merged(f, *measured[f.number]) if f.number in measured else f for f in factors]
