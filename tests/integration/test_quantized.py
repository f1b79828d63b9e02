"""Quantised loading on the CPU with two backends (optimum-quanto int8 / int4, torchao int8 weight-only):
the card's quantisation row against the config and the modules, dequantised weights near the source, KL
to the source growing as bits fall, and the default battery's probes running on each."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench
from probes.divergence import kl_divergence, next_token_log_probs
from workbench.battery import load_spec, run_battery
from workbench.battery.spec import DEFAULT_SPEC, ModelEntry
from workbench.errors import WorkbenchError
from workbench.zoo import heldout

REQUESTS = {
    "quanto-8": {"method": "quanto", "bits": 8},
    "quanto-4": {"method": "quanto", "bits": 4},
    "torchao-8": {"method": "torchao", "bits": 8},
    "bnb-8": {"method": "bitsandbytes", "bits": 8},
    "bnb-4": {"method": "bitsandbytes", "bits": 4},
}
TEXTS = [t for group in heldout(2, 300).values() for t in group]
# NF4's sixteen values (Dettmers et al. 2023, QLoRA, Appendix E)
NF4 = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
        -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
        0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
        0.7229568362236023, 1.0,
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def source() -> workbench.WorkbenchModel:
    return workbench.load("tiny-llama")


@pytest.fixture(scope="module")
def quantised() -> dict[str, workbench.WorkbenchModel]:
    return {name: workbench.load("tiny-llama", quantization=r) for name, r in REQUESTS.items()}


def _dequantised(linear: torch.nn.Module) -> torch.Tensor:
    """A quantised linear layer's weight values through its backend's own API."""
    weight = linear.weight
    if hasattr(weight, "quant_state"):
        from bitsandbytes.functional import dequantize_4bit

        return dequantize_4bit(weight.data, weight.quant_state).float()
    if hasattr(weight, "SCB"):  # LLM.int8: absmax per row, kept in the layer's state after a forward
        scales = weight.SCB if weight.SCB is not None else linear.state.SCB
        return weight.data.float() * scales.float()[:, None] / 127
    return weight.dequantize().float()


def _mean_kl(a: workbench.WorkbenchModel, b: workbench.WorkbenchModel) -> float:
    kls = []
    for text in TEXTS:
        ids = a.encode(text)["input_ids"][0]
        kls.append(kl_divergence(next_token_log_probs(a, ids), next_token_log_probs(b, ids)))
    return float(torch.cat(kls).mean())


def test_card_row_matches_config_and_modules(
    source: workbench.WorkbenchModel, quantised: dict[str, workbench.WorkbenchModel]
) -> None:
    config = json.loads((Path(source.config._name_or_path) / "config.json").read_text())
    linears = config["num_hidden_layers"] * 7  # q, k, v, o, gate, up, down per block
    formats = {"bnb-8": {"format": "LLM.int8"}, "bnb-4": {"format": "nf4"}}
    for name, model in quantised.items():
        row = workbench.card(model).get("quantisation")
        bits = REQUESTS[name]["bits"]
        assert row == {
            "quant_method": REQUESTS[name]["method"],
            "bits": bits,
            **formats.get(name, {}),
            "group_size": [64] if name == "bnb-4" else "per row",  # NF4 blocks of 64; else one scale a row
            "quantised_modules": linears,
            "outside_blocks": [],  # embeddings, LM head and norms stay in floating point
        }, name
        # the grouping from the values alone: each group of the weight takes at most 2^bits levels, the
        # matrix many more (down_proj's rows are 344 long)
        dense = _dequantised(model.hf.model.layers[0].mlp.down_proj)
        groups = dense.reshape(-1, 64) if name == "bnb-4" else dense
        levels = [len(group.unique()) for group in groups]
        assert max(levels) <= 2**bits < len(dense.unique()), name


@pytest.mark.slow
def test_measured_card_of_a_quantised_model(
    source: workbench.WorkbenchModel, quantised: dict[str, workbench.WorkbenchModel]
) -> None:
    """The parameter count is the source's (NF4 packs two codes a byte); batch invariance is measured as
    loaded (a bitsandbytes model cannot be cast)."""
    count = sum(p.numel() for p in source.hf.parameters())
    card = workbench.card(quantised["bnb-4"], measure=True)
    assert card.get("parameters_total") == count
    assert list(card.get(25)) == ["as loaded (quantised)"]


def test_nf4_and_llm_int8_values_are_the_papers(quantised: dict[str, workbench.WorkbenchModel]) -> None:
    """bitsandbytes' 4-bit weights are NF4 codes times each block's absmax (QLoRA); its 8-bit ones
    integers times each row's absmax / 127 (LLM.int8)."""
    nf4 = _dequantised(quantised["bnb-4"].hf.model.layers[1].mlp.up_proj).reshape(-1, 64)
    codes = nf4 / nf4.abs().amax(1, keepdim=True)
    assert float((codes[..., None] - NF4).abs().amin(-1).max()) < 1e-6
    int8 = _dequantised(quantised["bnb-8"].hf.model.layers[1].mlp.up_proj)
    steps = int8 / (int8.abs().amax(1, keepdim=True) / 127)
    assert float((steps - steps.round()).abs().max()) < 1e-4 and float(steps.abs().max()) == pytest.approx(
        127
    )


