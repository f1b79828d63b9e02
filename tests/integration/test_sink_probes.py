"""Sink probes on real modules: the planted-sink zoo model, MiniLM, GPT-OSS learned sinks, every zoo model."""

from __future__ import annotations

import pytest
import torch

import workbench
from probes.sinks import learned_sink_mass, massive_table, position_mass, sink_table, token_mass
from workbench.capture import CaptureSpec, capture
from workbench.models.tiny import build_tiny
from workbench.zoo.corpus import DOMAINS, load_heldout_sample
from workbench.zoo.registry import MODELS_DIR, zoo

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention sinks appear in many language models.",
    "She sold sea shells by the sea shore on sunny days.",
    "A short one.",
]
SPEC = CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern", r"blocks\.\d+\.hook_resid_post"])


def _prompts() -> list[str]:
    sample = load_heldout_sample(MODELS_DIR.parent / "heldout")
    return [sample[d][0][:300] for d in DOMAINS]


def test_planted_sink_heads_recovered_with_precision_and_recall_one() -> None:
    model = workbench.load("planted-sink")
    result = capture(model, _prompts(), SPEC, progress=False)
    table = sink_table(result, model.adapter.n_layers(model.config))
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
    result = capture(model, [torch.arange(3, 12)], SPEC, progress=False)
    mass = learned_sink_mass(result["blocks.0.attn.hook_pattern"][0])
    assert mass.shape == (model.config.num_attention_heads,)
    assert ((mass > 0) & (mass < 1)).all()


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind != "pypi"])
def test_sink_probes_run_on_every_zoo_model(name: str) -> None:
    model = workbench.load(name)
    n_layers = model.adapter.n_layers(model.config)
    result = capture(model, _prompts(), SPEC, progress=False)
    table = sink_table(result, n_layers)
    assert len(table) == n_layers * model.adapter.n_heads(model.config)
    assert table.alpha.between(0, 1).all()
    assert set(position_mass(result, n_layers).layer) == set(range(n_layers))
    assert (massive_table(result, n_layers).top_ratio > 1).all()


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

    table = sink_ablation(workbench.load("planted-sink"), _prompts()[:2])
    assert list(table.columns) == ["prompt", "loss_full", "loss_ablated", "delta_loss", "kl"]
    assert (table.kl > 0).all()
    trained = sink_ablation(workbench.load("tiny-moe"), _prompts()[:2])
    assert (trained.delta_loss > 0).all()  # the trained model relies on its first-token sink


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


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind == "trained" or n == "planted-sink"])
def test_ablation_and_eviction_run_on_every_causal_zoo_model(name: str) -> None:
    from probes.eviction import eviction_table
    from probes.sinks import sink_ablation

    model = workbench.load(name)
    assert len(sink_ablation(model, _prompts()[:1])) == 1
    ids = model.encode(_prompts()[0])["input_ids"][:, :40]
    table = eviction_table(model, ids, prompt_len=32, budgets=(0.25, 1.0), policies=("h2o", "snapkv"))
    assert (table[table.budget == 1.0].kl == 0).all()
