"""What tuning changed in how a model routes: attention per head and MoE expert selection per layer, from
one capture of each checkpoint on the same tokens (``a`` the base, ``b`` the tuned one).

- attention, per layer and head: the first-token alpha of each (Gu et al. 2024: mean attention on key 0
  over the queries that see it) and its change, the mean row entropy of each (nats) and its change, and
  the pattern divergence: the Jensen-Shannon divergence between A's and B's attention rows, in bits,
  averaged over queries (0: the same pattern, 1: disjoint supports);
- MoE, per layer: the load change, the total-variation distance ``1/2 sum_e |load_b(e) - load_a(e)|``
  between the expert loads (Switch Transformers' load: share of token-slots per expert); the top-k overlap,
  the mean over tokens of ``|S_a ∩ S_b| / |S_a ∪ S_b|`` (Jaccard) of the selected expert sets; and the
  share of tokens whose top-1 expert is the same.
"""

from __future__ import annotations

import pandas as pd
import torch

from probes.diff_weights import pair_of
from probes.figures import heatmap, lines_by_group
from probes.moe import expert_load
from probes.moe_tables import INDICES, moe_layers
from probes.registry import Context, Needs, Probe, per_model
from probes.sinks import PATTERN, key_alpha
from workbench.capture import CaptureSpec, capture
from workbench.models.model import WorkbenchModel

PATTERNS = r"blocks\.\d+\.attn\.hook_pattern"


def _entropy(rows: torch.Tensor) -> torch.Tensor:
    """``-sum p ln p`` over the last axis (0 ln 0 = 0)."""
    return -(rows * rows.clamp_min(1e-300).log()).sum(-1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits between distributions on the last axis (Lin 1991):
    ``H(m) - (H(p) + H(q)) / 2`` with ``m = (p + q) / 2``; 0 for equal rows, 1 for disjoint ones."""
    return (_entropy((p + q) / 2) - (_entropy(p) + _entropy(q)) / 2) / torch.log(
        torch.tensor(2.0, dtype=p.dtype)
    )


def attention_diff(a: WorkbenchModel, b: WorkbenchModel, ids: list[torch.Tensor]) -> pd.DataFrame:
    """Per layer and head: ``layer, head, alpha_a, alpha_b, alpha_change, entropy_a, entropy_b,
    entropy_change, pattern_js`` over every query of every prompt (module docstring)."""
    spec = CaptureSpec(points=[PATTERNS])
    found = [capture(m, ids, spec, progress=False) for m in (a, b)]
    causal, rows = a.cfg.causal, []
    for layer in range(a.cfg.n_layers):
        name = PATTERN.format(layer=layer)
        if name not in found[0].names:
            continue
        alphas, entropies, js = [[], []], [[], []], []
        for pa, pb in zip(found[0][name], found[1][name], strict=True):
            pa, pb = pa.double(), pb.double()
            for side, pattern in enumerate((pa, pb)):
                alphas[side].append(key_alpha(pattern, 0, causal))
                entropies[side].append(_entropy(pattern))  # [head, q]
            js.append(js_divergence(pa, pb))
        alpha = [torch.stack(x).mean(0) for x in alphas]
        entropy = [torch.cat(x, dim=1).mean(1) for x in entropies]
        divergence = torch.cat(js, dim=1).mean(1)
        for head in range(len(divergence)):
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "alpha_a": float(alpha[0][head]),
                    "alpha_b": float(alpha[1][head]),
                    "alpha_change": float(alpha[1][head] - alpha[0][head]),
                    "entropy_a": float(entropy[0][head]),
                    "entropy_b": float(entropy[1][head]),
                    "entropy_change": float(entropy[1][head] - entropy[0][head]),
                    "pattern_js": float(divergence[head]),
                }
            )
    return pd.DataFrame(rows)


def routing_diff(a: WorkbenchModel, b: WorkbenchModel, ids: list[torch.Tensor]) -> pd.DataFrame:
    """Per MoE layer: ``layer, load_change, max_load_change, topk_jaccard, top1_agreement`` (module
    docstring)."""
    spec = CaptureSpec(points=[INDICES])
    found = [capture(m, ids, spec, progress=False) for m in (a, b)]
    n_experts, rows = a.cfg.n_experts, []
    for layer in moe_layers(found[0]):
        name = f"blocks.{layer}.moe.hook_expert_indices"
        ia, ib = (torch.cat(f[name]).long() for f in found)  # [tokens, k]
        change = expert_load(ib, n_experts) - expert_load(ia, n_experts)
        one_a = torch.zeros(len(ia), n_experts, dtype=torch.bool).scatter_(1, ia, True)
        one_b = torch.zeros(len(ib), n_experts, dtype=torch.bool).scatter_(1, ib, True)
        overlap = (one_a & one_b).sum(1).double() / (one_a | one_b).sum(1).double()
        rows.append(
            {
                "layer": layer,
                "load_change": float(change.abs().sum() / 2),
                "max_load_change": float(change.abs().max()),
                "topk_jaccard": float(overlap.mean()),
                "top1_agreement": float((ia[:, 0] == ib[:, 0]).double().mean()),
            }
        )
    return pd.DataFrame(rows)


def _attention(ctx: Context, params: object) -> pd.DataFrame:
    return attention_diff(*pair_of(ctx))


def _routing(ctx: Context, params: object) -> pd.DataFrame:
    return routing_diff(*pair_of(ctx))


DIFF_ATTENTION = Probe(
    name="diff_attention",
    doc="Per layer and head, base against tuned: first-token alpha, row entropy and their changes, and the "
    "Jensen-Shannon divergence between the two attention patterns.",
    formula="alpha = mean over queries of A[q, 0] (causal: over the T queries that see key 0); entropy = "
    "mean_q -sum_k A[q, k] ln A[q, k]; pattern_js = mean_q JS(A_a[q], A_b[q]) in bits",
    cite="alpha: Gu et al. 2024 (arXiv 2410.10781), Sec. 3; Jensen-Shannon divergence: Lin 1991 (IEEE "
    "Trans. Inf. Theory 37(1))",
    run=_attention,
    needs=Needs(pair=True, tokenizer=True, points=(PATTERNS,)),
    figures=lambda t: per_model(
        t, lambda rows, m: heatmap(rows, "layer", "head", "pattern_js", f"Pattern divergence (bits), {m}")
    ),
    summary=lambda t: t.groupby(["model", "layer"], sort=False, as_index=False).agg(
        alpha_change=("alpha_change", "mean"),
        entropy_change=("entropy_change", "mean"),
        pattern_js=("pattern_js", "mean"),
    ),
)

DIFF_ROUTING = Probe(
    name="diff_routing",
    doc="Per MoE layer, base against tuned: expert-load change (total variation), top-k overlap (Jaccard) "
    "and top-1 agreement on the same tokens.",
    formula="load_change = 1/2 sum_e |load_b(e) - load_a(e)|; topk_jaccard = mean_t |S_a(t) ∩ S_b(t)| / "
    "|S_a(t) ∪ S_b(t)|; top1_agreement = share of tokens with the same top-1 expert",
    cite="load: Fedus et al. 2022 (Switch Transformers, JMLR 23); set overlap: Jaccard 1912",
    run=_routing,
    needs=Needs(pair=True, tokenizer=True, moe=True, points=(INDICES,)),
    figures=lambda t: [
        ("top-k overlap", lines_by_group(t, "layer", "topk_jaccard", "model", "Top-k overlap (Jaccard)")),
        ("load change", lines_by_group(t, "layer", "load_change", "model", "Expert-load change (TV)")),
    ],
    summary=lambda t: t,
)
