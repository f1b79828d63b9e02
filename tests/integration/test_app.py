"""Streamlit AppTest of every view: no exception, the key widgets, and the numbers the probes give for the
same input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

import workbench
from probes import compression, sinks
from probes.eviction import simulate_eviction
from probes.factors import CLASSES
from probes.lens import lens_table
from workbench.battery import load_spec, run_battery
from workbench.battery.report import summary_table
from workbench.capture import CaptureSpec, capture
from workbench.capture.generate import stream_generate
from workbench.zoo import domain_windows, heldout

APP = str(Path(__file__).resolve().parents[2] / "apps/workbench_app.py")
PROMPT = "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b"


def _app(view: str, model: str = "tiny-moe", prompt: str = PROMPT) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300).run()
    app.sidebar.text_input(key="model").set_value(model)
    app.sidebar.text_area(key="prompt").set_value(prompt)
    app.sidebar.radio(key="view").set_value(view).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def _metric(app: AppTest, label_start: str) -> str:
    return next(m.value for m in app.metric if m.label.startswith(label_start))


def test_card_view_shows_the_card() -> None:
    app = _app("Model card", model="minilm")
    header = app.dataframe[0].value.set_index("field")
    config = json.loads((Path(workbench.load("minilm").config._name_or_path) / "config.json").read_text())
    assert header.loc["layers", "value"] == str(config["num_hidden_layers"])
    factors = app.dataframe[1].value
    assert factors.number.tolist() == list(range(1, 31))
    assert factors["class"].drop_duplicates().tolist() == list(CLASSES)  # grouped by class, in order
    assert factors.set_index("number").loc[1, "value"] == json.dumps(
        {"embedding": config["vocab_size"], "tokenizer": config["vocab_size"]}
    )


@pytest.mark.parametrize(
    ("view", "missing"), [("KV cache", "KV cache"), ("Live generation", "autoregressive generation")]
)
def test_causal_only_views_explain_an_encoder(view: str, missing: str) -> None:
    app = _app(view, model="minilm")
    assert [i.value for i in app.info] == [f"minilm is not a causal language model: it has no {missing}."]
    assert not app.button and not app.slider


def test_bad_model_and_empty_prompt_show_one_error() -> None:
    app = _app("Model card", model="/no/such/dir")
    assert len(app.error) == 1 and "/no/such/dir" in app.error[0].value
    app = _app("Layer activity", prompt="   ")
    assert len(app.error) == 1 and "empty prompt" in app.error[0].value


def test_layer_activity_equals_the_captured_statistics() -> None:
    app = _app("Layer activity")
    assert {s.key for s in app.selectbox} >= {"layers_metric", "layers_layer", "layers_token"}
    app.selectbox(key="layers_layer").set_value(2)
    app.selectbox(key="layers_token").set_value(5).run()
    model = workbench.load("tiny-moe")
    patterns = capture(
        model, [PROMPT], CaptureSpec(points=[r"blocks\.2\.attn\.hook_pattern"]), progress=False
    )
    resid = model.read(PROMPT, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"][0, 5]
    assert float(_metric(app, "Residual norm")) == pytest.approx(float(resid.norm()), rel=1e-3)
    details = app.dataframe[0].value
    pattern = patterns["blocks.2.attn.hook_pattern"][0]
    torch.testing.assert_close(
        torch.tensor(details.sink_mass.values), pattern[:, 5, 0].double(), atol=1e-5, rtol=0
    )
    assert len(details) == pattern.shape[0]


def test_heads_view_shows_the_sink_table_of_the_chosen_head() -> None:
    app = _app(
        "Attention heads", model="planted-sink", prompt="The cat sat on the mat and looked at the door."
    )
    app.selectbox(key="heads_layer").set_value(1)
    app.selectbox(key="heads_head").set_value(3).run()
    model = workbench.load("planted-sink")
    result = capture(
        model,
        ["The cat sat on the mat and looked at the door."],
        CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"]),
        progress=False,
    )
    table = sinks.sink_table(result, 2)
    alpha = table[(table["layer"] == 1) & (table["head"] == 3)].alpha.iloc[0]
    assert float(_metric(app, "First-token alpha")) == pytest.approx(alpha, abs=1e-4) and alpha > 0.9


def test_routing_view_counts_the_routers_own_choices() -> None:
    app = _app("MoE routing")
    app.selectbox(key="routing_layer").set_value(3)
    app.selectbox(key="routing_expert").set_value(5).run()
    model = workbench.load("tiny-moe")
    indices = model.read(PROMPT, ["blocks.3.moe.hook_expert_indices"])["blocks.3.moe.hook_expert_indices"]
    assert int(_metric(app, "Tokens routed to expert 5")) == int((indices == 5).any(-1).sum())
    app.toggle(key="routing_spec").set_value(True).run()
    assert not app.exception and len(app.get("plotly_chart")) == 3


def test_compression_view_equals_the_probe() -> None:
    app = _app("Compression depth", model="tiny-llama")
    model = workbench.load("tiny-llama")
    prompts = [t for texts in heldout(2, 300).values() for t in texts]
    result = capture(model, prompts, CaptureSpec(points=[r"blocks\.\d+\.hook_resid_post"]), progress=False)
    expected = pd.DataFrame(
        compression.compression_profile([result[f"blocks.{i}.hook_resid_post"] for i in range(4)], "all")
    )
    shown = next(d.value for d in app.dataframe if "twonn_90" in d.value.columns and len(d.value) == 4)
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected, check_exact=False, rtol=1e-6)
    assert any("kl_to_final" in d.value.columns for d in app.dataframe)  # the lens table of a causal LM
    ids, _ = domain_windows(model.tokenizer, heldout(2, 2000), seq_len=64, per_domain=2)
    lens = next(d.value for d in app.dataframe if "kl_to_final" in d.value.columns)
    pd.testing.assert_frame_equal(
        lens.reset_index(drop=True), lens_table(model, ids), check_exact=False, rtol=1e-6
    )


def test_kv_view_sizes_and_eviction_simulator() -> None:
    app = _app("KV cache")
    app.selectbox(key="kv_policy").set_value("h2o")
    app.slider(key="kv_budget").set_value(0.25).run()
    model = workbench.load("tiny-moe")
    per_token = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads * 4
    per_token *= model.config.hidden_size // model.config.num_attention_heads  # fp32 K and V per layer
    assert _metric(app, "KV bytes per token") == f"{per_token:,}"
    ids = model.encode(PROMPT)["input_ids"]
    prompt_len = ids.shape[1] * 3 // 4
    expected = simulate_eviction(model, ids, prompt_len, "h2o", round(0.25 * prompt_len))
    assert float(_metric(app, "kl")) == pytest.approx(expected["kl"], rel=1e-3, abs=1e-6)


def test_live_generation_streams_the_generation_capture() -> None:
    app = _app("Live generation")
    app.slider(key="gen_tokens").set_value(5)
    app.button(key="gen_run").click().run()
    assert not app.exception
    shown = app.dataframe[0].value
    model = workbench.load("tiny-moe")
    steps = list(stream_generate(model, PROMPT, max_new_tokens=5, temperature=0.7, seed=0))
    assert shown.token.tolist() == [s.token for s in steps]
    assert shown.sampling_entropy.tolist() == pytest.approx([s.logit_entropy for s in steps], rel=1e-5)


def test_battery_browser_shows_the_run_summary(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        'models = ["planted-sink", "tiny-llama"]\n[prompts.p]\nbuiltin = "short"\n'
        + "[probes.sinks]\n[probes.card]\n"
    )
    run = run_battery(load_spec(spec, tmp_path / "run"), progress=False)
    app = _app("Battery results")
    app.text_input(key="battery_run").set_value(str(run)).run()
    app.selectbox(key="battery_probe").set_value("sinks").run()
    assert not app.exception
    expected = summary_table("sinks", pd.read_parquet(run / "tables" / "sinks.parquet"))
    pd.testing.assert_frame_equal(
        app.dataframe[0].value.reset_index(drop=True), expected.reset_index(drop=True)
    )
    # planted ground truth: 3 of planted-sink's 2 x 4 heads are sink heads (alpha > eps = 0.3 on every
    # prompt), the other 5 on none: a sink rate of 100 x 3 / 8 = 37.5%
    planted = app.dataframe[0].value.set_index("model").loc["planted-sink"]
    assert planted.sink_rate == pytest.approx(37.5)
    app.text_input(key="battery_compare").set_value(str(run)).run()
    assert not app.exception and set(app.dataframe[0].value.model) == {
        "A:planted-sink",
        "A:tiny-llama",
        "B:planted-sink",
        "B:tiny-llama",
    }


def test_markup_in_a_prompt_stays_text() -> None:
    prompt = '<script>alert("x")</script> <b>bold</b>'
    app = _app("Layer activity", prompt=prompt)
    assert not app.exception
    app.sidebar.radio(key="view").set_value("Live generation").run()
    app.button(key="gen_run").click().run()
    assert any(t.value.startswith(prompt) for t in app.text)
    assert all("<script" not in m.value for m in app.markdown if "wb-run" not in m.value)


SERVER_PATHS = (str(Path(__file__).resolve().parents[2]), "site-packages", "Traceback", 'File "')


def _one_error(app: AppTest) -> str:
    """The one error line a page shows, with no exception element and no server path."""
    assert not app.exception, [e.message for e in app.exception]
    assert len(app.error) == 1, [e.value for e in app.error]
    line = app.error[0].value
    assert "\n" not in line.strip() and not any(p in line for p in SERVER_PATHS), line
    return line


@pytest.mark.parametrize("case", ["pickle_bypass", "unknown_model_type", "truncated_weights"])
def test_broken_model_directories_show_one_line(
    broken_models: dict[str, tuple[Path, list[str]]], case: str
) -> None:
    path, words = broken_models[case]
    for view in ("Model card", "Layer activity"):
        line = _one_error(_app(view, model=str(path)))
        assert all(w in line for w in words), line


def test_bad_hook_point_regex_shows_one_line() -> None:
    app = _app("Model card", model="tiny-llama")
    assert "blocks.0.hook_resid_post" in app.dataframe[2].value.name.tolist()
    app.text_input(key="card_pattern").set_value(r"blocks\.0\.hook_resid_(pre|post)").run()
    assert app.dataframe[2].value.name.tolist() == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]
    app.text_input(key="card_pattern").set_value("(").run()
    assert "invalid hook point pattern '('" in _one_error(app)


def test_an_unexpected_error_is_one_line_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run whose sinks table is Parquet of the wrong shape fails where no check looks: the page shows
    one line (type and message, no traceback, no server path), the server log the traceback."""
    spec = tmp_path / "s.toml"
    spec.write_text('models = ["planted-sink"]\n[prompts.p]\nbuiltin = "short"\n[probes.sinks]\n')
    run = run_battery(load_spec(spec, tmp_path / "run"), progress=False)
    pd.DataFrame({"unrelated": [1.0]}).to_parquet(run / "tables" / "sinks.parquet")
    app = _app("Battery results")
    app.text_input(key="battery_run").set_value(str(run)).run()
    line = _one_error(app)
    assert line.startswith("unexpected error: KeyError: ") and "server log" in line
    assert any(r.name == "workbench.app" and r.exc_info for r in caplog.records)


