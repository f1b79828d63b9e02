"""Where tuning's change lives: cross-patching. The tuned checkpoint ``b`` runs with some of its blocks
replaced by the base ``a``'s, from the bottom up (blocks ``0 .. k-1``) and from the top down (the last
``k``), and the KL to the base that remains is measured:

    kl(k) = mean over positions of KL(p_a || p_{b with k blocks of a})

``k = 0`` is the diff itself, ``k = n_layers`` leaves only B's embeddings, final norm and unembedding. A
change that lives in the top blocks vanishes after a few top-down swaps and survives the bottom-up ones
until the swap reaches it (the layer-swapping view of Bandarkar et al. 2024, "Layer Swapping for Zero-Shot
Cross-Lingual Transfer", arXiv 2410.01335, run as a measurement).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch

from probes.diff_weights import pair_of
from probes.divergence import kl_divergence, next_token_log_probs
from probes.figures import lines_by_group
from probes.registry import Context, Needs, Probe, per_model
from workbench.models.model import WorkbenchModel


@contextmanager
def blocks_of(target: WorkbenchModel, source: WorkbenchModel, layers: Sequence[int]) -> Iterator[None]:
    """``target`` runs with ``source``'s block modules standing in at ``layers`` (the modules themselves,
    not copied weights: a float block can stand in a quantised model and the reverse); its own blocks are
    put back on exit, also after an error."""
    container = target.base.get_submodule(target.adapter.blocks)
    theirs = source.adapter.block_modules(source.base)
    saved = {i: container[i] for i in layers}
    try:
        for i in layers:
            container[i] = theirs[i]
        yield
    finally:
        for i, block in saved.items():
            container[i] = block


def cross_patching(a: WorkbenchModel, b: WorkbenchModel, ids: list[torch.Tensor]) -> pd.DataFrame:
    """Rows ``direction, blocks_from_a, layers, kl, kl_share`` (``bottom_up`` / ``top_down``; ``layers``
    the swapped blocks as text; ``kl_share`` = kl over the unpatched KL, 0 when that is 0)."""
    n = a.cfg.n_layers
    reference = [next_token_log_probs(a, p) for p in ids]

    def remaining(layers: list[int]) -> float:
        with blocks_of(b, a, layers):
            kls = [
                kl_divergence(ref, next_token_log_probs(b, p)) for ref, p in zip(reference, ids, strict=True)
            ]
        return float(torch.cat(kls).mean())

    unpatched = remaining([])
    rows = []
    for direction in ("bottom_up", "top_down"):
        for k in range(n + 1):
            layers = list(range(k)) if direction == "bottom_up" else list(range(n - k, n))
            kl = unpatched if k == 0 else remaining(layers)
            span = f"{layers[0]}-{layers[-1]}" if layers else "none"
            rows.append(
                {
                    "direction": direction,
                    "blocks_from_a": k,
                    "layers": span,
                    "kl": kl,
                    "kl_share": kl / unpatched if unpatched else 0.0,
                }
            )
    return pd.DataFrame(rows)


def _patching(ctx: Context, params: object) -> pd.DataFrame:
    return cross_patching(*pair_of(ctx))


DIFF_PATCHING = Probe(
    name="diff_patching",
    doc="Cross-patching: the KL to the base that remains when the tuned model's blocks are replaced by the "
    "base's, k at a time from the bottom up and from the top down.",
    formula="kl(k) = mean_t KL(p_a || p_b[blocks of a]) with blocks 0..k-1 (bottom_up) or the last k "
    "(top_down) taken from a; kl_share = kl(k) / kl(0)",
    cite="layer swapping: Bandarkar et al. 2024 (arXiv 2410.01335); per-token KL as in the diffing-toolkit",
    run=_patching,
    needs=Needs(pair=True, tokenizer=True, causal_lm=True, runs_model=True),
    figures=lambda t: per_model(
        t,
        lambda rows, m: lines_by_group(
            rows, "blocks_from_a", "kl_share", "direction", f"KL left after swapping in base blocks, {m}"
        ),
    ),
    summary=lambda t: (
        t.pivot_table(index=["model", "direction"], columns="blocks_from_a", values="kl_share", sort=False)
        .rename(columns=lambda c: f"k={c}")
        .reset_index()
    ),
)
