"""Eviction simulation with the real models: the full budget is the full cache; pruning costs quality."""

from __future__ import annotations

import pytest
import torch

import workbench
from probes.eviction import eviction_table, simulate_eviction
from probes.kvcache import POLICIES
from workbench.models.tiny import VOCAB, build_tiny


def _ids(n: int = 24) -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("family", ["llama", "mixtral", "gpt2", "deepseek_v3", "gpt_oss"])
@pytest.mark.parametrize("policy", POLICIES)
def test_full_budget_equals_the_full_cache_exactly(family: str, policy: str) -> None:
    model = workbench.load(build_tiny(family))
    found = simulate_eviction(model, _ids(), prompt_len=16, policy=policy, budget=16)
    assert found["kl"] == 0.0 and found["top1_agreement"] == 1.0


def test_pruning_costs_quality_and_cache_positions_work() -> None:
    model = workbench.load(build_tiny("llama"))
    ids = _ids(32)
    small = simulate_eviction(model, ids, prompt_len=24, policy="recent", budget=4)
    assert small["kl"] > 0
    repositioned = simulate_eviction(
        model, ids, prompt_len=24, policy="sink_window", budget=8, positions="cache"
    )
    assert repositioned["kl"] > 0 and repositioned["perplexity"] > 0
    full = simulate_eviction(model, ids, prompt_len=24, policy="sink_window", budget=24, positions="cache")
    assert full["kl"] == 0.0


def test_sliding_window_layers_keep_their_own_window() -> None:
    found = simulate_eviction(workbench.load(build_tiny("gpt_oss")), _ids(), 16, "h2o", 6)
    assert found["kl"] > 0 and 0 <= found["top1_agreement"] <= 1


def test_cache_positions_refused_without_plain_rope() -> None:
    with pytest.raises(ValueError, match="rotate-half RoPE"):
        simulate_eviction(workbench.load(build_tiny("gpt2")), _ids(), 16, "recent", 4, positions="cache")


def test_eviction_table_on_a_zoo_model() -> None:
    model = workbench.load("tiny-moe")
    ids = model.encode("def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5 and then exits")[
        "input_ids"
    ]
    table = eviction_table(model, ids, prompt_len=ids.shape[1] - 6, budgets=(0.3, 1.0))
    assert (table[table.budget == 1.0].kl == 0).all()
    assert set(table.policy) == {"recent", "sink_window", "h2o", "snapkv"}
