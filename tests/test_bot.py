"""BotService over real sockets: the fake Bot API, python-telegram-bot, a temp SQLite Store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from watcher.bot import BotService, WatchStatus, parse_duration, usage
from watcher.channels.telegram import TelegramChannel
from watcher.config import ChannelConfig, Config, ProviderConfig, RuleConfig, WatchConfig
from watcher.store import HistoryRow, SnapshotRow, Store

from .fakebot import TOKEN, FakeBotAPI, Sent

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ADMIN = 9001
USER = 5005  # a private chat: chat id == user id
LISTED = 111  # in chat_ids
GROUP = -100777
SUPERGROUP = -1001234567890  # a real supergroup id: needs 64 bits


def make_config(base_url: str, **telegram: object) -> Config:
    settings: dict[str, object] = {
        "token": TOKEN,
        "base_url": base_url,
        "chat_ids": (LISTED,),
        "admins": (ADMIN,),
        **telegram,
    }
    return Config(
        path="test.yaml",
        providers={
            "socialfetch": ProviderConfig("socialfetch", "k", "http://127.0.0.1:9"),
            "keyapi": ProviderConfig("keyapi", "k", "http://127.0.0.1:9"),
        },
        channels={
            "deals": ChannelConfig(id="deals", type="telegram", **settings),  # type: ignore[arg-type]
            "hooks": ChannelConfig(id="hooks", type="webhook", url="http://127.0.0.1:9/h"),
        },
        watches={
            "goli-store": WatchConfig(
                id="goli-store",
                type="store",
                url="https://www.tiktok.com/shop/store/goli/1",
                region="US",
                every=timedelta(minutes=15),
            ),
            "crocs-search": WatchConfig(
                id="crocs-search", type="search", query="crocs <clogs>", cron="*/30 * * * *"
            ),
        },
        rules={
            "price-drop-10": RuleConfig(
                id="price-drop-10",
                when="price_drop",
                notify=("deals",),
                params={"min_percent": Decimal(10)},
                watches=("goli-store",),
            ),
            "climbers": RuleConfig(
                id="climbers",
                when="rank_jump",
                notify=("hooks",),
                params={"min_positions": 5, "top": 10},
            ),
        },
    )


class Env:
    """One fake Bot API, one Store, and the BotService under test (restartable)."""

    def __init__(self, fake: FakeBotAPI, db: str, config: Config) -> None:
        self.fake = fake
        self.db = db
        self.config = config
        self.store = Store(db)
        self.service: BotService | None = None
        self.channel: TelegramChannel | None = None
        self.statuses: list[WatchStatus] | None = None

    async def start(self) -> BotService:
        self.channel = TelegramChannel(self.config.channels["deals"])
        self.service = BotService(
            self.config,
            self.store,
            self.channel,
            status=(lambda: self.statuses or []) if self.statuses is not None else None,
            clock=lambda: NOW,
            poll_timeout=1,
        )
        await self.service.start()
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.channel is not None:
            await self.channel.close()

    async def ask(self, chat: int, user: int, text: str) -> Sent:
        """Send a command as ``user`` in ``chat`` and return the bot's reply."""
        before = len(self.fake.texts(chat))
        self.fake.command(chat, user, text)
        return await self.fake.wait_reply(chat, before + 1)


@pytest.fixture
async def fake():
    f = FakeBotAPI()
    await f.start()
    yield f
    await f.close()
    assert f.conflicts == 0, "two getUpdates were held open at once"


@pytest.fixture
async def make_env(fake, tmp_path, db_url):
    envs: list[Env] = []

    async def make(**telegram: object) -> Env:
        env = Env(fake, db_url, make_config(fake.base_url, **telegram))
        envs.append(env)
        await env.start()
        return env

    yield make
    for env in envs:
        await env.stop()
        env.store.close()


@pytest.fixture
async def env(make_env):
    return await make_env()


def subs(env: Env, chat: int) -> list[tuple[str, str]]:
    return [(s.scope, s.name) for s in env.store.subscriptions("deals", chat)]


async def test_start_sets_commands_and_help_lists_them(env, fake):
    reply = await env.ask(USER, USER, "/start")
    assert "/subscribe &lt;rule|watch|all&gt;" in reply.text
    assert "/status" not in reply.text
    assert reply.parse_mode == "HTML"
    names = [c["command"] for c in fake.commands_set[0]["commands"]]
    assert names[:3] == ["start", "help", "watches"] and "status" not in names
    admin_scoped = [c for c in fake.commands_set if "scope" in c]
    assert admin_scoped and "status" in json.dumps(admin_scoped[0]["commands"])
    reply = await env.ask(ADMIN, ADMIN, "/help")
    assert "/status" in reply.text


