"""MoE expert-selection probes (first part: load, balance and domain information).

Definitions follow ``shared/PROBES.md``, section "MoE expert selection". Inputs are what the router
returned (``moe.hook_expert_indices`` [tokens, k], ``moe.hook_router_logits`` [tokens, n_experts]); top-k
is never recomputed here.
"""

from __future__ import annotations

import torch


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
    n_domains = int(domains.max()) + 1
    slots = domains[:, None].expand_as(indices).reshape(-1)
    joint = torch.zeros(n_domains, n_experts)
    joint.index_put_((slots, indices.reshape(-1)), torch.ones(slots.numel()), accumulate=True)
    joint /= joint.sum()
    p_d, p_e = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nonzero = joint > 0
    mi = (joint[nonzero] * (joint / (p_d * p_e))[nonzero].log()).sum()
    h_d = -(p_d[p_d > 0] * p_d[p_d > 0].log()).sum()
    return float(mi / h_d)
