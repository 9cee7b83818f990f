"""Cluster mode: several real ``watcher run`` on one PostgreSQL share polls, deliveries and the
bot; on SQLite a second ``watcher run`` refuses to start.

The three-instance scenario runs real subprocesses against the simulator, a webhook receiver
and the fake Bot API, and checks what a user sees: upstream requests as with one instance,
every alert once, takeover after a SIGKILL, one reply per bot command, a new instance taking
a share. Its figures are printed (``-s`` shows them) for the issue note.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from watcher.daemon.schedule import phase_of
from watcher.simulator import demo as S
from watcher.simulator import start_simulator

from .conftest import TEST_DB
from .fakebot import TOKEN, FakeBotAPI
from .support import DaemonProcess, WebhookReceiver, run_watcher, sql, wait_until

EVERY = 10.0  # seconds: every watch's interval
BAND = 0.25  # every watch's grid phase lies in the first quarter of its interval
WINDOW = 3  # intervals the request count is taken over

on_postgresql = pytest.mark.skipif(
    not TEST_DB.startswith("postgresql"),
    reason="cluster mode needs PostgreSQL (the suite's PostgreSQL pass runs it)",
)


def watch_ids(prefix: str, n: int) -> list[str]:
    """Ids whose grid phases fall in the first ``BAND`` of the interval, so a window that
    starts in the quiet rest of it holds exactly one poll of each watch per interval."""
    out, i = [], 0
    while len(out) < n:
        wid = f"{prefix}{i}"
        if phase_of(wid, EVERY) < BAND * EVERY:
            out.append(wid)
        i += 1
    return out


STORES = watch_ids("store-", 3)
SEARCHES = watch_ids("search-", 2)
SHOWCASES = watch_ids("showcase-", 1)
WATCHES = STORES + SEARCHES + SHOWCASES


def _watch_lines() -> str:
    store = f'type: store, url: "{S.STORE_URL}", max_pages: 10'
    search = f'type: search, query: "{S.QUERY}"'
    showcase = f"type: showcase, handle: {S.HANDLE}"
    kinds = [(STORES, store), (SEARCHES, search), (SHOWCASES, showcase)]
    return "".join(f"  - {{id: {w}, {spec}, every: 10s}}\n" for ids, spec in kinds for w in ids)


CONFIG = (
    """\
