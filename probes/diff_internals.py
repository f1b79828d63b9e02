"""What a change of checkpoint (tuning, quantisation) did to the model's internal landmarks, per layer,
from one capture of each checkpoint on the same tokens (``a`` the base, ``b`` the other):

- the sink rate (Gu et al. 2024, eq. 2): the percentage of (prompt, head) whose first-token alpha exceeds
  ``eps`` (0.3);
- massive activations (Sun et al. 2024, Sec. 2): the largest residual magnitude over the median magnitude,
  averaged over prompts, and the count of entries above 100 and 1000 x the median;
- the intrinsic dimension (TwoNN, Facco et al. 2017, 90% of the ratios) of the residual tokens, both
  checkpoints on the same subsample of tokens.

Each pair of columns ``X_a, X_b`` comes with ``X_change = X_b - X_a``; identical checkpoints change nothing
(NaN where a measure is undefined: a layer without attention, fewer than three distinct tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from probes.compression import subsample, twonn
from probes.diff_weights import pair_of
from probes.figures import lines_by_group
from probes.params import param
from probes.registry import Context, Needs, Probe
from probes.sinks import (
    KEY_MASS,
    PATTERN,
    RESIDUALS,
    alpha_from_key_mass,
    key_masses,
    massive_activations,
)
from workbench.capture import Capture, CaptureSpec, capture
from workbench.models.model import WorkbenchModel

EMBED = "blocks.0.hook_resid_pre"
States = dict[int, list[torch.Tensor]]


def residual_states(model: WorkbenchModel, ids: list[torch.Tensor]) -> States:
    """Residual states per layer (-1: the embeddings) per prompt [pos, d_model], float64."""
    names = [EMBED, *model.hook_points(RESIDUALS)]
    result = capture(model, ids, CaptureSpec(points=names), progress=False)
    layers = [-1, *range(len(names) - 1)]
    return {layer: [h.double() for h in result[name]] for layer, name in zip(layers, names, strict=True)}


def _sink_rate(found: Capture, layer: int, causal: bool, eps: float) -> float:
    """Percentage of (prompt, head) with first-token alpha above ``eps``; NaN for a layer without
    attention."""
    if not {KEY_MASS.format(layer=layer), PATTERN.format(layer=layer)} & set(found.names):
        return float("nan")
    alphas = torch.stack([alpha_from_key_mass(m, 0, causal) for m in key_masses(found, layer)])
    return float(100 * (alphas > eps).double().mean())


def _twonn(points: torch.Tensor) -> float:
    """TwoNN of the distinct points; NaN below three (a prompt set of one or two tokens)."""
    return twonn(points) if len(torch.unique(points, dim=0)) >= 3 else float("nan")


def _landmarks(found: Capture, hidden: list[torch.Tensor], layer: int, causal: bool, eps: float) -> dict:
    massive = [massive_activations(h) for h in hidden]
    return {
        "sink_rate": _sink_rate(found, layer, causal, eps),
        "top_ratio": sum(m["top_ratio"] for m in massive) / len(massive),
        "n_massive": float(sum(m["n_massive"] for m in massive)),
        "twonn": _twonn(subsample(torch.cat(hidden))),
    }


def internals_diff(
    a: WorkbenchModel,
    b: WorkbenchModel,
    ids: list[torch.Tensor],
    eps: float = 0.3,
    states: tuple[States, States] | None = None,
) -> pd.DataFrame:
    """Per layer: ``layer``, then ``sink_rate``, ``top_ratio``, ``n_massive`` and ``twonn`` each as ``_a``,
    ``_b`` and ``_change`` (module docstring); ``states``: both models' :func:`residual_states` on ``ids``
    when the caller holds them already."""
    states = states or (residual_states(a, ids), residual_states(b, ids))
    spec = CaptureSpec(stats=["key_mass"])
    found = [capture(m, ids, spec, progress=False) for m in (a, b)]
    rows = []
    for layer in range(a.cfg.n_layers):
        sides = [
            _landmarks(f, s[layer], layer, a.cfg.causal, eps) for f, s in zip(found, states, strict=True)
        ]
        row: dict[str, float] = {"layer": layer}
        for measure in sides[0]:
            row |= {
                f"{measure}_a": sides[0][measure],
                f"{measure}_b": sides[1][measure],
                f"{measure}_change": sides[1][measure] - sides[0][measure],
            }
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class InternalsParams:
    """``eps``: the alpha above which a head counts as a sink on a prompt."""

    eps: float = param(0.3, low=0, high=1, below=True)


def _internals(ctx: Context, params: InternalsParams) -> pd.DataFrame:
    a, b, ids = pair_of(ctx)
    return internals_diff(a, b, ids, params.eps)


DIFF_INTERNALS = Probe(
    name="diff_internals",
    doc="Per layer, base against the other checkpoint: sink rate, massive-activation ratio and count, and "
    "TwoNN intrinsic dimension, each with its change.",
    formula="sink_rate = 100 x share of (prompt, head) with alpha_h > eps; top_ratio = mean over prompts of "
    "max |h| / median |h|; n_massive = entries with |h| > 100 and >= 1000 x median; twonn = TwoNN (90%) "
    "on the residual tokens; X_change = X_b - X_a",
    cite="Gu et al. 2024 (arXiv 2410.10781), eq. 2; Sun et al. 2024 (arXiv 2402.17762), Sec. 2; Facco et "
    "al. 2017 (Sci. Rep. 7:12140)",
    run=_internals,
    params=InternalsParams,
    needs=Needs(pair=True, tokenizer=True, points=(RESIDUALS,)),
    figures=lambda t: [
        (measure, lines_by_group(t, "layer", f"{measure}_change", "model", f"{title} per layer"))
        for measure, title in (
            ("twonn", "Change of the TwoNN intrinsic dimension"),
            ("top_ratio", "Change of max |h| / median |h|"),
            ("sink_rate", "Change of the sink rate (%)"),
        )
    ],
    summary=lambda t: t.groupby("model", sort=False, as_index=False).agg(
        sink_rate_change=("sink_rate_change", "mean"),
        top_ratio_change=("top_ratio_change", "mean"),
        twonn_change=("twonn_change", "mean"),
        max_abs_twonn_change=("twonn_change", lambda s: s.abs().max()),
    ),
)
