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
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.parquet" for n in ("weights", "representations", "lens", "outputs", "tokens")
    )
    assert (pd.read_parquet(out / "representations.parquet").cka == 1).all()
    capsys.readouterr()
    assert run(["diff", "tiny-llama", "tiny-moe", "--prompts", "short"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one architecture" in err[0]


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
