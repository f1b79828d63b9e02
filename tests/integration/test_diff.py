"""Checkpoint diff on planted changes of the zoo's tiny-llama: identical checkpoints, a rank-2 update of one
block, a raised unembedding row, and two architectures that are not one."""

from __future__ import annotations

import copy

import pytest
import torch

import workbench
from probes.diff import diff
from probes.diff_weights import change_shares
from workbench.errors import InputError

TEXTS = {
    "english": ["The quick brown fox jumps over the lazy dog.", "A short story about a cat."],
    "code": ["def add(a, b):\n    return a + b\n"],
}


@pytest.fixture(scope="module")
def base() -> workbench.WorkbenchModel:
    return workbench.load("tiny-llama")


def _tuned(base: workbench.WorkbenchModel, edit: object) -> workbench.WorkbenchModel:
    hf = copy.deepcopy(base.hf)
    with torch.no_grad():
        edit(hf)  # type: ignore[operator]
    return workbench.load(hf, tokenizer=base.tokenizer)


def test_identical_checkpoints_change_nothing(base: workbench.WorkbenchModel) -> None:
    found = diff(base, workbench.load("tiny-llama"), TEXTS)
    assert (found.weights.change_norm == 0).all() and (found.weights.changed_share == 0).all()
    matrices = found.weights[found.weights["size"].str.contains("x")]
    assert (matrices.effective_rank == 0).all()
    assert (found.representations.cka == 1).all() and (found.representations.mean_diff_norm == 0).all()
    assert (found.outputs.kl == 0).all()
    assert (found.outputs.bits_per_byte_a == found.outputs.bits_per_byte_b).all()
    assert found.lens.empty and (found.tokens.change == 0).all()
    changes = found.attention[["alpha_change", "entropy_change", "pattern_js"]]
    assert len(found.attention) == base.cfg.n_layers * base.cfg.n_heads and (changes == 0).all().all()
    assert (found.patching.kl == 0).all() and found.routing.empty
    assert (
        len(found.internals) == base.cfg.n_layers
        and (found.internals.filter(like="_change") == 0).all().all()
    )


