"""Personal targets (/track): the pure evaluation and parsing, the bot's answers over the fake
Bot API, and ``watcher run`` (a subprocess) polling the simulator and alerting the one chat
that set the target — across a restart, through the outbox, shown by ``watcher alerts``."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from watcher.bot.format import parse_target, product_ref
from watcher.models import Alert, Change, EventKind, Product
from watcher.rules.tracks import BELOW, DROP, Track, evaluate_tracks
from watcher.simulator import demo as S
from watcher.simulator import start_simulator
from watcher.simulator.payloads import PDP
from watcher.store import PollWrite, SnapshotRow, Store

from .fakebot import TOKEN, FakeBotAPI
from .support import DaemonProcess, WebhookReceiver, run_watcher, sql, wait_until
from .test_bot import ADMIN, LISTED, USER, fake, make_env  # noqa: F401  (fixtures)
from .test_database import plans

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OTHER = 222
THIRD = 333

# ---------------------------------------------------------------------- pure evaluation


def product(price: str | None, pid: str = "p1") -> Product:
    return Product(
        pid, title="Gummies", currency="USD", price=None if price is None else Decimal(price)
    )


def price_change(old: str | None, new: str | None, pid: str = "p1") -> Change:
    return Change(pid, product(old, pid), product(new, pid), frozenset({EventKind.PRICE_CHANGE}))


def track(kind: str, target: str, reference: str | None = None, **kw: object) -> Track:
    return Track(
        id=7,
        channel="tg",
        chat_id=OTHER,
        product_id="p1",
        watch_id="goli",
        kind=kind,
        target=Decimal(target),
        reference=None if reference is None else Decimal(reference),
        **kw,  # type: ignore[arg-type]
    )


def fired(changes: list[Change], tracks: list[Track], now: datetime = T0) -> list[str]:
    return [str(h.product.price) for h in evaluate_tracks(changes, tracks, now)]


def test_below_fires_on_the_crossing_only():
    below = track(BELOW, "19.99")
    assert fired([price_change("24.99", "19.99")], [below]) == ["19.99"]  # <= target
    assert fired([price_change("24.99", "20.00")], [below]) == []
    assert fired([price_change("18.99", "17.99")], [below]) == []  # was below already
    assert fired([price_change(None, "17.99")], [below]) == ["17.99"]  # unknown counts as above
    assert fired([price_change("24.99", None)], [below]) == []
    ranked = Change("p1", product("24.99"), product("18.99"), frozenset({EventKind.RANK_CHANGE}))
    assert fired([ranked], [below]) == []  # only a price event can fire a track
    assert fired([price_change("24.99", "18.99", pid="other")], [below]) == []
    (hit,) = evaluate_tracks([price_change("24.99", "18.99")], [below], T0)
    assert hit.after.alerted_price == Decimal("18.99") and hit.after.alerted_at == T0
    assert hit.previous is not None and hit.previous.price == Decimal("24.99")
    assert hit.track.alert_kind == "price_below" and hit.track.rule_id == "track:7"


def test_drop_measures_from_the_reference_and_then_from_its_last_alert():
    drop = track(DROP, "10", "25.00")
    assert fired([price_change("25.00", "22.51")], [drop]) == []  # 9.96%
    # a slow fall: 23.00 is 8% below the reference, 22.50 is exactly 10%
    (hit,) = evaluate_tracks([price_change("23.00", "22.50")], [drop], T0)
    assert hit.previous is not None and hit.previous.price == Decimal("25.00")  # the reference
    assert hit.after.reference == Decimal("22.50")
    again = hit.after
    later = T0 + timedelta(hours=1)
    assert fired([price_change("22.50", "20.26")], [again], later) == []  # 9.96% of 22.50
    assert fired([price_change("22.50", "20.25")], [again], later) == ["20.25"]  # 10%: again
    assert fired([price_change("25.00", "30.00")], [drop]) == []
    assert fired([price_change("1", "0.5")], [track(DROP, "10", "0")]) == []


def test_a_track_within_its_cooldown_alerts_again_only_at_a_lower_price():
    alerted = track(BELOW, "20", alerted_price=Decimal("18.00"), alerted_at=T0)
    soon = T0 + timedelta(hours=1)
    assert fired([price_change("21.00", "18.00")], [alerted], soon) == []  # equal: dropped
    assert fired([price_change("21.00", "19.00")], [alerted], soon) == []  # worse: dropped
    assert fired([price_change("21.00", "17.99")], [alerted], soon) == ["17.99"]  # better
    late = T0 + timedelta(hours=6)
    assert fired([price_change("21.00", "19.00")], [alerted], late) == ["19.00"]  # cooled


def test_product_ref_reads_ids_and_tiktok_shop_links():
    pid = S.ACV
    assert product_ref(pid) == pid
    assert product_ref(f"{PDP}/{pid}") == pid  # as store cards link it
    assert product_ref(f"{PDP}/goli-acv-gummies/{pid}") == pid  # search cards, with a slug
    assert product_ref(f"https://shop.tiktok.com/view/product/{pid}?region=US&locale=en") == pid
    assert product_ref(f"www.tiktok.com/shop/pdp/{pid}?source=share") == pid
    assert product_ref(f"<{PDP}/{pid}>") == pid
    assert product_ref("https://vm.tiktok.com/ZMabc123/") is None  # a short link: no id in it
    assert product_ref(f"https://evil.example/shop/pdp/{pid}") is None
    assert product_ref(f"https://tiktok.com.evil.example/view/product/{pid}") is None
    assert product_ref("https://www.tiktok.com/@glowwithmia") is None
    assert product_ref("not an id!") is None


def test_parse_target():
    assert parse_target("below", "19.99") == (BELOW, Decimal("19.99"))
    assert parse_target("BELOW", "$19") == (BELOW, Decimal("19"))
    assert parse_target("drop", "10%") == (DROP, Decimal("10"))
    assert parse_target("drop", "12.5") == (DROP, Decimal("12.5"))
    for kind, value in [
        ("below", "0"),
        ("below", "-1"),
        ("below", "NaN"),
        ("below", "1e99"),
        ("below", "cheap"),
        ("drop", "100%"),
        ("drop", "0%"),
        ("above", "5"),
    ]:
        assert parse_target(kind, value) is None, (kind, value)


# ---------------------------------------------------------------------- the store


def test_a_track_removed_after_the_poll_read_it_takes_its_alert_along(db_url):
    store = Store(db_url)
    try:
        store.ensure_watch("goli")
        _, kept = store.set_track("tg", OTHER, "p1", "goli", BELOW, Decimal("20"), None, limit=5)
        _, gone = store.set_track("tg", THIRD, "p1", "goli", BELOW, Decimal("20"), None, limit=5)
        assert kept is not None and gone is not None
        assert store.untrack("tg", THIRD) == 1
        alerts = []
        for t, chat in ((kept, OTHER), (gone, THIRD)):
            alert = Alert(f"a{t.id}", "price_below", "goli", T0, t.rule_id, product("18"))
            after = replace(t, alerted_price=Decimal("18"), alerted_at=T0)
            alerts.append((after, alert, [("tg", str(chat))]))
        write = PollWrite("goli", 0, T0, {}, upserts=[], track_alerts=alerts)
        assert store.commit_poll(write)
        stored = sql(db_url, "SELECT alert_id, rule_id FROM alert")
        assert stored == [(f"a{kept.id}", kept.rule_id)]
        (left,) = store.tracks("tg", OTHER)
        assert left.alerted_price == Decimal("18") and left.alerted_at == T0
    finally:
        store.close()


def test_a_polls_tracks_are_read_through_their_index(db_url):
    store = Store(db_url)
    try:
        for i in range(60):
            store.set_track("tg", i, f"p{i % 20}", f"w{i % 3}", BELOW, Decimal(5), None, limit=9)
        sql(db_url, "ANALYZE" if store.engine.dialect.name == "sqlite" else "ANALYZE track")
        got = plans(store, lambda: store.tracks_for("w1", ["p1", "p2"]))
        assert len(got) == 1 and "ix_track_watch_product" in got[0], got
    finally:
        store.close()


PIPELINE = """\
providers:
  socialfetch: {api_key: sfk, base_url: "@SIM@", requests_per_second: 100}
  keyapi: {api_key: kk, base_url: "@SIM@", requests_per_second: 100}
