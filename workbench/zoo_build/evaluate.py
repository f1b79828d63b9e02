"""Routing statistics of zoo MoE models on held-out text with known domains (recorded in their cards)."""

from __future__ import annotations

from typing import Any

import torch

from probes.moe import domain_expert_mutual_information, expert_load
from workbench.models.model import WorkbenchModel


def routing_stats(model: WorkbenchModel, ids: torch.Tensor, domains: torch.Tensor) -> list[dict[str, float]]:
    """Per MoE layer: the smallest expert load and MI(expert; domain) / H(domain) over token-slots."""
    values = model.read(ids, r"blocks\.\d+\.moe\.hook_expert_indices")
    n_experts = model.cfg.n_experts
    token_domains = domains[:, None].expand_as(ids).reshape(-1)
    rows = []
    for name, indices in values.items():
        rows.append(
            {
                "layer": int(name.split(".")[1]),
                "min_expert_load": float(expert_load(indices, n_experts).min()),
                "mi_over_domain_entropy": domain_expert_mutual_information(indices, token_domains, n_experts),
            }
        )
    return rows


def random_init_routing_stats(
    config: Any, tokenizer: Any, ids: torch.Tensor, domains: torch.Tensor, seeds: int = 5
) -> list[dict[str, float]]:
    """The same architecture at random init (HF's initialisation), per layer averaged over ``seeds`` seeds.

    Random networks already route by token identity and context averages, which differ between domains,
    so the baseline is not zero; several seeds give its typical value rather than one draw.
    """
    import transformers as tf

    draws = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        fresh = tf.AutoModelForCausalLM.from_config(config).eval()
        draws.append(
            routing_stats(WorkbenchModel(fresh, tokenizer, source=f"random init {seed}"), ids, domains)
        )
    rows = []
    for layer_rows in zip(*draws, strict=True):
        mi = torch.tensor([r["mi_over_domain_entropy"] for r in layer_rows])
        rows.append(
            {
                "layer": layer_rows[0]["layer"],
                "min_expert_load": min(r["min_expert_load"] for r in layer_rows),
                "mi_over_domain_entropy": float(mi.mean()),
                "mi_seed_std": float(mi.std()),
                "mi_seed_max": float(mi.max()),
            }
        )
    return rows
