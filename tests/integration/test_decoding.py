"""Decoding sweeps and batch invariance on the zoo models."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import workbench
from probes.decoding import batch_invariance, decoding_sweep, one_at_a_time, sweep_summary
from workbench.zoo import heldout, zoo

PROMPTS = ["The weather today", "def add(a, b):", "Москва"]


def _fillers() -> list[str]:
    sample = heldout()
    return [doc[:300] for docs in sample.values() for doc in docs[:2]]


@pytest.mark.slow
def test_seeded_sweep_is_reproducible_and_entropy_rises_with_temperature() -> None:
    model = workbench.load("tiny-llama")
    settings = one_at_a_time({"max_new_tokens": 12}, temperature=[0.2, 0.7, 1.0, 1.5])
    tokens, runs = decoding_sweep(model, PROMPTS, settings, samples=3, progress=False)
    again_tokens, again_runs = decoding_sweep(model, PROMPTS, settings, samples=3, progress=False)
    pd.testing.assert_frame_equal(tokens, again_tokens)
    pd.testing.assert_frame_equal(runs, again_runs)
    summary = sweep_summary(tokens, runs).set_index("temperature")
    entropy = summary.loc[[0.2, 0.7, 1.0, 1.5], "sampling_entropy"].tolist()
    assert entropy == sorted(entropy) and entropy[0] < entropy[-1]
    assert runs.length.le(12).all() and set(tokens.columns) >= {"sink_mass", "resid_norm", "model_entropy"}
    assert tokens.routing_entropy.isna().all()  # dense model


def test_sweep_records_routing_entropy_and_seeds_differ() -> None:
    model = workbench.load("tiny-moe")
    tokens, runs = decoding_sweep(
        model, PROMPTS[:1], one_at_a_time(max_new_tokens=[6]), samples=2, progress=False
    )
    assert tokens.routing_entropy.between(0, torch.log(torch.tensor(8.0)).item() + 1e-5).all()
    assert runs.token_ids.iloc[0] != runs.token_ids.iloc[1]
    # HF's own router logits over prompt + continuation (one forward, output_router_logits): step i is
    # decided at position len(prompt) - 1 + i; Mixtral scores with a softmax over all 8 experts; the
    # entropy is averaged over the MoE layers
    prompt = model.encode(PROMPTS[0])["input_ids"]
    for sample in (0, 1):
        sequence = torch.cat([prompt, torch.tensor([runs.token_ids.iloc[sample]])], 1)
        with torch.no_grad():
            routers = model.hf(input_ids=sequence, output_router_logits=True).router_logits
        rows = tokens[tokens["sample"] == sample].sort_values("step")
        for step, found in zip(rows.step, rows.routing_entropy, strict=True):
            position = prompt.shape[1] - 1 + step
            probs = [logits.reshape(-1, 8)[position].double().softmax(-1) for logits in routers]
            expected = sum(float(-(p * p.log()).sum()) for p in probs) / len(probs)
            # the sweep decodes with a KV cache, the reference in one pass: fp32 rounding apart
            assert found == pytest.approx(expected, abs=1e-5), (sample, step)
    greedy = one_at_a_time(temperature=[1.0])
    greedy[0]["max_new_tokens"] = 4
    step_tokens, _ = decoding_sweep(model, PROMPTS[:1], greedy, samples=1, progress=False)
    assert (
        step_tokens.sampling_entropy - step_tokens.model_entropy
    ).abs().max() < 1e-4  # no processor at T=1


@pytest.mark.parametrize("name", sorted(zoo()))
def test_batch_invariance_of_every_zoo_model(name: str) -> None:
    model = workbench.load(name)
    table = batch_invariance(model, "The cat sat on the mat.", _fillers())
    assert len(table) == 6 and (table.pad_tokens > 0).all()
    # the prompt's row is padded up to the longest filler in its batch (fillers 1..size-1)
    length = len(model.tokenizer("The cat sat on the mat.")["input_ids"])
    filler_lengths = [len(model.tokenizer(f)["input_ids"]) for f in _fillers()]
    for row in table.itertuples():
        assert row.positions == length
        assert row.pad_tokens == max(filler_lengths[: row.batch_size - 1]) - length
    assert table.max_abs_diff.max() < 1e-4
    if name != "minilm":
        assert (table.argmax_flips == 0).all()
