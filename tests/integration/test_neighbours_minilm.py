"""Exact k-NN on real hidden states: all-MiniLM-L6-v2 token representations (they hold near-duplicate
tokens whose nearest distance is below the fp32 resolution of their norms)."""

from __future__ import annotations

import pytest
import torch

import workbench
from probes.neighbours import knn
from workbench.zoo import heldout


@pytest.mark.slow
def test_minilm_hidden_states_match_float64_brute_force() -> None:
    model = workbench.load("minilm")
    domains = heldout()
    texts = [text[start : start + 400] for text in domains["code"] for start in range(0, 1600, 400)]
    texts += [text[:400] for name, group in domains.items() if name != "code" for text in group[:4]]
    batch = model.encode(texts)
    keep = batch["attention_mask"].bool()
    values = model.read(batch, r"blocks\.[025]\.hook_resid_post")
    for name, hidden in values.items():
        points = hidden[keep]
        x = points.double()
        exact = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").fill_diagonal_(float("inf"))
        expected = exact.topk(4, dim=1, largest=False)
        got = knn(points, 4)
        torch.testing.assert_close(got.distances.double(), expected.values, rtol=1e-6, atol=0, msg=name)
        # the reported neighbours are at exactly the brute-force distances (a tie may swap an id)
        torch.testing.assert_close(exact.gather(1, got.indices), expected.values, rtol=1e-12, atol=0)
