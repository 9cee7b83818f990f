"""The real TelegramChannel (python-telegram-bot) against the fake Bot API over real sockets."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from watcher import render
from watcher.channels.telegram import (
    CAPTION_LIMIT,
    MESSAGE_LIMIT,
    TelegramChannel,
    plan_messages,
    split_html,
    utf16_len,
)
from watcher.config import ChannelConfig
from watcher.dispatch import Dispatcher
from watcher.errors import ChatGone, ChatMoved, DeliveryError
from watcher.models import Alert, Product
from watcher.simulator import demo as S
from watcher.simulator import start_simulator
from watcher.store import Store

from .fakebot import TOKEN, FakeBotAPI
from .support import WebhookReceiver, run_watcher

CHAT = 4242
GROUP = -100555
NEW_GROUP = -100123

ALERT = Alert(
    alert_id="a1",
    kind="price_drop",
    watch_id="goli-store",
    detected_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    rule_id="price-drop-10",
    product=Product(
        id="1729",
        title="Gummies <script>alert(1)</script> & more",
        url="https://www.tiktok.com/view/product/1729?a=1&b=2",
        image_url="https://img.example.com/1729.jpg",
        currency="USD",
        price=Decimal("14.96"),
        original_price=Decimal("24.99"),
        discount_percent=40,
    ),
    previous=Product(id="1729", price=Decimal("19.99")),
)


def make_alert(i: int, title: str | None = None) -> Alert:
    p = Product(
        id=f"p{i}",
        title=title or f"Product number {i} with a reasonably long descriptive title for the list",
        url=f"https://www.tiktok.com/view/product/{i}",
        currency="USD",
        price=Decimal(100 - i) / 2,
    )
    return Alert(
        alert_id=f"a{i}",
        kind="price_drop",
        watch_id="w",
        detected_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        rule_id="r",
        product=p,
        previous=Product(id=f"p{i}", price=Decimal(100 - i) / 2 + i),
        batch="w:1",
    )


@pytest.fixture
async def fake():
    f = FakeBotAPI()
    await f.start()
    yield f
    await f.close()


@pytest.fixture
def store(tmp_path, db_url):
    s = Store(db_url)
    yield s
    s.close()


def make_channel(fake: FakeBotAPI, timeout: float) -> TelegramChannel:
    return TelegramChannel(
        ChannelConfig(
            id="deals",
            type="telegram",
            token=TOKEN,
            base_url=fake.base_url,
            timeout=timedelta(seconds=timeout),
        )
    )


async def deliver(store: Store, channel: TelegramChannel, chat: int, *alerts: Alert) -> None:
    """Through the outbox, as the daemon does: the dispatcher applies the channel's outcomes
    (a day from now: no mute set by a test holds the delivery)."""
    now = datetime.now(UTC) + timedelta(days=1)
    store.add_alerts([(a, [("deals", str(chat))]) for a in alerts], now)
    dispatcher = Dispatcher(store, {"deals": channel}, clock=lambda: now)
    assert await dispatcher.deliver_due() == len(alerts)


@pytest.fixture
async def channel(fake):
    # per-request timeout: generous, so a loaded CI box never times out a normal answer
    ch = make_channel(fake, timeout=5)
    yield ch
    await ch.close()


async def test_single_alert_is_a_photo_with_escaped_html_caption(fake, channel):
    await channel.send(str(CHAT), [ALERT])
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendPhoto"
    assert sent.photo == ALERT.product.image_url
    assert sent.parse_mode == "HTML"
    assert "<script>" not in sent.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in sent.text
    assert "$19.99 → $14.96" in sent.text
    assert 'href="https://www.tiktok.com/view/product/1729?a=1&amp;b=2"' in sent.text


async def test_no_image_is_a_text_message(fake, channel):
    alert = replace(ALERT, product=replace(ALERT.product, image_url=None))
    await channel.send(str(CHAT), [alert])
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendMessage"
    assert sent.parse_mode == "HTML"
    assert "&lt;script&gt;" in sent.text


async def test_caption_over_1024_is_a_text_message(fake, channel):
    alert = replace(ALERT, product=replace(ALERT.product, title="Very long title " * 80))
    assert utf16_len(render.render_html(alert)) > CAPTION_LIMIT
    await channel.send(str(CHAT), [alert])
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendMessage"
    assert "Very long title" in sent.text


async def test_digest_of_40_uses_fewest_messages_below_4096(fake, channel):
    alerts = [make_alert(i) for i in range(40)]
    await channel.send(str(CHAT), alerts)
    sent = fake.sent_to(CHAT)
    expected = render.split_message(render.render_digest_html(alerts), MESSAGE_LIMIT)
    total = sum(len(s) for s in expected)
    assert len(sent) == len(expected) > 1
    assert len(sent) <= -(-total // MESSAGE_LIMIT) + 1  # near the lower bound
    assert all(s.method == "sendMessage" and len(s.text) < MESSAGE_LIMIT for s in sent)
    body = "\n".join(s.text for s in sent)
    for i in range(40):
        assert f"Product number {i} with" in body
    assert sent[0].text.startswith("<b>40 alerts</b>")
    # best first: the biggest drop (i=39: 30.5 → 69.5 is the largest fraction) leads
    first_item = sent[0].text.split("\n\n")[1]
    assert "Product number 39 with" in first_item
    assert all(s.params.get("link_preview_options") == {"is_disabled": True} for s in sent)


def test_emoji_titles_are_split_by_utf16_length():
    alerts = [make_alert(i, title="🔥" * 300) for i in range(20)]
    parts = split_html(render.render_digest_html(alerts))
    assert all(utf16_len(p) <= MESSAGE_LIMIT for p in parts)


async def test_notice_is_escaped_text(fake, channel):
    notice = Alert(
        alert_id="n1",
        kind="watch_failing",
        watch_id="goli-store",
        detected_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        message="watch goli-store failing: HTTP 500 <html>",
    )
    await channel.send(str(CHAT), [notice])
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendMessage"
    assert sent.text == "watch goli-store failing: HTTP 500 &lt;html&gt;"


async def test_rule_template_text_is_sent_escaped(fake, channel):
    alert = replace(ALERT, message="Deal <b>now</b>: Gummies", product=replace(ALERT.product))
    [msg] = plan_messages([alert])
    assert msg.text == "Deal &lt;b&gt;now&lt;/b&gt;: Gummies"
    default = replace(ALERT, message=render.render_text(ALERT))
    [msg] = plan_messages([default])
    assert msg.text == render.render_html(ALERT)


async def test_retry_after_is_retryable_with_delay(fake, channel):
    fake.fail(CHAT, "retry_after:5")
    with pytest.raises(DeliveryError) as e:
        await channel.send(str(CHAT), [ALERT])
    assert e.value.retryable is True
    assert e.value.retry_after == 5
    assert fake.sent_to(CHAT) == []


async def test_forbidden_forgets_the_chat_and_is_final(fake, channel, store):
    store.subscribe("deals", CHAT, "rule", "price-drop-10")
    store.subscribe("deals", CHAT, "all")
    store.subscribe("deals", 777, "all")
    store.set_mute("deals", CHAT, datetime.now(UTC) + timedelta(hours=1))
    fake.fail(CHAT, "forbidden")
    with pytest.raises(ChatGone) as e:
        await channel.send(str(CHAT), [ALERT])
    assert e.value.retryable is False and e.value.chat_id == CHAT
    assert len(store.subscriptions("deals", CHAT)) == 2  # the channel never writes the store
    fake.fail(CHAT, "forbidden")
    await deliver(store, channel, CHAT, ALERT)
    assert store.delivery_counts() == {"dead": 1}
    assert store.subscriptions("deals", CHAT) == []
    assert ("deals", CHAT) not in store.mutes("deals")
    assert len(store.subscriptions("deals", 777)) == 1


async def test_chat_migrated_resends_to_new_id_and_moves_subscriptions(fake, channel, store):
    store.subscribe("deals", GROUP, "watch", "goli-store")
    fake.fail(GROUP, f"migrate:{NEW_GROUP}")
    with pytest.raises(ChatMoved) as e:
        await channel.send(str(GROUP), [ALERT])
    assert (e.value.old_id, e.value.new_id) == (GROUP, NEW_GROUP)
    fake.fail(GROUP, f"migrate:{NEW_GROUP}")
    await deliver(store, channel, GROUP, ALERT)
    assert store.delivery_counts() == {"sent": 1}
    assert fake.sent_to(GROUP) == []
    [sent] = fake.sent_to(NEW_GROUP)
    assert sent.method == "sendPhoto"
    assert store.subscriptions("deals", GROUP) == []
    assert [(s.scope, s.name) for s in store.subscriptions("deals", NEW_GROUP)] == [
        ("watch", "goli-store")
    ]


async def test_migration_in_the_middle_of_a_digest_sends_the_rest_once(fake, channel, store):
    store.subscribe("deals", GROUP, "watch", "w")
    alerts = [make_alert(i) for i in range(80)]
    texts = [m.text for m in plan_messages(alerts)]
    assert len(texts) >= 3  # a part before the migration and several after it
    real = channel._send_one
    calls: list[int] = []

    async def migrate_after_part_1(chat_id, msg):
        calls.append(chat_id)
        await real(chat_id, msg)
        if len(calls) == 1:  # part 1 arrived; the group becomes a supergroup now
            fake.fail(GROUP, f"migrate:{NEW_GROUP}")

    channel._send_one = migrate_after_part_1
    await deliver(store, channel, GROUP, *alerts)

    # part 2 went to the old id, was refused with the new id, and was sent there instead
    assert calls == [GROUP, GROUP] + [NEW_GROUP] * (len(texts) - 1)
    assert [s.text for s in fake.sent_to(GROUP)] == texts[:1]
    assert [s.text for s in fake.sent_to(NEW_GROUP)] == texts[1:]
    assert [(s.scope, s.name) for s in store.subscriptions("deals", NEW_GROUP)] == [("watch", "w")]
    assert store.subscriptions("deals", GROUP) == []


@pytest.mark.parametrize("mode", ["server_error", "bad_gateway"])
async def test_server_errors_are_retryable(fake, channel, mode):
    fake.fail(CHAT, mode)
    with pytest.raises(DeliveryError) as e:
        await channel.send(str(CHAT), [ALERT])
    assert e.value.retryable is True
    assert e.value.retry_after is None
    assert fake.sent_to(CHAT) == []


async def test_a_timeout_is_retryable(fake, store):
    # the only test that wants a short per-request timeout: the fake answers after 3 s
    channel = make_channel(fake, timeout=1)
    fake.fail(CHAT, "slow:3")
    try:
        with pytest.raises(DeliveryError) as e:
            await channel.send(str(CHAT), [ALERT])
    finally:
        await channel.close()
    assert e.value.retryable is True
    assert e.value.retry_after is None
    assert "TimedOut" in str(e.value)
    assert fake.sent_to(CHAT) == []


async def test_bad_request_on_photo_falls_back_to_text(fake, channel):
    fake.fail(CHAT, "bad_request", methods=["sendPhoto"])
    await channel.send(str(CHAT), [ALERT])
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendMessage"
    assert "&lt;script&gt;" in sent.text
    assert [r.method for r in fake.requests if r.method.startswith("send")] == [
        "sendPhoto",
        "sendMessage",
    ]


async def test_other_bad_request_is_final(fake, channel):
    fake.fail(CHAT, "not_found", methods=["sendMessage"])
    with pytest.raises(DeliveryError) as e:
        await channel.send(str(CHAT), [make_alert(1)])
    assert e.value.retryable is False


async def test_bad_target_is_final(channel):
    with pytest.raises(DeliveryError) as e:
        await channel.send("", [ALERT])
    assert e.value.retryable is False


async def test_token_never_appears_in_logs_or_errors(fake, store, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = TelegramChannel(
        ChannelConfig(
            id="deals", type="telegram", token="999:WRONG-SECRET", base_url=fake.base_url
        )
    )
    with pytest.raises(DeliveryError) as e:
        await wrong.send(str(CHAT), [ALERT])
    await wrong.close()
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]  # the fake's own
    assert "WRONG-SECRET" not in str(e.value)
    assert all("WRONG-SECRET" not in r.getMessage() for r in ours)
    ch = TelegramChannel(
        ChannelConfig(id="deals", type="telegram", token=TOKEN, base_url=fake.base_url)
    )
    await ch.send(str(CHAT), [ALERT])
    await ch.close()
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]
    assert all(TOKEN not in r.getMessage() for r in ours)


async def test_reopens_after_the_shared_bot_was_shut_down(fake, channel):
    await channel.start()
    await channel.bot.shutdown()  # what Application.shutdown() does to the shared bot
    await channel.send(str(CHAT), [ALERT])
    assert len(fake.sent_to(CHAT)) == 1


async def test_outbox_honours_retry_after_then_delivers(fake, channel, store):
    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    clock = [now]
    store.add_alerts([(ALERT, [("deals", str(CHAT))])], now)
    dispatcher = Dispatcher(store, {"deals": channel}, clock=lambda: clock[0])
    fake.fail(CHAT, "retry_after:5")
    assert await dispatcher.deliver_due() == 1
    assert fake.sent_to(CHAT) == []
    assert store.due_deliveries(now + timedelta(seconds=4)) == []
    clock[0] = now + timedelta(seconds=5)
    assert await dispatcher.deliver_due() == 1
    assert [s.method for s in fake.sent_to(CHAT)] == ["sendPhoto"]
    assert store.delivery_counts() == {"sent": 1}


async def test_a_digest_retried_after_a_failed_part_does_not_repeat_earlier_parts(fake, channel):
    from telegram.error import RetryAfter

    alerts = [make_alert(i) for i in range(40)]
    parts = len(plan_messages(alerts))
    assert parts >= 2
    real = channel._send_one
    calls = {"n": 0}

    async def flaky(chat_id, msg):
        calls["n"] += 1
        if calls["n"] == 2:  # part 2 hits Telegram's flood limit
            raise RetryAfter(3)
        await real(chat_id, msg)

    channel._send_one = flaky
    with pytest.raises(DeliveryError) as e:
        await channel.send(str(CHAT), alerts)
    assert e.value.retryable and e.value.retry_after == 3
    assert len(fake.sent_to(CHAT)) == 1
    await channel.send(str(CHAT), alerts)  # the outbox retries the same digest
    texts = [s.text for s in fake.sent_to(CHAT)]
    assert len(texts) == parts  # every part once: part 1 was not sent again
    assert len(set(texts)) == parts


# ------------------------------------------------- one message per product per poll


def reasons_of_one_poll(alert: Alert = ALERT) -> list[Alert]:
    """``alert`` and a lowest_price for its product, as one poll's pipeline makes them."""
    drop = replace(alert, batch="goli-store:7")
    low = replace(drop, alert_id="a2", kind="lowest_price", rule_id="all-time-low")
    return [drop, low]