async def test_start_and_help_tell_the_chat_its_id_and_the_user_theirs(env):
    """What an operator needs for ``chat_ids`` and ``admins``."""
    reply = await env.ask(SUPERGROUP, USER, "/start")
    assert reply.text.splitlines()[-1] == (
        f"This chat's id: <code>{SUPERGROUP}</code> (for <code>chat_ids</code>); "
        f"your user id: <code>{USER}</code> (for <code>admins</code>)."
    )
    reply = await env.ask(USER, USER, "/help")
    assert f"This chat's id: <code>{USER}</code>" in reply.text
    assert "/track &lt;product id|link&gt; below &lt;price&gt; | drop &lt;N&gt;%" in reply.text


async def test_watches_and_rules(env):
    reply = await env.ask(USER, USER, "/watches")
    assert "goli-store" in reply.text and "every 15m" in reply.text
    assert "crocs &lt;clogs&gt;" in reply.text and "cron */30 * * * *" in reply.text
    reply = await env.ask(USER, USER, "/rules")
    assert "price-drop-10" in reply.text and "min_percent=10" in reply.text
    assert "climbers" in reply.text and "(not sent by this bot)" in reply.text


async def test_subscribe_unsubscribe_and_mysubs(env):
    reply = await env.ask(USER, USER, "/subscribe price-drop-10")
    assert "Subscribed this chat to rule price-drop-10" in reply.text
    assert subs(env, USER) == [("rule", "price-drop-10")]
    reply = await env.ask(USER, USER, "/subscribe price-drop-10")
    assert "already" in reply.text
    await env.ask(USER, USER, "/subscribe goli-store")
    await env.ask(USER, USER, "/subscribe all")
    assert sorted(subs(env, USER)) == [
        ("all", ""),
        ("rule", "price-drop-10"),
        ("watch", "goli-store"),
    ]
    reply = await env.ask(USER, USER, "/mysubs")
    assert "rule price-drop-10" in reply.text and "watch goli-store" in reply.text
    assert "every alert" in reply.text
    reply = await env.ask(USER, USER, "/unsubscribe goli-store")
    assert "Unsubscribed from watch goli-store" in reply.text
    reply = await env.ask(USER, USER, "/unsubscribe goli-store")
    assert "was not subscribed" in reply.text
    reply = await env.ask(USER, USER, "/unsubscribe all")
    assert "Removed 2 subscriptions" in reply.text
    assert subs(env, USER) == []
    reply = await env.ask(USER, USER, "/mysubs")
    assert "No subscriptions" in reply.text


async def test_subscribe_warns_when_rule_does_not_reach_this_channel(env):
    reply = await env.ask(USER, USER, "/subscribe climbers")
    assert "Subscribed" in reply.text and "no rule for rule climbers sends alerts" in reply.text
    reply = await env.ask(USER, USER, "/subscribe crocs-search")  # only 'climbers' covers it
    assert "Note:" in reply.text
    reply = await env.ask(USER, USER, "/subscribe goli-store")
    assert "Note:" not in reply.text


async def test_unknown_name_and_missing_argument_give_usage(env):
    reply = await env.ask(USER, USER, "/subscribe nope<b>")
    assert reply.text.startswith("Unknown name 'nope&lt;b&gt;'")
    assert "Rules: price-drop-10, climbers" in reply.text
    assert "Watches: goli-store, crocs-search" in reply.text
    assert "\n" not in reply.text
    reply = await env.ask(USER, USER, "/subscribe")
    assert reply.text.startswith("Usage: /subscribe")
    assert subs(env, USER) == []


async def test_listed_chat_needs_no_subscription(env):
    reply = await env.ask(LISTED, USER, "/subscribe all")
    assert "already receives every alert" in reply.text
    assert subs(env, LISTED) == []


async def test_allow_subscribe_false_refuses_politely(make_env):
    env = await make_env(allow_subscribe=False)
    reply = await env.ask(USER, USER, "/subscribe price-drop-10")
    assert reply.text.startswith("Sorry, this bot does not take subscriptions")
    assert subs(env, USER) == []


