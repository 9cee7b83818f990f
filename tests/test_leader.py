"""One bot per cluster: leadership through a PostgreSQL advisory lock, one reply per update.

The leadership tests run on a real PostgreSQL only (WATCHER_TEST_DB, see tests/conftest.py):
the lock, its release when a session ends and the server's view of a dead client are what is
being tested. Claims of updates run on both backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url
from telegram import Bot
from telegram.error import Conflict

from watcher.daemon.leader import (
    MIGRATION_LOCK,
    Leadership,
    LocalLeadership,
    conninfo,
    lock_key,
)
from watcher.store import Store

from .fakebot import CONFLICT, TOKEN, FakeBotAPI

ROOT = Path(__file__).resolve().parent.parent
CHECK = 0.5  # check_every in these tests
SLACK = 2.0  # "a little": scheduling on a busy two-core machine


@pytest.fixture
def pg_url(db_url: str, db_backend: str) -> str:
    if db_backend != "postgresql":
        pytest.skip(
            "leadership is a PostgreSQL advisory lock: set WATCHER_TEST_DB to a PostgreSQL URL "
            "(.ci/with-postgres does)"
        )
    return db_url


class Candidate:
    """A Leadership and what its callbacks saw."""

    def __init__(self, url: str, name: str = "deals", check_every: float = CHECK) -> None:
        self.calls: list[str] = []
        self.leadership = Leadership(
            url,
            name,
            on_elected=self._elected,
            on_deposed=self._deposed,
            check_every=check_every,
        )

    async def _elected(self) -> None:
        self.calls.append("elected")

    async def _deposed(self) -> None:
        self.calls.append("deposed")

    @property
    def leader(self) -> bool:
        return self.leadership.is_leader


async def until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` holds; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


class Sampler:
    """Samples is_leader of every candidate while a test runs: never two at once."""

    def __init__(self, *candidates: Candidate) -> None:
        self.candidates = candidates
        self.both = 0
        self.samples = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            if sum(c.leader for c in self.candidates) > 1:
                self.both += 1
            self.samples += 1
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task
        assert self.samples > 100
        assert self.both == 0, f"two leaders at once in {self.both} of {self.samples} samples"


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    )


def leader_backends(url: str, key: int) -> list[int]:
    """PIDs of the sessions holding the advisory lock ``key`` (the server's own view: a
    bigint key is classid (high 32 bits) and objid (low 32 bits), objsubid 1)."""
    with admin(url) as con:
        rows = con.execute(
            "SELECT pid, classid::bigint, objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return [pid for pid, high, low in rows if (high << 32) | low == unsigned]


# ---------------------------------------------------------------- pure parts


def test_the_lock_key_is_stable_and_never_the_migration_lock():
    assert lock_key("deals") == lock_key("deals")  # the same in every process (no salted hash)
    assert lock_key("deals") != lock_key("alerts")
    assert -(2**63) <= lock_key("deals") < 2**63  # a bigint
    assert MIGRATION_LOCK not in {lock_key(f"c{n}") for n in range(1000)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from watcher.daemon.leader import lock_key; print(lock_key('deals'))",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == lock_key("deals")


def test_conninfo_is_libpq_with_keepalives():
    info = psycopg.conninfo.conninfo_to_dict(
        conninfo("postgresql+psycopg://bob:s3cret@db.example:6543/watch?sslmode=require", "deals")
    )
    assert info["host"] == "db.example"
    assert info["port"] == "6543"
    assert info["dbname"] == "watch"
    assert info["user"] == "bob"
    assert info["password"] == "s3cret"
    assert info["sslmode"] == "require"  # the URL's own options carry over
    assert info["keepalives"] == "1"
    probes = int(info["keepalives_interval"]) * int(info["keepalives_count"])
    assert int(info["keepalives_idle"]) + probes <= 30  # a lost host noticed within ~30 s
    assert int(info["tcp_user_timeout"]) <= 30_000


def test_conninfo_keeps_a_socket_directory_given_in_the_query():
    info = psycopg.conninfo.conninfo_to_dict(
        conninfo("postgresql+psycopg:///watch?host=/run/postgresql", "deals")
    )
    assert info["host"] == "/run/postgresql"
    assert info["dbname"] == "watch"
    assert "port" not in info and "user" not in info


async def test_an_unreachable_database_is_retried_quietly_and_never_leads(caplog):
    caplog.set_level(logging.DEBUG, "watcher")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Candidate(f"postgresql+psycopg://u@127.0.0.1:{port}/db", check_every=0.1)
    await c.leadership.start()
    try:
        await until(lambda: caplog.text.count("event=bot_campaign_failed") >= 3, 10, "three tries")
        assert not c.leader and c.calls == []
    finally:
        await c.leadership.stop()
    levels = [r.levelname for r in caplog.records if "bot_campaign_failed" in r.getMessage()]
    assert levels[0] == "WARNING" and set(levels[1:]) == {"DEBUG"}  # one warning, not one a try
    assert c.calls == []


async def test_local_leadership_is_always_the_leader(caplog):
    calls: list[str] = []

    async def elected() -> None:
        calls.append("elected")

    async def deposed() -> None:
        calls.append("deposed")
        raise RuntimeError("bot would not stop")

    local = LocalLeadership("sqlite:///x.db", "deals", on_elected=elected, on_deposed=deposed)
    assert not local.is_leader
    await local.start()
    assert local.is_leader and calls == ["elected"]
    await local.stop()  # a failing callback is logged, not raised
    assert not local.is_leader and calls == ["elected", "deposed"]
    assert "event=bot_leader_callback_failed channel=deals callback=on_deposed" in caplog.text


# ---------------------------------------------------------------- on PostgreSQL


async def test_one_of_two_is_elected_and_the_other_takes_over_on_stop(pg_url, caplog):
    caplog.set_level(logging.INFO, "watcher")
    a, b = Candidate(pg_url), Candidate(pg_url)
    await a.leadership.start()
    await until(lambda: a.leader, 10, "the first candidate is elected")
    await b.leadership.start()
    sampler = Sampler(a, b)
    await asyncio.sleep(3.3 * CHECK)  # b tried at least twice, and lost each time
    assert (a.leader, b.leader) == (True, False)
    assert b.calls == []
    assert leader_backends(pg_url, a.leadership.key) != []

    await a.leadership.stop()
    assert a.calls == ["elected", "deposed"]
    took = await until(lambda: b.leader, CHECK + SLACK, "the other one takes over")
    assert b.calls == ["elected"]
    await sampler.close()
    await b.leadership.stop()
    assert b.calls == ["elected", "deposed"]
    assert leader_backends(pg_url, b.leadership.key) == []  # released, connection closed
    assert "event=bot_leader channel=deals" in caplog.text
    assert "event=bot_deposed channel=deals reason=stop" in caplog.text
    print(f"takeover after stop: {took:.2f}s")


async def test_another_name_is_another_lock(pg_url):
    a, b = Candidate(pg_url, "deals"), Candidate(pg_url, "alerts")
    await a.leadership.start()
    await b.leadership.start()
    try:
        await until(lambda: a.leader and b.leader, 10, "each channel has its leader")
    finally:
        await a.leadership.stop()
        await b.leadership.stop()


LEADER_SCRIPT = """
import asyncio, sys
from watcher.daemon.leader import Leadership

