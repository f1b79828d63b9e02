"""Hook behaviour: replacements change the computation, read-only points refuse, eager only on demand."""

from __future__ import annotations

import pytest
import torch
from conftest import hf_logits_without_heads

import workbench
from workbench.errors import HookPointError, InputError
from workbench.models.tiny import build_tiny


@pytest.fixture
def llama() -> workbench.WorkbenchModel:
    return workbench.load(build_tiny("llama"))


def test_zeroing_a_head_changes_logits_and_leaving_restores(
    llama: workbench.WorkbenchModel, ids: torch.Tensor
) -> None:
    clean = llama.forward(ids).logits

    def zero_head_0(z: torch.Tensor, name: str) -> torch.Tensor:
        z = z.clone()
        z[:, :, 0] = 0
        return z

    ablated = llama.run_with_hooks(ids, {"blocks.1.attn.hook_z": zero_head_0}).logits
    assert (ablated - clean).abs().max() > 1e-4
    assert torch.equal(llama.forward(ids).logits, clean)
    # HF-side reference: zero head 0's slice (d_head = 64 / 4 = 16 columns) of o_proj's input directly
    reference = hf_logits_without_heads(llama, 1, [0], ids)
    assert torch.equal(ablated, reference)


@pytest.mark.parametrize("point", ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.hook_resid_pre"])
def test_replacing_inputs_and_taps_changes_output(
    llama: workbench.WorkbenchModel, ids: torch.Tensor, point: str
) -> None:
    clean = llama.forward(ids).logits
    patched = llama.run_with_hooks(ids, {point: lambda value, name: value * 2}).logits
    assert (patched - clean).abs().max() > 1e-4
    # HF-side reference without the workbench's hooks: doubling the post-RoPE q (or k) of layer 1 doubles
    # its attention scores, i.e. its softmax scale; doubling resid_pre doubles block 1's input.
    block = llama.hf.model.layers[1]
    if point == "blocks.1.hook_resid_pre":

        def double_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
            if args:
                return (args[0] * 2, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"] * 2}

        handle = block.register_forward_pre_hook(double_input, with_kwargs=True)
        try:
            with torch.no_grad():
                reference = llama.hf(input_ids=ids).logits
        finally:
            handle.remove()
        assert torch.equal(patched, reference)  # the same tensor enters the same block
        return
    scaling = block.self_attn.scaling
    block.self_attn.scaling = 2 * scaling
    try:
        with torch.no_grad():
            reference = llama.hf(input_ids=ids).logits
    finally:
        block.self_attn.scaling = scaling
    # (2q) k^T s and q k^T (2s) are the same number computed in a different order (sdpa may fold
    # sqrt(scale) into q and k): equal up to fp32 rounding, hence a tolerance
    torch.testing.assert_close(patched, reference, rtol=1e-5, atol=1e-5)


def test_identity_replacement_is_exact(llama: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    clean = llama.forward(ids).logits
    names = llama.hook_points([r"blocks\.\d+\.(hook_resid_pre|attn\.hook_(q|k|v|z)|hook_mlp_out)"])
    patched = llama.run_with_hooks(ids, dict.fromkeys(names, lambda value, name: value.clone())).logits
    assert torch.equal(patched, clean)


def test_read_only_points_refuse_replacement(llama: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    with pytest.raises(HookPointError, match="read-only"):
        llama.run_with_hooks(ids, {"blocks.0.attn.hook_pattern": lambda value, name: value * 0})


def test_eager_only_while_pattern_is_requested(llama: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    seen: list[str] = []

    def note(value: torch.Tensor, name: str) -> None:
        seen.append(llama.config._attn_implementation)

    llama.run_with_hooks(ids, {"blocks.0.hook_resid_post": note})
    llama.run_with_hooks(ids, {"blocks.0.attn.hook_pattern": note})
    assert seen == ["sdpa", "eager"]
    assert llama.config._attn_implementation == "sdpa"


def test_q_and_k_are_post_rope(llama: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    """RoPE is the identity at position 0 and a rotation elsewhere: compare with the q_proj output."""
    values = {}
    hooks = {
        "blocks.0.attn.hook_q": lambda v, n: values.__setitem__("q", v),
    }
    block = llama.hf.model.layers[0]
    handle = block.self_attn.q_proj.register_forward_hook(lambda m, a, out: values.__setitem__("pre", out))
    try:
        llama.run_with_hooks(ids, hooks)
    finally:
        handle.remove()
    pre = values["pre"].unflatten(-1, (4, -1))
    torch.testing.assert_close(values["q"][:, 0], pre[:, 0])
    assert (values["q"][:, 1:] - pre[:, 1:]).abs().max() > 1e-3
    torch.testing.assert_close(values["q"].norm(dim=-1), pre.norm(dim=-1))  # a rotation keeps norms
    # float64 rotate-half RoPE written out (Su et al. 2021; HF Llama's layout): frequency i of a d-dim
    # head is theta^(-2i/d), the angle at position t is t x frequency, and the two halves rotate together
    d = pre.shape[-1]
    theta = llama.config.rope_parameters["rope_theta"]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(ids.shape[1], dtype=torch.float64)[:, None] * freqs  # [pos, d / 2]
    cos, sin = angles.cos().repeat(1, 2)[:, None], angles.sin().repeat(1, 2)[:, None]  # [pos, 1, d]
    x = pre.double()
    rotated = torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1)
    torch.testing.assert_close(values["q"].double(), x * cos + rotated * sin, rtol=1e-5, atol=1e-5)


def test_unknown_point_and_pattern(llama: workbench.WorkbenchModel, ids: torch.Tensor) -> None:
    with pytest.raises(HookPointError, match="no hook point matches"):
        llama.hook_points("blocks.99.hook_resid_post")
    assert llama.hook_points(["blocks.0.hook_resid_post", r".*moe.*"], missing_ok=True) == [
        "blocks.0.hook_resid_post"
    ]
    with pytest.raises(HookPointError, match="not a hook point"):
        llama.run_with_hooks(ids, {"blocks.0.moe.hook_router_logits": lambda v, n: None})


def test_bad_inputs_are_refused(llama: workbench.WorkbenchModel) -> None:
    with pytest.raises(InputError, match="empty"):
        llama.encode(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(InputError, match="at most 256"):
        llama.encode(torch.ones(1, 300, dtype=torch.long))
    with pytest.raises(InputError, match="no tokenizer"):
        llama.encode("text needs a tokenizer")


def test_minilm_reads_text_prompts_with_padding() -> None:
    minilm = workbench.load("minilm")
    with pytest.raises(InputError, match="empty"):
        minilm.encode(["fine", "   "])
    single = minilm.read("A short one.", "blocks.2.hook_resid_post")["blocks.2.hook_resid_post"]
    batch = minilm.read(
        ["A short one.", "A much longer sentence than the first one."], "blocks.2.hook_resid_post"
    )
    padded = batch["blocks.2.hook_resid_post"][0, : single.shape[1]]
    # a padded batch of 2 against the prompt alone: matmul shapes differ, so fp32 rounding does too
    torch.testing.assert_close(padded, single[0], rtol=1e-5, atol=1e-5)