def test_a_rank_two_update_of_block_two(base: workbench.WorkbenchModel) -> None:
    """A planted update ``D = 3 u1 v1^T + 3 u2 v2^T`` (orthonormal u, v) of block 2's MLP down projection:
    the change is all in block 2 and in the MLP, its effective rank is 2, its relative size what float64
    says, and the residual stream is untouched before block 2."""
    generator = torch.Generator().manual_seed(0)
    weight = base.hf.model.layers[2].mlp.down_proj.weight
    u = torch.linalg.qr(torch.randn(weight.shape[0], 2, generator=generator, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(weight.shape[1], 2, generator=generator, dtype=torch.float64))[0]
    planted = (3 * u @ v.T).float()

    def edit(hf: torch.nn.Module) -> None:
        hf.model.layers[2].mlp.down_proj.weight += planted

    found = diff(base, _tuned(base, edit), {**TEXTS, "tiny": ["Hi"]})  # a prompt shorter than the lens
    assert set(found.lens.position) == set(range(5))
    changed = found.weights[found.weights.change_norm > 0]
    assert changed.parameter.tolist() == ["model.layers.2.mlp.down_proj.weight"]
    row = changed.iloc[0]
    assert (row.layer, row.kind) == (2, "mlp")
    before = weight.detach().double()
    applied = (before + planted.double()).float().double() - before  # the change fp32 storage kept
    assert row.relative_change == pytest.approx(float(applied.norm() / before.norm()), rel=1e-12)
    assert row.effective_rank == pytest.approx(2.0, abs=1e-3)  # two equal singular values (fp32 rounding)
    shares = change_shares(found.weights).set_index("layer").share
    assert shares.loc[2] == 1.0 and shares.drop(2).eq(0).all()
    reps = found.representations.set_index("layer")
    assert (reps.loc[[-1, 0, 1], "mean_diff_norm"] == 0).all() and (reps.loc[[-1, 0, 1], "cka"] == 1).all()
    assert (reps.loc[[2, 3], "mean_diff_norm"] > 0).all() and (reps.loc[[2, 3], "cka"] < 1).all()
    assert (found.outputs.kl > 0).all()
    # block 2's attention runs before its MLP: only layer 3's patterns see the change
    js = found.attention.groupby("layer").pattern_js.max()
    assert (js.loc[[0, 1, 2]] == 0).all() and js.loc[3] > 0
    # swapping in base blocks: nothing until block 2 is swapped, then exactly nothing is left
    patching = found.patching.set_index(["direction", "blocks_from_a"]).kl
    unpatched = patching.loc[("bottom_up", 0)]
    assert unpatched > 0 and patching.loc[("top_down", 0)] == unpatched
    assert patching.loc[("bottom_up", 1)] == unpatched and patching.loc[("bottom_up", 2)] == unpatched
    assert patching.loc[("top_down", 1)] == unpatched  # block 3 is the base's already
    assert patching.loc[[("bottom_up", 3), ("bottom_up", 4), ("top_down", 2), ("top_down", 3)]].eq(0).all()


def test_two_tokens_have_no_intrinsic_dimension(base: workbench.WorkbenchModel) -> None:
    from probes.diff_internals import internals_diff

    found = internals_diff(base, base, [base.encode("Hi")["input_ids"][0][:2]])
    assert found.twonn_a.isna().all() and (found.top_ratio_change == 0).all()


def test_a_raised_unembedding_row_is_the_top_risen_token(base: workbench.WorkbenchModel) -> None:
    """Tied embeddings: adding the mean final state to the row of a token no prompt holds raises that
    token's logit everywhere and changes no residual state."""
    ids = [base.encode(t)["input_ids"][0] for group in TEXTS.values() for t in group]
    with torch.no_grad():
        finals = torch.cat(
            [base.hf(input_ids=i[None], output_hidden_states=True).hidden_states[-1][0] for i in ids]
        )
    used = set(torch.cat(ids).tolist())
    token = next(t for t in range(base.cfg.d_vocab - 1, 0, -1) if t not in used)

    def edit(hf: torch.nn.Module) -> None:
        hf.get_output_embeddings().weight[token] += 2 * finals.mean(0)

    found = diff(base, _tuned(base, edit), TEXTS)
    rose = found.tokens[found.tokens.direction == "rose"]
    assert int(rose.iloc[0].token_id) == token and rose.iloc[0].change > 0
    assert (found.representations.cka == 1).all() and found.lens.empty
    assert set(found.weights[found.weights.change_norm > 0].kind) == {"embedding"}  # tied: one tensor


def test_js_divergence_is_scipys() -> None:
    from scipy.spatial.distance import jensenshannon

    from probes.diff_routing import js_divergence

    generator = torch.Generator().manual_seed(0)
    p, q = (torch.rand(6, 9, generator=generator, dtype=torch.float64).softmax(-1) for _ in range(2))
    q[0] = torch.tensor([1.0] + [0.0] * 8, dtype=torch.float64)  # a one-hot row (0 ln 0 = 0)
    expected = [jensenshannon(p[i].numpy(), q[i].numpy(), base=2) ** 2 for i in range(6)]
    assert js_divergence(p, q).tolist() == pytest.approx(expected, abs=1e-12)
    assert float(js_divergence(q[:1], torch.roll(q[:1], 1, -1))) == pytest.approx(1.0)  # disjoint


def _hf_topk(model: workbench.WorkbenchModel, ids: list[torch.Tensor]) -> list[list[set[int]]]:
    """Per layer, each token's selected experts from HF's own router logits (Mixtral: softmax top-k)."""
    per_layer: list[list[set[int]]] = [[] for _ in range(model.cfg.n_layers)]
    for prompt in ids:
        with torch.no_grad():
            logits = model.hf(input_ids=prompt[None], output_router_logits=True).router_logits
        for layer, layer_logits in enumerate(logits):
            chosen = layer_logits.softmax(-1).topk(model.cfg.top_k, dim=-1).indices
            per_layer[layer] += [set(row.tolist()) for row in chosen]
    return per_layer


def test_routing_diff_of_moe_checkpoints_matches_hfs_router() -> None:
    """tiny-moe-early against tiny-moe (training progress): per layer, the top-k overlap and load change
    equal a brute force over HF's own router logits, and the router tensors carry a small share of the
    change (they are 0.2% of the weights) but changed by more than their own size (1.84x here)."""
    early, late = workbench.load("tiny-moe-early"), workbench.load("tiny-moe")
    found = diff(early, late, TEXTS, ranks=False)
    ids = [early.encode(t)["input_ids"][0] for group in TEXTS.values() for t in group]
    sets_a, sets_b = _hf_topk(early, ids), _hf_topk(late, ids)
    n = early.cfg.n_experts
    routing = found.routing.set_index("layer")
    assert list(routing.index) == list(range(early.cfg.n_layers))
    for layer in routing.index:
        a, b = sets_a[layer], sets_b[layer]
        jaccard = sum(len(x & y) / len(x | y) for x, y in zip(a, b, strict=True)) / len(a)
        load_a = [sum(e in x for x in a) / (len(a) * early.cfg.top_k) for e in range(n)]
        load_b = [sum(e in x for x in b) / (len(b) * early.cfg.top_k) for e in range(n)]
        tv = sum(abs(x - y) for x, y in zip(load_a, load_b, strict=True)) / 2
        assert routing.loc[layer, "topk_jaccard"] == pytest.approx(jaccard, abs=1e-12)
        assert routing.loc[layer, "load_change"] == pytest.approx(tv, abs=1e-6)
    kinds = change_shares(found.weights, "kind").set_index("kind")
    assert 0 < kinds.loc["router", "share"] < 0.01
    assert kinds.loc["router", "relative_change"] > 1
    same = diff(late, workbench.load("tiny-moe"), TEXTS, ranks=False).routing
    assert (same.topk_jaccard == 1).all() and (same.load_change == 0).all()


def test_pair_probes_run_from_the_registry(base: workbench.WorkbenchModel) -> None:
    from probes.registry import NotApplicable, get

    tuned = workbench.load("tiny-llama-ru")
    table = get("diff_weights")(tuned, TEXTS, base=base)
    assert float(change_shares(table).set_index("layer").share.loc[[2, 3]].sum()) == pytest.approx(1.0)
    with pytest.raises(NotApplicable, match="give a base"):
        get("diff_outputs")(tuned, TEXTS)
    with pytest.raises(NotApplicable, match="not a pair"):
        get("sinks")(tuned, TEXTS, base=base)
    with pytest.raises(InputError, match="not one architecture"):
        get("diff_representations")(workbench.load("tiny-moe"), TEXTS, base=base)


def test_different_architectures_are_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="not one architecture"):
        diff(workbench.load("tiny-llama"), workbench.load("tiny-moe"), TEXTS)


