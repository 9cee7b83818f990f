"""The benchmarks keep running (they are measured by hand, not timed here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_core_runs_and_reports_ratios():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_core.py"),
            "--products",
            "50",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("normalise", "diff", "commit"):
        assert any(line.startswith(name) and "ratio" in line for line in proc.stdout.splitlines())