async def test_two_rules_on_one_product_are_one_photo_listing_both_reasons(fake, channel):
    await channel.send(str(CHAT), reasons_of_one_poll())
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendPhoto" and sent.photo == ALERT.product.image_url
    assert sent.text.startswith("Price drop · Lowest price: <b>Gummies &lt;script&gt;")
    assert sent.text.count("Gummies") == 1
    assert sent.text.count("$19.99 → $14.96") == 1
    assert sent.text.count("Open product") == 1


async def test_one_product_over_the_caption_limit_is_one_text_message(fake, channel):
    # a title that fits a caption for one reason (1,019 characters), not for two (1,034)
    bare = replace(ALERT, product=replace(ALERT.product, title="x"))
    title = "x" * (CAPTION_LIMIT - 5 - utf16_len(render.render_html(bare)))
    long = replace(ALERT, product=replace(ALERT.product, title=title))
    assert [m.photo for m in plan_messages([long])] == [ALERT.product.image_url]
    alerts = reasons_of_one_poll(long)
    assert utf16_len(render.render_product_html(alerts)) > CAPTION_LIMIT
    await channel.send(str(CHAT), alerts)
    [sent] = fake.sent_to(CHAT)
    assert sent.method == "sendMessage"
    assert sent.text.startswith(f"Price drop · Lowest price: <b>{title}</b>")
    assert sent.params.get("link_preview_options") is None  # the preview shows the photo