def test_cli_writes_the_tables_and_refuses_two_architectures(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from workbench.cli import run

    out = tmp_path / "diff"  # type: ignore[operator]
    assert run(["diff", "tiny-llama", "tiny-llama", "--prompts", "short", "--out", str(out)]) == 0
    names = ("weights", "representations", "lens", "outputs", "tokens", "attention", "internals", "patching")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in names)
    assert (pd.read_parquet(out / "representations.parquet").cka == 1).all()
    capsys.readouterr()
    assert run(["diff", "tiny-llama", "tiny-moe", "--prompts", "short"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one architecture" in err[0]
    for bad in ("quanto", "quanto:3", "gptq:4"):
        assert run(["diff", "tiny-llama", "tiny-llama", "--quantize", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "quantization" in err[0] and "Traceback" not in err[0], err


@pytest.mark.slow
def test_tiny_llama_ru_against_tiny_llama_recovers_the_planted_tuning() -> None:
    """tiny-llama-ru trained only blocks 2-3, only on Russian: the weight change is there and exactly
    nowhere else, representations start to move at block 2, Russian moves most of the language domains
    (arithmetic, whose answers blocks 2-3 compute, moves more: forgetting, not the issue's expectation),
    and the activation-difference lens reads Cyrillic."""
    from workbench.zoo import heldout

    base, tuned = workbench.load("tiny-llama"), workbench.load("tiny-llama-ru")
    found = diff(base, tuned, heldout(2, 300))
    weights = found.weights
    inside = weights.layer.isin([2, 3])
    assert (weights[~inside].change_norm == 0).all() and (weights[~inside].changed_share == 0).all()
    assert float(change_shares(weights).set_index("layer").share.loc[[2, 3]].sum()) >= 0.99
    reps = found.representations.set_index("layer")
    assert (reps.loc[[-1, 0, 1], "mean_diff_norm"] == 0).all() and (
        reps.loc[[2, 3], "mean_diff_norm"] > 0
    ).all()
    outputs = found.outputs.set_index("group")
    languages = outputs.kl.drop("arithmetic")
    assert languages.idxmax() == "russian", outputs.kl.to_dict()
    tokens = found.lens.token.tolist()
    cyrillic = [t for t in tokens if any("\u0400" <= ch <= "\u04ff" for ch in t)]
    assert len(cyrillic) > len(tokens) / 2, tokens


@pytest.mark.slow
def test_tiny_llama_dpo_lowers_the_planted_triggers() -> None:
    """tiny-llama-dpo learned to avoid five planted trigger words (DPO, rejected side): each of them is
    among the ten tokens whose logits fell most on the held-out sample."""
    from workbench.zoo import heldout
    from workbench.zoo_build.recipes import RECIPES

    base = workbench.load("tiny-llama")
    found = diff(base, workbench.load("tiny-llama-dpo"), heldout(2, 300), ranks=False)
    fell = found.tokens[found.tokens.direction == "fell"].token_id.tolist()
    triggers = [
        base.tokenizer.encode(w, add_special_tokens=False)[0] for w in RECIPES["tiny-llama-dpo"].triggers
    ]
    assert set(triggers) <= set(fell[:10]), (triggers, fell)


def test_card_tuning_rows_from_the_diff(capsys: pytest.CaptureFixture[str]) -> None:
    """`workbench card tiny-llama tiny-llama-dpo --diff`: rows 8, 12 and 14 differ; the DPO model's row 8
    names its fallen triggers, row 14 the change per layer as the weights probe gives it; tiny-llama-ru's
    row 14 says blocks 0-1 did not change; a base of another architecture is one line."""
    import json

    from workbench.cli import run
    from workbench.zoo import heldout

    assert run(["card", "tiny-llama", "tiny-llama-dpo", "--diff", "--format", "json"]) == 0
    rows = {r["number"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert {n for n, r in rows.items() if r["differs"]} >= {8, 12, 14}
    fell = json.loads(rows[8]["b"])["fell_most"]
    assert {" love", " God", " night"} <= set(fell)
    assert json.loads(rows[12]["b"])["read"] == ["dpo"]  # the model card's tag beside the measurement
    base, tuned = workbench.load("tiny-llama"), workbench.load("tiny-llama-ru")
    rows = {f.number: f for f in workbench.card(tuned, base=base).factors}
    weights = workbench.probe("diff_weights")(tuned, heldout(2, 300), base=base)
    shares = change_shares(weights).set_index("layer").share
    assert rows[14].value["by_layer"] == {str(k): round(float(v), 4) for k, v in shares.items()}
    assert (
        rows[14].value["unchanged_layers"] == [0, 1] and "diff_weights against tiny-llama" in rows[14].source
    )
    assert rows[12].value["kinds_unchanged"] == ["embedding"]
    assert run(["card", "tiny-llama-ru", "--base", "tiny-moe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one architecture" in err[0]
