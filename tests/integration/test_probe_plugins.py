"""A probe from outside the project, registered through the ``workbench.probes`` entry point of a package
that is not installed but found on the path (a ``.dist-info`` folder beside it): it runs in a battery,
shows in the report, the summary and ``workbench probe list``, and a broken plug-in is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import workbench

PLUGIN = '''
from dataclasses import dataclass

import pandas as pd

from probes.figures import bars_by_group
from probes.params import param
from probes.registry import Needs, Probe


@dataclass(frozen=True)
class CountParams:
    """Characters of each text counted (0: all)."""

    chars: int = param(0, low=0)


def _count(ctx, params):
    tokenizer = ctx.model.tokenizer
    rows = []
    for group, texts in ctx.texts.items():
        cut = [t[: params.chars] if params.chars else t for t in texts]
        rows.append({"group": group, "tokens": sum(len(tokenizer(t)["input_ids"]) for t in cut)})
    return pd.DataFrame(rows)


TOKEN_COUNT = Probe(
    name="token_count",
    doc="Tokens per group of the prompt set.",
    formula="sum over the group's texts of len(tokenizer(text))",
    cite="an out-of-tree example",
    run=_count,
    params=CountParams,
    needs=Needs(tokenizer=True),
    figures=lambda t: [("all", bars_by_group(t, "group", "tokens", "model", "Tokens per group"))],
    summary=lambda t: t.groupby("model", as_index=False).tokens.sum(),
)
'''


def _plugin(root: Path, entry: str = "my_probes:TOKEN_COUNT", source: str = PLUGIN) -> dict[str, str]:
    """A plug-in package and its distribution metadata under ``root``; the environment that finds it."""
    (root / "my_probes.py").write_text(source)
    info = root / "my_probes-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-probes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[workbench.probes]\ntoken_count = {entry}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def _workbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workbench", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_an_out_of_tree_probe_runs_in_a_battery_and_shows_in_the_report(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    env = _plugin(tmp_path / "plugin")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'models = ["planted-sink", "minilm"]\n[prompts.p]\nbuiltin = "short"\n'
        "[probes.token_count]\nchars = 10\n[probes.sinks]\n"
    )
    run = tmp_path / "run"
    done = _workbench(env, "battery", "run", str(spec), "--out", str(run), "--no-progress")
    assert done.returncode == 0, done.stderr
    table = pd.read_parquet(run / "tables" / "token_count.parquet")
    from workbench.summary import DEFAULT_PROMPTS

    for name in ("planted-sink", "minilm"):  # counted here with the tokenizer itself
        tokenizer = workbench.load(name).tokenizer
        expected = sum(len(tokenizer(t[:10])["input_ids"]) for t in DEFAULT_PROMPTS)
        assert table[table.model == name].tokens.tolist() == [expected]
    report = (run / "report.html").read_text()
    assert 'id="token_count"' in report and "Tokens per group of the prompt set." in report
    assert "## token_count" in (run / "summary.md").read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    assert {u["status"] for u in manifest["units"]} == {"done"}
    listed = _workbench(env, "probe", "list")
    assert listed.returncode == 0 and "token_count" in listed.stdout
    page = _workbench(env, "battery", "page", str(run))
    assert (
        page.returncode == 0 and "## token_count" in page.stdout and "an out-of-tree example" in page.stdout
    )


@pytest.mark.parametrize(
    ("entry", "source", "words"),
    [
        ("my_probes:NOTHING", PLUGIN, "token_count (my_probes:NOTHING)"),
        ("my_probes:TOKEN_COUNT", "raise RuntimeError('plug-in broke')\n", "plug-in broke"),
        ("my_probes:CountParams", PLUGIN, "is not a Probe"),
    ],
)
def test_a_broken_plugin_is_one_line(tmp_path: Path, entry: str, source: str, words: str) -> None:
    env = _plugin(tmp_path, entry, source)
    listed = _workbench(env, "probe", "list")
    assert listed.returncode == 2 and words in listed.stderr, listed.stderr
    assert "Traceback" not in listed.stderr and len(listed.stderr.strip().splitlines()) == 1