async def main():
    async def elected():
        print("elected", flush=True)

    async def deposed():
        print("deposed", flush=True)

    leadership = Leadership(sys.argv[1], "deals", on_elected=elected, on_deposed=deposed,
                            check_every=0.5)
    await leadership.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_sigkilled_leader_is_replaced_within_seconds(pg_url):
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LEADER_SCRIPT,
        pg_url,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    b = Candidate(pg_url)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"elected"
        await b.leadership.start()
        await asyncio.sleep(3.3 * CHECK)
        assert not b.leader  # the child holds the lock
        child.send_signal(signal.SIGKILL)  # no clean-up: only the kernel closes its socket
        await child.wait()
        took = await until(lambda: b.leader, CHECK + SLACK, "a survivor takes over")
        assert b.calls == ["elected"]
        print(f"takeover after SIGKILL: {took:.2f}s")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await b.leadership.stop()


async def test_a_leader_whose_session_is_terminated_steps_down_at_once(pg_url, caplog):
    a, b = Candidate(pg_url), Candidate(pg_url)
    await a.leadership.start()
    await until(lambda: a.leader, 10, "a is elected")
    await b.leadership.start()
    sampler = Sampler(a, b)
    try:
        for _ in range(3):  # each time: the leader's backend is terminated by an admin
            leader = a if a.leader else b
            deposed = leader.calls.count("deposed")
            (pid,) = leader_backends(pg_url, leader.leadership.key)
            with admin(pg_url) as con:
                assert con.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            await until(
                lambda leader=leader, deposed=deposed: leader.calls.count("deposed") > deposed,
                CHECK + SLACK,
                "the leader notices and stops answering",
            )
            await until(lambda: a.leader or b.leader, CHECK + SLACK, "a leader again")
            (holder,) = leader_backends(pg_url, a.leadership.key)
            assert holder != pid
        await asyncio.sleep(3 * CHECK)
    finally:
        await sampler.close()
        await a.leadership.stop()
        await b.leadership.stop()
    for c in (a, b):  # alternating, always elected before deposed
        assert c.calls == ["elected", "deposed"] * (len(c.calls) // 2)
    assert "event=bot_deposed channel=deals reason=" in caplog.text


async def test_a_failing_on_elected_steps_down_and_tries_again(pg_url, caplog):
    calls: list[str] = []

    async def elected() -> None:
        calls.append("elected")
        if calls.count("elected") == 1:
            raise RuntimeError("Telegram unreachable")

    async def deposed() -> None:
        calls.append("deposed")

    leadership = Leadership(
        pg_url, "deals", on_elected=elected, on_deposed=deposed, check_every=CHECK
    )
    await leadership.start()
    try:
        await until(lambda: calls.count("elected") == 2, 5 * CHECK + SLACK, "a second try")
        assert calls == ["elected", "deposed", "elected"]
        assert leadership.is_leader
    finally:
        await leadership.stop()
    assert "event=bot_leader_callback_failed channel=deals callback=on_elected" in caplog.text


async def test_stop_lets_a_slow_on_elected_finish_before_on_deposed(pg_url):
    """The bot's start is not cut off halfway: stop() waits for it, then stops the bot."""
    calls: list[str] = []
    started = asyncio.Event()

    async def elected() -> None:
        calls.append("starting")
        started.set()
        await asyncio.sleep(0.5)  # a bot's start: getMe, setMyCommands, the first poll
        calls.append("started")

    async def deposed() -> None:
        calls.append("deposed")

    leadership = Leadership(
        pg_url, "deals", on_elected=elected, on_deposed=deposed, check_every=CHECK
    )
    await leadership.start()
    await asyncio.wait_for(started.wait(), 10)
    await leadership.stop()
    assert calls == ["starting", "started", "deposed"]
    assert not leadership.is_leader
    assert leader_backends(pg_url, leadership.key) == []


# ---------------------------------------------------------------- one reply per update


def test_an_update_is_claimed_once(db_url):
    store = Store(db_url)
    try:
        assert store.claim_update("deals", 7)
        assert not store.claim_update("deals", 7)
        assert store.claim_update("alerts", 7)  # another bot's update 7
        assert store.claim_update("deals", 2**40)  # update ids need 64 bits
    finally:
        store.close()


def test_concurrent_claims_from_two_instances_let_exactly_one_win(db_url):
    first, second = Store(db_url), Store(db_url)
    ids = range(1, 61)
    start = threading.Barrier(2)

    def claim_all(store: Store) -> list[bool]:
        start.wait()
        return [store.claim_update("deals", i) for i in ids]

    try:
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(claim_all, (first, second))
        assert [x + y for x, y in zip(a, b, strict=True)] == [1] * len(ids)
    finally:
        first.close()
        second.close()


def test_retention_forgets_claims_older_than_a_day(db_url):
    store = Store(db_url)
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    try:
        assert store.claim_update("deals", 1, now - timedelta(hours=25))
        assert store.claim_update("deals", 2, now - timedelta(hours=23))
        assert store.prune_batch(now, timedelta(days=90)) == (0, 0)
        assert store.claim_update("deals", 1, now)  # forgotten: claimable again
        assert not store.claim_update("deals", 2, now)  # kept
        assert store.prune_bot_updates(now + timedelta(days=2)) == 2
    finally:
        store.close()


# ---------------------------------------------------------------- the fake Bot API


async def test_the_fake_bot_api_ends_a_held_poll_with_409_as_telegram_does():
    fake = FakeBotAPI()
    await fake.start()
    first, second = Bot(TOKEN, base_url=fake.base_url), Bot(TOKEN, base_url=fake.base_url)
    try:
        async with first, second:
            held = asyncio.create_task(first.get_updates(timeout=5))
            await until(lambda: fake.holding == 1, 5, "the first poll is held")
            assert await second.get_updates(timeout=0) == ()
            with pytest.raises(Conflict) as error:
                await held
            assert CONFLICT in str(error.value)
            assert fake.conflicts == 1
            assert sorted(r.status for r in fake.calls("getUpdates")) == [200, 409]
    finally:
        await fake.close()
