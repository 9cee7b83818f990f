"""``watcher run`` as a real subprocess: the simulator, a webhook receiver and a fake Telegram
Bot API on 127.0.0.1, second-level intervals, real SIGTERM and SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
from collections import Counter
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from watcher.simulator import demo as S
from watcher.simulator import start_simulator
from watcher.simulator.world import Item

from .fakebot import TOKEN, FakeBotAPI
from .support import WATCHER, DaemonProcess, WebhookReceiver, run_watcher, sql, wait_until

ADMIN = 9001
CHAT = 111  # in chat_ids
OTHER = 222  # subscribes by command

CONFIG = """\
providers:
  socialfetch: {api_key: sfk, base_url: "${SIM_URL}", requests_per_second: 100}
  keyapi: {api_key: kk, base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  hook:
    type: webhook
    url: "${HOOK_URL}"
    secret: s3cret
  tg:
    type: telegram
    token: "${TG_TOKEN}"
    base_url: "${TG_URL}"
    chat_ids: [111]
    admins: [9001]
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1s, max_pages: 10,
     notify_failures_after: 3}
  - {id: crocs-search, type: search, query: "@QUERY@", every: 1s}
rules:
  - {id: price-drop-10, when: price_drop, min_percent: 10, notify: [hook, tg], cooldown: 1s}
  - {id: all-time-low, when: lowest_price, notify: [hook], cooldown: 1s}
