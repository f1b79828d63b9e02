"""MoE probes on real modules: every MoE family at random init, the tiny-moe checkpoint pair, the zoo card."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pandas as pd
import pytest
import torch

import workbench
from probes import moe, moe_tables
from workbench import intervene
from workbench.arch import ADAPTERS
from workbench.capture import CaptureSpec, capture
from workbench.models.tiny import VOCAB, build_tiny
from workbench.zoo import DOMAINS, domain_windows, heldout
from workbench.zoo.registry import MODELS_DIR

MOE_FAMILIES = [a.family for a in ADAPTERS if a.router_convention is not None]
ROUTING = [r"blocks\.\d+\.moe\.hook_.*", r"blocks\.\d+\.hook_mlp_out"]


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_every_moe_probe_runs_on_every_family(family: str) -> None:
    model = workbench.load(build_tiny(family))
    ids = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    result = capture(model, ids, CaptureSpec(points=ROUTING), progress=False)
    n_experts, top_k = model.cfg.n_experts, model.cfg.top_k
    layers = sorted({int(n.split(".")[1]) for n in result.names if "expert_indices" in n})
    for layer in layers:
        pre = f"blocks.{layer}.moe."
        indices = torch.cat(result[pre + "hook_expert_indices"])
        logits = torch.cat(result[pre + "hook_router_logits"])
        load = moe.expert_load(indices, n_experts)
        assert abs(float(load.sum()) - 1) < 1e-6 and 0 < moe.load_entropy(load) <= torch.log(
            torch.tensor(n_experts)
        )
        assert isinstance(moe.dead_experts(load), list)
        assert (
            float(moe.switch_balance_loss(logits, indices, n_experts)) > 0 and moe.router_z_loss(logits) >= 0
        )
        assert 0 < moe.vocabulary_specialisation(indices, ids.reshape(-1), n_experts) <= 1
        assert moe.coactivation(indices, n_experts).shape == (n_experts, n_experts)
        assert moe.coactivation(indices, n_experts, adjacent=True).diagonal().abs().sum() == 0
        repetition = moe.consecutive_repetition(result[pre + "hook_expert_indices"][0])
        assert 0 <= repetition["rep1"] <= repetition["repk"] <= 1
        if pre + "hook_shared_out" in result:
            mlp_out = torch.cat(result[f"blocks.{layer}.hook_mlp_out"])
            share = moe.shared_expert_share(mlp_out, torch.cat(result[pre + "hook_routed_out"]))
            assert 0 < share < 1
    pooled = moe.hf_pooled_balance_loss(
        [torch.cat(result[f"blocks.{i}.moe.hook_router_logits"]) for i in layers], top_k, n_experts
    )
    assert pooled > 0
    top1 = [torch.cat(result[f"blocks.{i}.moe.hook_expert_indices"])[:, 0] for i in layers[:2]]
    assert 0 <= moe.cross_layer_consistency(top1[0], top1[1], n_experts) <= 1 + 1e-6
    table = moe.expert_importance(model, ids, torch.tensor([0, 0, 1, 1]), layers[0], names=["a", "b"])
    assert len(table) == 2 * n_experts and table.delta_loss.abs().max() > 0


def test_router_saturation_on_the_checkpoint_pair() -> None:
    final, early = workbench.load("tiny-moe"), workbench.load("tiny-moe-early")
    ids, _ = domain_windows(final.tokenizer, heldout(), per_domain=4)
    spec = CaptureSpec(points=[r"blocks\.\d+\.moe\.hook_expert_indices"])
    a, b = capture(early, ids, spec, progress=False), capture(final, ids, spec, progress=False)
    for name in a.names:
        saturation = moe.router_saturation(torch.cat(a[name]), torch.cat(b[name]))
        assert 0 < saturation < 1
        assert moe.router_saturation(torch.cat(b[name]), torch.cat(b[name])) == 1.0


def test_tiny_moe_mutual_information_matches_its_card() -> None:
    model = workbench.load("tiny-moe")
    ids, domains = domain_windows(model.tokenizer, heldout())
    result = capture(
        model, ids, CaptureSpec(points=[r"blocks\.\d+\.moe\.hook_expert_indices"]), progress=False
    )
    card = json.loads((MODELS_DIR / "tiny-moe" / "metrics.json").read_text())["tables"]
    recorded = {
        r["layer"]: r["mi_over_domain_entropy"] for r in card["Routing on the held-out mix (trained)"]
    }
    token_domains = domains[:, None].expand_as(ids).reshape(-1)
    for name in result.names:
        layer = int(name.split(".")[1])
        found = moe.domain_expert_mutual_information(torch.cat(result[name]), token_domains, 8)
        assert abs(found - recorded[layer]) < 0.01
    table = moe_tables.domain_expert_table(
        torch.cat(result["blocks.3.moe.hook_expert_indices"]), token_domains, 8, 2, list(DOMAINS)
    )
    assert set(table.domain) == set(DOMAINS) and abs(table.groupby("domain").spec.sum() - 2).max() < 1e-5


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v2"])
def test_dropping_the_shared_expert_changes_and_restores(family: str) -> None:
    model = workbench.load(build_tiny(family))
    ids = torch.randint(3, VOCAB, (1, 9), generator=torch.Generator().manual_seed(1))
    clean = model.forward(ids).logits
    with intervene.drop_shared_experts(model):
        dropped = model.forward(ids).logits
    assert (dropped - clean).abs().max() > 1e-5
    assert torch.equal(model.forward(ids).logits, clean)


WIDE = {"n_routed_experts": 16, "num_experts_per_tok": 4}  # top-4: topk(sorted=False) is really unsorted


def _routed(family: str, ids: torch.Tensor, shuffle: bool) -> tuple[workbench.WorkbenchModel, Any, list]:
    """A capture of the routing points, and what each router handed its experts in a plain HF forward.

    ``shuffle`` permutes the columns of every router's (weights, ids) per token with a random permutation,
    the same for both tensors: the same routing decision in another column order.
    """
    hf = build_tiny(family, **WIDE)
    generator = torch.Generator().manual_seed(3)

    def permute(module: torch.nn.Module, args: Any, output: tuple) -> tuple:
        logits, weights, indices = output
        order = torch.rand(indices.shape, generator=generator).argsort(-1)
        return logits, weights.gather(-1, order), indices.gather(-1, order)

    routers = [layer.mlp.gate for layer in hf.model.layers[hf.config.first_k_dense_replace :]]
    handles = [r.register_forward_hook(permute) for r in routers] if shuffle else []
    raw: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        record = [
            r.register_forward_hook(lambda m, a, out: raw.append(tuple(t.clone() for t in out)))
            for r in routers
        ]
        hf(input_ids=ids)
        for handle in record:
            handle.remove()
    model = workbench.load(hf)
    result = capture(model, ids, CaptureSpec(points=ROUTING), progress=False)
    for handle in handles:
        handle.remove()
    return model, result, raw


def _probe_values(result: Any, ids: torch.Tensor, layers: list[int]) -> dict[str, Any]:
    """Every order-reading probe of probes/moe.py on a capture (16 experts, top-4)."""
    values: dict[str, Any] = {"table": moe_tables.routing_table(result, ids.reshape(-1), 16, 4)}
    top1 = {}
    for layer in layers:
        pre = f"blocks.{layer}.moe."
        indices = torch.cat(result[pre + "hook_expert_indices"])
        logits = torch.cat(result[pre + "hook_router_logits"])
        top1[layer] = indices[:, 0]
        values[f"{layer}.ids"] = indices
        values[f"{layer}.weights"] = torch.cat(result[pre + "hook_expert_weights"])
        values[f"{layer}.switch"] = float(moe.switch_balance_loss(logits, indices, 16))
        values[f"{layer}.adjacent"] = moe.coactivation(indices, 16, adjacent=True)
        values[f"{layer}.rep"] = [moe.consecutive_repetition(x) for x in result[pre + "hook_expert_indices"]]
    values["consistency"] = moe.cross_layer_consistency(top1[layers[0]], top1[layers[1]], 16)
    return values


@pytest.mark.parametrize("family", ["deepseek_v2", "deepseek_v3"])
def test_order_reading_probes_ignore_the_routers_column_order(family: str) -> None:
    ids = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    model, plain, raw = _routed(family, ids, shuffle=False)
    _, shuffled, raw_shuffled = _routed(family, ids, shuffle=True)
    layers = sorted({int(n.split(".")[1]) for n in plain.names if "expert_indices" in n})
    assert len(layers) == 2
    for (_, _, a), (_, _, b) in zip(raw, raw_shuffled, strict=True):  # the experts really got other orders
        assert torch.equal(a.sort(-1).values, b.sort(-1).values) and not torch.equal(a, b)
    # Ids and what is counted from them are equal; values from logits or weights are equal up to the last
    # bits, because the experts' sums run in column order and the next layer's input moves by ~1e-9.
    expected, got = _probe_values(plain, ids, layers), _probe_values(shuffled, ids, layers)
    pd.testing.assert_frame_equal(got.pop("table"), expected.pop("table"), rtol=1e-5)
    for key, value in expected.items():
        if key.endswith((".weights", ".switch")):
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(got[key], value) if isinstance(value, torch.Tensor) else got[key] == value, key

    # rep1 and the Switch loss written out from the router's raw output, by plain loops: each token's
    # top-1 is the chosen id with the highest selection score (DeepSeek-V3: sigmoid + correction bias)
    table = moe_tables.routing_table(plain, ids.reshape(-1), 16, 4).set_index("layer")
    for layer, (logits, _, indices) in zip(layers, raw, strict=True):
        gate = model.hf.model.layers[layer].mlp.gate
        scores = (
            logits.sigmoid() + gate.e_score_correction_bias if family == "deepseek_v3" else logits.softmax(-1)
        )
        top1 = [max(row.tolist(), key=lambda e, t=t: float(scores[t, e])) for t, row in enumerate(indices)]
        per_sequence = [top1[s * 16 : (s + 1) * 16] for s in range(4)]
        rep1 = sum(sum(a == b for a, b in itertools.pairwise(seq)) / 15 for seq in per_sequence) / 4
        assert abs(table.loc[layer, "rep1"] - rep1) < 1e-6  # the probe counts in float32
        probs = logits.softmax(-1).mean(0)
        switch = 16 * sum(top1.count(e) / len(top1) * float(probs[e]) for e in range(16))
        assert abs(table.loc[layer, "switch_loss"] - switch) < 1e-5
