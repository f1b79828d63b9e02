"""Logit and tuned lenses on the zoo: the tuned lens beats the logit lens; prediction depth on every model."""

from __future__ import annotations

import pytest
import torch

import workbench
from probes.lens import TunedLens, lens_table, prediction_depth, train_tuned_lens
from workbench.zoo.corpus import load_heldout_sample
from workbench.zoo.evaluate import domain_windows
from workbench.zoo.registry import MODELS_DIR, zoo


def _windows(model: workbench.WorkbenchModel) -> tuple[torch.Tensor, torch.Tensor]:
    ids, _ = domain_windows(
        model.tokenizer, load_heldout_sample(MODELS_DIR.parent / "heldout"), seq_len=64, per_domain=8
    )
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(ids), generator=generator)
    return ids[order[::2]], ids[order[1::2]]  # train / test halves, all domains in both


def test_tuned_lens_beats_logit_lens_on_tiny_llama(tmp_path) -> None:
    model = workbench.load("tiny-llama")
    train, test = _windows(model)
    lens = train_tuned_lens(model, train, steps=150)
    logit = lens_table(model, test).set_index("layer").kl_to_final
    tuned = lens_table(model, test, lens).set_index("layer").kl_to_final
    last = logit.index.max()
    assert (tuned.drop(last) < logit.drop(last)).all(), (tuned.to_dict(), logit.to_dict())
    assert tuned[last] == pytest.approx(0, abs=1e-6)
    lens.save(tmp_path / "lens.safetensors")
    loaded = TunedLens.load(tmp_path / "lens.safetensors", 4, 128)
    assert (
        lens_table(model, test, loaded).kl_to_final.tolist()
        == lens_table(model, test, lens).kl_to_final.tolist()
    )


@pytest.mark.parametrize("name", [n for n, e in zoo().items() if e.kind != "pypi"])
def test_prediction_depth_on_every_zoo_model(name: str) -> None:
    model = workbench.load(name)
    _, test = _windows(model)
    depth = prediction_depth(model, test[:4])
    n_layers = model.adapter.n_layers(model.config)
    assert depth.shape == test[:4].shape and depth.min() >= 0 and depth.max() <= n_layers - 1
    table = lens_table(model, test[:4])
    assert table.top1_agreement.iloc[-1] == 1.0 and table.kl_to_final.iloc[-1] == pytest.approx(0, abs=1e-6)