providers:
  socialfetch: {api_key: sfk, base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  hook: {type: webhook, url: "${HOOK_URL}", secret: s3cret}
  tg: {type: telegram, token: "${TG_TOKEN}", base_url: "${TG_URL}", chat_ids: [111]}
watches:
"""
    + _watch_lines()
    + """\
rules:
  - {id: drop, when: price_drop, min_percent: 1, notify: [hook]}
"""
)

USER_CHAT = 555  # a private chat that sends commands


async def until_quiet_moment() -> None:
    """Sleep until the middle of the part of the interval where no watch polls."""
    now = time.time()
    target = (BAND + 1) / 2 * EVERY  # offset within the interval (epoch grid)
    wait = (target - now % EVERY) % EVERY
    await asyncio.sleep(wait)


class Cluster:
    """N ``watcher run`` subprocesses on one database."""

    def __init__(self, cfg: Path, db: str, env: dict[str, str]) -> None:
        self.cfg, self.db, self.env = cfg, db, env
        self.instances: list[DaemonProcess] = []

    async def add(self, *extra: str) -> DaemonProcess:
        d = DaemonProcess("-c", str(self.cfg), "--db", self.db, *extra, env=self.env)
        await d.start()
        self.instances.append(d)
        return d

    def alive(self) -> list[DaemonProcess]:
        return [d for d in self.instances if d.proc and d.proc.returncode is None]

    def by_pid(self, pid: int) -> DaemonProcess:
        return next(d for d in self.instances if d.proc and d.proc.pid == pid)

    async def stop(self) -> list[int]:
        codes = await asyncio.gather(*(d.stop() for d in self.alive()))
        return [c for c, _ in codes]

    async def kill_all(self) -> None:
        await asyncio.gather(*(d.kill() for d in self.instances))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def polls_by(d: DaemonProcess) -> int:
    return d.count("event=poll ")


def last_polls(db: str) -> dict[str, float]:
    try:
        rows = sql(db, "SELECT watch_id, last_poll_at FROM watch_state")
    except Exception:  # not migrated yet: the first instance is still starting
        return {}
    return {w: at.timestamp() for w, at in rows if at is not None}


def running_jobs(db: str) -> int:
    try:
        return sql(db, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")[0][0]
    except Exception:  # not migrated yet
        return 0


async def baseline(sim, db: str, timeout: float = 40) -> None:
    await wait_until(
        lambda: set(last_polls(db)) >= set(WATCHES), timeout=timeout, what="every watch polled"
    )


async def requests_over_window(sim) -> int:
    """API requests over WINDOW whole intervals, counted from a moment no watch polls at."""
    await until_quiet_moment()
    before = len(sim.requests)
    await asyncio.sleep(WINDOW * EVERY)
    return len(sim.requests) - before


@contextlib.asynccontextmanager
async def world(directory: Path):
    """A simulator, a webhook receiver and a fake Bot API of their own, and the config."""
    directory.mkdir()
    sim = await start_simulator()
    hook = WebhookReceiver(secret="s3cret")
    await hook.start()
    bot = FakeBotAPI()
    tg_url = await bot.start()
    cfg = directory / "rules.yaml"
    cfg.write_text(CONFIG)
    env = {"SIM_URL": sim.base_url, "HOOK_URL": hook.url, "TG_TOKEN": TOKEN, "TG_URL": tg_url}
    try:
        yield sim, hook, bot, cfg, env
    finally:
        await bot.close()
        await hook.close()
        await sim.close()


async def solo_requests(directory: Path, db: str) -> int:
    """What one instance's polls cost over the window, in a world of its own."""
    async with world(directory) as (sim, _hook, _bot, cfg, env):
        solo = Cluster(cfg, db, env)
        try:
            await solo.add()
            await baseline(sim, solo.db)
            one = await requests_over_window(sim)
            assert await solo.stop() == [0]
        finally:
            await solo.kill_all()
    return one


def replies(bot: FakeBotAPI) -> int:
    return len(bot.sent_to(USER_CHAT, "sendMessage"))


def bot_leader(cluster: Cluster) -> DaemonProcess:
    """The instance whose most recent bot event is a start."""
    for d in cluster.alive():
        events = [ln for ln in d.lines if "event=bot_started" in ln or "event=bot_dep" in ln]
        if events and "event=bot_started" in events[-1]:
            return d
    raise AssertionError("no instance serves the bot")


@on_postgresql
async def test_three_instances_share_polls_deliveries_and_the_bot(tmp_path, db_factory):
    async with world(tmp_path / "cluster") as (sim, hook, bot, cfg, env):
        await three_instances(sim, hook, bot, cfg, env, db_factory, tmp_path)


async def three_instances(sim, hook, bot, cfg, env, db_factory, tmp_path) -> None:
    figures: dict[str, object] = {}
    # one instance in a world of its own, over the same window, at the same time: the
    # requests the three must not exceed
    solo = asyncio.create_task(solo_requests(tmp_path / "solo", db_factory()))
    cluster = Cluster(cfg, db_factory(), env)
    try:
        for _ in range(3):
            await cluster.add()
        await baseline(sim, cluster.db)
        three = await requests_over_window(sim)
        one = await solo
        assert one >= WINDOW * len(WATCHES)  # at least a page per watch and interval
        figures["requests"] = f"{three} / {one} = {three / one:.3f}"
        assert three / one <= 1.05, figures
        pollers = [polls_by(d) for d in cluster.instances]
        assert sum(1 for n in pollers if n) >= 2, f"polls were not shared: {pollers}"

        # -- the bot answers on exactly one instance
        await wait_until(lambda: bot.calls("getUpdates"), what="someone polls the bot")
        bot.command(USER_CHAT, USER_CHAT, "/help")
        await bot.wait_reply(USER_CHAT, 1, timeout=30)

        # -- deliveries: the instance holding claims is SIGKILLed mid-send
        hook.hang_next = 1  # the first webhook request is never answered
        sent_before = len(hook.requests)
        sim.step()  # ACV and ASHWAGANDHA drop: two alerts per store watch
        await wait_until(lambda: len(hook.requests) > sent_before, timeout=30, what="a send")
        claims = sql(
            cluster.db,
            "SELECT DISTINCT i.pid FROM delivery d JOIN instance i "
            "ON d.claim LIKE i.id || ':%' WHERE d.status = 'pending'",
        )
        assert claims, "no instance holds a claim"
        victim = cluster.by_pid(claims[0][0])
        await victim.kill()
        killed_at = time.time()

        def drops() -> set[str]:
            rows = sql(cluster.db, "SELECT alert_id FROM alert WHERE rule_id = 'drop'")
            return {r[0] for r in rows}

        await wait_until(lambda: len(drops()) >= 2 * len(STORES), timeout=30, what="alerts")
        alert_ids = drops()

        def delivered() -> bool:
            return {a["alert_id"] for a in hook.alerts()} >= alert_ids

        await wait_until(delivered, timeout=60, what="the dead instance's alerts")
        figures["deliveries taken over (s)"] = round(time.time() - killed_at, 1)

        # every watch is polled again within two intervals of the kill
        await wait_until(
            lambda: all(at > killed_at for at in last_polls(cluster.db).values()),
            timeout=2 * EVERY,
            what="every watch polled after the kill",
        )
        figures["every watch polled again (s)"] = round(time.time() - killed_at, 1)

        # -- the bot's leader is SIGKILLed: another answers the next command, once
        leader = bot_leader(cluster)
        await leader.kill()
        bot_killed = time.time()
        bot.command(USER_CHAT, USER_CHAT, "/help")
        await bot.wait_reply(USER_CHAT, 2, timeout=60)
        figures["bot answers again (s)"] = round(time.time() - bot_killed, 1)

        # -- a fourth instance started mid-run takes a share of the polls and of the limits
        port = free_port()
        fourth = await cluster.add("--http", f"127.0.0.1:{port}")
        await fourth.wait_log("event=poll ", timeout=4 * EVERY)
        alive = len(cluster.alive())
        await fourth.wait_log(f"event=limits_shared instances={alive}", timeout=15)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                health = await r.json()
                assert r.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                metrics = await r.text()
        assert health["cluster"] is True and health["in_cluster"] is True, health
        assert health["instances_alive"] == alive, health
        me = health["instance"]
        info = [ln for ln in metrics.splitlines() if ln.startswith("watcher_instance_info{")]
        assert len(info) == 1 and f'instance="{me}"' in info[0] and 'cluster="true"' in info[0]
        polls = [ln for ln in metrics.splitlines() if ln.startswith("watcher_polls_total{")]
        assert polls and all(f'instance="{me}"' in ln for ln in polls), polls
        figures["polls by instance"] = [polls_by(d) for d in cluster.instances]

        await asyncio.sleep(3)  # time for any duplicate to show
        codes = await cluster.stop()
        assert codes == [0] * len(codes), codes
    finally:
        solo.cancel()  # a no-op once it has its figure
        await asyncio.gather(solo, return_exceptions=True)
        await cluster.kill_all()

    # every alert arrived, none twice (the hung send was never answered: not delivered)
    counts = Counter(a["alert_id"] for a in hook.alerts())
    assert set(counts) >= alert_ids
    assert [a for a, n in counts.items() if n > 1] == []
    figures["alerts"] = f"{len(alert_ids)} stored, {sum(counts.values())} delivered"
    # one reply per command, and never two pollers of one bot token at once
    assert replies(bot) == 2
    assert bot.conflicts == 0
    for d in cluster.instances:
        assert "Traceback" not in "\n".join(d.lines), d.log()
    print("\ncluster figures:", figures)


async def test_a_second_daemon_on_one_sqlite_file_refuses_to_start(tmp_path: Path):
    sim = await start_simulator()
    try:
        cfg = tmp_path / "rules.yaml"
        cfg.write_text(
            f"providers:\n  socialfetch: {{api_key: k, base_url: '{sim.base_url}'}}\n"
            "channels:\n  out: {type: console}\n"
            "watches:\n  - {id: s, type: search, query: crocs clogs, every: 1h}\n"
            "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
        )
        db = f"sqlite:///{tmp_path / 'watcher.db'}"
        first = await DaemonProcess("-c", str(cfg), "--db", db).start()
        try:
            await first.wait_log("event=started")
            second = await run_watcher("run", "-c", str(cfg), "--db", db, timeout=30)
            assert second.code == 1
            lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1, second.stderr
            assert re.search(r"in use by another `watcher run` \(pid \d+ on ", lines[0])
            assert f"pid {first.proc.pid} " in lines[0]
            # a manual `watcher once` beside the daemon still works
            once = await run_watcher("once", "-c", str(cfg), "--db", db)
            assert once.code == 0, once.stderr
            code, _ = await first.stop(signal.SIGTERM)
            assert code == 0
        finally:
            await first.kill()
        # once the first is gone (even killed), the next one starts
        again = await DaemonProcess("-c", str(cfg), "--db", db).start()
        try:
            await again.wait_log("event=started")
            await again.kill()  # SIGKILL: the kernel drops the lock with the process
            third = await DaemonProcess("-c", str(cfg), "--db", db).start()
            await third.wait_log("event=started")
            assert (await third.stop())[0] == 0
        finally:
            await again.kill()
    finally:
        await sim.close()


@on_postgresql
async def test_polls_go_on_after_postgresql_drops_every_connection(tmp_path: Path, db_url):
    """A PostgreSQL restart, as the instances see it: every session of the database ends.
    The poll worker, the job queue's pool and the store reconnect; polls are late, not lost."""
    sim = await start_simulator()
    try:
        cfg = tmp_path / "rules.yaml"
        cfg.write_text(
            f"providers:\n  socialfetch: {{api_key: k, base_url: '{sim.base_url}'}}\n"
            "channels:\n  out: {type: console}\n"
            "watches:\n  - {id: s, type: search, query: crocs clogs, every: 2s}\n"
            "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
        )
        daemon = await DaemonProcess("-c", str(cfg), "--db", db_url).start()
        try:
            await daemon.wait_log("event=poll ", count=2)
            name = sql(db_url, "SELECT current_database()")[0][0]
            ended = sql(
                db_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()",
                name=name,
            )
            assert ended, "the daemon had no session to end"
            before = daemon.count("event=poll ")
            await daemon.wait_log("event=poll ", count=before + 3, timeout=40)
            assert daemon.proc.returncode is None
            assert (await daemon.stop())[0] == 0
        finally:
            await daemon.kill()
    finally:
        await sim.close()


@on_postgresql
async def test_a_poll_cut_off_by_sigkill_is_retried_by_another_instance(tmp_path: Path, db_url):
    """The poll job a dead instance was running (its worker's heartbeat stopped) runs again
    on a survivor, which polls the watch: its interval (an hour) is not waited for."""
    sim = await start_simulator()
    try:
        cfg = tmp_path / "rules.yaml"
        cfg.write_text(
            f"providers:\n  socialfetch: {{api_key: k, base_url: '{sim.base_url}'}}\n"
            "channels:\n  out: {type: console}\n"
            "watches:\n  - {id: s, type: search, query: crocs clogs, every: 1h}\n"
            "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
        )
        hang = sim.add_fault(delay=120, times=1)  # the first request hangs
        first = await DaemonProcess("-c", str(cfg), "--db", db_url).start()
        second: DaemonProcess | None = None
        try:
            await wait_until(
                lambda: running_jobs(db_url) == 1 and hang.used == 1,
                timeout=30,
                what="the first instance's poll waiting for its upstream",
            )
            await first.kill()
            killed = time.time()
            second = await DaemonProcess("-c", str(cfg), "--db", db_url).start()
            await second.wait_log("event=poll_taken_over", timeout=45)
            await second.wait_log("event=poll watch=s status=baseline", timeout=30)
            took = time.time() - killed
            assert took < 45, took
            assert sql(db_url, "SELECT products FROM watch_state WHERE watch_id = 's'")[0][0] > 0
            print(f"\npoll taken over {took:.1f} s after the SIGKILL")
            assert (await second.stop())[0] == 0
        finally:
            await first.kill()
            if second is not None:
                await second.kill()
    finally:
        await sim.close()


# ---------------------------------------------------------------- recovery of stalled jobs


def _job(db: str, watch: str, *, worker: int | None, status: str = "doing") -> int:
    return sql(
        db,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args, "
        "status, scheduled_at, worker_id) VALUES ('poll.socialfetch', 'watcher.poll', :w, :w, "
        "CAST(:args AS jsonb), CAST(:status AS procrastinate_job_status), "
        "'2026-01-01T00:00:10Z', :worker) RETURNING id",
        w=watch,
        args=f'{{"watch_id": "{watch}"}}',
        status=status,
        worker=worker,
    )[0][0]


def _worker(db: str, *, silent_for: int) -> int:
    return sql(
        db,
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - make_interval(secs => :s)) RETURNING id",
        s=silent_for,
    )[0][0]


