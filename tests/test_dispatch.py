"""The outbox drain: sent once, retried with backoff, dead when hopeless, digests on bursts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from watcher.config import ChannelConfig
from watcher.dispatch import Dispatcher, backoff_delay
from watcher.errors import DeliveryError
from watcher.models import Alert, Product
from watcher.store import Store

from .support import sql

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeChannel:
    """Records sends; fails the first ``failures`` sends with the given error."""

    def __init__(
        self,
        cid: str = "hook",
        *,
        group_over: int = 5,
        max_attempts: int = 8,
        type: str = "webhook",
    ) -> None:
        self.id = cid
        self.config = ChannelConfig(
            id=cid,
            type=type,
            url="http://x",
            group_over=group_over,
            max_attempts=max_attempts,
        )
        self.sends: list[list[str]] = []
        self.errors: list[DeliveryError] = []
        self.delay = 0.0  # real seconds a send takes
        self.started: list[list[str]] = []  # every send begun, finished or not
        self.send_started = asyncio.Event()
        self.hang = False  # a send that never answers (until cancelled)

    async def send(self, target: str, alerts: Sequence[Alert]) -> None:
        self.started.append([a.alert_id for a in alerts])
        self.send_started.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        self.sends.append([a.alert_id for a in alerts])

    async def close(self) -> None:
        return None


def make_alert(i: int, batch: str = "w:1") -> Alert:
    return Alert(
        alert_id=f"a{i:03d}",
        kind="price_drop",
        watch_id="w",
        detected_at=T0,
        rule_id="r",
        product=Product(id=f"p{i}", title=f"P{i}", price=Decimal("9.99")),
        message=f"alert {i}",
        batch=batch,
    )


@pytest.fixture
def store(tmp_path, db_url):
    s = Store(db_url)
    yield s
    s.close()


def add(store: Store, *alerts: Alert, channel: str = "hook") -> None:
    store.add_alerts([(a, [(channel, "")]) for a in alerts], now=T0)


def status(store: Store) -> dict[str, int]:
    return store.delivery_counts()


async def test_sent_once_and_marked(store):
    clock, ch = Clock(), FakeChannel()
    add(store, make_alert(1))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    assert await d.drain(30)
    assert await d.drain(30)  # nothing left: no second send
    assert ch.sends == [["a001"]]
    assert status(store) == {"sent": 1}


async def test_storing_the_same_alert_twice_keeps_one_delivery(store):
    clock, ch = Clock(), FakeChannel()
    add(store, make_alert(1))
    add(store, make_alert(1))
    await Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep).drain(30)
    assert ch.sends == [["a001"]]


async def test_retryable_failures_back_off_then_deliver_once(store):
    clock, ch = Clock(), FakeChannel()
    ch.errors = [DeliveryError("503", retryable=True), DeliveryError("503", retryable=True)]
    add(store, make_alert(1))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep, rand=lambda: 1.0)
    assert await d.drain(30)
    assert ch.sends == [["a001"]]
    # 2 s then 8 s of backoff (jitter pinned to its top)
    assert clock.now - T0 == timedelta(seconds=10)
    assert status(store) == {"sent": 1}


async def test_retry_after_is_honoured(store):
    clock, ch = Clock(), FakeChannel()
    ch.errors = [DeliveryError("429", retryable=True, retry_after=7)]
    add(store, make_alert(1))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep, rand=lambda: 0.0)
    assert await d.drain(30)
    assert clock.now - T0 == timedelta(seconds=7)


async def test_permanent_failure_is_dead_at_once(store):
    clock, ch = Clock(), FakeChannel()
    ch.errors = [DeliveryError("404", retryable=False)]
    add(store, make_alert(1))
    await Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep).drain(30)
    assert ch.sends == []
    assert status(store) == {"dead": 1}
    [(alert, deliveries)] = store.recent_alerts(failed=True)
    assert alert.alert_id == "a001" and deliveries[0].last_error == "404"


async def test_dead_after_max_attempts(store):
    clock, ch = Clock(), FakeChannel(max_attempts=3)
    ch.errors = [DeliveryError("503", retryable=True) for _ in range(5)]
    add(store, make_alert(1))
    await Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep).drain(600)
    assert ch.sends == [] and len(ch.errors) == 2
    assert status(store) == {"dead": 1}


async def test_drain_budget_leaves_later_retries_pending(store):
    clock, ch = Clock(), FakeChannel()
    ch.errors = [DeliveryError("503", retryable=True, retry_after=60)]
    add(store, make_alert(1))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    assert not await d.drain(30)
    assert status(store) == {"pending": 1}


@pytest.mark.parametrize(
    ("n", "group_over", "expected_sends"),
    [(6, 5, [6]), (5, 5, [1, 1, 1, 1, 1]), (3, 2, [3])],
    ids=["burst-digest", "at-threshold-single", "small-threshold"],
)
async def test_bursts_from_one_poll_become_one_digest(store, n, group_over, expected_sends):
    clock, ch = Clock(), FakeChannel(group_over=group_over)
    add(store, *(make_alert(i) for i in range(n)))
    await Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep).drain(30)
    assert [len(s) for s in ch.sends] == expected_sends
    assert sorted(a for s in ch.sends for a in s) == [f"a{i:03d}" for i in range(n)]


async def test_alerts_of_different_polls_are_not_merged(store):
    clock, ch = Clock(), FakeChannel(group_over=2)
    add(store, *(make_alert(i, batch="w:1") for i in range(2)))
    add(store, *(make_alert(i, batch="w:2") for i in range(2, 4)))
    await Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep).drain(30)
    assert [len(s) for s in ch.sends] == [1, 1, 1, 1]


async def test_a_chat_gets_a_products_alerts_of_one_poll_in_one_send_retried_together(store):
    """A channel whose type merges per product (here: telegram) is sent a product's alerts
    together; a failed send retries both deliveries together, and both end sent."""
    clock = Clock()
    chat, hook = FakeChannel("tg", type="telegram"), FakeChannel("hook")
    chat.errors = [DeliveryError("503", retryable=True)]
    drop, other = make_alert(1), make_alert(2)
    low = replace(drop, alert_id="a003", kind="lowest_price", rule_id="low")
    targets = [("tg", "42"), ("hook", "")]
    store.add_alerts([(a, targets) for a in (drop, other, low)], now=T0)
    d = Dispatcher(store, {"tg": chat, "hook": hook}, clock=clock, sleep=clock.sleep)
    assert await d.drain(30)
    assert chat.started == [["a001", "a003"], ["a002"], ["a001", "a003"]]  # then the retry
    assert chat.sends == [["a002"], ["a001", "a003"]]
    assert hook.sends == [["a001"], ["a002"], ["a003"]]
    assert status(store) == {"sent": 6}


async def test_a_chat_added_by_a_reload_gets_a_products_alerts_in_one_send(store):
    clock = Clock()
    hook, chat = FakeChannel("hook"), FakeChannel("tg", type="telegram")
    drop = make_alert(1)
    low = replace(drop, alert_id="a003", kind="lowest_price", rule_id="low")
    store.add_alerts([(a, [("tg", "42")]) for a in (drop, low)], now=T0)
    d = Dispatcher(store, {"hook": hook}, clock=clock, sleep=clock.sleep)
    await d.replace_channels({"hook": hook, "tg": chat})  # SIGHUP: a Telegram channel more
    assert await d.drain(30)
    assert chat.sends == [["a001", "a003"]]
    assert status(store) == {"sent": 2}


async def test_deliveries_for_unbuilt_channels_wait(store):
    clock, ch = Clock(), FakeChannel()
    store.add_alerts([(make_alert(1), [("hook", ""), ("tg", "42")])], now=T0)
    await Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep).drain(30)
    assert status(store) == {"sent": 1, "pending": 1}


def test_backoff_grows_and_is_capped():
    assert backoff_delay(0, lambda: 1.0) == 2.0
    assert backoff_delay(3, lambda: 1.0) == 128.0
    assert backoff_delay(3, lambda: 0.0) == 64.0
    assert backoff_delay(40, lambda: 1.0) == 3600.0
    # the default 8 attempts span over an hour of downtime even at the bottom of the jitter
    assert sum(backoff_delay(n, lambda: 0.0) for n in range(7)) > 3000


@pytest.mark.parametrize(
    ("now", "window", "tz", "expected"),
    [
        # Berlin is UTC+1 in November: 23:30 local is inside, ends 07:00 local = 06:00 UTC
        ("2026-11-24T22:30", ("23:00", "07:00"), "Europe/Berlin", "2026-11-25T06:00"),
        ("2026-11-25T05:59", ("23:00", "07:00"), "Europe/Berlin", "2026-11-25T06:00"),
        ("2026-11-25T06:00", ("23:00", "07:00"), "Europe/Berlin", None),
        ("2026-11-24T21:59", ("23:00", "07:00"), "Europe/Berlin", None),
        ("2026-11-24T10:00", ("09:00", "17:00"), "UTC", "2026-11-24T17:00"),
        ("2026-11-24T08:59", ("09:00", "17:00"), "UTC", None),
        ("2026-11-24T10:00", ("09:00", "09:00"), "UTC", None),
        # summer time: Berlin is UTC+2, 07:00 local = 05:00 UTC
        ("2026-07-01T01:00", ("23:00", "07:00"), "Europe/Berlin", "2026-07-01T05:00"),
    ],
)
def test_quiet_until(now, window, tz, expected):
    from watcher.dispatch import quiet_until

    got = quiet_until(datetime.fromisoformat(now).replace(tzinfo=UTC), window, tz)
    want = None if expected is None else datetime.fromisoformat(expected).replace(tzinfo=UTC)
    assert got == want


async def test_quiet_hours_hold_then_one_digest(store):
    clock, ch = Clock(), FakeChannel(group_over=5)
    ch.config = ChannelConfig(
        id="hook", type="webhook", url="http://x", quiet_hours=("09:00", "11:00"), timezone="UTC"
    )
    add(store, make_alert(1, batch="w:1"))
    add(store, make_alert(2, batch="w:2"))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    await d.deliver_due()
    assert ch.sends == []  # 10:00 is inside 09:00-11:00
    assert await d.drain(3 * 3600)
    assert clock.now == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert ch.sends == [["a001", "a002"]]  # two polls' alerts, one digest, when the window ends


async def test_muted_chat_gets_one_digest_when_mute_ends(store):
    clock, ch = Clock(), FakeChannel()
    store.set_mute("hook", 42, T0 + timedelta(hours=2))
    store.add_alerts([(make_alert(i, batch=f"w:{i}"), [("hook", "42")]) for i in range(3)], now=T0)
    store.add_alerts([(make_alert(9), [("hook", "43")])], now=T0)
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    await d.deliver_due()
    assert ch.sends == [["a009"]]  # the other chat is not muted
    assert await d.drain(3 * 3600)
    assert ch.sends[1:] == [["a000", "a001", "a002"]]
    assert clock.now == T0 + timedelta(hours=2)


async def test_two_dispatchers_on_one_database_never_send_the_same_delivery(tmp_path, db_url):
    """A daemon and a manual `watcher once` share the outbox: claims keep them apart."""
    url = db_url
    a_store, b_store = Store(url), Store(url)
    a_store.add_alerts(
        [(make_alert(i, batch=f"w:{i}"), [("hook", "")]) for i in range(60)], now=T0
    )
    clock = Clock()
    a_ch, b_ch = FakeChannel(), FakeChannel()
    a_ch.delay = b_ch.delay = 0.01  # sends overlap the other dispatcher's look at the outbox
    a = Dispatcher(a_store, {"hook": a_ch}, clock=clock, sleep=clock.sleep)
    b = Dispatcher(b_store, {"hook": b_ch}, clock=clock, sleep=clock.sleep)
    await asyncio.gather(a.deliver_due(), b.deliver_due())
    sent_a = [x for s in a_ch.sends for x in s]
    sent_b = [x for s in b_ch.sends for x in s]
    assert not set(sent_a) & set(sent_b)
    assert sorted(sent_a + sent_b) == [f"a{i:03d}" for i in range(60)]
    a_store.close()
    b_store.close()


async def test_a_claim_left_by_a_crash_expires_and_is_retried(store):
    from watcher.store import CLAIM_LEASE

    add(store, make_alert(1))
    assert len(store.claim_due(T0)) == 1  # taken, then the process "dies" without an answer
    assert store.claim_due(T0 + CLAIM_LEASE / 2) == []
    [(row, alert)] = store.claim_due(T0 + CLAIM_LEASE)
    assert alert.alert_id == "a001" and row.status == "pending"


async def test_ending_a_mute_releases_what_it_held(store):
    clock, ch = Clock(), FakeChannel()
    store.set_mute("hook", 42, T0 + timedelta(days=30))
    store.add_alerts([(make_alert(i, batch=f"w:{i}"), [("hook", "42")]) for i in range(2)], now=T0)
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    await d.deliver_due()
    assert ch.sends == []
    clock.now = T0 + timedelta(minutes=5)
    store.set_mute("hook", 42, None, now=clock.now)  # /mute off
    assert await d.drain(60)
    assert ch.sends == [["a000", "a001"]]  # one digest, now, not in 30 days
    assert clock.now == T0 + timedelta(minutes=5)


async def test_a_pass_cut_short_hands_its_claims_back(store):
    clock, ch = Clock(), FakeChannel()
    ch.hang = True  # a send that is still running when the daemon stops
    add(store, make_alert(1, batch="w:1"), make_alert(2, batch="w:2"))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(d.deliver_due())
    await asyncio.wait_for(ch.send_started.wait(), timeout=10)
    # the pass is mid-send: both deliveries are claimed (leased), so none is due now
    assert store.due_deliveries(clock.now) == []
    assert ch.started == [["a001"]] and not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and ch.sends == []
    # due again at once: a restart (or the shutdown flush) sends them without waiting a lease
    assert [a.alert_id for _, a in store.due_deliveries(clock.now)] == ["a001", "a002"]
    ch.hang = False
    assert await d.deliver_due() == 2
    assert ch.sends == [["a001"], ["a002"]]
    assert status(store) == {"sent": 2}


async def test_a_channel_bug_is_a_retryable_failure_not_a_stuck_delivery(store):
    clock, ch = Clock(), FakeChannel()

    async def broken(target, alerts):
        raise OSError("stdout closed")

    ch.send = broken  # type: ignore[method-assign]
    add(store, make_alert(1))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    await d.deliver_due()
    [(_alert, [delivery])] = store.recent_alerts()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "OSError: stdout closed" in delivery.last_error


async def test_retry_after_is_capped(store):
    clock, ch = Clock(), FakeChannel()
    ch.errors = [DeliveryError("429", retryable=True, retry_after=10**9)]
    add(store, make_alert(1))
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    await d.deliver_due()
    assert store.next_due() == T0 + timedelta(hours=1)


def test_claims_live_as_long_as_their_instance_heartbeat_not_its_pid(db_url):
    """A process gone without a word (SIGKILL): its claims come back once its heartbeat is
    HEARTBEAT_TIMEOUT old, whatever PID or host the next process has (in a container the
    daemon is PID 1 every time, and the old PID looks alive)."""
    import subprocess
    import sys

    from watcher.store import HEARTBEAT_TIMEOUT

    store = Store(db_url)
    store.register_instance(T0)
    add(store, make_alert(1))
    code = (
        "import sys; from datetime import datetime, UTC; from watcher.store import Store; "
        "s = Store(sys.argv[1]); s.register_instance(datetime(2030, 1, 1, tzinfo=UTC)); "
        "rows = s.claim_due(datetime(2030, 1, 1, tzinfo=UTC)); assert len(rows) == 1"
    )
    subprocess.run([sys.executable, "-c", code, db_url], check=True)  # claims, then is gone
    after = datetime(2030, 1, 1, tzinfo=UTC)
    assert store.due_deliveries(after + timedelta(minutes=1)) == []  # leased by the dead one
    # as if it ran in another container (its own PID namespace, maybe the same host name):
    # its PID says nothing here, only its heartbeat does
    sql(db_url, "UPDATE instance SET host = 'other-boot/pid:[1]' WHERE id != :me",
        me=store.instance_id)  # fmt: skip
    assert store.release_dead_claims(after + HEARTBEAT_TIMEOUT / 2) == 0  # may still be sending
    assert store.due_deliveries(after + timedelta(minutes=1)) == []
    # three beats missed: it is gone, and what it held is due now
    assert store.release_dead_claims(after + HEARTBEAT_TIMEOUT * 2) == 1
    assert [a.alert_id for _, a in store.due_deliveries(after + HEARTBEAT_TIMEOUT * 2)] == ["a001"]
    # our own claims are never taken from us, however old our heartbeat
    store.claim_due(after + HEARTBEAT_TIMEOUT * 2)
    assert store.release_dead_claims(after + timedelta(days=2)) == 0
    assert store.due_deliveries(after + HEARTBEAT_TIMEOUT * 3) == []
    # a clean exit hands back at once
    store.end_instance(after + HEARTBEAT_TIMEOUT * 3)
    assert len(store.due_deliveries(after + HEARTBEAT_TIMEOUT * 3)) == 1
    store.close()


def test_a_dead_process_of_this_kernel_and_pid_namespace_is_released_at_once(db_url):
    """The one case where a PID is proof: same boot, same PID namespace, no such process
    (a systemd restart). Its claims need not wait for the heartbeat to go stale."""
    import subprocess
    import sys

    store = Store(db_url)
    store.register_instance(T0)
    add(store, make_alert(1))
    code = (
        "import sys; from datetime import datetime, UTC; from watcher.store import Store; "
        "s = Store(sys.argv[1]); s.register_instance(datetime(2030, 1, 1, tzinfo=UTC)); "
        "assert len(s.claim_due(datetime(2030, 1, 1, tzinfo=UTC))) == 1"
    )
    subprocess.run([sys.executable, "-c", code, db_url], check=True)
    after = datetime(2030, 1, 1, tzinfo=UTC)
    assert store.release_dead_claims(after + timedelta(seconds=1)) == 1
    assert [a.alert_id for _, a in store.due_deliveries(after + timedelta(seconds=1))] == ["a001"]
    store.close()


async def test_the_heartbeat_is_renewed_while_a_send_hangs(db_url, monkeypatch):
    """A slow send must not look like a dead instance to the others."""
    from watcher import dispatch
    from watcher.store import InstanceRow

    monkeypatch.setattr(dispatch, "HEARTBEAT_EVERY", timedelta(seconds=0.05))
    store = Store(db_url)
    store.register_instance(T0)
    add(store, make_alert(1))
    ch = FakeChannel()
    ch.hang = True
    d = Dispatcher(store, {"hook": ch})
    task = asyncio.create_task(d.deliver_due())
    await ch.send_started.wait()

    def beat():
        with store.session() as s:
            return s.get(InstanceRow, store.instance_id).heartbeat_at

    first = beat()
    await asyncio.sleep(0.3)
    assert beat() > first
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await d.close()
    store.close()


@pytest.mark.parametrize("targets", [20, 1])
async def test_targets_are_sent_side_by_side_and_marked_in_few_transactions(
    store, targets, monkeypatch
):
    clock, ch = Clock(), FakeChannel()
    ch.delay = 0.05
    inflight = peak = 0
    plain = ch.send
    order: dict[str, list[str]] = {}

    async def counting(target, alerts):
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        order.setdefault(target, []).extend(a.alert_id for a in alerts)
        try:
            await plain(target, alerts)
        finally:
            inflight -= 1

    ch.send = counting  # type: ignore[method-assign]
    marks: list[int] = []
    mark_sent = store.mark_sent

    def counted(ids, now):
        marks.append(len(ids))
        return mark_sent(ids, now)

    monkeypatch.setattr(store, "mark_sent", counted)
    store.add_alerts(
        [(make_alert(i, batch=f"w:{i}"), [("hook", str(i % targets))]) for i in range(20)],
        now=T0,
    )
    d = Dispatcher(store, {"hook": ch}, clock=clock, sleep=clock.sleep)
    assert await d.deliver_due() == 20
    assert sorted(x for s in ch.sends for x in s) == [f"a{i:03d}" for i in range(20)]
    assert status(store) == {"sent": 20} and sum(marks) == 20
    if targets > 1:  # different chats or URLs: side by side, their marks written together
        assert peak == targets and len(marks) < 20
    else:  # one target reads its alerts one after another, in order
        assert peak == 1 and order["0"] == [f"a{i:03d}" for i in range(20)]