channels:
  hook: {type: webhook, url: "@HOOK@"}
  tg: {type: telegram, token: "@TOKEN@", base_url: "@TG@", chat_ids: [111]}
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1m, max_pages: 10}
rules:
  - {id: any-drop, when: price_drop, notify: [hook, tg]}
"""


async def test_a_track_alert_goes_through_the_outbox_to_its_chat_alone_and_its_mute(
    tmp_path,
    db_url,
    fake,  # noqa: F811
):
    """ARCHITECTURE.md "Cost per poll": a quiet poll (or one whose changes are not prices)
    reads no track; the poll whose price moved reads them once and stores the track's alert
    beside the rule's, with one delivery: the track's chat, held while that chat is muted."""
    from sqlalchemy import event

    from watcher.config import load_config
    from watcher.runtime import Runtime

    sim = await start_simulator(page_size=50)
    hook = WebhookReceiver()
    await hook.start()
    text = PIPELINE.replace("@SIM@", sim.base_url).replace("@STORE@", S.STORE_URL)
    text = (
        text.replace("@HOOK@", hook.url).replace("@TOKEN@", TOKEN).replace("@TG@", fake.base_url)
    )
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(text)
    rt = Runtime(load_config(cfg), db_url)
    reads: list[str] = []

    def grab(_conn, _cursor, statement, *_args):
        if " track" in statement and statement.lstrip().upper().startswith("SELECT"):
            reads.append(statement)

    event.listen(rt.store.engine, "before_cursor_execute", grab)
    try:
        await rt.poll_all()  # baseline
        rt.store.set_track("tg", OTHER, S.ACV, "goli-store", BELOW, Decimal(18), None, limit=5)
        rt.store.set_mute("tg", OTHER, datetime.now(UTC) + timedelta(hours=1))
        reads.clear()
        store = sim.world.stores[S.STORE_URL]
        await rt.poll_all()  # quiet
        store.move(S.ACV, 1)  # ranks move, prices do not
        (outcome,) = await rt.poll_all()
        assert outcome.status == "ok" and reads == []
        store.product(S.ACV).reprice("16.99")
        (outcome,) = await rt.poll_all()
        assert len(reads) == 1
        assert sorted((a.rule_id, a.kind) for a in outcome.alerts) == [
            ("any-drop", "price_drop"),
            ("track:1", "price_below"),
        ]
        deliveries = {
            a.rule_id: sorted((d.channel, d.target) for d in ds)
            for a, ds in rt.store.recent_alerts(limit=10)
        }
        assert deliveries == {
            "any-drop": [("hook", ""), ("tg", "111")],
            "track:1": [("tg", str(OTHER))],
        }
        await rt.dispatcher.deliver_due()
        assert [a["rule"] for a in hook.alerts()] == ["any-drop"]
        assert len(fake.texts(LISTED)) == 1 and fake.texts(OTHER) == []  # muted: held
        assert sql(db_url, "SELECT held FROM delivery WHERE target = :t", t=str(OTHER)) == [
            (True,)
        ]
        rt.store.set_mute("tg", OTHER, None)  # the mute ends: what it held comes due
        await rt.dispatcher.deliver_due()
        (alert,) = fake.texts(OTHER)
        assert alert.startswith("Price below target: <b>Goli Apple Cider Vinegar")
        assert "$19.99 → $16.99" in alert
        assert len(fake.texts(LISTED)) == 1 and len(hook.alerts()) == 1
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", grab)
        await rt.close()
        await hook.close()
        await sim.close()


def test_a_chat_that_blocks_the_bot_loses_its_tracks_and_a_migrated_one_keeps_them(db_url):
    store = Store(db_url)
    try:
        for chat in (OTHER, THIRD):
            store.set_track("tg", chat, "p1", "goli", BELOW, Decimal(5), None, limit=5)
        store.set_track("tg", THIRD, "p2", "goli", DROP, Decimal(5), Decimal(9), limit=5)
        store.set_track("tg", -1009, "p2", "goli", DROP, Decimal(7), Decimal(9), limit=5)
        store.forget_chat("tg", OTHER)
        assert store.tracks("tg", OTHER) == []
        store.migrate_chat("tg", THIRD, -1009)
        assert store.tracks("tg", THIRD) == []
        moved = {(t.product_id, t.kind, t.target) for t in store.tracks("tg", -1009)}
        assert moved == {("p1", BELOW, Decimal(5)), ("p2", DROP, Decimal(7))}  # its own wins
    finally:
        store.close()


# ---------------------------------------------------------------------- the bot


def snapshot(store: Store, pid: str, price: str | None, title: str = "Gummies <60>") -> None:
    with store.session() as s:
        s.add(
            SnapshotRow(
                watch_id="goli-store",
                product_id=pid,
                title=title,
                url=f"{PDP}/{pid}",
                currency="USD",
                price=price,
            )
        )
        s.commit()


async def test_track_answers_and_tracks_lists_with_the_price_now(make_env):  # noqa: F811
    env = await make_env()
    snapshot(env.store, "1729", "24.99")
    snapshot(env.store, "1730", "9.99", title="Clog")
    reply = await env.ask(USER, USER, "/track 1729 below 19.99")
    assert "Tracking <b>Gummies &lt;60&gt;</b> (<code>1729</code>, watch goli-store)" in reply.text
    assert "Now: $24.99." in reply.text
    assert "alerted when it drops to $19.99 or less" in reply.text
    reply = await env.ask(USER, USER, f"/track {PDP}/clog-slug/1730 below 12")
    assert "It is already at or below $12.00" in reply.text  # fires at the next crossing
    reply = await env.ask(USER, USER, "/track 1729 drop 10%")
    assert "falls 10% or more below $24.99 (to $22.49 or less)" in reply.text
    reply = await env.ask(USER, USER, "/track 1729 below 18")
    assert reply.text.startswith("Changed this chat's target on <b>Gummies")
    reply = await env.ask(USER, USER, "/tracks")
    assert reply.text.splitlines() == [
        "<b>Price targets</b> (3 of 50)",
        "• <b>Clog</b> (<code>1730</code>) now $9.99 — below $12.00",
        "• <b>Gummies &lt;60&gt;</b> (<code>1729</code>) now $24.99 — drop 10% from $24.99",
        "• <b>Gummies &lt;60&gt;</b> (<code>1729</code>) now $24.99 — below $18.00",
    ]
    assert await env.ask(LISTED, USER, "/tracks") != reply  # per chat
    assert "tracks no product" in (await env.ask(LISTED, USER, "/tracks")).text
    reply = await env.ask(USER, USER, "/untrack 1729")
    assert reply.text == "Stopped tracking product 1729."
    reply = await env.ask(USER, USER, "/untrack 1729")
    assert reply.text.startswith("This chat does not track product 1729.")
    reply = await env.ask(USER, USER, "/untrack all")
    assert reply.text == "Removed 1 price target."
    assert env.store.tracks("deals", USER) == []
    reply = await env.ask(USER, USER, "/untrack all")
    assert reply.text == "This chat had no price targets."


async def test_a_product_no_watch_covers_names_the_watches(make_env):  # noqa: F811
    env = await make_env()
    reply = await env.ask(USER, USER, "/track 4242 below 10")
    assert reply.text.startswith("No watch covers product 4242, so it cannot be tracked")
    assert "Watches: goli-store, crocs-search" in reply.text
    assert env.store.tracks("deals", USER) == []
    snapshot(env.store, "4243", None)
    reply = await env.ask(USER, USER, "/track 4243 drop 5%")
    assert reply.text == "Product 4243 has no price to track right now."


@pytest.mark.parametrize(
    "text",
    [
        "/track",
        "/track 1729",
        "/track 1729 below",
        "/track 1729 above 5",
        "/track 1729 drop 150%",
        "/track https://vm.tiktok.com/ZMabc/ below 5",
        "/untrack",
        "/untrack https://example.com/x",
    ],
)
async def test_bad_track_arguments_get_the_usage_line(make_env, text):  # noqa: F811
    env = await make_env()
    snapshot(env.store, "1729", "24.99")
    reply = await env.ask(USER, USER, text)
    assert reply.text.startswith(("Usage: /track", "Usage: /untrack")), reply.text
    assert env.store.tracks("deals", USER) == []


async def test_at_most_max_tracks_per_chat(make_env):  # noqa: F811
    env = await make_env(max_tracks_per_chat=2)
    for pid in ("1", "2", "3"):
        snapshot(env.store, pid, "10.00")
    await env.ask(USER, USER, "/track 1 below 9")
    await env.ask(USER, USER, "/track 2 drop 5%")
    reply = await env.ask(USER, USER, "/track 3 below 9")
    assert reply.text == (
        "This chat has 2 price targets, the most it may have (max_tracks_per_chat). "
        "/untrack one first; /tracks lists them."
    )
    reply = await env.ask(USER, USER, "/track 1 below 8")  # changing one is no new one
    assert reply.text.startswith("Changed this chat's target")
    reply = await env.ask(GROUP_B, USER, "/track 3 below 9")  # the limit is per chat
    assert reply.text.startswith("Tracking")
    assert [t.product_id for t in env.store.tracks("deals", USER)] == ["2", "1"]


GROUP_B = -100555


async def test_allow_subscribe_false_refuses_other_chats(make_env):  # noqa: F811
    env = await make_env(allow_subscribe=False)
    snapshot(env.store, "1729", "24.99")
    reply = await env.ask(USER, USER, "/track 1729 below 19")
    assert reply.text == "Sorry, this bot does not take price targets from this chat."
    assert env.store.tracks("deals", USER) == []
    reply = await env.ask(LISTED, USER, "/track 1729 below 19")  # a chat of chat_ids may
    assert reply.text.startswith("Tracking")
    reply = await env.ask(ADMIN, ADMIN, "/track 1729 below 19")  # and an admin
    assert reply.text.startswith("Tracking")
    assert [t.chat_id for t in env.store.tracks("deals", USER)] == []


# ---------------------------------------------------------------------- watcher run

CONFIG = """\
providers:
  socialfetch: {api_key: sfk, base_url: "${SIM_URL}", requests_per_second: 100}
  keyapi: {api_key: kk, base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  hook: {type: webhook, url: "${HOOK_URL}"}
  tg:
    type: telegram
    token: "${TG_TOKEN}"
    base_url: "${TG_URL}"
    chat_ids: [111]
    admins: [9001]
    max_tracks_per_chat: 2
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1s, max_pages: 10}
  - {id: crocs-search, type: search, query: "@QUERY@", every: 1s}