@pytest.fixture
def queue_db(db_url):
    from watcher.store import Store

    Store(db_url).close()  # migrated: procrastinate's schema is there
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    yield db_url, engine
    engine.dispose()


@on_postgresql
def test_a_stalled_job_goes_back_to_the_queue_at_its_own_time(queue_db):
    from watcher.daemon.cluster import recover

    db, engine = queue_db
    dead = _worker(db, silent_for=60)
    job = _job(db, "w1", worker=dead)
    assert recover(engine, [], 20) == [("w1", "retried")]
    status, at, attempts = sql(
        db,
        "SELECT status::text, scheduled_at, attempts FROM procrastinate_jobs WHERE id = :i",
        i=job,
    )[0]
    # its time kept: the retried poll can tell whether the dead instance had committed it
    assert (status, at.isoformat(), attempts) == ("todo", "2026-01-01T00:00:10+00:00", 1)
    assert recover(engine, [], 20) == []  # nothing left to recover


@on_postgresql
def test_a_stalled_job_whose_next_poll_waits_is_done(queue_db):
    from watcher.daemon.cluster import recover

    db, engine = queue_db
    job = _job(db, "w1", worker=_worker(db, silent_for=60))
    nxt = _job(db, "w1", worker=None, status="todo")  # queued before the instance died
    assert recover(engine, [], 20) == [("w1", "done")]
    rows = sql(db, "SELECT id, status::text FROM procrastinate_jobs ORDER BY id")
    assert rows == [(nxt, "todo")] and job != nxt


