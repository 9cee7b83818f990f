"""The apprise channel over real local sockets: apprise's json:// and form:// URLs against a
receiver on 127.0.0.1, the real apprise library sending; the outbox's retries, dead
deliveries, digests and quiet hours through it; config errors at file:line.

End to end: a real ``watcher once`` subprocess polls the simulator and delivers through
apprise. Each URL is its own target: a URL that fails is retried alone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from watcher.channels.apprise import AppriseChannel, compose, target_id
from watcher.config import ChannelConfig, load_config
from watcher.dispatch import Dispatcher
from watcher.errors import ConfigError, DeliveryError
from watcher.models import Alert, Product
from watcher.routing import route
from watcher.simulator import demo as sim_ids
from watcher.simulator import start_simulator
from watcher.store import Store

from .support import DaemonProcess, run_watcher, sql, wait_until
from .test_dispatch import Clock

S = sim_ids
ACV_TITLE = "Goli Apple Cider Vinegar Gummy"
ASHWA_TITLE = "Goli Ashwagandha"


class AppriseReceiver:
    """What a user's service would see: every request by path, its body parsed as JSON or
    as a form. ``statuses[path]`` are answered first (then 200); ``hang`` paths never answer.
    """

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.statuses: dict[str, list[int]] = defaultdict(list)
        self.hang: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        status = self.statuses[request.path].pop(0) if self.statuses[request.path] else 200
        self.requests[request.path].append(
            {"content_type": request.content_type, "body": body, "status": status}
        )
        if request.path in self.hang:
            await asyncio.Event().wait()
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def delivered(self, path: str) -> list[dict[str, Any]]:
        """The bodies the receiver accepted (answered 200) at ``path``, in order."""
        return [r["body"] for r in self.requests[path] if r["status"] == 200]

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self) -> AppriseReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def closed_port() -> int:
    """A local port nothing listens on: a receiver down for good (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def receiver():
    r = await AppriseReceiver().start()
    yield r
    await r.close()


T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ALERT = Alert(
    alert_id="abc123",
    kind="price_drop",
    watch_id="goli-store",
    detected_at=T0,
    rule_id="price-drop-10",
    product=Product(id="1729", title="Gummies", price=Decimal("14.96"), currency="USD"),
    previous=Product(id="1729", price=Decimal("19.99")),
    message="Price drop: Gummies\n$19.99 → $14.96 (-25%)\nhttps://shop.example/1729",
)


def channel(*urls: str, **kw: Any) -> AppriseChannel:
    return AppriseChannel(ChannelConfig(id="phone", type="apprise", urls=urls, **kw))


# --- the channel ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["json", "form"])
async def test_one_alert_arrives_once_with_title_and_message(receiver, scheme):
    url = receiver.url(scheme, "/notify")
    ch = channel(url)
    await ch.send(target_id(url), [ALERT])
    await ch.close()
    [request] = receiver.requests["/notify"]
    expected = "application/json" if scheme == "json" else "application/x-www-form-urlencoded"
    assert request["content_type"] == expected
    body = request["body"]
    assert body["title"] == "Price drop: Gummies"
    # the message is the alert's plain text, without repeating the title's line
    assert body["message"] == "$19.99 → $14.96 (-25%)\nhttps://shop.example/1729"
    assert body["type"] == "info"


async def test_a_digest_is_one_request_listing_every_alert(receiver):
    url = receiver.url("json", "/d")
    other = replace(
        ALERT,
        alert_id="def456",
        product=Product(id="42", title="Clogs", price=Decimal("29.99"), currency="USD"),
        previous=Product(id="42", price=Decimal("34.99")),
    )
    ch = channel(url)
    await ch.send(target_id(url), [ALERT, other])
    await ch.close()
    [body] = receiver.delivered("/d")
    assert body["title"] == "2 alerts"
    assert "Gummies" in body["message"] and "Clogs" in body["message"]
    assert body["message"].startswith("1. ")


def test_a_notice_says_which_watch_and_is_a_warning():
    notice = Alert("n1", "watch_failing", "goli-store", T0, message="goli-store: 3 failed polls")
    assert compose([notice]) == ("Watch failing: goli-store", "goli-store: 3 failed polls")


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (429, True), (400, False), (401, False), (404, False)],
)
async def test_http_status_of_a_json_or_form_receiver_decides_retry(receiver, status, retryable):
    for scheme in ("json", "form"):
        url = receiver.url(scheme, f"/s{status}")
        receiver.statuses[f"/s{status}"] = [status]
        ch = channel(url)
        with pytest.raises(DeliveryError) as e:
            await ch.send(target_id(url), [ALERT])
        await ch.close()
        assert e.value.retryable is retryable, scheme
        assert f"HTTP {status}" in str(e.value)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_receiver_that_is_down_is_retryable_and_the_error_hides_the_url():
    url = f"json://127.0.0.1:{closed_port()}/hooks/s3cr3t-t0ken-value"
    ch = channel(url)
    root, seen = logging.getLogger(), Records()
    level = root.level
    root.addHandler(seen)
    root.setLevel(logging.DEBUG)
    try:
        with pytest.raises(DeliveryError) as e:
            await ch.send(target_id(url), [ALERT])
    finally:
        root.removeHandler(seen)
        root.setLevel(level)
    await ch.close()
    assert e.value.retryable
    assert "Connection error" in str(e.value)
    assert "s3cr3t" not in str(e.value) and "s3cr3t" not in target_id(url)
    # apprise's own lines (it logs full URLs at DEBUG, urllib3 the path) never reach
    # watcher's handlers: what they say is in the DeliveryError
    assert not [r for r in seen.records if r.name.startswith(("apprise", "urllib3"))]


