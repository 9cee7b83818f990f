"""``watcher status`` and the report behind it (and the bot's /status): the whole cluster from
the database and the config alone.

Real subprocesses against a database a real ``watcher once`` (or ``watcher run``) filled, on
the backend under test; the store's view of the instances and of procrastinate's job queue
on a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import make_url

from watcher.config import load_config
from watcher.models import InstanceInfo, WatchState
from watcher.report import local_next_poll, queued_next_poll, scheduler_since, status_report
from watcher.simulator import demo as S
from watcher.simulator import start_simulator
from watcher.status import StatusReport, WatchStatus, relative, report_json, report_table
from watcher.store import Store
from watcher.triggers import trigger_for

from .support import WATCHER, DaemonProcess, WebhookReceiver, run_watcher, sql

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
DUMMY_ENV = {
    "SIM_URL": "http://127.0.0.1:9",
    "GOOD_URL": "http://x/",
    "GONE_URL": "http://y/",
    "SF_KEY": "k",
}
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"

CONFIG = """\
providers:
  socialfetch:
    api_key: ${SF_KEY}
    base_url: ${SIM_URL}
    requests_per_second: 100
    daily_credit_budget: 5000
channels:
  good: {type: webhook, url: "${GOOD_URL}"}
  gone: {type: webhook, url: "${GONE_URL}"}
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1m, max_pages: 10}
  - {id: glow-showcase, type: showcase, handle: "@HANDLE@", every: 5m}
rules:
  - {id: price-drop-10, when: price_drop, min_percent: 10, notify: [gone]}
  - {id: all-time-low, when: lowest_price, notify: [good]}