async def test_mute_and_mute_off(env):
    reply = await env.ask(GROUP, USER, "/mute 2h")
    assert "Muted until 2026-11-24 12:00 UTC" in reply.text
    assert env.store.mutes("deals")[("deals", GROUP)] == NOW + timedelta(hours=2)
    reply = await env.ask(GROUP, USER, "/mysubs")
    assert "Muted until 2026-11-24 12:00 UTC" in reply.text
    reply = await env.ask(GROUP, USER, "/mute off")
    assert "Mute ended" in reply.text
    assert ("deals", GROUP) not in env.store.mutes("deals")


@pytest.mark.parametrize("arg", ["banana", "0m", "2", "1.5h", "400d", ""])
async def test_mute_bad_argument_gives_usage(env, arg):
    reply = await env.ask(USER, USER, f"/mute {arg}".strip())
    assert reply.text.startswith("Usage: /mute")
    assert env.store.mutes("deals") == {}


def test_parse_duration():
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("2H") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("0s") is None
    assert parse_duration("-1h") is None
    assert parse_duration("1w") is None


def add_history(store: Store, product_id: str, prices: list[str | None]) -> None:
    with store.session() as s:
        s.add(
            SnapshotRow(
                watch_id="goli-store",
                product_id=product_id,
                title="Gummies <best>",
                currency="USD",
                price=prices[-1],
            )
        )
        for i, price in enumerate(prices):
            s.add(
                HistoryRow(
                    watch_id="goli-store",
                    product_id=product_id,
                    seq=i + 1,
                    at=NOW + timedelta(hours=i),
                    price=price,
                    present=True,
                )
            )
        s.commit()


async def test_history_sends_a_png_chart(env, fake):
    """The chart arrives once, as a photo with the product's title, currency and marks (read
    back from the PNG's text), and a caption that says now / lowest / highest."""
    import io

    from PIL import Image

    add_history(env.store, "1729", ["19.99", "17.50", None, "14.96"])
    before = len(fake.texts(USER))
    fake.command(USER, USER, "/history 1729")
    reply = await fake.wait_reply(USER, before + 1)
    assert reply.method == "sendPhoto"
    assert isinstance(reply.photo, bytes) and reply.photo.startswith(b"\x89PNG\r\n\x1a\n")
    assert reply.text.splitlines() == [
        "Gummies &lt;best&gt;",
        "now $14.96 · lowest $14.96 · highest $19.99",
        "4 changes, 2026-11-24 10:00 – 2026-11-24 13:00 UTC",
    ]
    with Image.open(io.BytesIO(reply.photo)) as image:
        assert image.size == (1200, 675)
        text = dict(image.text)  # type: ignore[attr-defined]
    assert text["Title"] == "Gummies <best>"
    assert text["Currency"] == "USD"
    assert text["Lowest"] == "14.96 2026-11-24T13:00:00Z"
    assert text["Highest"] == "19.99 2026-11-24T10:00:00Z"
    assert len(fake.sent_to(USER, "sendPhoto")) == 1
    assert fake.sent_to(USER, "sendChatAction")


async def test_history_without_rows_is_text(env):
    reply = await env.ask(USER, USER, "/history 999")
    assert reply.method == "sendMessage"
    assert reply.text == "No history for product 999."
    reply = await env.ask(USER, USER, "/history")
    assert reply.text.startswith("Usage: /history")


async def test_status_for_admin_only(env):
    env.store.add_credits("socialfetch", NOW.date(), 42, 3)
    env.store.update_watch_state(
        "goli-store", last_poll_at=NOW, last_error="HTTP 500 <oops>", products=7
    )
    reply = await env.ask(USER, USER, "/status")
    assert reply.text == "Sorry, /status is for this bot's admins."
    reply = await env.ask(ADMIN, ADMIN, "/status")
    assert "goli-store" in reply.text and "7 products" in reply.text
    assert "last poll 2026-11-24 10:00 UTC" in reply.text
    assert "error: HTTP 500 &lt;oops&gt;" in reply.text
    assert "socialfetch 42" in reply.text and "keyapi 0" in reply.text
    assert "0 pending, 0 dead" in reply.text


