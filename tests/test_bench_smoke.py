"""The benchmarks keep running (they are measured by hand, not timed here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]


def conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


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


def test_bench_cluster_runs_and_reports_ratios(db_url: str, db_backend: str) -> None:
    """A tiny run of the cluster job benchmark on a fresh PostgreSQL database of its own."""
    if db_backend != "postgresql":
        pytest.skip(
            "bench_cluster measures PostgreSQL's job queue: run under .ci/with-postgres "
            "(WATCHER_TEST_DB=postgresql+psycopg://...)"
        )
    tiny = (
        "--watches 20 --workers 1,2 --idle 0,50 --repeat 1 --concurrency 2 --seconds 0.5 "
        "--warmup 0.3 --interval 1 --polling 1"
    )
    bench = str(ROOT / "bench" / "bench_cluster.py")
    proc = subprocess.run(
        [sys.executable, bench, "--db", db_url, "--schema", "bench_smoke", *tiny.split()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("baseline INSERT+UPDATE") for line in lines), proc.stdout
    table = [line.split("|")[1:-1] for line in lines if line.startswith("| 20 |")]
    rows = [cells for cells in table if len(cells) == 15]  # the throughput table
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("0", "1"), ("0", "2"), ("50", "1"), ("50", "2"),
    ], proc.stdout  # fmt: skip
    for cells in rows:
        jobs_per_s, per_worker, commits = float(cells[3].replace(",", "")), cells[4], cells[6]
        assert jobs_per_s > 0 and float(per_worker) > 0 and float(commits) >= 3, proc.stdout
    assert rows[0][4].strip() == rows[2][4].strip() == "1.00"  # each idle's first row: 1 worker
    late = [cells for cells in table if len(cells) == 9]  # the lateness table
    assert [cells[3].strip() for cells in late] == ["1", "2"], proc.stdout
    for cells in late:  # 20 watches due once a second: jobs started, none before its time
        started, median, worst = float(cells[5]), float(cells[6]), float(cells[8])
        assert started > 0 and 0 <= median <= worst, proc.stdout
    with psycopg.connect(conninfo(db_url)) as con:  # the schema it made is gone
        assert con.execute("SELECT to_regnamespace('bench_smoke')").fetchone() == (None,)
