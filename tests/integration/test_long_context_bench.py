"""The prepared GPU script for long-context figures runs end to end: its CPU dry run (the same code path,
a 4-layer model at T = 256) prints a row per method (the times are bench figures, not assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_long_context.py"


def test_gpu_script_dry_run_prints_every_method() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| 256 ")]
    assert [r[1] for r in rows] == ["sdpa_forward", "fused", "chunked"]
    assert rows[0][3] == "1.00" and all(float(r[2]) > 0 for r in rows)
    assert rows[1][5].startswith("fused log-sum-exp") and rows[2][5].startswith("chunked")  # routes taken
