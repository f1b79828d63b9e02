"""Hostile battery specs: random names, deleted keys, wrong types and out-of-range values either run or are
refused with one line (exit 2), and never write outside ``--out``; a model that fails to load is recorded
and the others finish."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from workbench.battery import load_spec, run_battery
from workbench.battery.runner import BatteryIncomplete
from workbench.battery.spec import SpecError
from workbench.cli import run as cli

SENTINEL = "{SENTINEL}"  # replaced by the example's sentinel directory
NAMES = st.one_of(
    st.sampled_from(
        [
            "../../escape",
            "../../../../../escape",
            f"{SENTINEL}/victim",
            f"{SENTINEL}/otherrun",
            "..",
            ".",
            "",
            "a/b",
            "a\\b",
            "-lead",
            ".hidden",
            "x" * 80,
            "ünïcödé",
            "日本",
            "ok-name",
            "Sinks",
            "SINKS",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=10),
)
SOURCES = st.sampled_from(
    ["planted-sink", "../../escape", f"{SENTINEL}/otherrun", f"{SENTINEL}/victim", "/", "..", "a//b"]
)
HOSTILE_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.sampled_from(["banana", "cuda", "cpu:7", "cuda:0", "float64", "abc"]),
)
GOOD_VALUES = {  # values that run cheaply, for keys a hostile value may also replace
    ("threads",): st.integers(1, 2),
    ("seed",): st.integers(0, 9),
    ("capture", "device"): st.just("cpu"),
    ("capture", "store"): st.booleans(),
    ("capture", "dtype"): st.sampled_from(["float32", "bfloat16"]),
    ("prompts", "p", "per_group"): st.integers(0, 3),
    ("prompts", "p", "chars"): st.integers(0, 80),
    ("probes", "sinks", "eps"): st.floats(0, 0.99),
    ("probes", "kv_retention", "budgets"): st.lists(st.floats(0.01, 1.0), min_size=1, max_size=3),
}
DELETABLE = [("models",), ("prompts",), ("probes",), ("prompts", "p", "builtin"), ("probes", "sinks")]


def _toml(value: Any) -> str:
    """One value as TOML (tables inline, so a whole spec is ``key = value`` lines)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"


