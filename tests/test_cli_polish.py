"""The command line's polish, as a user meets it: real ``watcher`` subprocesses.

``--version``; help text for every option; ``alerts`` saying when there is nothing to list;
each upstream error told once; progress while a long ``once`` (a bar on a terminal, a line
every few seconds elsewhere) or the daemon's first cycle runs; the demo's step headers.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from importlib.metadata import version

import pytest

from watcher.cli import _parser
from watcher.progress import Progress
from watcher.simulator import demo as S
from watcher.simulator import start_simulator

from .support import WATCHER, DaemonProcess, run_watcher
from .test_cli import clean_env, watcher

STORE = "/v1/tiktok/shop/products"
SEARCH = "/v1/tiktok/shop/products/search"

CONFIG = """\
providers:
  socialfetch: {api_key: "${SF_KEY}", base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  out: {type: console}
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1h, max_pages: 10}
  - {id: crocs-search, type: search, query: "crocs clogs", every: 1h, max_pages: 5}
rules:
  - {id: all-time-low, when: lowest_price, notify: [out]}
""".replace("@STORE@", S.STORE_URL)


@pytest.fixture
async def sim(tmp_path, db_url):
    """The simulator, a config of two watches on it, and a runner of ``watcher CMD``."""
    running = await start_simulator()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    env = clean_env(SIM_URL=running.base_url, SF_KEY="sfk_test")

    async def cli(*args: str, db: str = db_url):
        return await run_watcher(*args, "-c", str(cfg), "--db", db, env=env, timeout=60)

    running.cli = cli  # type: ignore[attr-defined]
    running.cfg, running.env = cfg, env  # type: ignore[attr-defined]
    yield running
    await running.close()


# ---------------------------------------------------------------- version and help


def test_version_comes_from_the_package_metadata():
    expected = f"watcher {version('watcher')}"
    r = watcher("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected
    r = subprocess.run(
        [sys.executable, "-m", "watcher", "--version"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == expected, r.stderr


HELP_ENTRY = re.compile(r"^  (?P<name>\S.*?)(?:\s{2,}(?P<help>\S.*))?$")


def help_entries(text: str) -> dict[str, str]:
    """Each option and positional of an argparse ``--help`` page → its help text ('' when
    it has none): an entry is a line indented by two, its help after two spaces or on
    the lines below it, indented further."""
    entries: dict[str, str] = {}
    current = None
    in_section = False
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            in_section = line.startswith(("options", "positional arguments"))
            current = None
            continue
        if not in_section or not line.strip():
            continue
        m = HELP_ENTRY.match(line)
        if m and not line.startswith("   "):
            current = m["name"].strip()
            entries[current] = m["help"] or ""
        elif current is not None and line.startswith("   "):  # help below, or a choice
            entries[current] = (entries[current] + " " + line.strip()).strip()
    return entries


def test_every_option_of_every_command_has_help_text():
    """What a user reads: ``watcher --help`` lists the commands, each ``watcher CMD --help``
    explains every one of its options."""
    r = watcher("--help")
    assert r.returncode == 0, r.stderr
    top = help_entries(r.stdout)
    assert top.get("--version") and top.get("-h, --help"), r.stdout
    commands = dict(re.findall(r"^    ([a-z]+) +(\S.*)$", r.stdout, re.MULTILINE))
    assert set(commands) >= {"check", "run", "once", "demo", "status", "history", "alerts"}
    assert all(commands.values()), commands
    for command in commands:
        r = watcher(command, "--help")
        assert r.returncode == 0, r.stderr
        entries = help_entries(r.stdout)
        assert "-q, --quiet" in entries, r.stdout
        missing = [name for name, text in entries.items() if not text]
        assert not missing, f"watcher {command}: no help for {missing}\n{r.stdout}"


def test_the_parser_has_help_for_every_argument():
    """The same, from the parser itself: a new argument without ``help=`` fails here."""
    parser = _parser()
    parsers = [("watcher", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += [(f"watcher {n}", sp) for n, sp in action.choices.items()]
    assert len(parsers) > 7
    for name, p in parsers:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


# ---------------------------------------------------------------- alerts when there are none


async def test_alerts_say_when_there_is_nothing_to_list(sim, db_url):
    r = watcher("db", "upgrade", "--db", db_url)  # a database with no alert in it
    assert r.returncode == 0, r.stderr
    r = watcher("alerts", "--db", db_url)
    assert (r.returncode, r.stdout) == (0, "no alerts yet\n"), r.stderr
    r = watcher("alerts", "--failed", "--db", db_url)
    assert (r.returncode, r.stdout) == (0, "no failed deliveries\n"), r.stderr

    assert (await sim.cli("once")).code == 0  # a baseline, then ACV's new low
    sim.step()
    r = await sim.cli("once")
    assert r.code == 0 and "all-time-low" in r.stdout, r.stderr
    r = watcher("alerts", "--db", db_url)
    assert "out=sent" in r.stdout and "no alerts" not in r.stdout
    r = watcher("alerts", "--failed", "--db", db_url)  # all sent: none failed
    assert (r.returncode, r.stdout) == (0, "no failed deliveries\n"), r.stderr


# ---------------------------------------------------------------- each error once


@pytest.mark.parametrize("flags", [(), ("-q",)], ids=["default", "quiet"])
async def test_an_upstream_error_is_printed_once(sim, flags):
    """Upstream answers 503 three times: the failed page is told once on stderr (the
    log's line by default; the CLI's own under -q, which hides the log)."""
    assert (await sim.cli("once")).code == 0
    sim.add_fault(SEARCH, status=503, times=None, retry_after=0)
    r = await sim.cli("once", *flags)
    assert r.code == 0, r.stderr
    assert "crocs-search: failed" in r.stderr
    assert r.stderr.count("Service temporarily unavailable") == 1, r.stderr
    told = [ln for ln in r.stderr.splitlines() if "crocs-search" in ln]
    assert len(told) == 2, r.stderr  # the error and the summary


async def test_a_paused_provider_is_printed_once(sim):
    assert (await sim.cli("once")).code == 0
    sim.add_fault(STORE, status=402, times=None)
    r = await sim.cli("once")
    assert r.code == 0, r.stderr
    told = [ln for ln in r.stderr.splitlines() if "out of credits" in ln]
    assert len(told) == 1 and "event=provider_paused" in told[0], r.stderr


# ---------------------------------------------------------------- progress


PROGRESS = re.compile(r"^progress: (?P<done>\d)/2 watches, (?P<pages>\d+) pages$")
FINAL = re.compile(r"^progress: 2/2 watches, (?P<pages>\d+) pages in \d+s$")


async def test_a_long_once_off_a_terminal_reports_its_progress_in_lines(sim):
    # the store's first answer takes 4.5 s (a 503 retried at once): past the 3 s report
    sim.add_fault(STORE, status=503, delay=4.5, times=1, retry_after=0)
    r = await sim.cli("once")
    assert r.code == 0, r.stderr
    lines = r.stderr.splitlines()
    reports = [m for ln in lines if (m := PROGRESS.match(ln))]
    assert reports, r.stderr
    assert all(m["done"] in "01" for m in reports), r.stderr  # the store was still running
    final = [m for ln in lines if (m := FINAL.match(ln))]
    assert len(final) == 1 and int(final[0]["pages"]) == 4 + 3, r.stderr  # 32 and 25 products
    assert lines.index(final[0].string) > lines.index("goli-store: baseline, 32 products, 4 pages")
    assert "\r" not in r.stderr  # no bar off a terminal

    quick = await sim.cli("once")  # a short run says nothing of its progress
    assert quick.code == 0 and "progress" not in quick.stderr, quick.stderr


async def test_a_long_once_on_a_terminal_shows_a_bar(sim, db_url):
    sim.add_fault(STORE, status=503, delay=2.5, times=1, retry_after=0)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        WATCHER,
        *("once", "-c", str(sim.cfg), "--db", db_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=sim.env,
    )
    os.close(slave)

    def read_all() -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return out
            if not chunk:
                return out
            out += chunk

    try:
        screen = (await asyncio.wait_for(asyncio.to_thread(read_all), 60)).decode()
        assert await proc.wait() == 0, screen
    finally:
        os.close(master)
    # the bar: the search done, the store still reading, redrawn in place
    assert re.search(r"\rpolling: +50%\|.*\| 1/2 \[\d\d:\d\d<.*, 3 pages\]", screen), screen
    assert "progress:" not in screen  # a bar, not lines
    # the command's own lines are printed above the bar, each on a line of its own
    lines = [ln.split("\r")[-1] for ln in screen.split("\r\n")]
    assert "crocs-search: baseline, 25 products, 3 pages" in lines, screen
    assert "goli-store: baseline, 32 products, 4 pages" in lines, screen
    assert screen.rstrip(" ").endswith("\r")  # and the bar is gone at the end


async def test_the_daemons_first_cycle_logs_its_progress(sim, tmp_path):
    """On one host (SQLite; a cluster's instances share their first cycle)."""
    sim.add_fault(STORE, status=503, delay=4.5, times=1, retry_after=0)
    db = f"sqlite:///{tmp_path / 'run.db'}"
    daemon = DaemonProcess("-c", str(sim.cfg), "--db", db, env=sim.env)
    await daemon.start()
    try:
        await daemon.wait_log("event=progress cycle=first watches=2/2 pages=7 seconds=")
        code, _ = await daemon.stop()
    finally:
        await daemon.kill()
    assert code == 0
    during = [ln for ln in daemon.lines if "event=progress" in ln and "seconds=" not in ln]
    assert during and all("watches=1/2" in ln or "watches=0/2" in ln for ln in during)
    assert daemon.count("event=progress") == len(during) + 1, daemon.log()


def test_progress_reports_on_its_schedule_and_only_for_a_long_run():
    now = [0.0]
    reports: list[dict] = []
    p = Progress(["a", "b"], emit=reports.append, every=3, clock=lambda: now[0])
    now[0] = 2.9
    p.tick()
    assert reports == []
    now[0] = 3.0
    p.tick()
    assert reports == [{"watches": "0/2", "pages": 0}]
    p.watch_done("a", 3)
    p.watch_done("a", 5)  # its second poll is not the first cycle's
    now[0] = 5.0
    p.tick()
    assert len(reports) == 1  # 2 s after the last report
    now[0] = 6.0
    p.tick()
    assert reports[-1] == {"watches": "1/2", "pages": 3}
    p.watch_done("b", 2)
    assert p.finished
    now[0] = 7.4
    p.close()
    assert reports[-1] == {"watches": "2/2", "pages": 5, "seconds": 7}

    quiet: list[dict] = []
    short = Progress(["a"], emit=quiet.append, clock=lambda: now[0])
    short.watch_done("a", 1)
    short.close()
    assert quiet == []  # a run that never reported does not report its end


async def test_a_first_cycle_that_never_completes_stops_reporting():
    reports: list[dict] = []
    p = Progress(["a", "b"], emit=reports.append, every=0.05, give_up_after=0.3)
    p.watch_done("a", 1)  # "b" never reports (its poll crashed past the pipeline)
    await asyncio.wait_for(p.follow(), 10)
    assert not p.finished and reports and reports[-1] == {"watches": "1/2", "pages": 1}


# ---------------------------------------------------------------- demo


async def test_the_demo_prints_a_step_only_when_alerts_follow():
    """Steps 9 and 10 change nothing: no header of theirs; each printed header is followed
    by alerts."""
    env = clean_env()
    env.pop("WATCHER_SIM_URL", None)
    r = await run_watcher("demo", "--cycles", "11", "--interval", "1", env=env, timeout=90)
    assert r.code == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    steps = [i for i, ln in enumerate(lines) if ln.startswith("--- step ")]
    assert [lines[i].split(":")[0] for i in steps] == [f"--- step {n}" for n in range(1, 9)]
    for i in steps:
        assert not lines[i + 1].startswith("---"), "\n".join(lines[i - 2 : i + 3])
    assert lines[-1] == "--- demo finished after 11 poll cycles"
