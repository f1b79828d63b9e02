"""MoE expert-selection probes (first part: load, balance and domain information).

Definitions follow ``shared/PROBES.md``, section "MoE expert selection". Inputs are what the router
returned (``moe.hook_expert_indices`` [tokens, k], ``moe.hook_router_logits`` [tokens, n_experts]); top-k
is never recomputed here. The ids are ranked by the router's selection score for every family (column 0 is
the top-1 choice, also for DeepSeek's unsorted top-k), which the top-1 and adjacency probes rely on.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from workbench.models.model import WorkbenchModel
from workbench.numerics import entropy


def expert_load(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Share of token-slots per expert (Fedus et al. 2022, Switch Transformers; OLMoE Sec. 5).

    ``load_i = #{(t, j): indices[t, j] = i} / (tokens x k)``; sums to one; uniform is ``1 / n_experts``.

    Args:
        indices: Selected experts [tokens, k].
        n_experts: Number of routed experts.

    Returns:
        [n_experts] shares.
    """
    counts = torch.bincount(indices.reshape(-1), minlength=n_experts).float()
    return counts / counts.sum()


def switch_balance_loss(router_logits: torch.Tensor, indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch Transformer load-balancing loss of one layer (Fedus et al. 2022, eq. 4), differentiable.

    ``N x sum_i f_i P_i`` with ``f_i`` the share of tokens whose *top-1* expert is ``i`` and ``P_i`` the mean
    router probability of ``i``; equals 1 under perfectly balanced routing.

    Args:
        router_logits: [tokens, n_experts].
        indices: Selected experts [tokens, k], ranked (column 0 is the top-1).
        n_experts: Number of routed experts.
    """
    probs = router_logits.float().softmax(-1)
    top1 = torch.bincount(indices[:, 0], minlength=n_experts).float() / indices.shape[0]
    return n_experts * (top1 * probs.mean(0)).sum()


def domain_expert_mutual_information(indices: torch.Tensor, domains: torch.Tensor, n_experts: int) -> float:
    """Mutual information between expert choice and domain over token-slots, divided by H(domain).

    Each (token, slot) pair is one draw of (expert, domain of the token):
    ``I(E; D) = H(E) - sum_D p(D) H(E | D)`` in nats, normalised by ``H(D)`` so that 0 means routing says
    nothing about the domain and 1 means the domain is fully determined by the expert. OLMoE (Muennighoff
    et al. 2024, Sec. 5) reports the same dependence as domain specialisation; this is its
    information-theoretic summary.

    Args:
        indices: Selected experts [tokens, k].
        domains: Domain id per token [tokens].
        n_experts: Number of routed experts.
    """
    slots = domains[:, None].expand_as(indices).reshape(-1)
    return _information_share(slots, indices.reshape(-1), int(domains.max()) + 1, n_experts)


def _information_share(rows: torch.Tensor, columns: torch.Tensor, n_rows: int, n_columns: int) -> float:
    """``I(R; C) / H(R)`` (nats over nats) of paired draws of two categorical variables; 0 when ``R`` is
    constant."""
    joint = torch.zeros(n_rows, n_columns)
    joint.index_put_((rows, columns), torch.ones(rows.numel()), accumulate=True)
    joint /= joint.sum()
    p, q = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nonzero = joint > 0
    mi = (joint[nonzero] * (joint / (p * q))[nonzero].log()).sum()
    h = entropy(p.flatten())
    return float(mi / h) if h > 0 else 0.0


def load_entropy(load: torch.Tensor) -> float:
    """Entropy (nats) of the expert-load distribution; ``log(n_experts)`` when perfectly balanced."""
    return float(entropy(load))


def routing_entropy(router_logits: torch.Tensor, scoring: str = "softmax") -> torch.Tensor:
    """Entropy (nats) of each token's router distribution over experts. [tokens]

    ``p = softmax(logits)`` for softmax routers (also ``softmax_over_topk``, whose distribution before
    the top-k cut is the softmax of all logits); ``p = sigmoid(logits) / sum sigmoid(logits)`` for
    sigmoid routers (DeepSeek-V3). ``H = -sum_e p_e log p_e``: 0 when one expert takes all the mass,
    ``log(n_experts)`` when the router is indifferent.
    """
    logits = router_logits.float()
    if scoring == "sigmoid":
        scores = logits.sigmoid()
        probs = scores / scores.sum(-1, keepdim=True)
    else:
        probs = logits.softmax(-1)
    return entropy(probs)


def dead_experts(load: torch.Tensor) -> list[int]:
    """Experts that received no token-slot."""
    return (load == 0).nonzero().flatten().tolist()


def hf_pooled_balance_loss(router_logits: list[torch.Tensor], top_k: int, n_experts: int) -> float:
    """HF's ``load_balancing_loss_func`` (transformers' Mixtral code): all layers pooled, top-k counted.

    ``N x sum_e (mean over tokens and layers of 1[e in top-k]) x P_e`` summed over the k slots; it equals
    ``top_k`` under perfectly balanced routing (the Switch form of :func:`switch_balance_loss` equals 1).
    This variant recomputes top-k from the logits, as HF's training loss does.
    """
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    return float(load_balancing_loss_func(tuple(router_logits), n_experts, top_k))


def router_z_loss(router_logits: torch.Tensor) -> float:
    """ST-MoE router z-loss (Zoph et al. 2022, eq. 5): mean over tokens of ``logsumexp(logits)^2``."""
    return float(torch.logsumexp(router_logits.float(), dim=-1).pow(2).mean())


def domain_specialisation(counts: torch.Tensor, top_k: int) -> torch.Tensor:
    """OLMoE domain specialisation (Muennighoff et al. 2024, Sec. 5.2): ``spec(e) = k x count(e) / slots``.

    ``count(e)`` is how often expert ``e`` appeared in the domain's tokens' top-k and ``slots = sum_e
    count(e) = k x tokens``, so ``spec(e)`` is the share of the domain's tokens that route to ``e``; a
    uniform router gives ``k / E``.

    Args:
        counts: [n_experts] selection counts of one domain and layer.
        top_k: Experts per token.
    """
    counts = counts.float()
    return top_k * counts / counts.sum()


def selection_counts(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """[n_experts] number of tokens whose top-k contains each expert."""
    return torch.bincount(indices.reshape(-1), minlength=n_experts)


def vocabulary_specialisation(indices: torch.Tensor, token_ids: torch.Tensor, n_experts: int) -> float:
    """OLMoE vocabulary specialisation: per token id, the share of its occurrences whose top-k contains its
    favourite expert, averaged over token ids (1 = each token id always goes to one expert)."""
    hits = torch.zeros(int(token_ids.max()) + 1, n_experts)
    hits.index_put_(
        (token_ids[:, None].expand_as(indices).reshape(-1), indices.reshape(-1)),
        torch.ones(indices.numel()),
        accumulate=True,
    )
    occurrences = torch.bincount(token_ids, minlength=hits.shape[0]).float()
    seen = occurrences > 0
    return float((hits[seen].amax(-1) / occurrences[seen]).mean())


def coactivation(indices: torch.Tensor, n_experts: int, adjacent: bool = False) -> torch.Tensor:
    """OLMoE co-activation ``coact(i -> j) = N(i and j selected together) / N(i selected)`` [E, E].

    ``adjacent=True`` counts only neighbours in the ranked top-k list, as the released OLMoE analysis code
    does; the default counts all pairs. The diagonal is zero.
    """
    together = torch.zeros(n_experts, n_experts)
    k = indices.shape[-1]
    pairs = (
        [(a, a + 1) for a in range(k - 1)]
        if adjacent
        else [(a, b) for a in range(k) for b in range(k) if a != b]
    )
    for a, b in pairs:
        together.index_put_((indices[:, a], indices[:, b]), torch.ones(indices.shape[0]), accumulate=True)
        if adjacent:
            together.index_put_((indices[:, b], indices[:, a]), torch.ones(indices.shape[0]), accumulate=True)
    selected = selection_counts(indices, n_experts).float().clamp_min(1)
    return together / selected[:, None]


def consecutive_repetition(indices: torch.Tensor) -> dict[str, float]:
    """Mixtral paper (Jiang et al. 2024, Sec. 5): for consecutive tokens of one sequence [pos, k] (ranked),
    ``rep1 = P[top1(x_i) = top1(x_{i+1})]`` and ``repk = P[top-k sets intersect]``."""
    first = (indices[1:, 0] == indices[:-1, 0]).float().mean()
    overlap = (indices[1:, :, None] == indices[:-1, None, :]).any(-1).any(-1).float().mean()
    return {"rep1": float(first), "repk": float(overlap)}


def random_repetition_baseline(n_experts: int, top_k: int) -> dict[str, float]:
    """Random-routing baselines: ``1/E`` and ``1 - C(E-k, k) / C(E, k)`` (46.4% for E=8, k=2)."""
    return {
        "rep1": 1 / n_experts,
        "repk": 1 - math.comb(n_experts - top_k, top_k) / math.comb(n_experts, top_k),
    }


def router_saturation(indices: torch.Tensor, final_indices: torch.Tensor) -> float:
    """OLMoE router saturation (Sec. 5.1): ``mean_t |topk_t(x) & topk_final(x)| / k`` on the same tokens."""
    shared = (indices[:, :, None] == final_indices[:, None, :]).any(-1).sum(-1).float()
    return float((shared / indices.shape[-1]).mean())


def shared_expert_share(mlp_out: torch.Tensor, routed_out: torch.Tensor) -> float:
    """Share of the MoE output norm that the shared expert(s) contribute (DeepSeekMoE, Qwen2-MoE):
    ``||s|| / (||s|| + ||r||)`` per token, averaged, with ``r`` the routed experts' weighted sum and
    ``s = mlp_out - r`` the shared part as applied (after Qwen2-MoE's gate)."""
    mlp_out = mlp_out.reshape(-1, mlp_out.shape[-1]).float()
    routed = routed_out.reshape(-1, routed_out.shape[-1]).float()
    shared = (mlp_out - routed).norm(dim=-1)
    return float((shared / (shared + routed.norm(dim=-1)).clamp_min(1e-12)).mean())


def cross_layer_consistency(top1_here: torch.Tensor, top1_next: torch.Tensor, n_experts: int) -> float:
    """Mutual information (nats) between a token's top-1 expert at layer l and at layer l+1, divided by the
    entropy of the layer-l choice (0: independent, 1: determined)."""
    return _information_share(top1_here, top1_next, n_experts, n_experts)


def expert_importance(
    model: WorkbenchModel,
    ids: torch.Tensor,
    domains: torch.Tensor,
    layer: int,
    names: list[str] | None = None,
) -> pd.DataFrame:
    """Loss increase per domain when each expert of ``layer`` is masked (renormalised as the family does).

    Columns: ``domain, expert, delta_loss`` (mean next-token cross-entropy with the expert masked minus
    without). ``ids`` are windows [n, pos] with domain ids ``domains`` [n]; ``names`` label the domains.
    """
    from workbench.intervene import mask_experts

    def losses() -> torch.Tensor:
        with torch.no_grad():
            logits = model.hf(input_ids=ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(-1)
        return torch.stack([nll[domains == d].mean() for d in range(int(domains.max()) + 1)])

    base = losses()
    rows = []
    for expert in range(model.cfg.n_experts):
        with mask_experts(model, {layer: [expert]}):
            delta = losses() - base
        for d, value in enumerate(delta.tolist()):
            rows.append({"domain": names[d] if names else d, "expert": expert, "delta_loss": value})
    return pd.DataFrame(rows)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two vectors (ranks without tie averaging: meant for continuous data)."""
    ra = a.argsort().argsort().float()
    rb = b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))
