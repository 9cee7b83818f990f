"""End-to-end benchmarks of issue 6: real ``watcher`` processes against a local fake API.

Black-box: the fake (``bench/fakeapi.py``, its own process) answers every page after a
fixed latency and records when it served what; watcher runs as a user runs it. Each figure
is printed next to its baseline, measured in the same run where one exists (urlwatch 2.29,
installed into ``bench/.venv-urlwatch`` from the package registry, fetching the same pages;
or the physical limit, pages x latency / concurrency), and repetitions are interleaved
(ours, theirs, ours, theirs...) because these machines are shared and noisy.

    .venv/bin/python bench/bench_daemon.py [--repeat 3] [--only once,cycle,...] [--quick]

Rows (issue 6): ``once`` CPU per checked page (200 stores) vs urlwatch; daemon cycle wall
(200 stores, concurrency 10) vs urlwatch's run; 1,000 watches x 3 pages at concurrency 32,
limit / wall for ``once`` and the daemon; page served -> webhook received; 10,000 watches:
RSS after the first cycle and SIGTERM mid-cycle; ``once`` with one watch vs urlwatch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
WATCHER = str(Path(PY).with_name("watcher"))
UW_VENV = HERE / ".venv-urlwatch"
UW = UW_VENV / "bin" / "urlwatch"
LATENCY = 0.05


# ---------------------------------------------------------------- plumbing


class Fake:
    """The fake API in its own process."""

    def __init__(self, stores: int, products: int, page_size: int = 20) -> None:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "fakeapi.py"), "--stores", str(stores), "--products",
             str(products), "--page-size", str(page_size), "--latency", str(LATENCY)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = json.loads(self.proc.stdout.readline())["url"]
        self.stores = stores

    def call(self, method: str, path: str, body: object | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def report(self) -> dict:
        return self.call("GET", "/_bench/report")

    def clear(self) -> None:
        self.call("POST", "/_bench/clear", {})

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def store_url(i: int) -> str:
    return f"https://www.tiktok.com/shop/store/bench-{i:05d}/{7000000000000000000 + i}"


def write_config(
    work: Path, fake: Fake, n: int, *, concurrency: int, pages: int, every: str = "20s"
) -> Path:
    lines = [
        "providers:",
        "  socialfetch:",
        "    api_key: bench-key",
        f"    base_url: {fake.url}",
        f"    max_concurrency: {concurrency}",
        "    requests_per_second: 1000",
        "channels:",
        "  hook:",
        "    type: webhook",
        f"    url: {fake.url}/_bench/hook",
        "rules:",
        "  - id: drop",
        "    when: price_drop",
        "    min_percent: 5",
        "    notify: [hook]",
        "watches:",
    ]
    for i in range(n):
        lines += [
            f"  - id: s{i:05d}",
            "    type: store",
            f"    url: {store_url(i)}",
            f"    every: {every}",
            f"    max_pages: {pages}",
        ]
    path = work / f"rules-{n}-{concurrency}-{pages}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(cmd: list[str], **kw) -> tuple[float, float, int, int]:
    """(wall s, CPU s, max RSS MiB, exit code) of a child process."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write(err.decode()[-2000:])
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss // 1024, proc.returncode


def watcher_once(cfg: Path, db: str) -> tuple[float, float, int, int]:
    return timed([WATCHER, "once", "-c", str(cfg), "--db", db])


def ensure_urlwatch() -> bool:
    if UW.exists():
        return True
    print("installing urlwatch 2.29 into bench/.venv-urlwatch ...", flush=True)
    subprocess.run([PY, "-m", "venv", str(UW_VENV)], check=True)
    r = subprocess.run([str(UW_VENV / "bin" / "pip"), "install", "-q", "urlwatch==2.29"])
    return r.returncode == 0 and UW.exists()