def test_one_product_beyond_4096_is_split_like_one_alert():
    huge = replace(ALERT, product=replace(ALERT.product, title="Long " * 900))
    parts = plan_messages(reasons_of_one_poll(huge))
    assert len(parts) == 2 and all(p.photo is None for p in parts)
    assert all(utf16_len(p.text) <= MESSAGE_LIMIT for p in parts)
    assert parts[0].text.startswith("Price drop · Lowest price: ")


def test_a_templated_reason_is_its_own_line_of_the_one_message():
    drop, low = reasons_of_one_poll()
    drop = replace(drop, message="Deal <b>now</b>")
    [msg] = plan_messages([drop, low])
    assert msg.text.splitlines()[0] == "Deal &lt;b&gt;now&lt;/b&gt;"
    assert msg.text.splitlines()[1].startswith("Lowest price: <b>Gummies")


async def test_through_the_outbox_one_message_and_each_delivery_marked_sent(fake, channel, store):
    alerts = reasons_of_one_poll()
    await deliver(store, channel, CHAT, *alerts)
    assert [s.method for s in fake.sent_to(CHAT)] == ["sendPhoto"]
    listed = store.recent_alerts()
    assert sorted(a.alert_id for a, _ in listed) == ["a1", "a2"]
    assert all([d.status for d in ds] == ["sent"] for _, ds in listed)