async def test_a_receiver_that_never_answers_times_out_retryable(receiver):
    receiver.hang.add("/slow")
    url = receiver.url("json", "/slow")
    ch = channel(url, timeout=timedelta(seconds=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeliveryError) as e:
        await ch.send(target_id(url), [ALERT])
    await ch.close()
    assert e.value.retryable
    assert loop.time() - started < 6
    assert len(receiver.requests["/slow"]) == 1


async def test_a_target_whose_url_left_the_config_is_final(receiver):
    gone = receiver.url("json", "/old")
    ch = channel(receiver.url("json", "/new"))
    with pytest.raises(DeliveryError) as e:
        await ch.send(target_id(gone), [ALERT])
    assert not e.value.retryable
    assert "no longer among the channel's urls" in str(e.value)
    assert receiver.requests == {}


def test_every_url_is_a_target_of_alerts_and_notices(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "providers: {socialfetch: {api_key: k}}\n"
        "channels:\n  phone:\n    type: apprise\n"
        "    urls: ['json://127.0.0.1:9/a', 'form://127.0.0.1:9/b?token=${TOKEN}']\n"
        "watches:\n  - {id: w, type: store, url: u, every: 15m}\n"
        "rules:\n  - {id: r, when: new_item, notify: [phone]}\n"
    )
    config = load_config(path, env={"TOKEN": "very-secret-token"})
    a, b = config.channels["phone"].urls
    assert b.endswith("token=very-secret-token")
    targets = [("phone", target_id(a)), ("phone", target_id(b))]
    assert route(config, replace(ALERT, rule_id="r")) == targets
    assert route(config, Alert("n", "watch_failing", "w", T0, message="x")) == targets
    assert target_id(a).startswith("json-") and target_id(b).startswith("form-")
    assert "secret" not in target_id(b)


# --- the outbox through the real channel ------------------------------------------------------


def numbered(i: int) -> Alert:
    return replace(
        ALERT,
        alert_id=f"a{i}",
        product=Product(id=f"p{i}", title=f"Product {i}", price=Decimal("9.99")),
        message=f"Price drop: Product {i}\n$12.00 → $9.99",
        batch=f"w:{i}",
    )


async def test_quiet_hours_hold_then_one_digest_per_url(receiver, db_url):
    urls = (receiver.url("json", "/q1"), receiver.url("form", "/q2"))
    ch = channel(*urls, quiet_hours=("09:00", "11:00"), timezone="UTC")
    store = Store(db_url)
    for i in (1, 2):  # two polls' alerts
        store.add_alerts([(numbered(i), [("phone", target_id(u)) for u in urls])], now=T0)
    clock = Clock()
    d = Dispatcher(store, {"phone": ch}, clock=clock, sleep=clock.sleep)
    await d.deliver_due()
    assert receiver.requests == {}  # 10:00 is inside 09:00-11:00
    assert await d.drain(3 * 3600)
    assert clock.now == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    for path in ("/q1", "/q2"):
        [body] = receiver.delivered(path)
        assert body["title"] == "2 alerts"
        assert "Product 1" in body["message"] and "Product 2" in body["message"]
    assert store.delivery_counts() == {"sent": 4}
    await ch.close()
    store.close()


# --- end to end: `watcher once` over the simulator ----------------------------------------

CONFIG = """\
providers:
  socialfetch:
    api_key: sfk_test
    base_url: ${SIM_URL}
    requests_per_second: 100
channels:
  phone:
    type: apprise
    urls: ["${URL_A}", "${URL_B}"]
    group_over: @GROUP@
    max_attempts: @MAX@
watches:
  - {id: goli-store, type: store, url: "@STORE@", region: US, every: 1m, max_pages: 10}
rules:
  - {id: price-drop-10, when: price_drop, min_percent: 10, notify: [phone], cooldown: 1s}
  - {id: all-time-low, when: lowest_price, watches: [goli-store], notify: [phone], cooldown: 1s}
"""


@pytest.fixture
async def e2e(tmp_path: Path, db_url: str, receiver: AppriseReceiver):
    """(simulator, once(urls, group_over, max_attempts) → Result, the database URL)."""
    sim = await start_simulator()

    async def once(
        urls: tuple[str, str], *, group_over: int = 50, max_attempts: int = 8, quiet: str = ""
    ):
        cfg = tmp_path / "rules.yaml"
        text = CONFIG.replace("@STORE@", S.STORE_URL).replace("@GROUP@", str(group_over))
        if quiet:
            text = text.replace("    group_over:", f'    quiet_hours: "{quiet}"\n    group_over:')
        cfg.write_text(text.replace("@MAX@", str(max_attempts)))
        env = {"SIM_URL": sim.base_url, "URL_A": urls[0], "URL_B": urls[1]}
        return await run_watcher("once", "-c", str(cfg), "--db", db_url, env=env)

    yield sim, once, db_url
    await sim.close()


def titles(bodies: list[dict[str, Any]]) -> list[str]:
    return sorted(b["title"] for b in bodies)


STEP_1 = sorted(  # the simulator's step 1 on goli-store: three alerts on two products,
    # so two messages (the ACV's two reasons in one)
    [f"Lowest price: {ASHWA_TITLE}", f"Price drop · Lowest price: {ACV_TITLE}"]
)


def short(titles_: list[str]) -> list[str]:
    """Titles cut after the product's first words (the simulator's titles are long)."""
    out = []
    for t in titles_:
        head, _, product = t.partition(": ")
        name = ACV_TITLE if product.startswith(ACV_TITLE) else ASHWA_TITLE
        assert product.startswith(name), t
        out.append(f"{head}: {name}")
    return sorted(out)


async def test_once_retries_the_failing_url_alone(e2e, receiver):
    sim, once, db = e2e
    urls = (receiver.url("json", "/a"), receiver.url("form", "/b"))
    r = await once(urls)
    assert r.code == 0, r.stderr
    assert receiver.requests == {}  # the baseline is quiet
    sim.step()
    receiver.statuses["/a"] = [500]  # the first send to URL a fails, then a recovers
    r = await once(urls)
    assert r.code == 0, r.stderr
    assert short(titles(receiver.delivered("/a"))) == STEP_1  # each alert once, after a retry
    assert len(receiver.requests["/a"]) == 3  # 1 failed + 2 delivered
    # URL b succeeded at once: its two messages arrived once each, never re-sent by a's retry
    assert len(receiver.requests["/b"]) == 2
    assert short(titles(receiver.delivered("/b"))) == STEP_1
    acv = next(b for b in receiver.delivered("/b") if b["title"].startswith("Price drop"))
    assert "19.99" in acv["message"] and "16.99" in acv["message"]
    assert sql(db, "SELECT status, count(*) FROM delivery GROUP BY status") == [("sent", 6)]
    [(attempts,)] = sql(
        db, "SELECT max(attempts) FROM delivery WHERE target = :t", t=target_id(urls[0])
    )
    assert attempts == 2  # the retried delivery
    # nothing is pending: another run sends nothing again
    r = await once(urls)
    assert r.code == 0, r.stderr
    assert (len(receiver.requests["/a"]), len(receiver.requests["/b"])) == (3, 2)


async def test_a_url_down_for_good_is_dead_after_max_attempts_and_listed(e2e, receiver):
    sim, once, db = e2e
    down = f"json://127.0.0.1:{closed_port()}/hook/t0ps3cret-path"
    urls = (down, receiver.url("json", "/up"))
    assert (await once(urls, max_attempts=2)).code == 0
    sim.step()
    r = await once(urls, max_attempts=2)
    assert r.code == 0, r.stderr
    assert short(titles(receiver.delivered("/up"))) == STEP_1
    rows = sql(db, "SELECT target, status, attempts FROM delivery ORDER BY target, alert_id")
    assert sorted({(t, s, a) for t, s, a in rows}) == sorted(
        {(target_id(down), "dead", 2), (target_id(urls[1]), "sent", 1)}
    )
    failed = await run_watcher("alerts", "--failed", "--db", db)
    assert failed.code == 0, failed.stderr
    lines = failed.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert f"phone:{target_id(down)}=dead (2 attempts:" in line
        assert "Connection error" in line
        assert f"phone:{target_id(urls[1])}=sent" in line
    assert "t0ps3cret" not in failed.stdout + r.stderr
    # each failure told once, by the outbox (a retry, then dead), never by apprise itself
    told = [line for line in r.stderr.splitlines() if "Connection error" in line]
    assert len(told) == 2 * 2, r.stderr  # two messages (three alerts), two attempts each
    assert all(" watcher.dispatch event=" in line for line in told), r.stderr


async def test_a_burst_is_one_digest_request_per_url(e2e, receiver):
    sim, once, _db = e2e
    urls = (receiver.url("json", "/a"), receiver.url("form", "/b"))
    assert (await once(urls, group_over=1)).code == 0
    sim.step()
    r = await once(urls, group_over=1)  # 3 alerts on 2 products: 2 messages > group_over 1
    assert r.code == 0, r.stderr
    for path in ("/a", "/b"):
        [body] = receiver.delivered(path)
        assert body["title"] == "3 alerts on 2 products"
        assert body["message"].count(ACV_TITLE) == 1  # its two reasons in one entry
        assert body["message"].count(ASHWA_TITLE) == 1
        assert len(receiver.requests[path]) == 1


async def test_once_in_quiet_hours_holds_every_url(e2e, receiver):
    sim, once, db = e2e
    urls = (receiver.url("json", "/a"), receiver.url("form", "/b"))
    assert (await once(urls)).code == 0
    now = datetime.now(UTC)
    window = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"  # UTC
    sim.step()
    r = await once(urls, quiet=window)
    assert r.code == 0, r.stderr
    assert "still pending" in r.stderr
    assert receiver.requests == {}  # held for the window's end: one digest per URL then
    assert sql(db, "SELECT status, count(*) FROM delivery GROUP BY status") == [("pending", 6)]


async def test_the_daemon_delivers_through_apprise_and_never_logs_a_url_even_at_vv(
    tmp_path, db_url, receiver
):
    sim = await start_simulator()
    token = "t0k3n-in-the-path-0123456789"
    urls = (receiver.url("json", f"/a/{token}"), receiver.url("form", f"/b/{token}"))
    cfg = tmp_path / "rules.yaml"
    text = CONFIG.replace("@STORE@", S.STORE_URL).replace("@GROUP@", "50")
    cfg.write_text(text.replace("@MAX@", "8").replace("every: 1m", "every: 1s"))
    env = {"SIM_URL": sim.base_url, "URL_A": urls[0], "URL_B": urls[1]}
    d = DaemonProcess("-c", str(cfg), "--db", db_url, "-v", env=env)  # -vv: libraries too
    try:
        await d.start()
        await d.wait_log("event=poll watch=goli-store status=baseline")
        sim.step()
        for path in (f"/a/{token}", f"/b/{token}"):
            await wait_until(
                lambda path=path: len(receiver.delivered(path)) == 2, what=f"2 sends at {path}"
            )
            assert short(titles(receiver.delivered(path))) == STEP_1
        code, _took = await d.stop()
    finally:
        await d.kill()
        await sim.close()
    assert code == 0, d.log()
    for url in urls:  # each URL's two sends (three alerts), once each
        assert d.count("event=sent alerts=") == 4, d.log()
        assert d.count(f"channel=phone target={target_id(url)}") == 2, d.log()
    # -vv: the libraries' DEBUG lines are on, apprise's and urllib3's still not
    assert any(" DEBUG " in line and " watcher." not in line for line in d.lines)
    assert not [line for line in d.lines if token in line], "a log line showed an apprise URL"
    assert not [line for line in d.lines if " apprise " in line or " urllib3" in line]


# --- config errors ----------------------------------------------------------------------------

BAD = """\
providers: {socialfetch: {api_key: k}}
channels:
  phone:
    type: apprise
    urls:
      - json://127.0.0.1:9/fine
      - nope://${TOKEN}@somewhere
      - slack://
      - json://127.0.0.1:9/fine
  empty:
    type: apprise
    urls: []
  missing:
    type: apprise
watches:
  - {id: w, type: store, url: u, every: 15m}
rules:
  - {id: r, when: new_item, notify: [phone, empty, missing]}
"""


async def test_watcher_check_names_each_bad_url_at_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    r = await run_watcher("check", "-c", str(path), env={"TOKEN": "hush-hush-token"})
    assert r.code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith(str(path))]
    found = {int(line.split(":")[1]): line for line in lines}
    assert set(found) == {7, 8, 9, 12, 14}, r.stderr
    assert "unknown scheme 'nope://'" in found[7]
    assert "apprise cannot read this slack:// URL" in found[8]
    assert "Token" in found[8]  # apprise's reason
    assert "repeats item 1" in found[9]
    assert "'urls' in channel 'empty' is empty" in found[12]
    assert "missing required key 'urls'" in found[14]
    assert "hush-hush" not in r.stderr  # a secret from the environment is never shown