""".replace("@STORE@", S.STORE_URL).replace("@HANDLE@", S.HANDLE)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WATCHER_DB"}
    return {**env, **extra}


@pytest.fixture
async def world(tmp_path, db_url):
    """The simulator, a webhook that accepts and one that answers 404; the showcase's
    upstream fails (503) throughout. A baseline `once`, a step, and a second `once`."""
    sim = await start_simulator()
    good, gone = WebhookReceiver(), WebhookReceiver()
    gone.fail_next, gone.fail_status = 1000, 404
    await good.start()
    await gone.start()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    env = clean_env(SIM_URL=sim.base_url, GOOD_URL=good.url, GONE_URL=gone.url, SF_KEY="sfk")
    sim.add_fault("/v1/tiktok/profiles/*", status=503, times=None, retry_after=0)

    async def cli(*args: str, timeout: float = 60):
        return await run_watcher(*args, "-c", str(cfg), "--db", db_url, env=env, timeout=timeout)

    assert (await cli("once")).code == 0
    sim.step()  # ACV 19.99 → 16.99: price_drop (to the 404 hook: dead) + 2 lowest_price
    r = await cli("once")
    assert r.code == 0, r.stderr
    yield cli, sim, db_url
    await good.close()
    await gone.close()
    await sim.close()


async def test_status_shows_what_once_left(world, db_backend):
    cli, sim, db = world
    r = await cli("status", "--json")
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report) == {
        "at",
        "database",
        "cluster",
        "watches",
        "credits",
        "deliveries",
        "instances",
    }
    assert report["cluster"] is (db_backend == "postgresql")
    assert re.fullmatch(ISO, report["at"])
    assert "sfk" not in r.stdout and make_url(db).database in report["database"]

    store_w, showcase_w = report["watches"]  # in the config's order
    assert store_w["id"] == "goli-store" and showcase_w["id"] == "glow-showcase"
    assert set(store_w) == {"id", "last_poll", "next_poll", "polling", "products", "last_error"}
    assert re.fullmatch(ISO, store_w["last_poll"]) and store_w["last_error"] is None
    assert (
        store_w["products"]
        == sql(db, "SELECT count(*) FROM snapshot WHERE watch_id = 'goli-store' AND present")[0][0]
        > 0
    )
    assert "503" in showcase_w["last_error"] and showcase_w["products"] == 0
    # no daemon ever ran: nothing will poll either watch
    assert [(w["next_poll"], w["polling"]) for w in report["watches"]] == [(None, False)] * 2

    day = datetime.now(UTC).date().isoformat()
    assert report["credits"]["day"] == day
    assert report["credits"]["spent"] == {"socialfetch": sim.simulator.credits["socialfetch"]}
    assert report["credits"]["spent"]["socialfetch"] > 0
    assert report["credits"]["budget"] == {"socialfetch": 5000}
    assert report["deliveries"] == {"pending": 0, "dead": 1, "sent": 2}
    assert report["instances"] == []  # both `once`s signed off when they ended

    r = await cli("status")
    assert r.code == 0, r.stderr
    out = r.stdout
    mode = "cluster on PostgreSQL" if db_backend == "postgresql" else "single host"
    assert out.splitlines()[0].startswith("watcher status at ")
    assert f"({mode}, 0 instances alive)" in out.splitlines()[0]
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("goli", "glow"))}
    assert re.search(rf"goli-store\s+{ISO} \(\d+s ago\)\s+-\s+\d+\s+-$", rows["goli-store"])
    assert "503" in rows["glow-showcase"]
    assert f"credits today ({day} UTC): socialfetch " in out and " of 5000" in out
    assert "deliveries: 0 pending, 1 dead, 2 sent" in out
    assert "instances: none registered" in out
    # status only reads: it registered no instance of its own
    assert sql(db, "SELECT count(*) FROM instance") == [(0,)]

    # an older schema (a newer `watcher status` beside older instances) is not migrated
    sql(db, "UPDATE alembic_version SET version_num = '0003'")
    r = await cli("status")
    assert r.code == 1 and "has schema 0003" in r.stderr and "watcher db upgrade" in r.stderr
    assert sql(db, "SELECT version_num FROM alembic_version") == [("0003",)]


async def test_status_shows_a_running_daemon_and_its_next_polls(world, db_backend, tmp_path):
    cli, sim, db = world
    cfg = str(tmp_path / "rules.yaml")
    daemon = DaemonProcess(
        "-c",
        cfg,
        "--db",
        db,
        env=clean_env(
            SIM_URL=sim.base_url,
            GOOD_URL="http://127.0.0.1:9/h",
            GONE_URL="http://127.0.0.1:9/h",
            SF_KEY="sfk",
        ),
    )
    await daemon.start()
    try:
        await daemon.wait_log("event=poll watch=goli-store", timeout=30)
        r = await cli("status", "--json")
        assert r.code == 0, r.stderr
        report = json.loads(r.stdout)
        (me,) = report["instances"]
        assert me["alive"] is True and me["pid"] == daemon.proc.pid
        assert me["host"] == socket.gethostname() and me["command"] in ("run", None)
        assert re.fullmatch(ISO, me["heartbeat_at"])
        if db_backend == "sqlite":  # the daemon's own scheduler: the grid, computed here
            w = report["watches"][0]
            at = datetime.fromisoformat(report["at"])
            last = datetime.fromisoformat(w["last_poll"])
            watch = load_config(cfg, env=DUMMY_ENV).watches["goli-store"]
            expected = trigger_for(watch).get_next_fire_time(last, at)
            assert datetime.fromisoformat(w["next_poll"]) == expected.replace(microsecond=0)
            # the grid point at least half an interval after the last poll: within 1.5 intervals
            assert at < expected <= last + timedelta(seconds=90)
        r = await cli("status")
        assert r.code == 0, r.stderr
        assert "1 instance alive)" in r.stdout.splitlines()[0]
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(me["id"][:12]))
        assert str(daemon.proc.pid) in line and line.endswith("alive")
        assert re.search(r"\((\d+s ago|now)\)", line)
    finally:
        code, _ = await daemon.stop()
    assert code == 0
    r = await cli("status", "--json")
    assert json.loads(r.stdout)["instances"] == []  # a clean stop signs off


def test_status_needs_an_existing_database_and_a_good_config(tmp_path):
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    env = clean_env(
        SIM_URL="http://127.0.0.1:9", GOOD_URL="http://x/", GONE_URL="http://y/", SF_KEY="k"
    )
    db = tmp_path / "typo.db"
    r = subprocess.run(
        [WATCHER, "status", "-c", str(cfg), "--db", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("watcher: error:") and "no database at" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not db.exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("every: 1m", "every: 1x"))
    r = subprocess.run(
        [WATCHER, "status", "-c", str(bad), "--db", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2 and "1x" in r.stderr and "Traceback" not in r.stderr
    assert not db.exists()


async def test_status_neither_creates_nor_migrates_a_schema(tmp_path, db_url, db_backend):
    """An empty database (PostgreSQL: one nobody ran watcher on) is left empty."""
    from sqlalchemy import create_engine, inspect

    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    if db_backend == "sqlite":
        Path(make_url(db_url).database).touch()
    r = await run_watcher("status", "-c", str(cfg), "--db", db_url, env=clean_env(**DUMMY_ENV))
    assert r.code == 1 and r.stdout == ""
    assert "no watcher database at" in r.stderr and "run `watcher once`" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    engine = create_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_status_help_explains_every_option():
    r = subprocess.run(
        [sys.executable, "-m", "watcher", "status", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    for flag in (
        "-c CONFIG, --config CONFIG",
        "--db DB",
        "--json",
        "-v, --verbose",
        "-q, --quiet",
    ):
        lines = r.stdout.splitlines()
        at = next(n for n, ln in enumerate(lines) if ln.strip().startswith(flag))
        # the help is on the flag's line, or (a long flag) indented on the next one
        text = lines[at].strip()[len(flag) :].strip() or lines[at + 1].strip()
        assert len(text) > 5 and not text.startswith("-"), f"{flag} has no help:\n{r.stdout}"
    r = subprocess.run(
        [sys.executable, "-m", "watcher", "--help"], capture_output=True, text=True, timeout=60
    )
    assert re.search(r"^\s+status\s+\S", r.stdout, re.M), r.stdout


# ---------------------------------------------------------------- the store's views


def test_instances_are_alive_while_they_beat(db_url):
    runner, manual = Store(db_url), Store(db_url)
    try:
        runner.register_instance(T0, command="run")
        manual.register_instance(T0 + timedelta(seconds=1), command="once")
        runner.set_serves_bot(True)
        runner.heartbeat(T0 + timedelta(seconds=40))

        early = {i.id: i for i in runner.instances(T0 + timedelta(seconds=29))}
        assert [i.alive for i in early.values()] == [True, True]
        late = runner.instances(T0 + timedelta(seconds=45))
        assert [i.id for i in late] == [runner.instance_id, manual.instance_id]  # oldest first
        run, once = late
        assert run == InstanceInfo(
            id=runner.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            command="run",
            started_at=T0,
            heartbeat_at=T0 + timedelta(seconds=40),
            serves_bot=True,
            alive=True,
        )
        assert once.command == "once" and not once.serves_bot
        assert once.alive is False  # silent for 44 s: past the 30 s timeout
        runner.set_serves_bot(False)
        assert runner.instances(T0)[0].serves_bot is False
        manual.end_instance()
        assert [i.id for i in runner.instances(T0)] == [runner.instance_id]
    finally:
        runner.close()
        manual.close()


def test_an_instance_whose_process_is_gone_is_not_alive_even_while_its_beat_is_fresh(db_url):
    """A SIGKILLed process of this host: its PID says it is gone before its heartbeat does."""
    store = Store(db_url)
    try:
        now = datetime.now(UTC)
        code = (
            "import sys; from datetime import datetime; from watcher.store import Store; "
            "s = Store(sys.argv[1]); s.register_instance(datetime.fromisoformat(sys.argv[2]), "
            "command='run'); print(s.instance_id)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, db_url, now.isoformat()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (gone,) = store.instances(now)
        assert gone.id == r.stdout.strip() and gone.command == "run"
        assert gone.heartbeat_at == now.replace(microsecond=gone.heartbeat_at.microsecond)
        assert gone.alive is False  # its heartbeat is fresh, but its process has exited
    finally:
        store.close()


async def test_queued_polls_read_the_job_queue(db_url, db_backend, tmp_path):
    store = Store(db_url)
    try:
        if db_backend == "sqlite":
            assert store.queued_polls() == {}  # no job queue: the daemon schedules in memory
            return
        import procrastinate

        conninfo = make_url(db_url).set(drivername="postgresql")
        app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=conninfo.render_as_string(hide_password=False)
            )
        )

        @app.task(name="watcher.poll", queue="poll.socialfetch")
        async def poll(watch_id: str) -> None:  # never run here: only queued
            raise AssertionError(watch_id)

        @app.task(name="watcher.other")
        async def other(watch_id: str) -> None:
            raise AssertionError(watch_id)

        at = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
        async with app.open_async():
            for wid, when in (("goli-store", at), ("glow-showcase", None), ("done", None)):
                await poll.configure(lock=wid, queueing_lock=wid, schedule_at=when).defer_async(
                    watch_id=wid
                )
            await other.configure(lock="other").defer_async(watch_id="other")
        # a running poll of the showcase (a worker took it), its next one already waiting
        sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE lock = 'glow-showcase'")
        sql(
            db_url,
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, "
            "args, scheduled_at) VALUES ('poll.socialfetch', 'watcher.poll', "
            "'glow-showcase', 'glow-showcase', '{}', now() + interval '5 minutes')",
        )
        sql(db_url, "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE lock = 'done'")

        assert store.queued_polls() == {
            "goli-store": (at, "todo"),
            "glow-showcase": (None, "doing"),
        }

        report = status_report(store, load_config_from_text(), T0)
        assert report.cluster is True
        assert [(w.watch_id, w.next_poll, w.polling) for w in report.watches] == [
            ("goli-store", at, False),
            ("glow-showcase", None, True),
        ]
        assert "now (polling)" in report_table(report)
    finally:
        store.close()


# ---------------------------------------------------------------- the pure parts


def _instance(command: str | None, started: datetime, *, alive: bool = True) -> InstanceInfo:
    return InstanceInfo(
        "i" + str(started.timestamp()), "h", 1, command, started, started, False, alive
    )


def test_next_poll_from_the_queue():
    now = T0
    assert queued_next_poll(None, now) == (None, False)  # nothing queued: nothing polls it
    assert queued_next_poll((T0 + timedelta(seconds=42), "todo"), now) == (
        T0 + timedelta(seconds=42),
        False,
    )
    assert queued_next_poll((None, "todo"), now) == (now, False)  # as soon as a worker is free
    assert queued_next_poll((T0 - timedelta(seconds=5), "doing"), now) == (None, True)


def test_next_poll_of_the_single_host_daemon():
    watch = load_config_from_text().watches["goli-store"]  # every 1m
    grid = trigger_for(watch)
    started = T0 - timedelta(minutes=10)
    daemon = [_instance("run", started), _instance("once", T0, alive=True)]
    since = scheduler_since(tuple(daemon))
    assert since == started  # the `once` schedules nothing
    assert scheduler_since((_instance("run", started, alive=False),)) is None
    assert scheduler_since((_instance(None, started),)) == started  # an older watcher's daemon

    last = T0 - timedelta(seconds=20)
    st = WatchState("goli-store", last_poll_at=last)
    nxt = local_next_poll(watch, st, since, T0)
    assert nxt == grid.get_next_fire_time(last, T0)
    assert last + timedelta(seconds=30) <= nxt <= last + timedelta(seconds=90)
    assert local_next_poll(watch, st, None, T0) is None  # no daemon alive
    # polled before this daemon started (or never): it polls at its start, so it is due
    old = WatchState("goli-store", last_poll_at=started - timedelta(hours=1))
    assert local_next_poll(watch, old, since, T0) == started
    assert local_next_poll(watch, None, since, T0) == started


def load_config_from_text():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rules.yaml"
        path.write_text(CONFIG)
        return load_config(path, env=DUMMY_ENV)


@pytest.mark.parametrize(
    ("delta", "text"),
    [(0, "now"), (42, "in 42s"), (-180, "3m ago"), (-7300, "2h ago"), (90000, "in 1d")],
)
def test_relative_times(delta, text):
    assert relative(T0 + timedelta(seconds=delta), T0) == text


def test_the_table_and_the_json_of_one_report():
    inst = InstanceInfo(
        "abcdef0123456789",
        "web-1",
        42,
        "run",
        T0 - timedelta(hours=1),
        T0 - timedelta(seconds=3),
        True,
        True,
        config_loaded_at=T0 - timedelta(minutes=5),
    )
    report = StatusReport(
        at=T0,
        database="postgresql+psycopg://watcher:***@db/watcher",
        cluster=True,
        watches=(
            WatchStatus("a", T0 - timedelta(minutes=3), T0 + timedelta(seconds=42), None, 5),
            WatchStatus("b", None, T0 - timedelta(seconds=1), "HTTP 503\n" + "x" * 300, 0),
            WatchStatus("c", T0, None, None, 1, polling=True),
        ),
        day=T0.date(),
        credits={"socialfetch": 12, "keyapi": 0},
        deliveries={"pending": 3, "sent": 9},
        instances=(inst,),
        budgets={"socialfetch": 100, "keyapi": None},
    )
    table = report_table(report).splitlines()
    assert table[0] == (
        "watcher status at 2026-11-24T10:00:00Z: postgresql+psycopg://watcher:***@db/watcher "
        "(cluster on PostgreSQL, 1 instance alive)"
    )
    head = table[2]
    assert head.split() == ["WATCH", "LAST", "POLL", "NEXT", "POLL", "PRODUCTS", "LAST", "ERROR"]
    a, b, c = table[3:6]
    assert a.split() == [
        "a",
        "2026-11-24T09:57:00Z",
        "(3m",
        "ago)",
        "2026-11-24T10:00:42Z",
        "(in",
        "42s)",
        "5",
        "-",
    ]
    assert "2026-11-24T09:59:59Z (due)" in b and b.endswith("x" * 89 + "…")
    assert "HTTP 503 xxx" in b  # one line
    assert "now (polling)" in c
    assert "credits today (2026-11-24 UTC): socialfetch 12 of 100, keyapi 0" in table
    assert "deliveries: 3 pending, 0 dead, 9 sent" in table
    assert table[-1].split() == [
        "abcdef012345",
        "web-1",
        "42",
        "run",
        "2026-11-24T09:00:00Z",
        "2026-11-24T09:55:00Z",
        "(5m",
        "ago)",
        "2026-11-24T09:59:57Z",
        "(3s",
        "ago)",
        "alive,",
        "serves",
        "the",
        "bot",
    ]
    data = report_json(report)
    assert json.loads(json.dumps(data)) == data
    assert data["watches"][1]["last_error"].endswith("x" * 300)  # JSON has all of it
    assert data["watches"][2] == {
        "id": "c",
        "last_poll": "2026-11-24T10:00:00Z",
        "next_poll": None,
        "polling": True,
        "products": 1,
        "last_error": None,
    }
    assert data["deliveries"] == {"pending": 3, "dead": 0, "sent": 9}
    assert data["credits"] == {
        "day": "2026-11-24",
        "spent": {"socialfetch": 12, "keyapi": 0},
        "budget": {"socialfetch": 100, "keyapi": None},
    }
    assert data["instances"] == [
        {
            "id": "abcdef0123456789",
            "host": "web-1",
            "pid": 42,
            "command": "run",
            "started_at": "2026-11-24T09:00:00Z",
            "config_loaded_at": "2026-11-24T09:55:00Z",
            "heartbeat_at": "2026-11-24T09:59:57Z",
            "alive": True,
            "serves_bot": True,
        }
    ]
