"""Generation-time capture: each step equals a full forward pass over the prefix at that position."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.capture import CaptureSpec, capture
from workbench.models.tiny import VOCAB, build_tiny

POINTS = [
    r"blocks\.\d+\.hook_resid_post",
    r"blocks\.\d+\.attn\.hook_(pattern|q)",
    r"blocks\.\d+\.moe\.hook_(router_logits|expert_indices|expert_weights)",
]


@pytest.mark.parametrize("family", ["gpt2", "llama", "mixtral", "deepseek_v3", "gpt_oss", "granitemoe"])
def test_each_step_equals_a_full_forward_over_the_prefix(family: str) -> None:
    model = workbench.load(build_tiny(family))
    spec = CaptureSpec(points=model.hook_points(POINTS, missing_ok=True), stats=["sink_mass", "entropy"])
    prompt = torch.randint(3, VOCAB, (6,), generator=torch.Generator().manual_seed(3))
    result = workbench.generate(model, prompt[None], spec, max_new_tokens=5, stop_at_eos=False)
    assert len(result.steps) == 5
    sequence = torch.cat([prompt, torch.tensor([s.token_id for s in result.steps])])
    for step in result.steps:
        prefix = sequence[: len(prompt) + step.index]
        full = capture(model, [prefix], CaptureSpec(points=spec.points, stats=spec.stats), progress=False)
        for name, value in step.values.items():
            expected = full[name][0]
            expected = expected.select(1 if "hook_pattern" in name or ".stat_" in name else 0, -1)
            if "hook_pattern" in name and value.shape[-1] < expected.shape[-1]:
                # a sliding-window layer's cache holds only the last keys; the rest had no attention
                assert expected[..., : -value.shape[-1]].abs().max() == 0
                expected = expected[..., -value.shape[-1] :]
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5, msg=f"step {step.index} {name}")
        # the forward of step i read prompt + i tokens: all of them are in the (full-attention layers') cache
        assert step.cache_length == len(prefix) == len(prompt) + step.index
        resid = [
            full[f"blocks.{layer}.hook_resid_post"][0][-1].norm() for layer in range(len(step.resid_norms))
        ]
        torch.testing.assert_close(torch.tensor(step.resid_norms), torch.stack(resid), rtol=1e-5, atol=1e-5)


def test_greedy_decoding_matches_hf_generate() -> None:
    model = workbench.load(build_tiny("llama"))
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(4))
    ours = workbench.generate(model, prompt, max_new_tokens=8, stop_at_eos=False)
    with torch.no_grad():
        theirs = model.hf.generate(
            prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    assert [s.token_id for s in ours.steps] == theirs[0, 5:].tolist()


def test_sampling_is_seeded_and_streams() -> None:
    model = workbench.load(build_tiny("mixtral"))
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(5))
    decoding = {"temperature": 0.8, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.2, "max_new_tokens": 6}
    stream = workbench.stream_generate(model, prompt, **decoding, stop_at_eos=False)
    first = next(stream)
    assert first.index == 0 and "blocks.0.attn.stat_sink_mass" in first.values
    rest = list(stream)
    again = workbench.generate(model, prompt, **decoding, stop_at_eos=False)
    assert [s.token_id for s in [first, *rest]] == [s.token_id for s in again.steps]
    assert len(again.capture["blocks.1.attn.stat_entropy"]) == 6


def test_encoders_cannot_generate() -> None:
    with pytest.raises(workbench.WorkbenchError, match="not a causal language model"):
        next(workbench.stream_generate(workbench.load(build_tiny("bert")), torch.tensor([[5, 6]])))
