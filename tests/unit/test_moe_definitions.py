"""MoE probes on the released OLMoE routing counts and on planted routing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from probes.moe import (
    coactivation,
    consecutive_repetition,
    domain_specialisation,
    hf_pooled_balance_loss,
    random_repetition_baseline,
    router_saturation,
    switch_balance_loss,
    vocabulary_specialisation,
)

ORACLE = Path(__file__).resolve().parents[3] / "shared" / "oracles" / "olmoe_routing_counts.json"


def _spec(model: dict, domain: str, layer: int) -> torch.Tensor:
    counts = model["domains"][domain][str(layer)]
    return domain_specialisation(
        torch.tensor([counts[str(e)] for e in range(model["n_experts"])]), model["top_k"]
    )


@pytest.mark.skipif(not ORACLE.is_file(), reason="shared/oracles is laid beside the checkout")
def test_olmoe_released_counts_reproduce_the_paper() -> None:
    models = json.loads(ORACLE.read_text())["models"]
    olmoe, mixtral = models["OLMoE-1B-7B-0924"], models["Mixtral-8x7B"]
    arxiv, github = _spec(olmoe, "arxiv", 7), _spec(olmoe, "github", 7)
    assert int(arxiv.argmax()) == 17 and abs(100 * float(arxiv.max()) - 78.5) < 0.1
    assert int(github.argmax()) == 17 and abs(100 * float(github.max()) - 77.0) < 0.1
    assert abs(100 * float(_spec(olmoe, "c4", 15).max()) - 31.2) < 0.1
    for domain in mixtral["domains"]:
        for layer in mixtral["layers"]:
            assert round(100 * float(_spec(mixtral, domain, layer).max()), 1) <= 33.2  # reported to 0.1


def test_balanced_routing_gives_one_and_top_k() -> None:
    experts, top_k, tokens = 8, 2, 800
    logits = torch.full((tokens, experts), -4.0)
    for t in range(tokens):  # cycle the favourite pair so every expert fills every slot equally
        logits[t, t % experts] = 4.0
        logits[t, (t + 1) % experts] = 3.0
    indices = logits.topk(top_k, -1).indices
    assert abs(float(switch_balance_loss(logits, indices, experts)) - 1.0) < 1e-6
    assert abs(hf_pooled_balance_loss([logits, logits], top_k, experts) - top_k) < 1e-5


def test_random_routing_repetition_matches_the_baselines() -> None:
    generator = torch.Generator().manual_seed(0)
    indices = torch.stack([torch.randperm(8, generator=generator)[:2] for _ in range(40_000)])
    found, baseline = consecutive_repetition(indices), random_repetition_baseline(8, 2)
    assert abs(baseline["repk"] - 0.464) < 1e-3
    assert abs(found["rep1"] - baseline["rep1"]) < 0.01 and abs(found["repk"] - baseline["repk"]) < 0.01


def test_coactivation_saturation_and_vocabulary() -> None:
    indices = torch.tensor([[0, 1, 2], [0, 1, 3], [2, 3, 0]])
    all_pairs = coactivation(indices, 4)
    assert all_pairs[0, 1] == 2 / 3 and all_pairs[1, 0] == 1.0 and all_pairs[0, 0] == 0
    adjacent = coactivation(indices, 4, adjacent=True)
    assert adjacent[0, 2] == 0.0 and adjacent[2, 0] == 0.0  # never neighbours in the ranked lists
    assert adjacent[0, 1] == 2 / 3
    assert router_saturation(indices, indices) == 1.0
    assert router_saturation(indices[:, :1], torch.tensor([[1], [1], [2]])) == pytest.approx(1 / 3)
    tokens = torch.tensor([5, 5, 7])
    assert vocabulary_specialisation(indices, tokens, 4) == 1.0
