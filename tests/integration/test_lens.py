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


@pytest.mark.parametrize("name", list(zoo()))
def test_compression_profile_on_every_zoo_model(name: str) -> None:
    from probes.compression import cka_blocks, cka_matrix, compression_profile, id_summaries
    from workbench.capture import CaptureSpec, capture

    model = workbench.load(name)
    sample = load_heldout_sample(MODELS_DIR.parent / "heldout")
    prompts = [doc[:300] for docs in sample.values() for doc in docs[:3]]
    spec = CaptureSpec(points=[r"blocks\.\d+\.hook_resid_post"])
    result = capture(model, prompts, spec, progress=False)
    hidden = [
        result[f"blocks.{layer}.hook_resid_post"] for layer in range(model.adapter.n_layers(model.config))
    ]
    for pooling in ("all", "mean"):
        rows = compression_profile(hidden, pooling)
        assert all(r["pooling"] == pooling and r["twonn_90"] > 0 for r in rows)
    summary = id_summaries([r["twonn_90"] for r in compression_profile(hidden, "all")])
    assert summary["abstraction_peak"] is not None
    grid = cka_matrix([torch.cat(h) for h in hidden])
    assert torch.allclose(grid.diagonal(), torch.ones(len(hidden), dtype=torch.float64))
    assert cka_blocks(grid)[0][0] == 0