def test_probes_view_runs_a_registered_probe_with_its_form() -> None:
    app = _app("Probes", model="planted-sink")
    app.selectbox(key="probe_name").set_value("sinks").run()
    app.number_input(key="probe_sinks_eps").set_value(0.5)
    app.selectbox(key="probe_prompts").set_value("the sidebar prompt")
    app.button(key="probe_run").click().run()
    assert not app.exception
    model = workbench.load("planted-sink")
    result = capture(
        model, [PROMPT], CaptureSpec(points=[r"blocks\.\d+\.attn\.hook_pattern"]), progress=False
    )
    expected = sinks.sink_table(result, model.cfg.n_layers, eps=0.5)
    shown = next(d.value for d in app.dataframe if "alpha" in d.value.columns)
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected, check_exact=False, rtol=1e-6)
    app.selectbox(key="probe_name").set_value("moe_routing").run()
    app.button(key="probe_run").click().run()
    assert [i.value for i in app.info] == ["moe_routing does not apply: planted-sink has no MoE layers"]
    app.selectbox(key="probe_name").set_value("kv_retention").run()
    app.text_input(key="probe_kv_retention_budgets").set_value("0.5, 2").run()
    app.button(key="probe_run").click().run()
    assert len(app.error) == 1 and "budgets[1]: expected a number > 0 and <= 1" in app.error[0].value