def test_dequantised_weights_and_kl_grow_as_bits_fall(
    source: workbench.WorkbenchModel, quantised: dict[str, workbench.WorkbenchModel]
) -> None:
    original = source.hf.model.layers[2].mlp.up_proj.weight.detach()
    errors = {}
    for name, model in quantised.items():
        weight = _dequantised(model.hf.model.layers[2].mlp.up_proj)
        errors[name] = float((weight - original).norm() / original.norm())
    for name, error in errors.items():
        assert (error < 0.01) if name.endswith("-8") else (0.03 < error < 0.2), errors
    kl = {name: _mean_kl(source, model) for name, model in quantised.items()}
    for eight in ("quanto-8", "torchao-8", "bnb-8"):
        assert 0 < kl[eight] < kl["quanto-4"] and kl[eight] < kl["bnb-4"], kl


def test_unknown_requests_are_one_line() -> None:
    with pytest.raises(WorkbenchError, match=r"expected \{method, bits\}"):
        workbench.load("tiny-llama", quantization={"method": "torchao", "bits": 4})


@pytest.mark.slow
def test_the_default_battery_probes_run_on_each_backend(tmp_path: Path) -> None:
    spec = load_spec(DEFAULT_SPEC, tmp_path / "run")
    models = [ModelEntry("tiny-llama", f"tiny-llama-{n}", quantization=r) for n, r in REQUESTS.items()]
    probes = [p for p in spec.probes if not p.models and not p.pair]
    spec = dataclasses.replace(spec, models=models, pairs=[], probes=probes, raw={**spec.raw, "q": REQUESTS})
    run_battery(spec, progress=False)
    units = json.loads((spec.output / "manifest.json").read_text())["units"]
    assert len(units) == len(models) * len(probes)
    for unit in units:  # every unit ran, or does not apply to a dense causal model
        assert unit["status"] == "done" or "no MoE" in unit["reason"], unit


def test_the_quantisation_diff(
    source: workbench.WorkbenchModel, quantised: dict[str, workbench.WorkbenchModel]
) -> None:
    """`workbench.diff(A, A quantised)`: only the blocks' linear weights change (the embeddings and norms
    are not quantised), the KL grows as bits fall, and swapping every base block back in leaves no KL."""
    from probes.diff import diff
    from probes.diff_weights import change_shares

    texts = {"heldout": TEXTS}
    found = {name: diff(source, model, texts, ranks=False) for name, model in quantised.items()}
    for name, result in found.items():
        kinds = change_shares(result.weights, "kind").set_index("kind").share
        assert kinds.loc[["embedding", "norm"]].eq(0).all(), name
        assert kinds.loc[["attention", "mlp"]].sum() == pytest.approx(1), name
        patching = result.patching.set_index(["direction", "blocks_from_a"]).kl
        assert patching.loc[("bottom_up", 4)] == 0 and patching.loc[("top_down", 4)] == 0, name
        # the weight change of one matrix, after the forwards the diff ran, as its backend dequantises it
        original = source.hf.model.layers[2].mlp.up_proj.weight.detach().double()
        expected = (_dequantised(quantised[name].hf.model.layers[2].mlp.up_proj).double() - original).norm()
        row = result.weights.set_index("parameter").loc["model.layers.2.mlp.up_proj.weight"]
        assert row.relative_change == pytest.approx(float(expected / original.norm()), rel=1e-6), name
    kl = {name: float(result.outputs.kl.mean()) for name, result in found.items()}
    assert kl["quanto-8"] < kl["quanto-4"] and kl["torchao-8"] < kl["quanto-4"], kl
    assert kl["bnb-8"] < kl["bnb-4"], kl