def _set(spec: dict, path: tuple[str, ...], value: Any) -> None:
    table = spec
    for key in path[:-1]:
        if not isinstance(table.get(key), dict):
            table[key] = {}
        table = table[key]
    table[path[-1]] = value


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A tiny valid battery (planted-sink, sinks on the short prompts) with up to three edits (good values
    weighted up, so some examples run)."""
    spec: dict[str, Any] = {
        "models": ["planted-sink"],
        "prompts": {"p": {"builtin": "short", "per_group": 1}},
        "probes": {"sinks": {}},
    }
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from([*["good"] * 3, "label", "name", "source", "collide", "delete", "value"]))
        if edit == "label":
            spec.setdefault("probes", {})[draw(NAMES)] = {"probe": draw(st.sampled_from(["card", "sinks"]))}
        elif edit == "name":
            spec["models"] = [{"source": "planted-sink", "name": draw(NAMES)}]
        elif edit == "source":
            spec.setdefault("models", []).append(draw(SOURCES))
        elif edit == "collide":
            label = draw(st.sampled_from(list(spec.get("probes", {})) or ["card"]))
            spec.setdefault("probes", {})[label.swapcase()] = {"probe": "card"}
        elif edit == "delete":
            path = draw(st.sampled_from(DELETABLE))
            with contextlib.suppress(KeyError, TypeError):
                del (spec if len(path) == 1 else spec[path[0]] if len(path) == 2 else spec[path[0]][path[1]])[
                    path[-1]
                ]
        else:
            path = draw(st.sampled_from(list(GOOD_VALUES)))
            _set(spec, path, draw(GOOD_VALUES[path] if edit == "good" else HOSTILE_VALUES))
    return spec


def _tree(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except those under ``skip`` (and every directory, as '')."""
    return {
        str(p.relative_to(root)): "" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if not p.is_relative_to(skip)
    }


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=specs())
def test_hostile_specs_run_or_are_refused_in_one_line(spec: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        sentinel = root / "sentinel"
        (sentinel / "otherrun" / "units" / "sinks").mkdir(parents=True)
        (sentinel / "otherrun" / "manifest.json").write_text('{"state": "complete"}')
        (sentinel / "otherrun" / "units" / "sinks" / "m.parquet").write_bytes(b"other results")
        (sentinel / "victim.parquet").write_bytes(b"keep me")
        out = sentinel / "a" / "b" / "out"
        out.parent.mkdir(parents=True)
        text = "\n".join(f"{_toml(k)} = {_toml(v)}" for k, v in spec.items())
        (root / "spec.toml").write_text(text.replace(SENTINEL, str(sentinel)), encoding="utf-8")
        before = _tree(root, out)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli(["battery", "run", str(root / "spec.toml"), "--out", str(out), "--no-progress"])
        event(f"exit {code}")
        assert _tree(root, out) == before  # nothing outside --out created, changed or removed
        errors = stderr.getvalue()
        assert "Traceback" not in errors
        if code == 0:
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["state"] == "complete"
            tables = {p.stem for p in (out / "tables").glob("*.parquet")}
            assert tables == set(manifest["spec"]["probes"])
            assert all(set(pd.read_parquet(out / "tables" / f"{t}.parquet").model) for t in tables)
        else:
            assert code == 2, errors
            assert len(errors.strip().splitlines()) == 1 and errors.startswith("workbench: error:"), errors


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BASE = '[prompts.p]\nbuiltin = "short"\n[probes.sinks]\n'


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ('models = [{ source = "planted-sink", name = "../../escape" }]', "models[0].name: '../../escape'"),
        ('models = [{ source = "planted-sink", name = "/tmp/abs" }]', "models[0].name: '/tmp/abs'"),
        ('models = ["planted-sink", { source = "planted-sink", name = "Planted-Sink" }]', "share one file"),
        ('models = ["../../escape"]', "models[0].source: no zoo model, model directory or hub id"),
        ('models = ["planted-sink"]\n[probes."../x"]\nprobe = "card"', "probes.../x: '../x' is not a safe"),
        ('models = ["planted-sink"]\n[probes.SINKS]\nprobe = "card"', "probe labels 'SINKS' and 'sinks'"),
        (
            'models = ["planted-sink"]\n[probes.lens]\nseq_len = 1',
            "probes.lens.seq_len: expected an int >= 2",
        ),
        ('models = ["planted-sink"]\nthreads = 0', "threads: expected an int >= 1"),
        ('models = ["planted-sink"]\n[capture]\ndevice = "banana"', "capture.device: not a torch device"),
        (
            'models = ["planted-sink"]\n[probes.eviction]\ncontinuation = 0',
            "continuation: expected an int >= 1",
        ),
        (
            'models = ["planted-sink"]\n[probes.kv_retention]\nbudgets = []',
            "budgets: expected at least 1 item",
        ),
        (
            'models = ["planted-sink"]\n[probes.kv_retention]\nbudgets = ["a"]',
            "budgets[0]: expected int or float",
        ),
    ],
)
def test_unsafe_names_and_bad_values_are_refused(tmp_path: Path, head: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(_write(tmp_path / "s.toml", head + "\n" + BASE), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_local_model_directory_gets_a_safe_name(tmp_path: Path) -> None:
    model = tmp_path / "My Model (v2)"
    model.mkdir()
    spec = load_spec(_write(tmp_path / "s.toml", f"models = [{json.dumps(str(model))}]\n{BASE}"))
    assert spec.models[0].source == str(model) and spec.models[0].name == "My-Model-v2"


def test_a_symlink_out_of_the_run_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "units").symlink_to(outside)
    spec = load_spec(_write(tmp_path / "s.toml", f'models = ["planted-sink"]\n{BASE}'), tmp_path / "out")
    with pytest.raises(SpecError, match="outside the run directory"):
        run_battery(spec, progress=False)
    assert list(outside.iterdir()) == [] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["units"]


def test_a_corrected_spec_is_accepted_where_nothing_was_computed(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": ')
    out = tmp_path / "out"
    with pytest.raises(BatteryIncomplete, match="could not load"):
        run_battery(
            load_spec(_write(tmp_path / "s.toml", f'models = ["{broken}"]\n{BASE}'), out), progress=False
        )
    assert json.loads((out / "manifest.json").read_text())["state"] == "incomplete"
    run_battery(
        load_spec(_write(tmp_path / "s.toml", f'models = ["planted-sink"]\n{BASE}'), out), progress=False
    )
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"


def test_one_unloadable_model_among_three_is_recorded_and_the_rest_finish(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": ')
    models = json.dumps(["planted-sink", str(broken), "tiny-llama"])
    spec = _write(tmp_path / "s.toml", f"models = {models}\n{BASE}[probes.card]\n")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "workbench",
        "battery",
        "run",
        str(spec),
        "--out",
        str(out),
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "could not load" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "incomplete"
    status = {(u["probe"], u["model"]): u["status"] for u in manifest["units"]}
    assert status == {
        (p, m): "failed" if m == "broken" else "done"
        for m in ("planted-sink", "broken", "tiny-llama")
        for p in ("sinks", "card")
    }
    assert all("config.json" in u["reason"] for u in manifest["units"] if u["status"] == "failed")
    for probe in ("sinks", "card"):
        assert set(pd.read_parquet(out / "tables" / f"{probe}.parquet").model) == {
            "planted-sink",
            "tiny-llama",
        }
    assert (
        "could not load" in (out / "report.html").read_text()
        and "## Failed units" in (out / "summary.md").read_text()
    )
