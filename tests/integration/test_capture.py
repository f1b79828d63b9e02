"""The capture engine: exactness, padding invariance, store round trip, streamed statistics, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import workbench
from workbench.capture import Capture, CaptureSpec, capture
from workbench.capture.engine import CaptureTooLargeError
from workbench.capture.fused import CHUNKED, FUSED
from workbench.capture.store import CorruptStoreError
from workbench.hooks.implementation import attention_implementation
from workbench.models.tiny import VOCAB, build_tiny

POINTS = [
    r"blocks\.\d+\.hook_resid_post",
    r"blocks\.\d+\.attn\.hook_pattern",
    r"blocks\.\d+\.moe\.hook_router_logits",
]


def _prompts(lengths: tuple[int, ...] = (7, 4, 9)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randint(3, VOCAB, (n,), generator=generator) for n in lengths]


def test_capture_equals_hf_outputs(tiny: workbench.WorkbenchModel) -> None:
    ids = _prompts((8,))[0][None]
    result = capture(tiny, ids, CaptureSpec(points=tiny.hook_points(POINTS, missing_ok=True)), progress=False)
    with torch.no_grad(), attention_implementation(tiny.hf, "eager"):
        flags = {"output_router_logits": True} if tiny.adapter.router_convention else {}
        ref = tiny.hf(input_ids=ids, output_hidden_states=True, output_attentions=True, **flags)
    n_layers = tiny.cfg.n_layers
    for layer in range(n_layers):
        assert torch.equal(result[f"blocks.{layer}.attn.hook_pattern"][0], ref.attentions[layer][0])
        if layer < n_layers - 1:
            assert torch.equal(result[f"blocks.{layer}.hook_resid_post"][0], ref.hidden_states[layer + 1][0])
    routers = [n for n in result.names if "router_logits" in n]
    for name, logits in zip(routers, getattr(ref, "router_logits", ()) or (), strict=True):
        assert torch.equal(result[name][0], logits)


@pytest.mark.parametrize(
    "family", ["gpt2", "llama", "mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "bert"]
)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_equal_single_prompts(family: str, side: str) -> None:
    model = workbench.load(build_tiny(family))
    extra = [r"blocks\.\d+\.attn\.hook_(q|k|z)", r"blocks\.\d+\.moe\.hook_expert_weights"]
    points = model.hook_points([*POINTS, *extra], missing_ok=True)
    prompts = _prompts()
    together = capture(
        model, prompts, CaptureSpec(points=points, batch_size=3, padding_side=side), progress=False
    )
    for index, prompt in enumerate(prompts):
        single = capture(model, prompt[None], CaptureSpec(points=points), progress=False)
        for name in together.names:
            # a padded batch of 3 against a batch of 1: different matmul shapes round differently in the
            # last fp32 bits (and masked positions add exact zeros), so a tolerance, not equality
            torch.testing.assert_close(together[name][index], single[name][0], rtol=1e-5, atol=1e-5, msg=name)


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    model = workbench.load(build_tiny("mixtral"))
    spec = CaptureSpec(points=POINTS, stats=["sink_mass"], batch_size=2)
    prompts = _prompts()
    result = capture(model, prompts, spec, progress=False)
    result.save(tmp_path / "cap")
    loaded = Capture.load(tmp_path / "cap")
    assert loaded.names == result.names and len(loaded) == len(prompts)
    assert all(torch.equal(a, b) for a, b in zip(loaded.tokens, prompts, strict=True))
    for name in result.names:
        assert all(torch.equal(a, b) for a, b in zip(loaded[name], result[name], strict=True))
    assert loaded.meta["family"] == "mixtral"
    saved_spec = json.loads(loaded.meta["spec"])  # the spec as given, so a capture can be re-run
    assert saved_spec["points"] == POINTS and saved_spec["stats"] == ["sink_mass"]
    assert saved_spec["batch_size"] == 2


def test_spilling_to_disk_keeps_every_prompt(tmp_path: Path) -> None:
    model = workbench.load(build_tiny("llama"))
    spec = CaptureSpec(points=[r"blocks\.\d+\.hook_resid_post"], batch_size=1, memory_budget_gb=1e-5)
    prompts = _prompts((5, 6, 7, 8))
    result = capture(model, prompts, spec, out_dir=tmp_path / "spill", progress=False)
    shards = sorted((tmp_path / "spill").glob("shard-*.safetensors"))
    # resid_post of 3 layers x d_model 64 x fp32 = 768 B per token: prompts of 3840, 4608, 5376, 6144 B.
    # A batch spills once memory holds more than half the budget (int(1e-5 * 2**30) // 2 = 5368 B):
    # after prompt 1 (3840 + 4608), after prompt 2 (5376) and after prompt 3 (6144): three shards.
    assert len(shards) == 3
    reference = capture(model, prompts, CaptureSpec(points=spec.points), progress=False)
    loaded = Capture.load(tmp_path / "spill")
    assert len(loaded) == len(prompts)
    assert all(torch.equal(a, b) for a, b in zip(loaded.tokens, prompts, strict=True))
    for name in reference.names:
        for a, b, c in zip(reference[name], result[name], loaded[name], strict=True):
            # The reference runs the four prompts as one padded batch, the spilled capture one prompt per
            # forward pass: batched and single matmuls round differently in the last bits (fp32), so they
            # agree within a stated tolerance, as in test_padded_batches_equal_single_prompts. The spilled
            # result and its reload are the same tensors written and read back: exactly equal.
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
            assert torch.equal(b, c)


def test_corrupt_store_is_one_clear_error(tmp_path: Path) -> None:
    model = workbench.load(build_tiny("gpt2"))
    capture(model, _prompts(), CaptureSpec(points=POINTS[:1]), out_dir=tmp_path / "c", progress=False)
    shard = next((tmp_path / "c").glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CorruptStoreError, match="truncated"):
        Capture.load(tmp_path / "c")
    with pytest.raises(CorruptStoreError, match="not a readable capture"):
        Capture.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("route", ["fused", "chunked"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_streamed_statistics_equal_eager_patterns(
    tiny: workbench.WorkbenchModel, side: str, route: str
) -> None:
    """Both routes (the fused kernel's log-sum-exp where exact, the chunked reference) against the
    patterns eager attention materialises, on every tiny family (GPT-OSS: learned sinks and sliding
    windows; BERT: bidirectional), both padding sides: every statistic. The statistics are captured on
    their own, so the model stays on sdpa (where the fused route serves the attention call itself, the
    residual stream equals the one captured without statistics)."""
    prompts = _prompts()
    key_tokens = prompts[0][:3].tolist()
    resid = r"blocks\.\d+\.hook_resid_post"
    eager = capture(
        tiny, prompts, CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern", resid], batch_size=3,
        padding_side=side), progress=False,
    )  # fmt: skip
    spec = CaptureSpec(
        points=[resid],
        stats=["sink_mass", "key_mass", "entropy", "set_mass", "distance", "top_keys", "tail_pattern"],
        sink_tokens=2,
        key_tokens=key_tokens,
        top_k=3,
        tail=3,
        chunk=3,
        batch_size=3,
        padding_side=side,
        stat_route=route,
    )
    result = capture(tiny, prompts, spec, progress=False)
    routes = set(result.meta["stat_routes"].values())
    assert routes == ({CHUNKED} if route == "chunked" else {FUSED})  # no tiny family soft-caps or adds a bias
    for layer in range(tiny.cfg.n_layers):
        pre = f"blocks.{layer}.attn."
        for index, ids in enumerate(prompts):
            torch.testing.assert_close(
                result[f"blocks.{layer}.hook_resid_post"][index],
                eager[f"blocks.{layer}.hook_resid_post"][index],
                atol=1e-5,
                rtol=1e-5,
            )
            pattern = eager[pre + "hook_pattern"][index].float()  # [head, q, k]
            stat = {name: result[pre + "stat_" + name][index] for name in spec.stats}
            positions = torch.arange(len(ids)).float()
            expected = {
                "sink_mass": pattern[..., :2].sum(-1),
                "key_mass": pattern.sum(1),
                "entropy": -(pattern * pattern.clamp_min(1e-30).log()).sum(-1),
                "set_mass": pattern[..., torch.isin(ids, torch.tensor(key_tokens))].sum(-1),
                "distance": (pattern * (positions[:, None] - positions[None, :])).sum(-1),
                "tail_pattern": pattern[:, -3:],
            }
            for name, value in expected.items():
                scale = max(1.0, float(value.abs().max()))  # distances are tokens: relative above 1
                torch.testing.assert_close(stat[name] / scale, value / scale, atol=1e-5, rtol=0, msg=name)
            top, count = stat["top_keys"], (pattern > 0).sum(-1, keepdim=True).clamp(max=3)
            assert torch.equal((top >= 0).sum(-1, keepdim=True), count)
            shown = torch.arange(3) < count
            got = pattern.gather(-1, top.clamp(min=0)) * shown  # the pattern at the keys it names
            torch.testing.assert_close(got, pattern.topk(3, -1).values * shown, atol=1e-6, rtol=0)


def test_streamed_statistics_keep_sdpa() -> None:
    model = workbench.load(build_tiny("llama"))
    seen = []
    handle = model.hf.model.layers[0].self_attn.register_forward_pre_hook(
        lambda m, a: seen.append(m.config._attn_implementation)
    )
    try:
        capture(model, _prompts(), CaptureSpec(stats=["entropy"]), progress=False)
    finally:
        handle.remove()
    assert seen and set(seen) == {"sdpa"}


def test_over_budget_capture_is_refused_before_running() -> None:
    model = workbench.load(build_tiny("llama"))
    calls = []
    handle = model.hf.model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    spec = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"], memory_budget_gb=1e-6)
    try:
        with pytest.raises(CaptureTooLargeError, match=r"capture needs about .* budget"):
            capture(model, [torch.arange(3, 200)], spec, progress=False)
    finally:
        handle.remove()
    assert len(calls) == 1  # only the 2-token dry run of the estimate


def test_estimate_matches_stored_bytes() -> None:
    from workbench.capture.engine import estimate_capture

    model = workbench.load(build_tiny("olmoe"))
    spec = CaptureSpec(points=POINTS, positions="last", dtype="bfloat16")
    prompts = _prompts()
    result = capture(model, prompts, spec, progress=False)
    stored = sum(t.numel() * t.element_size() for n in result.names for t in result[n])
    estimate = estimate_capture(model, prompts, result.names, spec)
    assert estimate.stored_bytes == stored
    # by hand, bf16 = 2 bytes, 3 layers, last position of prompts of 7, 4 and 9 tokens: resid_post
    # 3 x 3 x 64 x 2 = 1152; the last query's pattern row over 4 heads 3 x 4 x (7 + 4 + 9) x 2 = 480;
    # router logits over 8 experts 3 x 3 x 8 x 2 = 144
    assert stored == 1152 + 480 + 144 == 1776


def test_failed_forward_leaves_no_hook_or_tap() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = workbench.load(build_tiny("mixtral"))
    spec = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_(q|pattern)"], stats=["entropy"])
    with pytest.raises(IndexError):
        capture(model, [torch.tensor([1, 2, VOCAB + 5])], spec, progress=False)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())
    assert not ALL_ATTENTION_FUNCTIONS._local_mapping
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_repeated_captures_do_not_grow_memory() -> None:
    import gc

    import psutil

    model = workbench.load(build_tiny("mixtral"))
    spec = CaptureSpec(points=[r"blocks\.\d+\.(hook_resid_post|attn\.hook_(pattern|q))"], stats=["sink_mass"])
    prompts = _prompts()
    process = psutil.Process()
    for _ in range(50):  # warm-up: allocator pools, lazy imports
        capture(model, prompts, spec, progress=False)
    gc.collect()
    before = process.memory_info().rss
    for _ in range(1000):
        capture(model, prompts, spec, progress=False)
    gc.collect()
    growth = process.memory_info().rss - before
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1000 captures"


def test_streamed_statistics_of_an_unpadded_encoder_are_bidirectional() -> None:
    """sdpa passes no mask for one unpadded prompt; an encoder must then stay bidirectional."""
    model = workbench.load(build_tiny("bert"))
    spec = CaptureSpec(points=[r"blocks\.0\.attn\.hook_pattern"], stats=["entropy", "key_mass"], layers=[0])
    result = capture(model, [torch.arange(5, 14)], spec, progress=False)
    pattern = result["blocks.0.attn.hook_pattern"][0].float()
    entropy = -(pattern * pattern.clamp_min(1e-30).log()).sum(-1)
    torch.testing.assert_close(result["blocks.0.attn.stat_entropy"][0], entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(result["blocks.0.attn.stat_key_mass"][0], pattern.sum(1), atol=1e-5, rtol=0)


def test_large_scores_take_the_float64_kernels_and_stay_exact() -> None:
    """Gemma 4's global layers (512-wide heads, q and k RMS-normed, scale 1) have scores of hundreds:
    the fused route runs them in float64 (recorded in the manifest) and equals eager."""
    import transformers

    from workbench.capture.fused import FUSED_64
    from workbench.families.tiny import tiny_config

    torch.manual_seed(0)
    model = workbench.load(transformers.AutoModelForCausalLM.from_config(tiny_config("gemma4_text")).eval())
    spec = CaptureSpec(
        points=[r"blocks\.\d+\.attn\.hook_pattern"], stats=["sink_mass", "entropy", "key_mass"]
    )
    result = capture(model, _prompts(), spec, progress=False)
    assert result.meta["stat_routes"]["1"] == FUSED_64  # layer 1: the global layer
    for layer in range(model.cfg.n_layers):
        pre = f"blocks.{layer}.attn."
        for index, pattern in enumerate(result[pre + "hook_pattern"]):
            pattern = pattern.double()
            entropy = -(pattern * pattern.clamp_min(1e-300).log()).sum(-1)
            torch.testing.assert_close(
                result[pre + "stat_entropy"][index].double(), entropy, atol=1e-5, rtol=0
            )
            sink = result[pre + "stat_sink_mass"][index].double()
            torch.testing.assert_close(sink, pattern[..., 0], atol=1e-5, rtol=0)