def urlwatch_files(work: Path, fake: Fake, n: int, pages: int, tag: str) -> list[str]:
    """The same pages watcher fetches, as urlwatch jobs (cursors read from the fake)."""
    jobs = []
    for i in range(n):
        cursor = None
        for _ in range(pages):
            q = {"url": store_url(i), "region": "US"}
            if cursor:
                q["cursor"] = cursor
            url = f"{fake.url}/v1/tiktok/shop/products?" + urllib.parse.urlencode(q)
            jobs.append(f"url: {json.dumps(url)}\nheaders:\n  x-api-key: bench-key\n")
            if pages > 1:
                with urllib.request.urlopen(
                    urllib.request.Request(url, headers={"x-api-key": "bench-key"})
                ) as r:
                    cursor = (json.loads(r.read())["data"]["page"] or {}).get("nextCursor")
                if not cursor:
                    break
    urls = work / f"urls-{tag}.yaml"
    urls.write_text("---\n".join(jobs))
    cfg = work / "urlwatch.yaml"
    if not cfg.exists():
        cfg.write_text("report:\n  stdout:\n    enabled: false\n")
    return [str(UW), "--urls", str(urls), "--config", str(cfg),
            "--cache", str(work / f"cache-{tag}.db")]  # fmt: skip


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def committed(db: str) -> int:
    """Watches with a finished baseline (read with sqlite3: no import of watcher here)."""
    import sqlite3

    try:
        with sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30) as con:
            return con.execute("SELECT count(*) FROM watch_state WHERE baseline_done").fetchone()[
                0
            ]
    except sqlite3.OperationalError:
        return 0


class Daemon:
    def __init__(self, cfg: Path, db: str, log: Path) -> None:
        self.err = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [WATCHER, "run", "-c", str(cfg), "--db", db, "-v"],
            stdout=subprocess.DEVNULL, stderr=self.err,
        )  # fmt: skip

    def stop(self) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.err.close()
        return code, time.monotonic() - start


def fmt(v: float, unit: str) -> str:
    return f"{v:.3f} {unit}" if v < 10 else f"{v:.1f} {unit}"


def row(name: str, ours: list[float], base: list[float] | None, unit: str, note: str = ""):
    o = statistics.median(ours)
    if base:
        b = statistics.median(base)
        print(f"| {name} | {fmt(o, unit)} | {fmt(b, unit)} | {o / b:.2f} | {note} |", flush=True)
    else:
        print(f"| {name} | {fmt(o, unit)} | - | - | {note} |", flush=True)


# ---------------------------------------------------------------- the rows


def bench_once(work: Path, repeat: int, have_uw: bool) -> None:
    """CPU per checked page of `watcher once` (200 stores, 1 page each) vs urlwatch."""
    fake = Fake(200, 20)
    try:
        cfg = write_config(work, fake, 200, concurrency=10, pages=1)
        db = f"sqlite:///{work / 'once.db'}"
        watcher_once(cfg, db)  # the baseline poll; what is measured is a check against it
        uw = urlwatch_files(work, fake, 200, 1, "once") if have_uw else None
        if uw:
            timed(uw)
        ours, theirs, walls, uwalls = [], [], [], []
        for _ in range(repeat):
            wall, cpu, _rss, code = watcher_once(cfg, db)
            assert code == 0
            ours.append(cpu / 200 * 1000)
            walls.append(wall)
            if uw:
                wall, cpu, _rss, _code = timed(uw)
                theirs.append(cpu / 200 * 1000)
                uwalls.append(wall)
        row("`once` CPU per checked page, 200 stores", ours, theirs or None, "ms",
            "vs urlwatch 2.29, same pages")  # fmt: skip
        row("`once` wall, 200 stores, concurrency 10", walls, uwalls or None, "s",
            "vs urlwatch (10 workers)")  # fmt: skip
    finally:
        fake.close()


def first_cycle(fake: Fake, pages: int) -> float:
    """Wall of a daemon's first cycle (every watch is due at start): from the first page
    requested to the last one served."""
    served = sorted(fake.report()["served"])[:pages]
    return served[-1] - served[0] + LATENCY