def test_tiny_moe_quantisation_moves_routing_more_as_bits_fall() -> None:
    """Both backends quantise tiny-moe's attention projections only (its experts are fused 3-D parameters,
    its router stays float): the routing still moves, more at 4 bits than at 8."""
    from probes.diff import diff

    base, texts = workbench.load("tiny-moe"), {"heldout": TEXTS}
    found = {
        bits: diff(base, workbench.load("tiny-moe", quantization={"method": "quanto", "bits": bits}), texts)
        for bits in (8, 4)
    }
    assert (
        workbench.card(workbench.load("tiny-moe", quantization={"method": "quanto", "bits": 8})).get(
            "quantisation"
        )["quantised_modules"]
        == 4 * base.cfg.n_layers
    )
    overlap = {bits: float(result.routing.topk_jaccard.mean()) for bits, result in found.items()}
    kl = {bits: float(result.outputs.kl.mean()) for bits, result in found.items()}
    assert 1 > overlap[8] > overlap[4] and 0 < kl[8] < kl[4], (overlap, kl)


def _hf_landmarks(model: workbench.WorkbenchModel, ids: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per layer, from HF's own eager forward (its attention weights, its decoder layers' outputs), in
    float64 numpy: the sink rate (Gu et al. eq. 2, eps 0.3), the mean max / median |h| (Sun et al.'s
    code), and TwoNN as DADApy computes it on the distinct residual tokens."""
    from tests.unit.test_compression import dadapy_twonn, neighbour_distances
    from workbench.hooks.implementation import attention_implementation

    layers = model.hf.model.layers
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def keep(index: int):
        return lambda module, args, out: outputs[index].append((out[0] if isinstance(out, tuple) else out)[0])

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    alphas: dict[int, list[np.ndarray]] = {i: [] for i in range(len(layers))}
    try:
        with torch.no_grad(), attention_implementation(model.hf, "eager"):
            for prompt in ids:
                attentions = model.hf(input_ids=prompt[None], output_attentions=True).attentions
                for i, pattern in enumerate(attentions):
                    a = pattern[0].double().numpy()  # [head, q, k]
                    alphas[i].append(a[:, :, 0].sum(-1) / a.shape[1])
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for i in range(len(layers)):
        hidden = [h.double().numpy() for h in outputs[i]]
        magnitudes = [np.sort(np.abs(h), axis=None) for h in hidden]
        ratios = [m[-1] / m[(len(m) - 1) // 2] for m in magnitudes]  # the lower median, as torch.median
        points = np.unique(np.concatenate(hidden), axis=0)
        rows.append(
            {
                "sink_rate": 100 * float((np.stack(alphas[i]) > 0.3).mean()),
                "top_ratio": float(np.mean(ratios)),
                "twonn": dadapy_twonn(neighbour_distances(points, 2)),
            }
        )
    return rows


def test_sink_massive_and_id_changes_match_hfs_own_forward(
    source: workbench.WorkbenchModel, quantised: dict[str, workbench.WorkbenchModel]
) -> None:
    from probes.diff_internals import internals_diff

    other = quantised["quanto-4"]
    ids = [source.encode(t)["input_ids"][0] for t in TEXTS[:6]]
    found = internals_diff(source, other, ids).set_index("layer")
    for side, model in (("a", source), ("b", other)):
        for layer, expected in enumerate(_hf_landmarks(model, ids)):
            row = found.loc[layer]
            assert row[f"sink_rate_{side}"] == expected["sink_rate"], (side, layer)
            assert row[f"top_ratio_{side}"] == pytest.approx(expected["top_ratio"], rel=1e-4), (side, layer)
            assert row[f"twonn_{side}"] == pytest.approx(expected["twonn"], rel=1e-4), (side, layer)
    assert (found.twonn_change == found.twonn_b - found.twonn_a).all()
    assert (found.top_ratio_change != 0).all()  # 4-bit weights move every layer's residual stream


def test_gpt2_conv1d_layers_quantised_by_bitsandbytes_diff_in_their_own_layout() -> None:
    """bitsandbytes replaces GPT-2's Conv1D ([in, out]) by linear layers ([out, in]): the diff compares
    each weight in the base's layout; quanto converts no Conv1D and is refused in one line."""
    from probes.diff import diff

    base = workbench.load("planted-sink")
    other = workbench.load("planted-sink", quantization=REQUESTS["bnb-8"])
    found = diff(base, other, {"heldout": TEXTS[:2]}, ranks=False)
    weights = found.weights.set_index("parameter")
    attention = weights.loc["transformer.h.0.attn.c_attn.weight"]
    assert attention["size"] == "x".join(map(str, base.hf.transformer.h[0].attn.c_attn.weight.shape))
    assert 0 < weights.relative_change.max() < 0.01 and float(found.outputs.kl.mean()) > 0
    with pytest.raises(WorkbenchError, match="converted no module"):
        workbench.load("planted-sink", quantization=REQUESTS["quanto-8"])