rules:
  - {id: big-drop, when: price_drop, min_percent: 50, notify: [hook, tg]}
""".replace("@STORE@", S.STORE_URL).replace("@QUERY@", S.QUERY)


@pytest.fixture
async def world(tmp_path: Path, db_url: str):
    sim = await start_simulator(page_size=50)  # one page: a poll sees a change whole
    hook = WebhookReceiver()
    await hook.start()
    bot = FakeBotAPI()
    tg_url = await bot.start()
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(CONFIG)
    env = {"SIM_URL": sim.base_url, "HOOK_URL": hook.url, "TG_TOKEN": TOKEN, "TG_URL": tg_url}
    args = ["-c", str(cfg), "--db", db_url]
    started: list[DaemonProcess] = []

    def daemon() -> DaemonProcess:
        started.append(DaemonProcess(*args, env=env))
        return started[-1]

    yield sim, hook, bot, daemon, args
    for d in started:
        await d.kill()
    await bot.close()
    await hook.close()
    await sim.close()


async def ask(bot: FakeBotAPI, chat: int, text: str, transcript: list[str]) -> str:
    before = len(bot.texts(chat))
    bot.command(chat, chat, text)
    reply = (await bot.wait_reply(chat, before + 1, timeout=20)).body  # a busy machine
    transcript += [f"[chat {chat}] > {text}", f"[chat {chat}] < {reply}"]
    return reply


async def test_tracks_alert_their_own_chat_once_across_a_restart(world, db_url):
    sim, hook, bot, daemon, _args = world
    acv = sim.world.stores[S.STORE_URL].product(S.ACV)
    clog = sim.world.searches[S.QUERY].product(S.CLASSIC_CLOG)
    talk: list[str] = []
    d = await daemon().start()
    await d.wait_log("event=poll watch=goli-store status=baseline")
    await d.wait_log("event=poll watch=crocs-search status=baseline")
    reply = await ask(bot, OTHER, "/start", talk)
    assert f"This chat's id: <code>{OTHER}</code>" in reply
    reply = await ask(bot, OTHER, "/track 4242 below 5", talk)
    assert "No watch covers product 4242" in reply and "goli-store, crocs-search" in reply
    reply = await ask(bot, OTHER, f"/track {S.ACV} below 18", talk)
    assert "Tracking <b>Goli Apple Cider Vinegar Gummy" in reply and "watch goli-store" in reply
    assert "Now: $19.99." in reply and "drops to $18.00 or less" in reply
    ((clog_url,),) = sql(
        db_url, "SELECT url FROM snapshot WHERE product_id = :p", p=S.CLASSIC_CLOG
    )
    assert clog_url.startswith(f"{PDP}/") and clog_url.endswith(f"/{S.CLASSIC_CLOG}")
    reply = await ask(bot, THIRD, f"/track {clog_url} drop 10%", talk)
    assert "Tracking <b>Crocs Unisex-Adult Classic Clogs" in reply and "crocs-search" in reply
    assert "falls 10% or more below $44.99 (to $40.49 or less)" in reply
    reply = await ask(bot, OTHER, f"/track {S.MATCHA} below 5", talk)
    assert reply.startswith("Tracking <b>Goli Matcha")
    reply = await ask(bot, OTHER, f"/track {PDP}/{S.ASHWAGANDHA} below 5", talk)
    assert "This chat has 2 price targets, the most it may have" in reply  # the YAML's 2
    reply = await ask(bot, OTHER, "/tracks", talk)
    assert f"(<code>{S.ACV}</code>) now $19.99 — below $18.00" in reply
    assert f"(<code>{S.MATCHA}</code>) now $12.99 — below $5.00" in reply
    assert (await d.stop())[0] == 0, d.log()

    d = await daemon().start()  # the tracks are in the database, not in the process
    await d.wait_log("event=poll watch=goli-store status=ok")
    await d.wait_log("event=poll watch=crocs-search status=ok")
    replies = {chat: len(bot.texts(chat)) for chat in (OTHER, THIRD)}
    acv.reprice("16.99")
    clog.reprice("39.99")  # 11.1% below 44.99
    await wait_until(lambda: len(bot.texts(OTHER)) > replies[OTHER], what="the ACV alert")
    await wait_until(lambda: len(bot.texts(THIRD)) > replies[THIRD], what="the clog alert")
    (acv_alert,) = bot.texts(OTHER)[replies[OTHER] :]
    assert acv_alert.startswith("Price below target: <b>Goli Apple Cider Vinegar Gummy")
    assert "$19.99 → $16.99" in acv_alert
    talk.append(f"[chat {OTHER}] alert: {acv_alert}")
    (clog_alert,) = bot.texts(THIRD)[replies[THIRD] :]
    assert clog_alert.startswith("Price drop: <b>Crocs Unisex-Adult Classic Clogs")
    assert "$44.99 → $39.99 (-11%)" in clog_alert
    talk.append(f"[chat {THIRD}] alert: {clog_alert}")
    await d.wait_log("event=sent", count=2)

    clog.reprice("35.99")  # 10.0% below the last alert's 39.99: again
    await wait_until(lambda: len(bot.texts(THIRD)) > replies[THIRD] + 1, what="a 2nd drop")
    second = bot.texts(THIRD)[-1]
    assert "$39.99 → $35.99 (-10%)" in second
    talk.append(f"[chat {THIRD}] alert: {second}")
    reply = await ask(bot, OTHER, f"/untrack {S.MATCHA}", talk)
    assert reply == f"Stopped tracking product {S.MATCHA}."
    reply = await ask(bot, OTHER, "/tracks", talk)
    assert "(1 of 2)" in reply and "now $16.99 — below $18.00" in reply
    assert (await d.stop())[0] == 0, d.log()

    # that one chat alone: not the listed chat, not the webhook, nothing twice
    assert bot.texts(LISTED) == [] and hook.requests == []
    assert len(bot.texts(OTHER)) == replies[OTHER] + 3  # the alert, then two replies
    result = await run_watcher("alerts", "--db", db_url)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    talk += ["$ watcher alerts", *lines]
    assert len(lines) == 3, lines
    assert sum(f"[price_below] track:1 goli-store {S.ACV} → tg:{OTHER}=sent" in x for x in lines)
    assert (
        sum(
            f"[price_drop] track:2 crocs-search {S.CLASSIC_CLOG} → tg:{THIRD}=sent" in x
            for x in lines
        )
        == 2
    )
    if os.environ.get("WATCHER_PRINT_TRANSCRIPT"):
        print("\n".join(talk))
