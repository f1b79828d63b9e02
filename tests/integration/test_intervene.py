"""Interventions change the computation while active and leave no trace after."""

from __future__ import annotations

import pytest
import torch
from conftest import hf_logits_without_heads

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
    # HF-side reference: zero the columns of heads 0 and 2 (d_head = 64 / 4 = 16) of layer 1's o_proj input
    reference = hf_logits_without_heads(model, 1, [0, 2], ids)
    assert torch.equal(ablated, reference)


def test_mean_ablation_uses_reference_means() -> None:
    model = workbench.load(build_tiny("gpt2"))
    means = intervene.head_means(model, [_ids(1)[0], _ids(2)[0]], layers=[0])
    with intervene.ablate_heads(model, {0: [3]}, means=means):
        z = model.read(_ids(), "blocks.0.attn.hook_z")["blocks.0.attn.hook_z"]
        ablated = model.forward(_ids()).logits
    # the reference mean straight from HF: GPT-2's c_proj input is the heads' outputs side by side
    # (d_head = 64 / 4 = 16, head 3 = columns 48:64); mean over the 2 x 7 positions, in float64
    seen: list[torch.Tensor] = []
    attn = model.hf.transformer.h[0].attn
    handle = attn.c_proj.register_forward_pre_hook(lambda m, args: seen.append(args[0][0, :, 48:64]))
    try:
        with torch.no_grad():
            for seed in (1, 2):
                model.hf(input_ids=_ids(seed))
    finally:
        handle.remove()
    mean = torch.cat(seen).double().mean(0)
    torch.testing.assert_close(means[0][3].double(), mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(z[0, :, 3].double(), mean.expand(7, -1), rtol=1e-6, atol=1e-7)

    def plant_mean(module: torch.nn.Module, args: tuple) -> tuple:
        z = args[0].clone()
        z[..., 48:64] = mean.float()
        return (z, *args[1:])

    handle = attn.c_proj.register_forward_pre_hook(plant_mean)
    try:
        with torch.no_grad():
            reference = model.hf(input_ids=_ids()).logits
    finally:
        handle.remove()
    # the planted mean is the float64 mean rounded to fp32; head_means averages in fp32: last-bit noise
    torch.testing.assert_close(ablated, reference, rtol=1e-5, atol=1e-5)


def test_patching_the_residual_stream_transplants_the_output() -> None:
    model = workbench.load(build_tiny("llama"))
    target, source = _ids(1), _ids(2)
    with intervene.patch(model, source, "blocks.0.hook_resid_pre"):
        patched = model.forward(target).logits
    assert torch.equal(patched, model.forward(source).logits)
    with intervene.replace(model, {"blocks.2.hook_resid_post": lambda v: v * 0}):
        zeroed = model.forward(target).logits
    assert (zeroed - model.forward(target).logits).abs().max() > 1e-4
    # block 2 is the last: its zeroed output goes through the final RMSNorm (0 * rsqrt(0 + eps) * w = 0)
    # and the bias-free LM head, so every logit is exactly 0
    assert zeroed.abs().max() == 0


@pytest.mark.parametrize("family", MOE)
def test_masking_an_expert_removes_its_weight(family: str) -> None:
    model = workbench.load(build_tiny(family))
    ids = _ids(n=12)
    clean = model.forward(ids).logits
    layer = next(
        i for i, b in enumerate(model.adapter.block_modules(model.base)) if model.adapter.is_moe_block(b)
    )
    points = rf"blocks\.{layer}\.moe\.hook_expert_(indices|weights)"
    clean_values = model.read(ids, points)
    before = clean_values[f"blocks.{layer}.moe.hook_expert_indices"]
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
    # the same router inputs give the same choice; the other experts keep their weights, rescaled to the
    # old total where the family's top-k weights are normalised (HF: Mixtral renormalises its top-k
    # softmax, DeepSeek-V3 here has norm_topk_prob=True, GPT-OSS and Granite-MoE softmax over the top-k;
    # OLMoE and Qwen2-MoE keep norm_topk_prob=False)
    assert torch.equal(indices, before)
    old = clean_values[f"blocks.{layer}.moe.hook_expert_weights"].double()
    kept = old.masked_fill(before == victim, 0)
    if family in ("mixtral", "deepseek_v3", "gpt_oss", "granitemoe"):
        kept = kept * old.sum(-1, keepdim=True) / kept.sum(-1, keepdim=True)
    torch.testing.assert_close(weights.double(), kept, rtol=1e-5, atol=1e-6)


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
    # every token routed to exactly experts 0 and 1 (ranked by the router's score, so in either order)
    assert (indices.sort(-1).values == torch.tensor([0, 1])).all()
