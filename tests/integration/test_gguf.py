"""GGUF files the project writes from tiny-llama: F16 loads to the source's weights rounded through
float16 and captures as that model does; Q8_0 loads to llama.cpp's Q8_0 values computed by hand; the card
lists the file's types per tensor kind; bad files are one line."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench
from workbench.capture import CaptureSpec, capture
from workbench.errors import WorkbenchError
from workbench.models.gguf import write_gguf
from workbench.zoo import heldout

TEXTS = [t for group in heldout(1, 200).values() for t in group]
POINTS = [r"blocks\.\d+\.hook_resid_post", r"blocks\.\d+\.attn\.hook_pattern"]


@pytest.fixture(scope="module")
def source() -> workbench.WorkbenchModel:
    return workbench.load("tiny-llama")


@pytest.fixture(scope="module")
def files(source: workbench.WorkbenchModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {
        q: write_gguf(source, folder / q / f"tiny-llama-{q}.gguf", q)
        for q in ("F16", "Q8_0")
        if (folder / q).mkdir() is None
    }


def test_f16_file_captures_as_the_source_rounded_to_float16(
    source: workbench.WorkbenchModel, files: dict[str, Path]
) -> None:
    loaded = workbench.load(str(files["F16"]))
    assert [loaded.encode(t)["input_ids"].tolist() for t in TEXTS] == [
        source.encode(t)["input_ids"].tolist() for t in TEXTS
    ]  # the vocabulary and merges went through the file
    rounded = copy.deepcopy(source.hf)
    with torch.no_grad():
        for parameter in rounded.parameters():
            if parameter.dim() >= 2:  # matrices stored as F16, vectors as F32
                parameter.copy_(parameter.half().float())
    reference = workbench.load(rounded, tokenizer=source.tokenizer)
    spec = CaptureSpec(points=POINTS)
    expected, got = (capture(m, TEXTS, spec, progress=False) for m in (reference, loaded))
    for name in expected.names:
        for a, b in zip(expected[name], got[name], strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    exact = capture(source, TEXTS, spec, progress=False)
    drift = max(
        float((a - b).abs().max())
        for a, b in zip(exact["blocks.3.hook_resid_post"], got["blocks.3.hook_resid_post"], strict=True)
    )
    assert 0 < drift < 0.05  # float16 rounding of the weights, and no more
    assert not workbench.probe("sinks")(loaded, {"heldout": TEXTS}).empty


def _q8_0(weight: np.ndarray) -> np.ndarray:
    """llama.cpp's Q8_0 by hand (ggml-quants.c, quantize_row_q8_0_ref): blocks of 32 along a row,
    ``d = max|x| / 127``, ``q = round(x / d)`` half away from zero, stored ``d`` as float16; the value is
    ``q x fp16(d)``."""
    blocks = weight.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(-1, keepdims=True) / 127
    with np.errstate(divide="ignore"):
        inverse = np.where(d == 0, 0, 1 / d)
    scaled = blocks * inverse
    q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(weight.shape)


def test_q8_0_file_holds_llama_cpp_values_and_the_card_lists_its_types(
    source: workbench.WorkbenchModel, files: dict[str, Path]
) -> None:
    loaded = workbench.load(str(files["Q8_0"].parent))  # a directory holding one GGUF file
    for name in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj"):
        original = source.hf.model.layers[1].get_submodule(name).weight.detach().numpy()
        got = loaded.hf.model.layers[1].get_submodule(name).weight.detach().numpy()
        np.testing.assert_allclose(got, _q8_0(original), rtol=0, atol=1e-6)
    down = loaded.hf.model.layers[1].mlp.down_proj.weight.detach()  # rows of 344: not whole blocks, F16
    assert torch.equal(down, source.hf.model.layers[1].mlp.down_proj.weight.detach().half().float())
    quantisation = workbench.card(loaded).get("quantisation")
    assert quantisation["file"] == "tiny-llama-Q8_0.gguf"
    assert quantisation["types"] == {
        "embedding": {"Q8_0": 1},
        "attention": {"Q8_0": 16},
        "mlp": {"F16": 4, "Q8_0": 8},
        "norm": {"F32": 9},
        "unembedding": {"Q8_0": 1},
    }
    f16 = workbench.card(workbench.load(str(files["F16"]))).get("quantisation")["types"]
    assert f16["attention"] == {"F16": 16} and f16["norm"] == {"F32": 9}


def test_bad_gguf_sources_are_one_line(tmp_path: Path, files: dict[str, Path]) -> None:
    garbage = tmp_path / "broken.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(WorkbenchError) as refused:
        workbench.load(str(garbage))
    assert "broken.gguf" in str(refused.value) and "\n" not in str(refused.value)
    two = tmp_path / "two"
    two.mkdir()
    for path in files.values():
        (two / path.name).write_bytes(path.read_bytes())
    with pytest.raises(WorkbenchError, match="holds several GGUF files"):
        workbench.load(str(two))
    with pytest.raises(WorkbenchError, match="Llama-family"):
        write_gguf(workbench.load("tiny-moe"), tmp_path / "moe.gguf")


def test_the_app_opens_a_gguf_file(files: dict[str, Path]) -> None:
    """The sidebar takes the file's path: the card shows its types, the layer view the F16 capture."""
    import json

    from streamlit.testing.v1 import AppTest

    app_file = Path(__file__).resolve().parents[2] / "apps/workbench_app.py"
    app = AppTest.from_file(str(app_file), default_timeout=300).run()
    app.sidebar.text_input(key="model").set_value(str(files["Q8_0"])).run()
    header = app.dataframe[0].value.set_index("field")
    assert json.loads(header.loc["quantisation", "value"])["types"]["attention"] == {"Q8_0": 16}
    app.sidebar.radio(key="view").set_value("Layer activity").run()
    assert not app.exception and not app.error and app.get("plotly_chart")
