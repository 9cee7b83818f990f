"""Telegram commands (spec section 7) on the channel's own bot, in the daemon's event loop.

One ``BotService`` per telegram channel. It builds a ``telegram.ext.Application`` around the
channel's ``ExtBot`` (one rate limiter for alerts and replies) and runs it with
``initialize`` / ``updater.start_polling`` / ``start`` — never ``run_polling``, which wants
to own the loop. Subscriptions and mutes live in the Store, so they survive restarts.

Stop the ``BotService`` before closing its channel: ``Application.shutdown`` also shuts the
shared bot down (the channel reopens it on its next send).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from telegram import BotCommand, BotCommandScopeChat, ChatMember, LinkPreviewOptions, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from . import chart, util
from .channels.telegram import TelegramChannel, split_html
from .config import Config, RuleConfig, WatchConfig
from .errors import WatcherError
from .rules import RULE_KINDS
from .store import Store

log = logging.getLogger("watcher.bot")

COMMANDS: tuple[tuple[str, str, str], ...] = (  # name, arguments, what it does
    ("start", "", "what this bot does"),
    ("help", "", "commands"),
    ("watches", "", "what is watched, and how often"),
    ("rules", "", "the alert rules"),
    ("subscribe", "<rule|watch|all>", "get alerts of a rule, a watch, or everything"),
    ("unsubscribe", "<rule|watch|all>", "stop them (all: every subscription)"),
    ("mysubs", "", "this chat's subscriptions"),
    ("mute", "<30m|2h|1d|off>", "hold alerts for a while, then get one digest"),
    ("history", "<product id>", "price chart of a product"),
)
ADMIN_COMMANDS = (("status", "", "admins: watches, errors, credits, deliveries"),)
MAX_MUTE = timedelta(days=365)
_LIST_MAX = 12  # names shown in a usage line
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def _e(text: str) -> str:
    """Escape for Telegram HTML text (quotes need no escaping outside attributes)."""
    return html.escape(text, quote=False)


class BotStartError(WatcherError):
    """The command bot could not start (token rejected, Bot API unreachable)."""


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """What /status shows about one watch; the daemon fills it from the scheduler."""

    watch_id: str
    last_poll: datetime | None
    next_poll: datetime | None
    last_error: str | None
    products: int


class _Usage(Exception):
    """A command's arguments were wrong: reply with this one line."""


def usage(name: str) -> str:
    """The one-line usage of a command."""
    for cmd, args, what in (*COMMANDS, *ADMIN_COMMANDS):
        if cmd == name:
            return f"Usage: /{cmd}{' ' + args if args else ''} — {what}"
    return f"Unknown command /{name}. Commands: " + " ".join(f"/{c}" for c, _, _ in COMMANDS)


def parse_duration(text: str) -> timedelta | None:
    """``30m``, ``2h``, ``1d``, ``45s`` → timedelta; None when malformed or zero."""
    text = text.strip().lower()
    if len(text) > 7:  # six digits and a unit at most: a mute is at most a year anyway
        return None
    try:
        return util.parse_duration(text)
    except util.DurationError:
        return None