@on_postgresql
def test_a_live_workers_job_is_left_alone_unless_it_is_an_orphan(queue_db):
    from watcher.daemon.cluster import recover

    db, engine = queue_db
    job = _job(db, "w1", worker=_worker(db, silent_for=0))
    assert recover(engine, [], 20) == []
    assert recover(engine, [job], 20) == [("w1", "retried")]  # its worker does not run it


@on_postgresql
async def test_two_instances_recover_a_stalled_job_once(queue_db):
    from watcher.daemon.cluster import recover

    db, engine = queue_db
    _job(db, "w1", worker=_worker(db, silent_for=60))
    both = await asyncio.gather(*(asyncio.to_thread(recover, engine, [], 20) for _ in range(4)))
    assert [outcome for one in both for outcome in one] == [("w1", "retried")]
    assert sql(db, "SELECT attempts FROM procrastinate_jobs") == [(1,)]


@on_postgresql
def test_the_jobs_of_an_instance_known_dead_are_retried_before_its_heartbeat_stops(queue_db):
    """A restart on the same host (the old PID is gone) takes back the old instance's polls
    at once, as it does its deliveries, not STALLED_AFTER seconds later."""
    import subprocess

    from watcher.daemon.cluster import recover
    from watcher.store import Store

    db, engine = queue_db
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID of this host that no process has now
    killed, alive = Store(db, instance_id="killed"), Store(db, instance_id="alive")
    try:
        killed.register_instance(command="run")
        alive.register_instance(command="run")
        sql(db, "UPDATE instance SET pid = :p WHERE id = 'killed'", p=gone.pid)
        w_killed, w_alive = _worker(db, silent_for=0), _worker(db, silent_for=0)
        killed.set_poll_workers([w_killed])
        alive.set_poll_workers([w_alive])
        _job(db, "w1", worker=w_killed)
        _job(db, "w2", worker=w_alive)
        assert alive.dead_poll_workers() == [w_killed]
        assert killed.dead_poll_workers() == []  # it sees no other instance dead
        assert recover(engine, [], 20, alive.dead_poll_workers()) == [("w1", "retried")]
        rows = sql(db, "SELECT lock, status::text FROM procrastinate_jobs ORDER BY lock")
        assert rows == [("w1", "todo"), ("w2", "doing")]
    finally:
        killed.close()
        alive.close()