async def test_status_uses_the_scheduler_view(fake, tmp_path, db_url):
    env = Env(fake, db_url, make_config(fake.base_url))
    env.statuses = [WatchStatus("goli-store", NOW, NOW + timedelta(minutes=15), None, 12)]
    await env.start()
    try:
        reply = await env.ask(ADMIN, ADMIN, "/status")
        assert "next 2026-11-24 10:15 UTC" in reply.text and "12 products, ok" in reply.text
    finally:
        await env.stop()
        env.store.close()


async def test_status_shows_the_instances_and_the_next_polls_without_a_scheduler(
    env, db_url, db_backend
):
    """No ``status`` callback: the report alone, from the store and the config."""
    import os
    import socket

    from watcher.bot.format import when
    from watcher.triggers import trigger_for

    env.store.register_instance(NOW - timedelta(hours=1), command="run")
    env.store.heartbeat(NOW - timedelta(seconds=5))
    env.store.set_serves_bot(True)
    other = Store(db_url)
    other.register_instance(NOW - timedelta(hours=2), command="once")  # silent since: gone
    other.close()
    last = NOW - timedelta(minutes=2)
    env.store.update_watch_state("goli-store", last_poll_at=last, products=3)
    reply = await env.ask(ADMIN, ADMIN, "/status")
    mode = "cluster on PostgreSQL" if db_backend == "postgresql" else "single host"
    assert f"<b>Instances</b> ({mode}, 1 alive)" in reply.text
    assert (
        f"• <code>{socket.gethostname()}</code> pid {os.getpid()} run: alive, serves the bot, "
        "heartbeat 5s ago"
    ) in reply.text
    assert "once: gone, heartbeat 2h ago" in reply.text
    if db_backend == "sqlite":  # the living daemon's grid after the last poll
        goli = env.config.watches["goli-store"]
        nxt = trigger_for(goli).get_next_fire_time(last, NOW)
        assert f"last poll {when(last)}, next {when(nxt)}, 3 products" in reply.text
        # never polled by the daemon, which polls every watch when it starts: due since then
        assert f"next {when(NOW - timedelta(hours=1))}, 0 products" in reply.text
    else:  # nothing in the job queue: nothing will poll them
        assert "next —, 3 products" in reply.text and "next —, 0 products" in reply.text


async def test_unknown_command_gives_usage_line(env):
    reply = await env.ask(USER, USER, "/frobnicate now")
    assert reply.text.startswith("Unknown command /frobnicate. Commands: /start /help")
    assert "\n" not in reply.text


async def test_commands_for_another_bot_are_ignored(env, fake):
    fake.command(GROUP, USER, "/frobnicate@other_bot")
    reply = await env.ask(GROUP, USER, "/subscribe@watcher_test_bot all")
    assert "Subscribed" in reply.text
    assert len(fake.texts(GROUP)) == 1


async def test_a_supergroup_with_a_64_bit_id_subscribes_and_mutes(env):
    reply = await env.ask(SUPERGROUP, USER, "/subscribe price-drop-10")
    assert "Subscribed this chat to rule price-drop-10" in reply.text
    assert subs(env, SUPERGROUP) == [("rule", "price-drop-10")]
    assert env.store.subscribers("deals", "price-drop-10", "goli-store") == [SUPERGROUP]
    reply = await env.ask(SUPERGROUP, USER, "/mute 1h")
    assert "Muted until" in reply.text
    assert env.store.mutes("deals")[("deals", SUPERGROUP)] == NOW + timedelta(hours=1)
    reply = await env.ask(SUPERGROUP, USER, "/mysubs")
    assert "rule price-drop-10" in reply.text


async def test_subscriptions_survive_a_restart(make_env):
    env = await make_env()
    await env.ask(USER, USER, "/subscribe price-drop-10")
    await env.stop()
    env.store.close()
    again = await make_env()
    reply = await again.ask(USER, USER, "/mysubs")
    assert "rule price-drop-10" in reply.text
    assert again.store.subscribers("deals", "price-drop-10", "goli-store") == [USER]


async def test_stop_is_safe_after_failed_start(fake, tmp_path, db_url):
    from watcher.bot import BotStartError

    config = make_config(fake.base_url, token="999:WRONG")
    store = Store(db_url)
    channel = TelegramChannel(config.channels["deals"])
    service = BotService(config, store, channel, poll_timeout=1)
    with pytest.raises(BotStartError) as e:
        await service.start()
    assert "WRONG" not in str(e.value)
    await service.stop()
    await service.stop()
    await channel.close()
    store.close()