def bench_cycle(work: Path, repeat: int, have_uw: bool) -> None:
    """Daemon cycle wall (all 200 due at once: its start), concurrency 10, vs urlwatch."""
    fake = Fake(200, 20)
    try:
        cfg = write_config(work, fake, 200, concurrency=10, pages=1, every="10m")
        uw = urlwatch_files(work, fake, 200, 1, "cycle") if have_uw else None
        if uw:
            timed(uw)
        ours, theirs = [], []
        for i in range(repeat):
            db = f"sqlite:///{work / f'cycle-{i}.db'}"
            watcher_once(cfg, db)  # the baseline: the measured cycle is a check
            fake.clear()
            d = Daemon(cfg, db, work / "cycle.log")
            try:
                wait(lambda: len(fake.report()["served"]) >= 200, 120, "a cycle")
            finally:
                d.stop()
            ours.append(first_cycle(fake, 200))
            if uw:
                theirs.append(timed(uw)[0])
        limit = 200 * LATENCY / 10
        row("daemon cycle wall, 200 stores, concurrency 10", ours, theirs or None, "s",
            f"vs urlwatch's run; limit {limit:.2f} s")  # fmt: skip
    finally:
        fake.close()


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_steady(work: Path, repeat: int, have_uw: bool) -> None:
    """The daemon's own CPU per poll once it runs (200 stores every 10 s), vs urlwatch's
    CPU per page of a whole run (its start-up included: it has no steady state)."""
    fake = Fake(200, 20)
    try:
        cfg = write_config(work, fake, 200, concurrency=10, pages=1, every="10s")
        uw = urlwatch_files(work, fake, 200, 1, "steady") if have_uw else None
        if uw:
            timed(uw)
        db = f"sqlite:///{work / 'steady.db'}"
        d = Daemon(cfg, db, work / "steady.log")
        ours, theirs = [], []
        try:
            wait(lambda: committed(db) == 200, 120, "the first cycle")
            time.sleep(12)  # every watch has polled once more: all of them in memory
            for _ in range(repeat):
                fake.clear()
                cpu0 = proc_cpu(d.proc.pid)
                time.sleep(20)
                cpu = proc_cpu(d.proc.pid) - cpu0
                polls = len(fake.report()["served"])
                ours.append(cpu / polls * 1000)
                if uw:
                    _wall, ucpu, _rss, _code = timed(uw)
                    theirs.append(ucpu / 200 * 1000)
        finally:
            d.stop()
        row("daemon CPU per poll, steady state, 200 stores every 10 s", ours, theirs or None,
            "ms", "vs urlwatch's CPU per page (a whole run)")  # fmt: skip
    finally:
        fake.close()


def bench_thousand(work: Path, repeat: int) -> None:
    """1,000 watches x 3 pages at 50 ms, concurrency 32: limit / wall, `once` and daemon."""
    fake = Fake(1000, 60)
    limit = 3000 * LATENCY / 32
    try:
        cfg = write_config(work, fake, 1000, concurrency=32, pages=3, every="10m")
        db = f"sqlite:///{work / 'thousand.db'}"
        watcher_once(cfg, db)
        ours = []
        for _ in range(repeat):
            wall, _cpu, _rss, code = watcher_once(cfg, db)
            assert code == 0
            ours.append(wall)
        row("`once`, 1,000 watches x 3 pages: wall", ours, [limit] * len(ours), "s",
            f"vs the limit; limit/wall = {limit / statistics.median(ours):.2f}")  # fmt: skip
        walls = []
        for _ in range(repeat):
            fake.clear()
            d = Daemon(cfg, db, work / "thousand.log")  # a check of every watch at start
            try:
                wait(lambda: len(fake.report()["served"]) >= 3000, 300, "a cycle")
            finally:
                d.stop()
            walls.append(first_cycle(fake, 3000))
        row("daemon, 1,000 watches x 3 pages: cycle wall", walls, [limit] * len(walls), "s",
            f"vs the limit; limit/wall = {limit / statistics.median(walls):.2f}")  # fmt: skip
    finally:
        fake.close()


def bench_latency(work: Path, repeat: int) -> None:
    """Changed page served -> its alert at the webhook, loopback, 200 stores polled."""
    fake = Fake(200, 20)
    try:
        cfg = write_config(work, fake, 200, concurrency=10, pages=1, every="5s")
        db = f"sqlite:///{work / 'latency.db'}"
        d = Daemon(cfg, db, work / "latency.log")
        delays: list[float] = []
        try:
            wait(lambda: committed(db) == 200, 120, "the first cycle")
            for _ in range(repeat):
                fake.clear()
                fake.call("POST", "/_bench/reprice", {"stores": 50})
                wait(lambda: len(fake.report()["hooks"]) >= 50, 60, "50 alerts")
                rep = fake.report()
                delays += [
                    rep["hooks"][w] - served
                    for w, served in rep["changed"].items()
                    if served is not None and w in rep["hooks"]
                ]
                time.sleep(1)
        finally:
            d.stop()
        delays.sort()
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        note = f"p99 {p99 * 1000:.0f} ms; {len(delays)} alerts; target < 50 ms / 200 ms"
        row("page served -> webhook received, median", [statistics.median(delays)], None,
            "s", note)  # fmt: skip
    finally:
        fake.close()


