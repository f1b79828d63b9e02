"""The bundled zoo: listing and verification offline, loading through every backend, planted ground truth."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import workbench
from workbench.cli import run
from workbench.zoo import DOMAINS, load_heldout_sample
from workbench.zoo.registry import MODELS_DIR, WEIGHTS, zoo

HELDOUT = MODELS_DIR.parent / "heldout"
ZOO_NAMES = [name for name, entry in zoo().items() if entry.kind != "pypi"]
ALL_NAMES = list(zoo())
MAX_COMMITTED_MB = 50  # eight models; the two diff pairs share tiny-llama's 4.8 MB shape


def test_list_and_verify_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in [*ZOO_NAMES, "minilm"])
    assert run(["zoo", "verify"]) == 0
    assert capsys.readouterr().out.count(": ok") == len(zoo())


def test_verify_catches_a_changed_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.zoo import registry

    fake = tmp_path / "planted-sink"
    fake.mkdir()
    (fake / WEIGHTS).write_bytes(b"not the weights")
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    assert run(["zoo", "verify"]) == 2
    with pytest.raises(workbench.WorkbenchError, match="differs from the recorded"):
        workbench.load("planted-sink")


def test_committed_weights_fit_the_budget() -> None:
    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*.safetensors"))
    assert total / 1e6 <= MAX_COMMITTED_MB


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("backend", ["hf", "tl", "nnsight"])
def test_zoo_model_loads_in_every_backend(name: str, backend: str) -> None:
    reference = workbench.load(name)
    model = workbench.load(copy.deepcopy(reference.hf), tokenizer=reference.tokenizer, backend=backend)
    prompt = "def add(a, b):\n    return a + b"
    expected = reference.read(prompt, "blocks.1.hook_resid_post")["blocks.1.hook_resid_post"]
    got = model.read(prompt, "blocks.1.hook_resid_post")["blocks.1.hook_resid_post"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_planted_sink_heads_are_recovered_exactly() -> None:
    model = workbench.load("planted-sink")
    planted = {tuple(h) for h in model.config.planted_sink_heads}
    sample = load_heldout_sample(HELDOUT)
    prompts = [sample[d][0][:400] for d in DOMAINS]
    found = set()
    for prompt in prompts:
        values = model.read(prompt, r"blocks\.\d+\.attn\.hook_pattern")
        for name, pattern in values.items():
            first_token_mass = pattern[0, :, 1:, 0].mean(-1)  # [head], queries that can see beyond token 0
            found |= {
                (int(name.split(".")[1]), h) for h in range(pattern.shape[1]) if first_token_mass[h] > 0.9
            }
            assert all(
                m < 0.5
                for h, m in enumerate(first_token_mass.tolist())
                if (int(name.split(".")[1]), h) not in planted
            )
    assert found == planted


def test_model_cards_record_recipe_and_heldout_loss() -> None:
    for name in ZOO_NAMES:
        text = (MODELS_DIR / name / "README.md").read_text()
        assert "workbench zoo build" in text
        if zoo()[name].kind == "trained":
            metrics = json.loads((MODELS_DIR / name / "metrics.json").read_text())
            assert set(metrics["heldout_loss"]) == set(DOMAINS)
            assert "tokens seen" in text and "Held-out loss per domain" in text
            vocab = json.loads((MODELS_DIR / name / "config.json").read_text())["vocab_size"]
            for domain, loss in metrics["heldout_loss"].items():
                assert f"| {domain} | {loss:.4f} |" in text  # the card shows the recorded number
                assert 0 < loss < math.log(vocab), (name, domain)  # better than a uniform guess


def test_tiny_moe_routing_is_balanced_and_domain_specialised() -> None:
    """Every expert takes >= 2% of slots in every layer; in some layer MI(expert; domain)/H(domain) is
    >= 0.15 while the same architecture at random init (mean of 5 seeds, same layer) is <= 0.05; the card
    records both."""
    from workbench.zoo import domain_windows
    from workbench.zoo_build.evaluate import random_init_routing_stats, routing_stats

    trained = workbench.load("tiny-moe")
    ids, domains = domain_windows(trained.tokenizer, load_heldout_sample(HELDOUT))
    rows = routing_stats(trained, ids, domains)
    baseline = random_init_routing_stats(trained.config, trained.tokenizer, ids, domains)
    assert min(r["min_expert_load"] for r in rows) >= 0.02
    specialised = [
        r["layer"]
        for r, b in zip(rows, baseline, strict=True)
        if r["mi_over_domain_entropy"] >= 0.15 and b["mi_over_domain_entropy"] <= 0.05
    ]
    assert specialised
    metrics = json.loads((MODELS_DIR / "tiny-moe" / "metrics.json").read_text())
    recorded = metrics["tables"]["Routing on the held-out mix (trained)"]
    assert [round(r["mi_over_domain_entropy"], 4) for r in recorded] == [
        round(r["mi_over_domain_entropy"], 4) for r in rows
    ]
    assert "random init, 5 seeds" in (MODELS_DIR / "tiny-moe" / "README.md").read_text()


def test_training_is_deterministic_from_the_seed() -> None:
    import dataclasses

    from workbench.zoo_build.build import load_tokenizer
    from workbench.zoo_build.recipes import RECIPES
    from workbench.zoo_build.train import train

    recipe = dataclasses.replace(RECIPES["tiny-moe"], steps=3, batch=5, seq_len=32, early_checkpoint=None)
    tokenizer = load_tokenizer(recipe.tokenizer)
    docs = load_heldout_sample(HELDOUT)
    first, facts = train(recipe, tokenizer, docs)
    second, _ = train(recipe, tokenizer, docs)
    assert facts["tokens_seen"] == 3 * 5 * 32
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_planted_sink_rebuilds_to_the_committed_weights() -> None:
    from workbench.zoo_build.build import load_tokenizer
    from workbench.zoo_build.planted import build_planted_sink

    committed = workbench.load("planted-sink").hf.state_dict()
    rebuilt = build_planted_sink(load_tokenizer("bpe-4096")).state_dict()
    assert committed.keys() == rebuilt.keys()
    assert all(torch.equal(committed[k], rebuilt[k]) for k in committed)
