"""Batteries: the default battery on the zoo, resuming after SIGKILL, bad specs, Ray, comparison."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import workbench
from probes.registry import registry
from workbench.battery import compare_runs, load_spec, run_battery
from workbench.battery.prompts import resolve_prompts
from workbench.battery.spec import DEFAULT_SPEC, SpecError
from workbench.hooks.implementation import attention_implementation

SMALL = """
name = "small"
threads = 1
models = ["tiny-llama", "tiny-moe"]

[prompts.mix]
builtin = "heldout"
per_group = 1
chars = 200

[probes.sinks]
prompts = "mix"
[probes.moe_load]
prompts = "mix"
[probes.compression]
prompts = "mix"
[probes.decoding]
prompts = "mix"
max_new_tokens = 6
samples = 1
temperature = [0.7]
top_p = []
top_k = []
repetition_penalty = []
"""


def _tables(run: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((run / "tables").glob("*.parquet"))}


def _assert_same_tables(a: Path, b: Path) -> None:
    tables_a, tables_b = _tables(a), _tables(b)
    assert list(tables_a) == list(tables_b) and tables_a
    for name in tables_a:
        pd.testing.assert_frame_equal(tables_a[name], tables_b[name], obj=name)


def _cli(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "workbench", "battery", "run", *args, "--no-progress"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in default battery, uninterrupted, through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "default"
    process = _cli(str(DEFAULT_SPEC), "--out", str(out))
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr
    assert stdout.strip().endswith(f"report: {out / 'report.html'}")
    return out


@pytest.mark.slow
def test_default_battery_covers_every_probe_on_the_zoo(default_run: Path) -> None:
    manifest = json.loads((default_run / "manifest.json").read_text())
    assert manifest["state"] == "complete"
    assert all(len(m["weights_sha256"]) == 64 for m in manifest["models"])  # zoo weights identified
    assert set(_tables(default_run)) == set(registry())
    spec = load_spec(DEFAULT_SPEC)
    for unit in manifest["units"]:  # every unit either ran or says why it does not apply
        assert unit["status"] == "done" or "not a causal" in unit["reason"] or "no MoE" in unit["reason"]
    sinks = _tables(default_run)["sinks"]
    assert set(sinks.model) == {m.name for m in spec.models}
    # planted ground truth through the whole battery: the planted-sink model's sink heads, and only they,
    # send nearly all attention to the first token (the zoo's own check: > 0.9 planted, < 0.5 the rest)
    planted = {tuple(h) for h in workbench.load("planted-sink").config.planted_sink_heads}
    alpha = sinks[sinks.model == "planted-sink"].groupby(["layer", "head"]).alpha
    assert {key for key, value in alpha.min().items() if value > 0.9} == planted
    assert all(value < 0.5 for key, value in alpha.max().items() if key not in planted)
    summary = (default_run / "summary.md").read_text()
    assert "## moe_routing" in summary and "tiny-moe-shared" in summary


@pytest.mark.slow
def test_a_killed_battery_resumes_to_identical_tables(default_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    process = _cli(str(DEFAULT_SPEC), "--out", str(out))
    deadline = time.monotonic() + 300
    while len(list((out / "units").glob("*/*.*"))) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list((out / "units").glob("*/*.parquet")))
    assert json.loads((out / "manifest.json").read_text())["state"] == "running"
    assert done_before > 0 and not (out / "tables").exists()
    resumed = _cli(str(DEFAULT_SPEC), "--out", str(out))
    assert resumed.wait(timeout=900) == 0
    _assert_same_tables(default_run, out)


def test_bad_specs_name_the_key_and_lose_nothing(tmp_path: Path) -> None:
    cases = {
        "unknown probe": (SMALL + "[probes.telepathy]\n", "small.toml: probes.telepathy: unknown probe"),
        "missing file": (
            SMALL + '[prompts.mine]\nfile = "nowhere.jsonl"\n',
            "small.toml: prompts.mine.file: no such file",
        ),
        "wrong type": (
            SMALL.replace("chars = 200", 'chars = "many"'),
            "prompts.mix.chars: expected int, got str",
        ),
        "unknown parameter": (SMALL + "[probes.lens]\nwindow = 3\n", "probes.lens.window: unknown key"),
        "bad toml": ("name = \n", "not valid TOML"),
        "pair probe without pairs": (
            SMALL + "[probes.diff_outputs]\n",
            "diff_outputs compares two checkpoints",
        ),
        "pair of three": (
            SMALL.replace(
                "[prompts.mix]", 'pairs = [["tiny-llama", "tiny-llama-ru", "tiny-moe"]]\n[prompts.mix]'
            ),
            "pairs[0]: expected [base, tuned]",
        ),
        "pair of an unknown source": (
            SMALL.replace("[prompts.mix]", 'pairs = [["tiny-llama", "../x"]]\n[prompts.mix]'),
            "pairs[0].models[1].source: no zoo model",
        ),
    }
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.parquet").write_bytes(b"earlier results")
    for name, (text, message) in cases.items():
        spec = tmp_path / "small.toml"
        spec.write_text(text)
        with pytest.raises(SpecError, match=re.escape(message)):
            load_spec(spec, out)
        result = subprocess.run(
            [sys.executable, "-m", "workbench", "battery", "run", str(spec), "--out", str(out)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, name
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, name
    assert sorted(p.name for p in out.iterdir()) == ["keep.parquet"]
    assert (out / "keep.parquet").read_bytes() == b"earlier results"


PAIRS = """
name = "pairs"
models = ["tiny-llama"]
pairs = [["tiny-llama", "tiny-llama-ru"], ["tiny-llama", "tiny-moe"]]

