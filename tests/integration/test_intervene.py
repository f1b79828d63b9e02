"""Interventions change the computation while active and leave no trace after."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench import intervene
from workbench.models.tiny import VOCAB, build_tiny

MOE = ["mixtral", "olmoe", "qwen2_moe", "deepseek_v3", "gpt_oss", "granitemoe"]


def _ids(seed: int = 0, n: int = 7) -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def test_head_ablation_changes_logits_and_exit_restores() -> None:
    model = workbench.load(build_tiny("llama"))
    ids = _ids()
    clean = model.forward(ids).logits
    with intervene.ablate_heads(model, {1: [0, 2]}):
        ablated = model.forward(ids).logits
        z = model.read(ids, "blocks.1.attn.hook_z")["blocks.1.attn.hook_z"]
    assert (ablated - clean).abs().max() > 1e-4
    assert z[:, :, [0, 2]].abs().max() == 0 and z[:, :, 1].abs().max() > 0
    assert torch.equal(model.forward(ids).logits, clean)


def test_mean_ablation_uses_reference_means() -> None:
    model = workbench.load(build_tiny("gpt2"))
    means = intervene.head_means(model, [_ids(1)[0], _ids(2)[0]], layers=[0])
    with intervene.ablate_heads(model, {0: [3]}, means=means):
        z = model.read(_ids(), "blocks.0.attn.hook_z")["blocks.0.attn.hook_z"]
    assert torch.allclose(z[0, :, 3], means[0][3].expand(7, -1))


def test_patching_the_residual_stream_transplants_the_output() -> None:
    model = workbench.load(build_tiny("llama"))
    target, source = _ids(1), _ids(2)
    with intervene.patch(model, source, "blocks.0.hook_resid_pre"):
        patched = model.forward(target).logits
    assert torch.equal(patched, model.forward(source).logits)
    with intervene.replace(model, {"blocks.2.hook_resid_post": lambda v: v * 0}):
        zeroed = model.forward(target).logits
    assert (zeroed - model.forward(target).logits).abs().max() > 1e-4


@pytest.mark.parametrize("family", MOE)
def test_masking_an_expert_removes_its_weight(family: str) -> None:
    model = workbench.load(build_tiny(family))
    ids = _ids(n=12)
    clean = model.forward(ids).logits
    layer = next(
        i for i, b in enumerate(model.adapter.block_modules(model.base)) if model.adapter.is_moe_block(b)
    )
    before = model.read(ids, f"blocks.{layer}.moe.hook_expert_indices")[
        f"blocks.{layer}.moe.hook_expert_indices"
    ]
    victim = int(before.flatten().mode().values)
    with intervene.mask_experts(model, {layer: [victim]}):
        values = model.read(ids, rf"blocks\.{layer}\.moe\.hook_expert_(indices|weights)")
        masked = model.forward(ids).logits
    weights, indices = (
        values[f"blocks.{layer}.moe.hook_expert_weights"],
        values[f"blocks.{layer}.moe.hook_expert_indices"],
    )
    assert weights[indices == victim].abs().max() == 0
    assert (masked - clean).abs().max() > 1e-5
    assert torch.equal(model.forward(ids).logits, clean)


@pytest.mark.parametrize("family", MOE)
def test_forcing_experts_routes_every_token(family: str) -> None:
    model = workbench.load(build_tiny(family))
    ids = _ids(n=9)
    layer = next(
        i for i, b in enumerate(model.adapter.block_modules(model.base)) if model.adapter.is_moe_block(b)
    )
    with intervene.force_experts(model, {layer: [0, 1]}):
        indices = model.read(ids, f"blocks.{layer}.moe.hook_expert_indices")[
            f"blocks.{layer}.moe.hook_expert_indices"
        ]
    assert (indices == torch.tensor([0, 1])).all()
