"""Every canonical hook point of every family equals HF's own outputs (max abs difference 0)."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.hooks.implementation import attention_implementation


def hf_reference(model: workbench.WorkbenchModel, ids: torch.Tensor) -> tuple[object, dict[int, tuple]]:
    """HF's own outputs under eager attention, plus each router module's returned tuple by layer."""
    returned: dict[int, tuple] = {}
    handles = []
    for layer, block in enumerate(model.adapter.block_modules(model.base)):
        if model.adapter.is_moe_block(block):
            router = block.get_submodule(model.adapter.router)
            handles.append(
                router.register_forward_hook(lambda m, a, out, L=layer: returned.__setitem__(L, out))
            )
    flags = {"output_hidden_states": True, "output_attentions": True}
    if model.adapter.router_convention is not None:
        flags["output_router_logits"] = True
    try:
        with torch.no_grad(), attention_implementation(model.hf, "eager"):
            out = model.hf(input_ids=ids, **flags)
    finally:
        for h in handles:
            h.remove()
    return out, returned


def test_every_point_resolves_and_fires(tiny: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    values = tiny.read(ids, ".*")
    assert list(values) == list(tiny.points)
    n_layers = tiny.cfg.n_layers
    for layer in range(n_layers):
        for suffix in (
            "hook_resid_pre",
            "hook_resid_post",
            "attn.hook_pattern",
            "attn.hook_q",
            "hook_mlp_out",
        ):
            assert f"blocks.{layer}.{suffix}" in values


def test_points_equal_hf_outputs(tiny: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    ref, router_out = hf_reference(tiny, ids)
    values = tiny.read(ids, ".*")
    n_layers = tiny.cfg.n_layers
    for layer in range(n_layers):
        assert torch.equal(values[f"blocks.{layer}.attn.hook_pattern"], ref.attentions[layer])
        assert torch.equal(values[f"blocks.{layer}.hook_resid_pre"], ref.hidden_states[layer])
        if layer < n_layers - 1:
            assert torch.equal(values[f"blocks.{layer}.hook_resid_post"], ref.hidden_states[layer + 1])
    last = "ln_final.hook_normalized" if tiny.adapter.final_norm else f"blocks.{n_layers - 1}.hook_resid_post"
    assert torch.equal(values[last], ref.hidden_states[-1])
    if tiny.adapter.router_convention is None:
        return
    conv = tiny.adapter.router_convention
    moe_layers = sorted(router_out)
    assert moe_layers, "an MoE family must have MoE layers"
    assert len(ref.router_logits) == len(moe_layers)
    for logits, layer in zip(ref.router_logits, moe_layers, strict=True):
        assert torch.equal(values[f"blocks.{layer}.moe.hook_router_logits"], logits)
        returned = router_out[layer]
        assert torch.equal(
            values[f"blocks.{layer}.moe.hook_expert_indices"], returned[conv.index_of("indices")]
        )
        assert torch.equal(
            values[f"blocks.{layer}.moe.hook_expert_weights"], returned[conv.index_of("weights")]
        )


def test_tap_points_are_what_attention_used(tiny: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    """softmax(scores) reproduces the pattern, scores come from the tapped q and k, and z = pattern @ v."""
    values = tiny.read(ids, ".*")
    for layer in range(tiny.cfg.n_layers):
        pre = f"blocks.{layer}.attn."
        q, k, v = values[pre + "hook_q"], values[pre + "hook_k"], values[pre + "hook_v"]
        scores, pattern, z = (
            values[pre + "hook_attn_scores"],
            values[pre + "hook_pattern"],
            values[pre + "hook_z"],
        )
        n_rep = q.shape[2] // k.shape[2]
        k_all = k.repeat_interleave(n_rep, dim=2)
        v_all = v.repeat_interleave(n_rep, dim=2)
        raw = torch.einsum("bqhd,bkhd->bhqk", q, k_all) * tiny.points[pre + "hook_q"].attn_module.scaling
        visible = scores > torch.finfo(scores.dtype).min / 2
        torch.testing.assert_close(scores[visible], raw[visible], rtol=1e-5, atol=1e-5)
        if tiny.adapter.learned_sinks is None:
            torch.testing.assert_close(scores.softmax(-1), pattern, rtol=1e-5, atol=1e-6)
        else:  # the sink column takes the missing mass
            assert (pattern.sum(-1) < 1).all()
            # GPT-OSS (HF eager_attention_forward): each head's learned sink logit joins the softmax as
            # one more column, which is dropped afterwards
            sink = tiny.hf.model.layers[layer].self_attn.sinks.detach()  # [head]
            column = sink.reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
            with_sink = torch.cat([scores.double(), column.double()], -1).softmax(-1)[..., :-1]
            torch.testing.assert_close(pattern.double(), with_sink, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.einsum("bhqk,bkhd->bqhd", pattern, v_all), z, rtol=1e-5, atol=1e-5)


def test_kv_points_equal_the_cache(tiny: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    with torch.no_grad():
        cache = tiny.hf(input_ids=ids[:, :6], use_cache=True).past_key_values
    if not tiny.cfg.causal:  # an encoder keeps no cache
        assert cache is None
        return
    mla = tiny.cfg.kv_layout == "MLA"
    values = tiny.read(ids[:, :6], r"blocks\.\d+\.kv\..*")
    for layer, cached in enumerate(cache.layers):
        key, value = values[f"blocks.{layer}.kv.key"], values[f"blocks.{layer}.kv.value"]
        if mla:  # the cache holds the latent and the shared RoPE key; attention uses their expansion
            assert torch.equal(values[f"blocks.{layer}.kv.latent"], cached.keys)
            assert torch.equal(key[:, :1, :, tiny.config.qk_nope_head_dim :], cached.values)
        else:
            assert torch.equal(key, cached.keys)
            assert torch.equal(value, cached.values)


def test_hooks_removed_and_attention_restored(tiny: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    impl = tiny.config._attn_implementation

    def boom(value: torch.Tensor, name: str) -> None:
        raise RuntimeError("planted failure inside the forward pass")

    with pytest.raises(RuntimeError, match="planted failure"):
        tiny.run_with_hooks(ids, {"blocks.1.attn.hook_pattern": boom, "blocks.1.attn.hook_q": boom})
    assert tiny.config._attn_implementation == impl
    for module in tiny.hf.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert not ALL_ATTENTION_FUNCTIONS._local_mapping