ONCE_CONFIG = """\
providers:
  socialfetch: {api_key: sfk, base_url: "${SIM_URL}", requests_per_second: 100}
channels:
  tg: {type: telegram, token: "${TG_TOKEN}", base_url: "${TG_URL}", chat_ids: [4242]}
  hook: {type: webhook, url: "${HOOK_URL}"}
watches:
  - {id: goli-store, type: store, url: "@STORE@", every: 1m, max_pages: 10}
rules:
  - {id: price-drop-10, when: price_drop, min_percent: 10, notify: [tg, hook]}
  - {id: all-time-low, when: lowest_price, notify: [tg, hook]}
""".replace("@STORE@", S.STORE_URL)


async def test_watcher_once_sends_a_chat_one_message_per_product_and_a_webhook_each_alert(
    fake, tmp_path, db_url
):
    """Step 1 of the simulator: the ACV gummies drop 19.99 → 16.99 (a price drop and a new
    low), the ashwagandha gummies reach a new low: three alerts, two chat messages."""
    sim = await start_simulator()
    hook = WebhookReceiver()
    await hook.start()
    try:
        cfg = tmp_path / "rules.yaml"
        cfg.write_text(ONCE_CONFIG)
        env = {"SIM_URL": sim.base_url, "HOOK_URL": hook.url, "TG_TOKEN": TOKEN}
        env["TG_URL"] = fake.base_url
        args = ("-c", str(cfg), "--db", db_url)
        assert (r := await run_watcher("once", *args, env=env)).code == 0, r.stderr
        sim.step()
        assert (r := await run_watcher("once", *args, env=env)).code == 0, r.stderr
        alerts = await run_watcher("alerts", "--db", db_url, env=env)
    finally:
        await hook.close()
        await sim.close()

    sent = fake.sent_to(CHAT)
    assert len(sent) == 2, [s.text for s in sent]
    acv = [s for s in sent if "Apple Cider Vinegar" in s.body]
    assert len(acv) == 1 and acv[0].method == "sendPhoto"  # the image once
    assert acv[0].body.startswith("Price drop · Lowest price: <b>Goli Apple Cider Vinegar")
    assert acv[0].body.count("$19.99 → $16.99") == 1
    [other] = [s for s in sent if s is not acv[0]]
    assert other.body.startswith("Lowest price: <b>Goli Ashwagandha")

    bodies = hook.alerts()
    assert sorted((b["rule"], b["product"]["id"]) for b in bodies) == sorted(
        [("price-drop-10", S.ACV), ("all-time-low", S.ACV), ("all-time-low", S.ASHWAGANDHA)]
    )
    assert len(hook.accepted) == 3  # one request per alert, no digest
    assert alerts.code == 0, alerts.stderr
    lines = alerts.stdout.strip().splitlines()
    assert len(lines) == 3, alerts.stdout  # each alert listed, with its own deliveries
    # each alert keeps its own id and its own deliveries, the chat's marked sent with the one
    # message that carried it
    assert sorted(ln.split()[2] for ln in lines) == sorted(b["alert_id"][:12] for b in bodies)
    assert all(ln.endswith(("tg:4242=sent, hook=sent", "hook=sent, tg:4242=sent")) for ln in lines)
