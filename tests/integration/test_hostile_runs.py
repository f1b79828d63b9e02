"""Run directories from elsewhere (``battery compare``, the app's battery browser): a damaged table or a
manifest of the wrong shape is refused with one line, and a manifest cannot point outside its run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from workbench.battery import load_spec, run_battery
from workbench.cli import run as cli


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the sinks and card probes on planted-sink."""
    root = tmp_path_factory.mktemp("run")
    spec = root / "s.toml"
    spec.write_text(
        'models = ["planted-sink"]\n[prompts.p]\nbuiltin = "short"\n[probes.sinks]\n[probes.card]\n'
    )
    return run_battery(load_spec(spec, root / "run"), progress=False)


def _manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        manifest = json.loads((run / "manifest.json").read_text())
        edit(manifest)
        (run / "manifest.json").write_text(json.dumps(manifest))

    return damage


def _rename_probe(manifest: dict, label: str) -> None:
    manifest["spec"]["probes"][label] = manifest["spec"]["probes"].pop("sinks")


DAMAGE = {
    "garbage table": (
        lambda run: (run / "tables" / "sinks.parquet").write_bytes(b"PAR1 not a table"),
        "tables/sinks.parquet: not a readable Parquet table",
    ),
    "truncated table": (
        lambda run: (run / "tables" / "card.parquet").write_bytes(
            (run / "tables" / "card.parquet").read_bytes()[:99]
        ),
        "tables/card.parquet: not a readable Parquet table",
    ),
    "label outside the run": (_manifest(lambda m: _rename_probe(m, "../../escape")), "file-name labels"),
    "unknown probe": (_manifest(lambda m: m["spec"]["probes"]["sinks"].update(probe="rm")), "unknown probe"),
    "units not a list": (_manifest(lambda m: m.update(units={"a": 1})), "units must be a list"),
    "manifest a list": (_manifest(lambda m: (m.clear(), m.update(x=[]))), "no name"),
    "not utf-8": (lambda run: (run / "manifest.json").write_bytes(b"\xff\xfe{"), "damaged manifest"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_is_refused_in_one_line(
    finished: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, words = DAMAGE[case]
    other = Path(shutil.copytree(finished, tmp_path / "other"))
    damage(other)
    out = tmp_path / "compare"
    assert cli(["battery", "compare", str(finished), str(other), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error: ") and words in lines[0], lines
    assert not out.exists()


def test_an_undamaged_copy_compares(finished: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(finished, tmp_path / "other"))
    assert cli(["battery", "compare", str(finished), str(other), "--out", str(tmp_path / "c")]) == 0
    assert set(pd.read_parquet(other / "tables" / "sinks.parquet").model) == {"planted-sink"}