""".replace("@STORE@", S.STORE_URL).replace("@QUERY@", S.QUERY)

STEP1 = Counter(
    [("price-drop-10", S.ACV), ("all-time-low", S.ACV), ("all-time-low", S.ASHWAGANDHA)]
)
STEP2 = Counter(
    [
        ("price-drop-10", S.MATCHA),
        ("all-time-low", S.MATCHA),
        ("price-drop-10", S.CLASSIC_CLOG),
        ("all-time-low", S.CLASSIC_CLOG),
    ]
)


STEP3 = Counter([("price-drop-10", S.SUPERGREENS), ("all-time-low", S.SUPERGREENS)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_instance(text: str) -> str:
    """/metrics as one instance's own: in cluster mode (PostgreSQL) every series also
    carries ``instance="<id>"``, and exactly one id throughout."""
    ids = set(re.findall(r'instance="([0-9a-f]+)"', text))
    assert len(ids) <= 1, ids
    return re.sub(r'instance="[0-9a-f]+",?', "", text).replace("{}", "")


def metric(text: str, series: str) -> float:
    """The value of one Prometheus series in a /metrics answer (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def pairs(alerts: list[dict]) -> Counter:
    return Counter((a["rule"], a["product"]["id"]) for a in alerts if a["rule"])


@pytest.fixture
async def world(tmp_path: Path, db_url: str):
    sim = await start_simulator()
    hook = WebhookReceiver(secret="s3cret")
    await hook.start()
    bot = FakeBotAPI()
    tg_url = await bot.start()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    env = {"SIM_URL": sim.base_url, "HOOK_URL": hook.url, "TG_TOKEN": TOKEN, "TG_URL": tg_url}
    args = ["-c", str(cfg), "--db", db_url]

    started: list[DaemonProcess] = []

    def daemon(*extra: str) -> DaemonProcess:
        started.append(DaemonProcess(*args, *extra, env=env))
        return started[-1]

    yield sim, hook, bot, daemon
    for d in started:  # a failed test must not leave a daemon running
        await d.kill()
    await bot.close()
    await hook.close()
    await sim.close()


async def baseline(d: DaemonProcess) -> None:
    await d.wait_log("event=poll watch=goli-store status=baseline")
    await d.wait_log("event=poll watch=crocs-search status=baseline")


async def test_alerts_arrive_on_schedule_and_sigterm_stops_cleanly(world):
    sim, hook, bot, daemon = world
    d = await daemon().start()
    await baseline(d)
    assert hook.alerts() == []
    sim.step()
    await wait_until(lambda: pairs(hook.alerts()) == STEP1, what="step 1 alerts on the webhook")
    # Telegram: the price-drop rule notifies the tg channel, which always sends to chat_ids
    await wait_until(lambda: len(bot.sent_to(CHAT)) == 1, what="telegram alert")
    sent = bot.sent_to(CHAT)[0]
    assert sent.method == "sendPhoto"
    assert "16.99" in sent.body and "19.99" in sent.body
    code, took = await d.stop(signal.SIGTERM)
    assert code == 0, d.log()
    assert took < 10
    assert d.count("event=stopped") == 1
    assert all(TOKEN not in line for line in d.lines), "a log line leaked the bot token"
    assert all("s3cret" not in line for line in d.lines)


async def test_restarts_and_kills_lose_nothing_and_duplicate_nothing(world):
    sim, hook, _bot, daemon = world
    hook.fail_next = 10**6  # the receiver is down for the whole first run
    d = await daemon().start()
    await baseline(d)
    sim.step()
    await d.wait_log("event=poll watch=goli-store status=ok products=32 pages=4 alerts=3")
    await d.wait_log("event=retry attempts=1 ")
    assert (await d.stop())[0] == 0
    assert hook.alerts() == []

    hook.fail_next = 0  # back up: the restart delivers what was pending, once
    d = await daemon().start()
    await wait_until(lambda: pairs(hook.alerts()) == STEP1, what="pending alerts after restart")
    sim.step()
    await wait_until(lambda: pairs(hook.alerts()) == STEP1 + STEP2, what="step 2 alerts")
    # SIGKILL in the middle of a delivery: the receiver holds the request, the sender dies
    hook.delay = 30
    in_flight = len(hook.requests)
    sim.step()  # step 3: SUPERGREENS drops
    await wait_until(lambda: len(hook.requests) > in_flight, what="a delivery in flight")
    code, _ = await d.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    hook.delay = 0
    # the restart hands back the dead process's claims at once (not after the lease)
    d = await daemon().start()
    await wait_until(
        lambda: pairs(hook.alerts()) == STEP1 + STEP2 + STEP3,
        what="the alerts in flight at the kill",
    )
    await d.wait_log("event=poll watch=goli-store status=ok", count=2)
    assert (await d.stop())[0] == 0
    ids = [a["alert_id"] for a in hook.alerts()]
    assert len(ids) == len(set(ids)) == sum((STEP1 + STEP2 + STEP3).values())


async def test_subscription_by_command_survives_a_restart(world):
    sim, _hook, bot, daemon = world
    d = await daemon().start()
    await baseline(d)
    bot.command(OTHER, OTHER, "/subscribe price-drop-10")
    reply = await bot.wait_reply(OTHER)
    assert "price-drop-10" in reply.body
    bot.command(ADMIN, ADMIN, "/status")
    status = await bot.wait_reply(ADMIN)
    assert "goli-store" in status.body and "crocs-search" in status.body
    assert (await d.stop())[0] == 0

    d = await daemon().start()
    await d.wait_log("event=poll watch=goli-store status=ok")
    sim.step()
    for chat in (OTHER, CHAT):
        await wait_until(
            lambda chat=chat: any("16.99" in s.body for s in bot.sent_to(chat)),
            what=f"the step 1 alert in chat {chat}",
        )
    bot.command(OTHER, OTHER, "/unsubscribe all")
    await wait_until(
        lambda: any("Removed 1 subscription" in s.body for s in bot.sent_to(OTHER)),
        what="the /unsubscribe reply",
    )
    sent_other = len(bot.sent_to(OTHER))
    sim.step()  # MATCHA and CLASSIC_CLOG drop: chat_ids still get them, OTHER no longer
    await wait_until(
        lambda: sum("10.99" in s.body or "34.99" in s.body for s in bot.sent_to(CHAT)) == 2,
        what="step 2 alerts in the listed chat",
    )
    await d.wait_log("sent alerts=", count=3)
    assert len(bot.sent_to(OTHER)) == sent_other
    assert (await d.stop())[0] == 0


async def test_a_store_sale_reaches_each_chat_as_one_digest(world):
    sim, hook, bot, daemon = world
    sim.simulator.page_size = 50  # one page: a poll sees the sale whole, never half of it
    store = sim.world.stores[S.STORE_URL]
    for i in range(8):
        item = Item(id=f"17400000000000000{i:02d}", title=f"Extra item {i}", price=Decimal("10"))
        store.add(item)
    d = await daemon().start()
    await baseline(d)
    for item in store.products:
        if item.price is not None:
            item.reprice(str((item.price * Decimal("0.6")).quantize(Decimal("0.01"))))
    await d.wait_log("alerts=80")  # 40 price drops + 40 all-time lows
    await wait_until(lambda: len(hook.alerts()) == 80, what="80 alerts on the webhook")
    # one poll's burst is one request, not 80
    assert len(hook.accepted) == 1
    assert hook.accepted[0]["kind"] == "digest" and hook.accepted[0]["count"] == 80
    await wait_until(lambda: len(bot.sent_to(CHAT)) >= 1, what="telegram digest")
    await d.wait_log("sent alerts=", count=2)
    msgs = bot.sent_to(CHAT)
    assert 1 <= len(msgs) <= 3, [m.method for m in msgs]  # one digest, split below 4096
    assert all(len(m.body) <= 4096 for m in msgs)
    text = "\n".join(m.body for m in msgs)
    assert text.count("Extra item") == 8
    assert (await d.stop())[0] == 0


async def test_failing_watch_sends_one_failing_and_one_recovered_notice(world):
    sim, hook, bot, daemon = world
    d = await daemon().start()
    await baseline(d)
    sim.add_fault("/v1/tiktok/shop/products", status=503, times=None, retry_after=0)
    await d.wait_log("event=poll watch=goli-store status=failed", count=5, timeout=40)
    sim.simulator.clear_faults()
    await d.wait_log("event=poll watch=goli-store status=ok")
    await wait_until(
        lambda: [a["kind"] for a in hook.alerts()] == ["watch_failing", "watch_recovered"],
        what="failing + recovered notices",
    )
    # Telegram notices go to the admins, once each
    await wait_until(lambda: len(bot.sent_to(ADMIN)) == 2, what="admin notices")
    texts = [s.body for s in bot.sent_to(ADMIN)]
    assert "failed" in texts[0] and "recovered" in texts[1]
    assert bot.sent_to(CHAT) == []
    assert (await d.stop())[0] == 0


async def test_healthz_and_metrics(world):
    sim, hook, _bot, daemon = world
    port = free_port()
    d = await daemon("--http", f"127.0.0.1:{port}").start()
    await baseline(d)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{base}/metrics") as r:
            before = one_instance(await r.text())
        assert 'watcher_polls_total{status="baseline",watch="goli-store"} 1.0' in before
        credits_before = metric(before, 'watcher_credits_total{provider="socialfetch"}')
        assert credits_before >= 4  # the store's 4 pages at least
        sim.step()
        await wait_until(lambda: pairs(hook.alerts()) == STEP1, what="step 1 alerts")
        # the receiver has them; the counter moves once each send is marked sent
        sent = 'watcher_deliveries_total{channel="hook",outcome="sent"}'
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with http.get(f"{base}/metrics") as r:
                after = one_instance(await r.text())
            if metric(after, sent) >= 3 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert 'watcher_alerts_total{kind="price_drop",rule="price-drop-10"} 1.0' in after
    assert metric(after, sent) == 3
    assert metric(after, 'watcher_polls_total{status="ok",watch="goli-store"}') >= 1
    assert metric(after, 'watcher_credits_total{provider="socialfetch"}') > credits_before
    assert "watcher_poll_duration_seconds_bucket" in after
    assert (await d.stop())[0] == 0


def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify on the shipped unit (ExecStart pointed at this venv's watcher)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: .ci/run installs systemd"
    unit = (Path(__file__).parents[1] / "systemd" / "watcher.service").read_text()
    for key in ("Type=notify", "WatchdogSec=", "DynamicUser=yes", "StateDirectory=watcher"):
        assert key in unit
    unit = unit.replace("/opt/watcher/.venv/bin/watcher", WATCHER)
    path = tmp_path / "watcher.service"
    path.write_text(unit)
    proc = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


async def test_sd_notify_ready_watchdog_and_stopping(world, tmp_path):
    """Under systemd (NOTIFY_SOCKET set) the daemon says READY=1, pings the watchdog, and
    says STOPPING=1 on SIGTERM; the unit's Type=notify and WatchdogSec rely on that."""
    _sim, _hook, _bot, daemon = world
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.setblocking(False)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    d = daemon()
    d.env.update({"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})
    await d.start()
    await wait_until(lambda: "READY=1" in drain(), what="READY=1")
    await wait_until(lambda: drain().count("WATCHDOG=1") >= 2, what="two watchdog pings")
    assert any(m.startswith("STATUS=") for m in messages)
    assert (await d.stop())[0] == 0
    assert "STOPPING=1" in drain()
    sock.close()


async def test_a_crashing_poll_is_recorded_on_the_watch_not_swallowed(
    tmp_path, db_url, monkeypatch
):
    """APScheduler swallows job exceptions; the EVENT_JOB_ERROR listener records them."""
    import asyncio

    from watcher.config import load_config
    from watcher.daemon import Daemon
    from watcher.pipeline import Pipeline
    from watcher.store import Store

    sim = await start_simulator()
    try:
        cfg_path = tmp_path / "rules.yaml"
        cfg_path.write_text(
            f"providers:\n  socialfetch: {{api_key: k, base_url: '{sim.base_url}'}}\n"
            "channels:\n  out: {type: console}\n"
            "watches:\n  - {id: s, type: search, query: crocs clogs, every: 1s}\n"
            "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
        )
        db = db_url

        async def boom(self, watch):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(Pipeline, "poll", boom)
        daemon = Daemon(load_config(cfg_path), db)
        task = asyncio.create_task(daemon.run())
        await wait_until(
            lambda: (
                daemon.rt is not None
                and (st := daemon.rt.store.watch_state("s")) is not None
                and "disk on fire" in (st.last_error or "")
            ),
            what="the crash recorded on the watch",
        )
        daemon.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        state = Store(db).watch_state("s")
        assert state.last_error == "internal error: RuntimeError: disk on fire"
    finally:
        await sim.close()


async def test_a_muted_chat_gets_one_digest_when_the_mute_ends(world):
    sim, hook, bot, daemon = world
    d = await daemon().start()
    await baseline(d)
    bot.command(CHAT, CHAT, "/mute 6s")
    assert "until" in (await bot.wait_reply(CHAT)).body
    sim.step()
    await d.wait_log("event=poll watch=goli-store status=ok products=32 pages=4 alerts=3")
    sim.step()  # step 2: MATCHA and CLASSIC_CLOG drop
    await wait_until(lambda: pairs(hook.alerts()) == STEP1 + STEP2, what="webhook unaffected")
    assert [s.method for s in bot.sent_to(CHAT)] == ["sendMessage"]  # only the /mute reply
    await d.wait_log("holding")
    # when the mute ends: the three held price drops arrive as one digest
    await wait_until(lambda: len(bot.sent_to(CHAT)) >= 2, timeout=15, what="the digest")
    await d.wait_log("sent alerts=", count=4)
    [digest] = bot.sent_to(CHAT)[1:]
    assert digest.body.startswith("<b>3 alerts</b>")
    for price in ("16.99", "10.99", "34.99"):
        assert price in digest.body
    assert (await d.stop())[0] == 0


async def test_sigterm_during_a_slow_poll_still_exits_0_within_10s(world):
    sim, _hook, _bot, daemon = world
    d = await daemon().start()
    await baseline(d)
    # the store's next page takes a minute to answer: a poll is in flight at SIGTERM
    slow = sim.add_fault("/v1/tiktok/shop/products", status=503, delay=60, times=None)
    await wait_until(lambda: slow.used >= 1, what="a store request in flight")
    code, took = await d.stop()
    assert code == 0, d.log()
    assert took < 10
    assert d.count("event=polls_cancelled") == 1


async def test_healthz_is_503_when_the_database_does_not_answer(tmp_path, db_url, monkeypatch):
    import asyncio

    from watcher.config import load_config
    from watcher.daemon import Daemon
    from watcher.store import Store

    cfg = tmp_path / "rules.yaml"
    cfg.write_text(
        "providers:\n  socialfetch: {api_key: k, base_url: 'http://127.0.0.1:9'}\n"
        "channels:\n  out: {type: console}\n"
        "watches:\n  - {id: s, type: search, query: q, every: 1h}\n"
        "rules:\n  - {id: r, when: new_item, notify: [out]}\n"
    )
    port = free_port()
    daemon = Daemon(load_config(cfg), db_url, http=f"127.0.0.1:{port}")
    task = asyncio.create_task(daemon.run())
    url = f"http://127.0.0.1:{port}/healthz"
    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.http_port is not None, what="the http server")
        async with http.get(url) as r:
            assert r.status == 200

        def down(self) -> bool:
            raise OSError("database is locked")

        monkeypatch.setattr(Store, "ping", down)
        async with http.get(url) as r:
            assert r.status == 503
            body = await r.json()
        assert body["ok"] is False
        # who answers, and whether it is in a cluster (PostgreSQL) or alone (SQLite)
        assert body["instance"] == daemon.instance_id
        assert body["cluster"] is db_url.startswith("postgresql")
    daemon.request_stop()
    assert await asyncio.wait_for(task, 10) == 0


async def test_sigterm_lets_a_send_in_flight_finish_and_never_repeats_it(world, db_url):
    """SIGTERM while the webhook is answering slowly: the send completes, is marked sent, and
    the receiver never sees the same alert_id twice (cancelling it would hand the delivery
    back and send it again during the stop)."""
    sim, hook, _bot, daemon = world
    d = await daemon().start()
    await baseline(d)
    hook.delay = 2.0  # each webhook request takes 2 s to answer
    sim.step()
    await wait_until(lambda: len(hook.requests) >= 1, what="a webhook send in flight")
    code, took = await d.stop()
    assert code == 0 and took < 10, d.log()
    assert "Traceback" not in d.log()
    ids = [a["alert_id"] for a in hook.alerts()]
    assert ids, "the send in flight was cut off"
    assert len(ids) == len(set(ids)), f"repeated during the stop: {ids}"
    seen = {a["alert_id"] for a in hook.alerts()}
    statuses = dict(sql(db_url, "SELECT alert_id, status FROM delivery WHERE channel = 'hook'"))
    # what arrived is marked sent; what never started is pending, to go out on the next start
    assert {a for a, st in statuses.items() if st == "sent"} == seen
    assert all(st in ("sent", "pending") for st in statuses.values())


async def test_a_killed_once_hands_its_claims_to_the_running_daemon_within_a_minute(
    world, tmp_path, db_url
):
    """`watcher once` SIGKILLed mid-delivery, beside a running daemon, leaves claimed
    deliveries behind; the daemon takes them over within a minute, not after the 15-minute
    lease. (The daemon here watches only the search, so the store's alerts are once's.)"""
    import os
    import time

    sim, hook, bot, _daemon = world
    env = {
        "SIM_URL": sim.base_url,
        "HOOK_URL": hook.url,
        "TG_TOKEN": TOKEN,
        "TG_URL": bot.base_url,
    }
    once_cfg = str(tmp_path / "rules.yaml")
    daemon_cfg = tmp_path / "daemon.yaml"
    store_watch = CONFIG[CONFIG.index("  - {id: goli-store") : CONFIG.index("  - {id: crocs")]
    daemon_cfg.write_text(CONFIG.replace(store_watch, ""))
    assert (await run_watcher("once", "-c", once_cfg, "--db", db_url, env=env)).code == 0
    d = DaemonProcess("-c", str(daemon_cfg), "--db", db_url, env=env)
    await d.start()
    try:
        await d.wait_log("event=started")
        sim.step()
        hook.hang_next = 1
        once = await asyncio.create_subprocess_exec(
            WATCHER, "once", "-c", once_cfg, "--db", db_url,
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await wait_until(lambda: len(hook.requests) >= 1, timeout=30, what="once's send")
        once.kill()
        await once.wait()
        killed = time.monotonic()
        await wait_until(lambda: pairs(hook.alerts()) == STEP1, timeout=75, what="taken over")
        took = time.monotonic() - killed
        assert took < 60, f"took {took:.0f} s"
        assert d.count("event=claims_taken_over") == 1
        ids = [a["alert_id"] for a in hook.alerts()]
        assert len(ids) == len(set(ids))
        assert (await d.stop())[0] == 0
    finally:
        await d.kill()


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


async def test_sigterm_while_the_config_is_still_being_read_exits_0(tmp_path, db_url):
    # the config is a FIFO nobody writes to: `watcher run` is stuck reading it, long
    # before its event loop exists; systemd's SIGTERM there still owes exit 0
    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    proc = await asyncio.create_subprocess_exec(
        WATCHER, "run", "-c", str(fifo), "--db", db_url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until(lambda: _catches_sigterm(proc.pid), what="a SIGTERM handler")
        await asyncio.sleep(0.5)  # well into the imports or the read of the FIFO
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_interval_watches_keep_a_stable_phase_and_never_drift():
    from datetime import UTC, datetime, timedelta

    from watcher.daemon import GridTrigger, phase_of

    every = 300.0
    phases = sorted(phase_of(f"store-{i}", every) for i in range(1000))
    assert phases == sorted(phase_of(f"store-{i}", every) for i in range(1000))  # stable
    assert all(0 <= p < every for p in phases)
    # spread evenly: each tenth of the interval holds about a tenth of the watches
    tenths = Counter(int(p // (every / 10)) for p in phases)
    assert set(tenths) == set(range(10)) and max(tenths.values()) < 140
    trigger = GridTrigger(every, phase_of("store-1", every))
    start = datetime(2026, 12, 3, 12, 0, 7, 123000, tzinfo=UTC)
    # the first poll runs at start; the next is on the grid, at least half an interval on
    fire = trigger.get_next_fire_time(start, start)
    assert every / 2 <= (fire - start).total_seconds() < 1.5 * every
    fires = [fire]
    for _ in range(1000):  # a run that starts late does not move the next one
        fires.append(trigger.get_next_fire_time(fires[-1], fires[-1] + timedelta(seconds=9)))
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
    assert gaps == {every}
    assert (fires[-1].timestamp() - trigger.phase) % every == pytest.approx(0, abs=1e-3)


class PlainDaemon(DaemonProcess):
    """``watcher run`` with exactly the flags given (``DaemonProcess`` adds ``-v``): what
    the shipped unit runs."""

    async def start(self) -> PlainDaemon:
        self.proc = await asyncio.create_subprocess_exec(
            WATCHER, "run", *self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self


async def test_run_logs_each_poll_and_delivery_at_info_by_default_and_q_quiets_it(world):
    """The journal under the shipped unit (no flags) shows every poll and every delivery as
    one INFO event line, no debug and no library chatter, never a secret; ``-q`` leaves
    warnings only."""
    sim, hook, _bot, daemon = world
    base = daemon()  # the fixture's config and database
    d = await PlainDaemon(*base.args, env=base.env).start()
    try:
        await baseline(d)
        sim.step()
        await wait_until(lambda: pairs(hook.alerts()) == STEP1, what="step 1 alerts")
        await d.wait_log("INFO watcher.dispatch")  # the delivery, as the journal shows it
        assert (await d.stop())[0] == 0, d.log()
    finally:
        await d.kill()
    polls = [ln for ln in d.lines if "event=poll " in ln]
    assert len(polls) >= 3, d.log()
    assert all(" INFO watcher.daemon event=poll watch=" in ln for ln in polls), d.log()
    assert not [ln for ln in d.lines if " DEBUG " in ln or "apscheduler" in ln], d.log()
    for secret in (TOKEN, "s3cret"):
        assert all(secret not in ln for ln in d.lines), f"a log line leaked {secret!r}"

    port = free_port()
    q = await PlainDaemon(*base.args, "-q", "--http", f"127.0.0.1:{port}", env=base.env).start()
    try:
        async with aiohttp.ClientSession() as http:

            async def polled() -> float:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                        text = await r.text()
                except aiohttp.ClientError:
                    return 0.0
                return sum(
                    float(ln.split()[-1])
                    for ln in text.splitlines()
                    if ln.startswith("watcher_polls_total{")
                )

            deadline = asyncio.get_running_loop().time() + 20
            while await polled() < 2:
                assert asyncio.get_running_loop().time() < deadline, q.log()
                await asyncio.sleep(0.1)
        assert (await q.stop())[0] == 0, q.log()
    finally:
        await q.kill()
    assert not [ln for ln in q.lines if "event=poll" in ln or " INFO " in ln], q.log()