def test_valid_urls_load_and_nothing_is_sent(tmp_path, receiver):
    path = tmp_path / "ok.yaml"
    url = receiver.url("json", "/never")
    path.write_text(
        "providers: {socialfetch: {api_key: k}}\n"
        f"channels:\n  phone: {{type: apprise, urls: [{url}]}}\n"
        "watches:\n  - {id: w, type: store, url: u, every: 15m}\n"
        "rules:\n  - {id: r, when: new_item, notify: [phone]}\n"
    )
    config = load_config(path, env={})
    assert config.channels["phone"].urls == (url,)
    assert receiver.requests == {}
    path.write_text(BAD)
    with pytest.raises(ConfigError):
        load_config(path, env={"TOKEN": "x"})


def test_without_the_apprise_package_the_config_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)  # `import apprise` fails as if absent
    path = tmp_path / "w.yaml"
    path.write_text(
        "providers: {socialfetch: {api_key: k}}\n"
        "channels:\n  phone:\n    type: apprise\n    urls: ['json://127.0.0.1:9/a']\n"
        "watches:\n  - {id: w, type: store, url: u, every: 15m}\n"
        "rules:\n  - {id: r, when: new_item, notify: [phone]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [issue] = caught.value.issues
    assert issue.line == 5
    assert "pip install 'watcher[apprise]'" in issue.message