def test_diff_view_shows_the_pair_probes_of_the_card_base() -> None:
    """tiny-llama-ru's card names tiny-llama as its base: the view compares the two on the held-out sample
    and shows what the pair probes give; a base of another architecture is one error line."""
    from probes.diff_weights import change_shares

    app = _app("Checkpoint diff", model="tiny-llama-ru")
    assert app.text_input(key="diff_base").value == "tiny-llama"
    base, tuned = workbench.load("tiny-llama"), workbench.load("tiny-llama-ru")
    texts = heldout(2, 300)
    outputs = workbench.probe("diff_outputs")(tuned, texts, base=base)
    assert float(_metric(app, "Mean KL")) == pytest.approx(float(outputs.kl.mean()), rel=1e-3)
    shown = next(d.value for d in app.dataframe if "kind" in d.value.columns)
    expected = change_shares(workbench.probe("diff_weights")(tuned, texts, base=base), "kind")
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected)
    shown = next(d.value for d in app.dataframe if "bits_per_byte_a" in d.value.columns)
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), outputs)
    assert len(app.get("plotly_chart")) >= 4 and not app.error
    app.text_input(key="diff_base").set_value("tiny-moe").run()
    assert len(app.error) == 1 and "not one architecture" in app.error[0].value


def test_a_model_quantised_on_load_is_diffed_against_itself() -> None:
    """ "Quantise on load" loads the sidebar's model through the backend; the diff view's base is then the
    unquantised model, and it shows what the pair probes give for the two."""
    app = _app("Checkpoint diff", model="tiny-llama")
    app.sidebar.selectbox(key="quantize").set_value("quanto:4").run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert app.text_input(key="diff_base").value == "tiny-llama"
    base = workbench.load("tiny-llama")
    other = workbench.load("tiny-llama", quantization={"method": "quanto", "bits": 4})
    texts = heldout(2, 300)
    outputs = workbench.probe("diff_outputs")(other, texts, base=base)
    assert float(_metric(app, "Mean KL")) == pytest.approx(float(outputs.kl.mean()), rel=1e-3)
    shown = next(d.value for d in app.dataframe if "twonn_change" in d.value.columns)
    expected = workbench.probe("diff_internals")(other, texts, base=base)
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected, rtol=1e-6)
    app.sidebar.text_input(key="model").set_value("tiny-llama-dpo").run()  # the base follows the sidebar
    assert app.text_input(key="diff_base").value == "tiny-llama-dpo"  # quantised: itself unquantised
    app.sidebar.selectbox(key="quantize").set_value("none").run()
    assert app.text_input(key="diff_base").value == "tiny-llama"  # its card's base_model
    app.sidebar.selectbox(key="quantize").set_value("quanto:4").run()
    app.sidebar.radio(key="view").set_value("Model card").run()
    header = app.dataframe[0].value.set_index("field")
    assert json.loads(header.loc["quantisation", "value"])["bits"] == 4