class BotService:
    """Answers commands in chats for one telegram channel."""

    def __init__(
        self,
        config: Config,
        store: Store,
        channel: TelegramChannel,
        *,
        status: Callable[[], list[WatchStatus]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.store = store
        self.channel = channel
        self.channel_id = channel.id
        self.settings = channel.config
        self.status = status
        self.clock = clock
        self.poll_timeout = poll_timeout
        self._app: Application | None = None  # type: ignore[type-arg]

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._app is not None and self._app.running

    async def start(self) -> None:
        """Start long polling in the running loop; raises ``BotStartError``."""
        if self._app is not None:
            return
        app = ApplicationBuilder().bot(self.channel.bot).job_queue(None).build()
        self._register(app)
        self._app = app
        try:
            await app.initialize()
            await self._set_commands()
            assert app.updater is not None
            await app.updater.start_polling(
                timeout=timedelta(seconds=self.poll_timeout),
                allowed_updates=["message", "my_chat_member"],
            )
            await app.start()
        except TelegramError as exc:
            await self.stop()
            raise BotStartError(
                f"telegram {self.channel_id}: bot did not start: {self._redact(exc)}"
            ) from None
        log.info("channel=%s bot @%s answering commands", self.channel_id, app.bot.username)

    async def stop(self) -> None:
        """Stop polling and handlers; safe after a failed or partial start, and twice."""
        app, self._app = self._app, None
        if app is None:
            return
        steps = []
        if app.updater is not None and app.updater.running:
            steps.append(app.updater.stop)
        if app.running:
            steps.append(app.stop)
        steps.append(app.shutdown)
        for step in steps:
            try:
                await step()
            except (TelegramError, RuntimeError) as exc:
                log.warning("channel=%s bot stop: %s", self.channel_id, self._redact(exc))

    async def _set_commands(self) -> None:
        bot = self.channel.bot
        public = [BotCommand(c, f"{a + ' — ' if a else ''}{w}") for c, a, w in COMMANDS]
        admin = public + [BotCommand(c, w) for c, _, w in ADMIN_COMMANDS]
        try:
            await bot.set_my_commands(public)
        except TelegramError as exc:
            log.warning("channel=%s setMyCommands failed: %s", self.channel_id, exc)
        for user in self.settings.admins:
            try:  # fails when the admin never opened a chat with the bot: harmless
                await bot.set_my_commands(admin, scope=BotCommandScopeChat(user))
            except TelegramError:
                log.debug("channel=%s admin %s: no command scope", self.channel_id, user)

    def _register(self, app: Application) -> None:  # type: ignore[type-arg]
        messages = filters.UpdateType.MESSAGE
        for name, callback in (
            ("start", self._help),
            ("help", self._help),
            ("watches", self._watches),
            ("rules", self._rules),
            ("subscribe", self._subscribe),
            ("unsubscribe", self._unsubscribe),
            ("mysubs", self._mysubs),
            ("mute", self._mute),
            ("history", self._history),
            ("status", self._status),
        ):  # a chart takes CPU time: /history must not hold up other chats' commands
            block = name != "history"
            app.add_handler(CommandHandler(name, self._guard(name, callback), messages, block))
        app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self._migrated))
        app.add_handler(MessageHandler(filters.COMMAND & messages, self._unknown))
        app.add_handler(ChatMemberHandler(self._membership, ChatMemberHandler.MY_CHAT_MEMBER))
        app.add_error_handler(self._on_error)

    def _guard(self, name: str, callback: Callable[..., object]) -> Callable[..., object]:
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            try:
                await callback(update, list(context.args or []))  # type: ignore[misc]
            except _Usage as exc:
                await self._reply(update, _e(str(exc) or usage(name)))

        return run

    # ------------------------------------------------------------------ replies

    async def _reply(self, update: Update, text: str) -> None:
        message = update.effective_message
        if message is None:
            return
        for part in split_html(text):
            await message.reply_text(
                part, parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEW
            )

    def _redact(self, exc: BaseException) -> str:
        return util.redact(f"{type(exc).__name__}: {exc}", [self.settings.token])

    def _chat(self, update: Update) -> int:
        assert update.effective_chat is not None
        return update.effective_chat.id

    def _is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and user.id in self.settings.admins

    # ------------------------------------------------------------------ commands

    async def _help(self, update: Update, args: list[str]) -> None:
        lines = [
            "<b>watcher</b> watches TikTok Shop stores, showcases, searches and rankings, and "
            "tells you when a product drops in price, crosses a discount, sells out, comes "
            "back, appears in a showcase or climbs a ranking.",
            "",
            *(f"/{c}{' ' + _e(a) if a else ''} — {_e(w)}" for c, a, w in COMMANDS),
        ]
        if self._is_admin(update):
            lines += [f"/{c} — {_e(w)}" for c, _, w in ADMIN_COMMANDS]
        lines += ["", self._chat_state(self._chat(update))]
        await self._reply(update, "\n".join(lines))

    def _chat_state(self, chat_id: int) -> str:
        if chat_id in self.settings.chat_ids:
            return "This chat already receives every alert of this bot."
        if not self.settings.allow_subscribe:
            return "Sorry, this bot does not take subscriptions; an admin can add this chat."
        return "Start with /subscribe all, or /subscribe &lt;rule|watch&gt; (see /rules)."

    async def _watches(self, update: Update, args: list[str]) -> None:
        watches = self.config.watches.values()
        lines = [f"<b>Watches</b> ({len(watches)})"] if watches else ["No watches configured."]
        lines += [
            f"• <code>{_e(w.id)}</code> {_e(w.type)}: {_e(_watch_target(w))} — {_e(_schedule(w))}"
            for w in watches
        ]
        await self._reply(update, "\n".join(lines))

    async def _rules(self, update: Update, args: list[str]) -> None:
        rules = self.config.rules.values()
        lines = [f"<b>Rules</b> ({len(rules)})"] if rules else ["No rules configured."]
        for r in rules:
            params = ", ".join(_rule_params(r))
            where = ", ".join(r.watches) if r.watches is not None else "every watch"
            here = "" if self.channel_id in r.notify else " (not sent by this bot)"
            lines.append(
                f"• <code>{_e(r.id)}</code> when {_e(r.when)}"
                f"{' (' + _e(params) + ')' if params else ''} — watches: "
                f"{_e(where)}{here}"
            )
        await self._reply(update, "\n".join(lines))

    async def _subscribe(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise _Usage(usage("subscribe"))
        chat = self._chat(update)
        if chat in self.settings.chat_ids or not self.settings.allow_subscribe:
            await self._reply(update, self._chat_state(chat))
            return
        scope, name = self._resolve(args[0], "subscribe")
        what = _describe(scope, name)
        added = await asyncio.to_thread(self.store.subscribe, self.channel_id, chat, scope, name)
        text = (
            f"Subscribed this chat to {what}." if added else f"This chat already follows {what}."
        )
        if not self._reaches_channel(scope, name):
            text += (
                f"\nNote: no rule for {what} sends alerts through this bot, so nothing will "
                "arrive until the configuration changes."
            )
        await self._reply(update, text)

    async def _unsubscribe(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise _Usage(usage("unsubscribe"))
        chat = self._chat(update)
        if args[0].lower() == "all":
            n = await asyncio.to_thread(self.store.unsubscribe, self.channel_id, chat)
            text = f"Removed {n} subscription{'s' if n != 1 else ''}." if n else None
            await self._reply(update, text or "This chat had no subscriptions.")
            return
        subs = await asyncio.to_thread(self.store.subscriptions, self.channel_id, chat)
        held = [(s.scope, s.name) for s in subs if s.name == args[0]]  # even if unconfigured
        scope, name = held[0] if held else self._resolve(args[0], "unsubscribe")
        n = await asyncio.to_thread(self.store.unsubscribe, self.channel_id, chat, scope, name)
        what = _describe(scope, name)
        await self._reply(
            update,
            f"Unsubscribed from {what}."
            if n
            else f"This chat was not subscribed to {what}. /mysubs lists its subscriptions.",
        )

    async def _mysubs(self, update: Update, args: list[str]) -> None:
        chat = self._chat(update)
        subs = await asyncio.to_thread(self.store.subscriptions, self.channel_id, chat)
        mutes = await asyncio.to_thread(self.store.mutes, self.channel_id)
        lines = []
        if chat in self.settings.chat_ids:
            lines.append(self._chat_state(chat))
        if subs:
            lines.append("<b>Subscriptions</b>")
            known = {*self.config.rules, *self.config.watches}
            for s in subs:
                note = "" if s.scope == "all" or s.name in known else " (no longer configured)"
                lines.append(f"• {_describe(s.scope, s.name)}{note}")
        elif chat not in self.settings.chat_ids:
            lines.append("No subscriptions. " + self._chat_state(chat))
        until = mutes.get((self.channel_id, chat))
        if until is not None and until > self.clock():
            lines.append(f"Muted until {_when(until)} (/mute off ends it).")
        await self._reply(update, "\n".join(lines))

    async def _mute(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise _Usage(usage("mute"))
        chat = self._chat(update)
        if args[0].lower() == "off":
            await asyncio.to_thread(self.store.set_mute, self.channel_id, chat, None)
            await self._reply(update, "Mute ended; alerts held meanwhile arrive as one digest.")
            return
        duration = parse_duration(args[0])
        if duration is None or duration > MAX_MUTE:
            raise _Usage(usage("mute") + " (a whole number with s, m, h or d, at most 365d)")
        until = self.clock() + duration
        await asyncio.to_thread(self.store.set_mute, self.channel_id, chat, until)
        await self._reply(
            update,
            f"Muted until {_when(until)}. Alerts are held and arrive as one digest when the "
            "mute ends; /mute off ends it early.",
        )

    async def _history(self, update: Update, args: list[str]) -> None:
        if len(args) != 1 or len(args[0]) > 64:
            raise _Usage(usage("history"))
        product_id = args[0]
        rows = await asyncio.to_thread(self.store.product_history, product_id)
        if not rows:
            await self._reply(update, f"No history for product {_e(product_id)}.")
            return
        message = update.effective_message
        assert message is not None
        await message.reply_chat_action(ChatAction.UPLOAD_PHOTO)
        tracked = await asyncio.to_thread(self.store.load_tracked, rows[-1].watch_id)
        product = tracked[product_id].product if product_id in tracked else None
        title = (product.title if product else None) or f"Product {product_id}"
        png = await chart.render_price_chart_async(rows, title)
        await message.reply_photo(
            photo=png,
            caption=_e(chart.history_summary(rows, title, product.currency if product else None)),
            parse_mode=ParseMode.HTML,
            filename=f"history-{product_id}.png",
        )

    async def _status(self, update: Update, args: list[str]) -> None:
        if not self._is_admin(update):
            await self._reply(update, "Sorry, /status is for this bot's admins.")
            return
        today = self.clock().astimezone(UTC).date()
        # both read the database: off the event loop
        watches = list(await asyncio.to_thread(self.status or self._stored_status))
        credits = {
            name: await asyncio.to_thread(self.store.credits_on, name, today)
            for name in self.config.providers
        }
        counts = await asyncio.to_thread(self.store.delivery_counts)
        lines = [f"<b>Status</b> {_when(self.clock())}", "<b>Watches</b>"]
        for w in watches:
            state = f"error: {w.last_error[:200]}" if w.last_error else "ok"
            lines.append(
                f"• <code>{_e(w.watch_id)}</code> last poll {_when(w.last_poll)}, "
                f"next {_when(w.next_poll)}, {w.products} products, {_e(state)}"
            )
        spent = ", ".join(f"{_e(n)} {c}" for n, c in credits.items()) or "none"
        lines.append(f"<b>Credits today</b> ({today.isoformat()} UTC): {spent}")
        lines.append(
            f"<b>Deliveries</b>: {counts.get('pending', 0)} pending, {counts.get('dead', 0)} dead"
        )
        await self._reply(update, "\n".join(lines))

    def _stored_status(self) -> list[WatchStatus]:
        """Without the scheduler (no next poll known): what the Store knows."""
        states = self.store.all_watch_states()
        return [
            WatchStatus(w, st.last_poll_at, None, st.last_error, st.products)
            if (st := states.get(w))
            else WatchStatus(w, None, None, None, 0)
            for w in self.config.watches
        ]

    # ------------------------------------------------------------------ other updates

    async def _unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        command = message.text.split(maxsplit=1)[0][1:]
        name, _, to = command.partition("@")
        if to and to.lower() != (context.bot.username or "").lower():
            return  # addressed to another bot in a group
        await self._reply(update, _e(usage(name)))

    async def _migrated(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None and message.migrate_to_chat_id:
            old, new = message.chat_id, message.migrate_to_chat_id
            log.info("channel=%s chat %s became %s", self.channel_id, old, new)
            await asyncio.to_thread(self.store.migrate_chat, self.channel_id, old, new)

    async def _membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        gone = (ChatMember.LEFT, ChatMember.BANNED)
        if change is not None and change.new_chat_member.status in gone:
            log.info("channel=%s removed from chat %s", self.channel_id, change.chat.id)
            await asyncio.to_thread(self.store.forget_chat, self.channel_id, change.chat.id)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        log.error(
            "channel=%s command failed: %s",
            self.channel_id,
            self._redact(error) if error else "?",
            exc_info=error if not isinstance(error, TelegramError) else None,
        )
        if isinstance(update, Update) and update.effective_message is not None:
            with contextlib.suppress(TelegramError):
                await self._reply(update, "Sorry, that did not work. Try again later, or /help.")

    # ------------------------------------------------------------------ names

    def _resolve(self, name: str, command: str) -> tuple[str, str]:
        """Rules first, then watches (one namespace); ``all`` is every alert."""
        if name.lower() == "all":
            return "all", ""
        if name in self.config.rules:
            return "rule", name
        if name in self.config.watches:
            return "watch", name
        raise _Usage(
            f"Unknown name {name!r}. {usage(command)}. "
            f"Rules: {_names(self.config.rules)}. Watches: {_names(self.config.watches)}."
        )

    def _reaches_channel(self, scope: str, name: str) -> bool:
        rules = self.config.rules.values()
        if scope == "rule":
            return self.channel_id in self.config.rules[name].notify
        if scope == "watch":
            return any(self.channel_id in r.notify and r.applies_to(name) for r in rules)
        return any(self.channel_id in r.notify for r in rules)


# ---------------------------------------------------------------------- formatting


def _names(ids: Iterable[str]) -> str:
    names = list(ids)
    if not names:
        return "none"
    shown = ", ".join(names[:_LIST_MAX])
    return shown + (f", … (+{len(names) - _LIST_MAX})" if len(names) > _LIST_MAX else "")


def _describe(scope: str, name: str) -> str:
    return "every alert" if scope == "all" else f"{scope} {_e(name)}"


def _when(at: datetime | None) -> str:
    if at is None:
        return "—"
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _span(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _schedule(w: WatchConfig) -> str:
    return f"every {_span(w.every)}" if w.every is not None else f"cron {w.cron or '?'}"


def _watch_target(w: WatchConfig) -> str:
    if w.url:
        what = w.url
    elif w.handle:
        what = f"@{util.strip_handle(w.handle)}"
    elif w.query:
        what = f'"{w.query}"'
    else:
        what = " ".join(x for x in (w.category_id and f"category {w.category_id}",
                                     w.keyword and f'"{w.keyword}"') if x)  # fmt: skip
    return f"{what} ({w.region})" if w.region else what


def _rule_params(r: RuleConfig) -> list[str]:
    kind = RULE_KINDS.get(r.when)
    settings = kind.settings(r.params) if kind else dict(r.params)
    out = [
        f"{k}={_span(v) if isinstance(v, timedelta) else v}"
        for k, v in settings.items()
        if v is not None
    ]
    m = r.match
    out += [
        f"{k}={v}"
        for k in ("title", "min_price", "max_price", "min_rating")
        if (v := getattr(m, k)) is not None
    ]
    if m.product_ids:
        out.append(f"product_ids={len(m.product_ids)}")
    if r.cooldown != timedelta(hours=6):
        out.append(f"cooldown={_span(r.cooldown)}")
    return out


__all__ = ["BotService", "BotStartError", "WatchStatus", "parse_duration", "usage"]
