"""Logit and tuned lenses on the zoo: the tuned lens beats the logit lens; prediction depth on every model."""

from __future__ import annotations

import pytest
import torch

import workbench
from probes.lens import TunedLens, lens_table, prediction_depth, train_tuned_lens
from workbench.zoo import domain_windows, heldout
from workbench.zoo.registry import zoo


def _windows(model: workbench.WorkbenchModel) -> tuple[torch.Tensor, torch.Tensor]:
    ids, _ = domain_windows(model.tokenizer, heldout(), seq_len=64, per_domain=8)
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
    n_layers = model.cfg.n_layers
    assert depth.shape == test[:4].shape and depth.min() >= 0 and depth.max() <= n_layers - 1
    table = lens_table(model, test[:4])
    assert table.top1_agreement.iloc[-1] == 1.0 and table.kl_to_final.iloc[-1] == pytest.approx(0, abs=1e-6)
    # the logit lens from HF's own hidden states: block l's output (hidden_states[l + 1]; the last entry
    # is already final-normed) through the final norm and the unembedding, KL in float64
    with torch.no_grad():
        out = model.hf(input_ids=test[:4], output_hidden_states=True)
        norm = model.base.get_submodule(model.adapter.final_norm)
        logits = [model.hf.get_output_embeddings()(norm(h)) for h in out.hidden_states[1:-1]] + [out.logits]
    final = out.logits.double().log_softmax(-1)
    for layer, layer_logits in enumerate(logits):
        logp = layer_logits.double().log_softmax(-1)
        kl = float((final.exp() * (final - logp)).sum(-1).mean())
        assert table.kl_to_final.iloc[layer] == pytest.approx(kl, rel=1e-4, abs=1e-6), layer
    # prediction depth token by token: the first layer from which every later layer's top-1 is the final one
    tops = torch.stack([x.argmax(-1) for x in logits]).tolist()  # [layer][batch][pos]
    for b in range(depth.shape[0]):
        for t in range(depth.shape[1]):
            layer = n_layers - 1
            while layer > 0 and tops[layer - 1][b][t] == tops[-1][b][t]:
                layer -= 1
            assert depth[b, t] == layer, (b, t)


@pytest.mark.parametrize("name", list(zoo()))
def test_compression_profile_on_every_zoo_model(name: str) -> None:
    from probes.compression import cka_blocks, cka_matrix, compression_profile, id_summaries
    from workbench.capture import CaptureSpec, capture

    model = workbench.load(name)
    sample = heldout()
    prompts = [doc[:300] for docs in sample.values() for doc in docs[:3]]
    spec = CaptureSpec(points=[r"blocks\.\d+\.hook_resid_post"])
    result = capture(model, prompts, spec, progress=False)
    hidden = [result[f"blocks.{layer}.hook_resid_post"] for layer in range(model.cfg.n_layers)]
    for pooling in ("all", "mean"):
        rows = compression_profile(hidden, pooling)
        assert all(r["pooling"] == pooling and r["twonn_90"] > 0 for r in rows)
    # TwoNN (Facco et al. 2017) written out in float64 on the mean-pooled prompts (distinct points): brute
    # force distances, mu = r2 / r1 sorted, F_i = i / N, slope of -log(1 - F) on log mu through the origin
    # over the smallest 90% (98%) of the ratios
    for layer, row in enumerate(rows):
        points = torch.stack([h.double().mean(0) for h in hidden[layer]])
        distances = torch.cdist(points, points).fill_diagonal_(float("inf")).sort(-1).values
        mu = (distances[:, 1] / distances[:, 0]).sort().values
        n = len(mu)
        assert row["points"] == n == len(prompts)
        for fraction, key in ((0.9, "twonn_90"), (0.98, "twonn_98")):
            keep = int(n * fraction)
            x = mu[:keep].log()
            y = -torch.log(1 - torch.arange(1, keep + 1, dtype=torch.float64) / n)
            assert row[key] == pytest.approx(float((x * y).sum() / (x * x).sum()), rel=1e-4), (layer, key)
    summary = id_summaries([r["twonn_90"] for r in compression_profile(hidden, "all")])
    assert summary["abstraction_peak"] is not None
    grid = cka_matrix([torch.cat(h) for h in hidden])
    assert torch.allclose(grid.diagonal(), torch.ones(len(hidden), dtype=torch.float64))
    assert cka_blocks(grid)[0][0] == 0