def bench_scale(work: Path, n: int) -> None:
    """n watches: RSS after the first cycle; SIGTERM in the middle of the next one."""
    fake = Fake(n, 5)
    try:
        cfg = write_config(work, fake, n, concurrency=32, pages=1, every="60s")
        db = f"sqlite:///{work / 'scale.db'}"
        d = Daemon(cfg, db, work / "scale.log")
        peak = 0
        start = time.monotonic()

        def done() -> bool:
            nonlocal peak
            peak = max(peak, rss_mib(d.proc.pid))
            return committed(db) >= n

        wait(done, 900, "the first cycle")
        first = time.monotonic() - start
        rss = rss_mib(d.proc.pid)
        d.stop()
        row(f"{n:,} watches: RSS after the first cycle", [rss], None, "MiB",
            f"peak {peak} MiB during it; first cycle {first:.0f} s; target < 150 MiB")  # fmt: skip
        (work / "scale2.db").unlink(missing_ok=True)
        db2 = f"sqlite:///{work / 'scale2.db'}"
        d = Daemon(cfg, db2, work / "scale-stop.log")
        wait(lambda: committed(db2) >= n // 4, 600, "a quarter of the first cycle")
        code, took = d.stop()
        lines = (work / "scale-stop.log").read_text().count("\n")
        row(f"{n:,} watches: SIGTERM mid-cycle, time to exit", [took], None, "s",
            f"exit {code}; {lines} log lines; target exit 0 within 10 s")  # fmt: skip
    finally:
        fake.close()


def bench_fixed(work: Path, repeat: int, have_uw: bool) -> None:
    """`watcher once` with one watch: start-up and teardown, vs urlwatch with one URL."""
    fake = Fake(1, 20)
    try:
        cfg = write_config(work, fake, 1, concurrency=4, pages=1)
        db = f"sqlite:///{work / 'fixed.db'}"
        watcher_once(cfg, db)
        uw = urlwatch_files(work, fake, 1, 1, "fixed") if have_uw else None
        if uw:
            timed(uw)
        ours, theirs, rss, urss = [], [], [], []
        for _ in range(repeat):
            wall, _cpu, r, _code = watcher_once(cfg, db)
            ours.append(wall)
            rss.append(r)
            if uw:
                wall, _cpu, r, _code = timed(uw)
                theirs.append(wall)
                urss.append(r)
        row("`once` fixed cost (1 watch): wall", ours, theirs or None, "s", "vs urlwatch")
        row("`once` fixed cost (1 watch): max RSS", rss, urss or None, "MiB", "vs urlwatch")
    finally:
        fake.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="once,cycle,steady,thousand,latency,fixed,scale")
    p.add_argument("--scale", type=int, default=10_000, help="watches of the scale rows")
    p.add_argument("--no-urlwatch", action="store_true")
    opts = p.parse_args()
    only = set(opts.only.split(","))
    have_uw = not opts.no_urlwatch and ensure_urlwatch()
    # an installed package has its bytecode; a checkout under PYTHONDONTWRITEBYTECODE would
    # compile every module at every start, which is no cost of watcher's
    where = "import os, watcher; print(os.path.dirname(watcher.__file__))"
    src = subprocess.run([PY, "-c", where], capture_output=True, text=True).stdout.strip()
    subprocess.run([PY, "-m", "compileall", "-q", src], check=False)
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}; "
          f"latency {LATENCY * 1000:.0f} ms; repeat {opts.repeat}")  # fmt: skip
    print("| figure | watcher | baseline | ratio | note |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp:
        work = Path(tmp)
        if "once" in only:
            bench_once(work, opts.repeat, have_uw)
        if "cycle" in only:
            bench_cycle(work, opts.repeat, have_uw)
        if "steady" in only:
            bench_steady(work, opts.repeat, have_uw)
        if "thousand" in only:
            bench_thousand(work, opts.repeat)
        if "latency" in only:
            bench_latency(work, opts.repeat)
        if "fixed" in only:
            bench_fixed(work, opts.repeat, have_uw)
        if "scale" in only:
            bench_scale(work, opts.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