async def test_bot_removed_from_group_forgets_it(env, fake):
    await env.ask(GROUP, USER, "/subscribe all")
    fake.queue_update(
        {
            "my_chat_member": {
                "chat": {"id": GROUP, "type": "supergroup", "title": "G"},
                "from": {"id": USER, "is_bot": False, "first_name": "U"},
                "date": int(NOW.timestamp()),
                "old_chat_member": {"status": "member", "user": _bot_user()},
                "new_chat_member": {
                    "status": "kicked",
                    "user": _bot_user(),
                    "until_date": 0,
                },
            }
        }
    )
    reply = await env.ask(USER, USER, "/mysubs")  # updates are handled in order
    assert reply and subs(env, GROUP) == []


def _bot_user() -> dict[str, object]:
    return {"id": 123456, "is_bot": True, "first_name": "Watcher", "username": "watcher_test_bot"}


def test_usage_lines():
    assert (
        usage("mute")
        == "Usage: /mute <30m|2h|1d|off> — hold alerts for a while, then get one digest"
    )
    assert usage("nope").startswith("Unknown command /nope.")


async def test_a_failing_command_answers_instead_of_crashing(env, monkeypatch, caplog):
    async def broken(record):
        raise ValueError("chart exploded")

    monkeypatch.setattr("watcher.chart.render_history_chart_async", broken)
    add_history(env.store, "1729", ["19.99"])
    reply = await env.ask(USER, USER, "/history 1729")
    assert reply.text == "Sorry, that did not work. Try again later, or /help."
    assert "chart exploded" in caplog.text
    reply = await env.ask(USER, USER, "/mysubs")  # still answering
    assert "No subscriptions" in reply.text


def test_replies_are_plain_text_functions_without_a_bot():
    """The reply text is pure (``watcher.bot.format``): names escaped, the clock passed in."""
    from watcher.bot import format as fmt

    config = make_config("http://127.0.0.1:9")
    settings = config.channels["deals"]
    assert "/status" in fmt.help_text(settings, ADMIN, admin=True)
    assert "/status" not in fmt.help_text(settings, USER, admin=False)
    assert fmt.chat_state(settings, LISTED).startswith("This chat already receives")
    assert "crocs &lt;clogs&gt;" in fmt.watches_text(config.watches.values())
    text = fmt.status_text(
        NOW,
        [WatchStatus("a<b", NOW, None, "x" * 300, 3)],
        {"socialfetch": 5},
        {"pending": 2},
        NOW.date(),
    )
    assert "<code>a&lt;b</code> last poll 2026-11-24 10:00 UTC, next —, 3 products" in text
    assert "error: " + "x" * 200 + "\n" in text  # long errors are cut at 200 characters
    assert "socialfetch 5" in text and "2 pending, 0 dead" in text
    assert fmt.names(str(i) for i in range(14)).endswith(", 11, … (+2)")


async def test_an_update_another_leader_took_is_not_answered_again(fake, db_url):
    """After a failover Telegram hands the new leader what the old one never confirmed: the
    update it already answered (claimed in the Store) gets no second reply."""
    env = Env(fake, db_url, make_config(fake.base_url))
    try:
        taken = fake.command(LISTED, USER, "/watches")  # answered by the leader that died
        assert env.store.claim_update("deals", taken["update_id"])
        fresh = fake.command(USER, USER, "/rules")
        await env.start()
        reply = await fake.wait_reply(USER)  # updates are handled in order: taken came first
        assert "price-drop-10" in reply.text
        assert fake.texts(LISTED) == []
        assert not env.store.claim_update("deals", fresh["update_id"])  # this leader took it
    finally:
        await env.stop()
        env.store.close()


async def test_an_update_is_dropped_when_the_store_cannot_say(env, fake, monkeypatch, caplog):
    """Cut off from the database, an instance cannot know whether another answered: no
    reply (the user asks again), a warning, and the bot keeps answering afterwards."""
    from sqlalchemy.exc import OperationalError

    real = env.store.claim_update
    calls = []

    def unreachable(channel, update_id, now=None):
        calls.append(update_id)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return real(channel, update_id, now)

    monkeypatch.setattr(env.store, "claim_update", unreachable)
    fake.command(LISTED, USER, "/watches")
    reply = await env.ask(USER, USER, "/rules")
    assert "price-drop-10" in reply.text
    assert fake.texts(LISTED) == []
    assert "event=bot_claim_failed channel=deals" in caplog.text