[prompts.mix]
builtin = "heldout"
per_group = 1
chars = 200

[probes.sinks]
[probes.diff_weights]
ranks = 0
[probes.diff_outputs]
[probes.diff_routing]
"""


def test_a_battery_with_pairs_runs_the_diff_probes_on_each_pair(tmp_path: Path) -> None:
    """Pair probes run on the pairs (labelled TUNED-vs-BASE) and model probes on the models; a pair of two
    architectures fails its units with one line and the rest is kept; a rerun redoes only those units."""
    from probes.diff_weights import change_shares

    spec_file = tmp_path / "pairs.toml"
    spec_file.write_text(PAIRS)
    spec = load_spec(spec_file, tmp_path / "run")
    with pytest.raises(workbench.WorkbenchError, match=r"unit\(s\) failed.*not one architecture"):
        run_battery(spec, progress=False)
    units = {
        (u["probe"], u["model"]): u for u in json.loads((spec.output / "manifest.json").read_text())["units"]
    }
    assert set(units) == {
        ("sinks", "tiny-llama"),
        *(
            (p, pair)
            for p in ("diff_weights", "diff_outputs", "diff_routing")
            for pair in ("tiny-llama-ru-vs-tiny-llama", "tiny-moe-vs-tiny-llama")
        ),
    }
    assert units[("diff_routing", "tiny-llama-ru-vs-tiny-llama")]["status"] == "skipped"
    assert units[("diff_weights", "tiny-moe-vs-tiny-llama")]["status"] == "failed"
    weights = _tables(spec.output)["diff_weights"]
    assert set(weights.model) == {"tiny-llama-ru-vs-tiny-llama"}
    assert float(change_shares(weights).set_index("layer").share.loc[[2, 3]].sum()) == pytest.approx(1.0)
    outputs = _tables(spec.output)["diff_outputs"]
    texts = resolve_prompts(spec.prompts["mix"])
    base, tuned = workbench.load("tiny-llama"), workbench.load("tiny-llama-ru")
    expected = workbench.probe("diff_outputs")(tuned, texts, base=base)
    pd.testing.assert_frame_equal(outputs.drop(columns="model"), expected)
    done = {p: p.stat().st_mtime_ns for p in (spec.output / "units").glob("*/*.parquet")}
    with pytest.raises(workbench.WorkbenchError, match="not one architecture"):
        run_battery(spec, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (spec.output / "units").glob("*/*.parquet")} == done


def test_a_run_of_another_spec_is_not_overwritten(tmp_path: Path) -> None:
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL.replace('"tiny-llama", "tiny-moe"', '"planted-sink"'))
    run = run_battery(load_spec(spec, tmp_path / "run"), progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*.parquet")}
    spec.write_text(spec.read_text().replace("chars = 200", "chars = 100"))
    with pytest.raises(SpecError, match="holds a run of another spec"):
        run_battery(load_spec(spec, tmp_path / "run"), progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*.parquet")} == before


@pytest.mark.slow
def test_ray_run_on_a_local_cluster_equals_the_serial_run(tmp_path: Path) -> None:
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL)
    serial = run_battery(load_spec(spec, tmp_path / "serial"), progress=False)
    distributed = run_battery(load_spec(spec, tmp_path / "ray"), ray="local", progress=False)
    _assert_same_tables(serial, distributed)
    skipped = [
        u
        for u in json.loads((distributed / "manifest.json").read_text())["units"]
        if u["status"] == "skipped"
    ]
    assert [(u["probe"], u["model"]) for u in skipped] == [("moe_load", "tiny-llama")]


@pytest.mark.slow
def test_compare_two_runs(default_run: Path, tmp_path: Path) -> None:
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL)
    small = run_battery(load_spec(spec, tmp_path / "small"), progress=False)
    page = compare_runs(default_run, small, tmp_path / "compare")
    text = (tmp_path / "compare" / "compare.md").read_text()
    assert page.exists() and "default:tiny-moe" in text and "small:tiny-moe" in text
    assert "## moe_load" in text and "## card" not in text  # only probes both ran


@pytest.mark.slow
def test_report_loads_offline_in_headless_chromium(default_run: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto((default_run / "report.html").as_uri(), wait_until="load")
        page.wait_for_timeout(500)
        plots = page.locator(".js-plotly-plot").count()
        browser.close()
    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:", "blob:"))] == []
    assert plots >= len(registry()) - 1  # every probe but the card draws at least one figure


def test_capture_store_is_kept_when_asked(tmp_path: Path) -> None:
    spec = tmp_path / "stored.toml"
    spec.write_text(
        'models = ["planted-sink"]\n[capture]\nstore = true\n[prompts.p]\nbuiltin = "short"\n[probes.sinks]\n'
    )
    run = run_battery(load_spec(spec, tmp_path / "run"), progress=False)
    from workbench.capture.store import Capture

    stored = Capture.load(run / "captures" / "planted-sink" / "sinks")
    assert len(stored) == 2 and "blocks.1.attn.stat_key_mass" in stored  # the sink probe needs key mass only
    # the stored statistics are the model's: the key mass of HF's own attentions (eager) per prompt alone
    hf = workbench.load("planted-sink").hf
    for tokens, key_mass in zip(stored.tokens, stored["blocks.1.attn.stat_key_mass"], strict=True):
        with torch.no_grad(), attention_implementation(hf, "eager"):
            reference = hf(input_ids=tokens[None], output_attentions=True).attentions[1][0]
        # the battery may batch the two prompts (padded); one prompt alone rounds differently in fp32
        torch.testing.assert_close(key_mass, reference.sum(1), rtol=1e-5, atol=1e-5)
