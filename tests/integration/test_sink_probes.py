"""Sink probes on real modules: the planted-sink zoo model, MiniLM, GPT-OSS learned sinks, every zoo model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import workbench
from probes.sinks import learned_sink_mass, massive_table, position_mass, sink_table, token_mass
from workbench.capture import CaptureSpec, capture
from workbench.models.tiny import build_tiny
from workbench.zoo import DOMAINS, heldout
from workbench.zoo.registry import zoo

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention sinks appear in many language models.",
    "She sold sea shells by the sea shore on sunny days.",
    "A short one.",
]
SPEC = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern", r"blocks\.\d+\.hook_resid_post"])


def _prompts() -> list[str]:
    sample = heldout()
    return [sample[d][0][:300] for d in DOMAINS]


def test_planted_sink_heads_recovered_with_precision_and_recall_one() -> None:
    model = workbench.load("planted-sink")
    result = capture(model, _prompts(), SPEC, progress=False)
    table = sink_table(result, model.cfg.n_layers)
    found = {(r.layer, r.head) for r in table.itertuples() if r.sink_share == 1.0}
    assert found == {tuple(h) for h in model.config.planted_sink_heads}


def test_minilm_sends_attention_to_cls_not_sep() -> None:
    model = workbench.load("minilm")
    result = capture(model, SENTENCES, SPEC, progress=False)
    tok = model.tokenizer
    masses = token_mass(result, 6, [tok.cls_token_id, tok.sep_token_id])
    cls = masses[masses.token_id == tok.cls_token_id].set_index("layer").mass
    sep = masses[masses.token_id == tok.sep_token_id].set_index("layer").mass
    assert (cls.loc[1:4] >= 0.5).all(), cls.to_dict()
    assert (sep.loc[1:4] < 0.1).all(), sep.to_dict()  # layer 0 is near uniform: [SEP] gets ~1/length
    adapted = sink_table(result, 6, causal=False)
    assert set(adapted.metric) == {"gu2024-adapted-bidirectional"}


def test_learned_sinks_take_the_missing_mass() -> None:
    model = workbench.load(build_tiny("gpt_oss"))
    attn = model.hf.model.layers[0].self_attn  # a sliding layer, window 8
    with torch.no_grad():  # planted: zero queries make every score 0; sink logits log 1 .. log 4
        attn.q_proj.weight.zero_()
        attn.q_proj.bias.zero_()
        attn.sinks.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).log())
    result = capture(model, [torch.arange(3, 12)], SPEC, progress=False)
    mass = learned_sink_mass(result["blocks.0.attn.hook_pattern"][0])
    assert mass.shape == (model.config.num_attention_heads,)
    assert ((mass > 0) & (mass < 1)).all()
    # query t sees n_t = min(t + 1, 8) keys of logit 0 (e^0 = 1 each) and the sink (e^s = c): the sink's
    # share is c / (n_t + c); over the 9 queries n_t = 1, 2, ..., 8, 8
    visible = [min(t + 1, 8) for t in range(9)]
    expected = torch.tensor([sum(c / (n + c) for n in visible) / 9 for c in (1, 2, 3, 4)])
    torch.testing.assert_close(mass, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind != "pypi"])
def test_sink_probes_run_on_every_zoo_model(name: str) -> None:
    model = workbench.load(name)
    n_layers = model.cfg.n_layers
    result = capture(model, _prompts(), SPEC, progress=False)
    table = sink_table(result, n_layers)
    assert len(table) == n_layers * model.cfg.n_heads
    assert table.alpha.between(0, 1).all()
    positions = position_mass(result, n_layers)
    assert set(positions.layer) == set(range(n_layers))
    massive = massive_table(result, n_layers)
    assert (massive.top_ratio > 1).all()
    # the same numbers written out in numpy (float64) from the captured tensors, layer by layer
    for layer in range(n_layers):
        patterns = [p.double().numpy() for p in result[f"blocks.{layer}.attn.hook_pattern"]]  # [h, q, k]
        # alpha of the first key: every query sees it, so the column sum over T queries, mean over prompts
        alpha = np.mean([p[:, :, 0].sum(-1) / p.shape[1] for p in patterns], axis=0)
        rows = table[table.layer == layer].sort_values("head")
        np.testing.assert_allclose(rows.alpha.to_numpy(), alpha, rtol=1e-5, atol=1e-7)
        above = np.mean([p[:, :, 0].sum(-1) / p.shape[1] > 0.3 for p in patterns], axis=0)  # eps = 0.3
        np.testing.assert_allclose(rows.sink_share.to_numpy(), above, rtol=1e-6)  # a share of 5 prompts
        first = positions[(positions.layer == layer) & (positions.position == 0)].mass.item()
        assert first == pytest.approx(np.mean([p[:, :, 0].mean() for p in patterns]), rel=1e-5)
        for prompt, hidden in enumerate(result[f"blocks.{layer}.hook_resid_post"]):
            magnitude = np.sort(np.abs(hidden.double().numpy()).ravel())
            lower_median = magnitude[(len(magnitude) - 1) // 2]  # torch.median's convention
            row = massive[(massive.layer == layer) & (massive.prompt == prompt)]
            assert row.top1.item() == pytest.approx(magnitude[-1], rel=1e-6)
            assert row.top_ratio.item() == pytest.approx(magnitude[-1] / lower_median, rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_oss", "deepseek_v3"])
def test_removing_the_sink_renormalises_the_rest(family: str) -> None:
    from workbench import intervene

    model = workbench.load(build_tiny(family))
    ids = torch.arange(3, 13)[None]
    full = model.read(ids, "blocks.1.attn.hook_pattern")["blocks.1.attn.hook_pattern"][0]
    with intervene.remove_sink(model, layers=[1]):  # layer 1's inputs stay as they were
        ablated = model.read(ids, "blocks.1.attn.hook_pattern")["blocks.1.attn.hook_pattern"][0]
    assert ablated[:, 1:, 0].abs().max() == 0
    expected = full[:, 1:, 1:] / (full[:, 1:, 1:].sum(-1, keepdim=True))
    rows = ablated[:, 1:, 1:]
    if model.adapter.learned_sinks:  # the learned sink keeps its share; the rest scales together
        expected = expected * rows.sum(-1, keepdim=True)
    torch.testing.assert_close(rows, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ablated[:, 0], full[:, 0])


def test_sink_ablation_hurts_the_planted_sink_model_only_through_its_sinks() -> None:
    from probes.sinks import sink_ablation

    planted = workbench.load("planted-sink")
    table = sink_ablation(planted, _prompts()[:2])
    assert list(table.columns) == ["prompt", "loss_full", "loss_ablated", "delta_loss", "kl"]
    assert (table.kl > 0).all()
    tiny_moe = workbench.load("tiny-moe")
    trained = sink_ablation(tiny_moe, _prompts()[:2])
    assert (trained.delta_loss > 0).all()  # the trained model relies on its first-token sink
    for model, found in ((planted, table), (tiny_moe, trained)):
        for prompt, row in zip(_prompts()[:2], found.itertuples(), strict=True):
            expected = _sink_ablation_reference(model, model.encode(prompt)["input_ids"][:1])
            assert row.loss_full == pytest.approx(expected["loss_full"], rel=1e-5)
            assert row.loss_ablated == pytest.approx(expected["loss_ablated"], rel=1e-5)
            assert row.delta_loss == pytest.approx(row.loss_ablated - row.loss_full, abs=1e-12)
            # the probe takes the KL of fp32 log-probabilities: KL ~2e-3 agrees to ~1e-5 relative
            assert row.kl == pytest.approx(expected["kl"], rel=2e-4)


def _sink_ablation_reference(model: workbench.WorkbenchModel, ids: torch.Tensor) -> dict[str, float]:
    """Removing the sink from every layer is the causal mask with key 0 hidden from queries 1..T-1: two
    plain HF forward passes, next-token cross-entropy and KL(p_full || p_ablated) in float64."""
    n = ids.shape[1]
    keep = torch.ones(n, n, dtype=torch.bool).tril()
    keep[1:, 0] = False
    mask = torch.zeros(1, 1, n, n).masked_fill(~keep, torch.finfo(torch.float32).min)
    with torch.no_grad():
        full = model.hf(input_ids=ids).logits[0].double().log_softmax(-1)
        ablated = model.hf(input_ids=ids, attention_mask=mask).logits[0].double().log_softmax(-1)
    targets = ids[0, 1:, None]
    return {
        "loss_full": float(-full[:-1].gather(-1, targets).mean()),
        "loss_ablated": float(-ablated[:-1].gather(-1, targets).mean()),
        "kl": float((full.exp() * (full - ablated)).sum(-1).mean()),
    }


def test_streamed_sink_rate_on_long_inputs_equals_the_pattern_one() -> None:
    from probes.sinks import alpha_from_streamed, key_alpha

    model = workbench.load("tiny-moe")
    ids = torch.randint(3, 4000, (1, 300), generator=torch.Generator().manual_seed(1))
    spec = CaptureSpec(points=[r"blocks\.3\.attn\.hook_pattern"], stats=["sink_mass"], layers=[3], chunk=64)
    result = capture(model, ids, spec, progress=False)
    streamed = alpha_from_streamed(result["blocks.3.attn.stat_sink_mass"][0])
    torch.testing.assert_close(
        streamed, key_alpha(result["blocks.3.attn.hook_pattern"][0]), atol=1e-5, rtol=0
    )


def test_sink_tokens_are_categorised() -> None:
    from probes.sinks import sink_tokens

    model = workbench.load("minilm")
    result = capture(model, SENTENCES, SPEC, progress=False)
    table = sink_tokens(result, model.tokenizer, layer=2, top=1)
    assert set(table.category) <= {"first", "cls", "sep", "delimiter", "other"}
    assert (table.category == "first").mean() >= 0.75  # [CLS] at position 0 takes the most attention
    for row, ids, pattern in zip(
        table.itertuples(), result.tokens, result["blocks.2.attn.hook_pattern"], strict=True
    ):
        mass = pattern.double().numpy().mean(axis=(0, 1))  # each key's mean attention over heads and queries
        assert row.position == int(np.argmax(mass)) and row.mass == pytest.approx(mass.max(), rel=1e-5)
        assert row.token == model.tokenizer.decode([int(ids[row.position])])
        assert (row.category == "first") == (row.position == 0)


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind == "trained" or n == "planted-sink"])
def test_ablation_and_eviction_run_on_every_causal_zoo_model(name: str) -> None:
    from probes.eviction import eviction_table
    from probes.sinks import sink_ablation

    model = workbench.load(name)
    assert len(sink_ablation(model, _prompts()[:1])) == 1
    ids = model.encode(_prompts()[0])["input_ids"][:, :40]
    table = eviction_table(model, ids, prompt_len=32, budgets=(0.25, 1.0), policies=("h2o", "snapkv"))
    assert (table[table.budget == 1.0].kl == 0).all()


@pytest.mark.parametrize("name", ["planted-sink", "minilm"])
def test_tables_from_the_streamed_key_mass_equal_those_from_patterns(name: str) -> None:
    """Every pattern measure needs only sum_q A[q, k]: the capture without patterns (streamed key mass,
    any length) gives the tables of the capture with them (causal and bidirectional)."""
    from probes.sinks import sink_tokens

    model = workbench.load(name)
    prompts = _prompts()
    patterns = capture(
        model, prompts, CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"]), progress=False
    )
    streamed = capture(model, prompts, CaptureSpec(stats=["key_mass"]), progress=False)
    assert not any(n.endswith("hook_pattern") for n in streamed.names)
    n_layers, causal, tok = model.cfg.n_layers, model.cfg.causal, model.tokenizer
    specials = sorted({i for i in tok.all_special_ids if i != tok.pad_token_id})
    for table in (
        lambda c: sink_table(c, n_layers, causal=causal),
        lambda c: position_mass(c, n_layers),
        lambda c: token_mass(c, n_layers, specials),
        lambda c: sink_tokens(c, tok, layer=1, top=3),
    ):
        expected, found = table(patterns), table(streamed)
        assert len(found) > 0
        pd.testing.assert_frame_equal(found, expected, check_exact=False, atol=1e-5, rtol=0)
