"""The bot's commands (spec section 7): each reads or changes the Store and replies.

``Commands`` holds one handler per command, ``async (update, args) -> None``; the service
registers them with python-telegram-bot and turns a ``UsageError`` into the usage reply.
The text of the replies comes from ``format``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from telegram import LinkPreviewOptions, Update
from telegram.constants import ChatAction, ParseMode

from .. import chart
from ..channels.telegram import split_html
from ..config import ChannelConfig, Config
from ..formatting import format_money
from ..models import Tracked
from ..report import status_report
from ..rules.tracks import Track
from ..status import WatchStatus
from ..store import Store
from .format import (
    MAX_MUTE,
    chat_state,
    describe,
    esc,
    help_text,
    names,
    not_covered_text,
    parse_duration,
    parse_target,
    product_ref,
    rule_params,
    status_text,
    tracked_text,
    tracks_text,
    usage,
    watches_text,
    when,
)

_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)

Handler = Callable[[Update, list[str]], Awaitable[None]]


class UsageError(Exception):
    """A command's arguments were wrong: reply with this one line."""


async def reply(update: Update, text: str) -> None:
    """Answer in the chat the update came from, split at Telegram's message size."""
    message = update.effective_message
    if message is None:
        return
    for part in split_html(text):
        await message.reply_text(part, parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEW)


def _product_id(text: str, command: str) -> str:
    product_id = product_ref(text)
    if product_id is None:
        raise UsageError(
            f"{usage(command)}. Give the product id, or its TikTok Shop link (a short "
            "vm.tiktok.com link: open it and copy the product page's address)."
        )
    return product_id


def _chat(update: Update) -> int:
    assert update.effective_chat is not None
    return update.effective_chat.id


class Commands:
    """The handlers of one telegram channel's commands."""

    def __init__(
        self,
        config: Config,
        store: Store,
        channel_id: str,
        settings: ChannelConfig,
        *,
        status: Callable[[], list[WatchStatus]] | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.channel_id = channel_id
        self.settings = settings
        self.status_of = status
        self.clock = clock

    def handlers(self) -> dict[str, Handler]:
        """Command name → handler, in the order of the command list."""
        return {
            "start": self.help,
            "help": self.help,
            "watches": self.watches,
            "rules": self.rules,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "mysubs": self.mysubs,
            "track": self.track,
            "tracks": self.tracks,
            "untrack": self.untrack,
            "mute": self.mute,
            "history": self.history,
            "status": self.status,
        }

    def _is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and user.id in self.settings.admins

    # ------------------------------------------------------------------ commands

    async def help(self, update: Update, args: list[str]) -> None:
        user = update.effective_user
        text = help_text(
            self.settings,
            _chat(update),
            admin=self._is_admin(update),
            user_id=user.id if user is not None else None,
        )
        await reply(update, text)

    async def watches(self, update: Update, args: list[str]) -> None:
        await reply(update, watches_text(self.config.watches.values()))

    async def rules(self, update: Update, args: list[str]) -> None:
        rules = self.config.rules.values()
        lines = [f"<b>Rules</b> ({len(rules)})"] if rules else ["No rules configured."]
        for r in rules:
            params = ", ".join(rule_params(r))
            where = ", ".join(r.watches) if r.watches is not None else "every watch"
            here = "" if self.channel_id in r.notify else " (not sent by this bot)"
            lines.append(
                f"• <code>{esc(r.id)}</code> when {esc(r.when)}"
                f"{' (' + esc(params) + ')' if params else ''} — watches: "
                f"{esc(where)}{here}"
            )
        await reply(update, "\n".join(lines))

    async def subscribe(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError(usage("subscribe"))
        chat = _chat(update)
        if chat in self.settings.chat_ids or not self.settings.allow_subscribe:
            await reply(update, chat_state(self.settings, chat))
            return
        scope, name = self._resolve(args[0], "subscribe")
        what = describe(scope, name)
        added = await asyncio.to_thread(self.store.subscribe, self.channel_id, chat, scope, name)
        text = (
            f"Subscribed this chat to {what}." if added else f"This chat already follows {what}."
        )
        if not self._reaches_channel(scope, name):
            text += (
                f"\nNote: no rule for {what} sends alerts through this bot, so nothing will "
                "arrive until the configuration changes."
            )
        await reply(update, text)

    async def unsubscribe(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError(usage("unsubscribe"))
        chat = _chat(update)
        if args[0].lower() == "all":
            n = await asyncio.to_thread(self.store.unsubscribe, self.channel_id, chat)
            text = f"Removed {n} subscription{'s' if n != 1 else ''}." if n else None
            await reply(update, text or "This chat had no subscriptions.")
            return
        subs = await asyncio.to_thread(self.store.subscriptions, self.channel_id, chat)
        held = [(s.scope, s.name) for s in subs if s.name == args[0]]  # even if unconfigured
        scope, name = held[0] if held else self._resolve(args[0], "unsubscribe")
        n = await asyncio.to_thread(self.store.unsubscribe, self.channel_id, chat, scope, name)
        what = describe(scope, name)
        await reply(
            update,
            f"Unsubscribed from {what}."
            if n
            else f"This chat was not subscribed to {what}. /mysubs lists its subscriptions.",
        )

    async def mysubs(self, update: Update, args: list[str]) -> None:
        chat = _chat(update)
        subs = await asyncio.to_thread(self.store.subscriptions, self.channel_id, chat)
        mutes = await asyncio.to_thread(self.store.mutes, self.channel_id)
        lines = []
        if chat in self.settings.chat_ids:
            lines.append(chat_state(self.settings, chat))
        if subs:
            lines.append("<b>Subscriptions</b>")
            known = {*self.config.rules, *self.config.watches}
            for s in subs:
                note = "" if s.scope == "all" or s.name in known else " (no longer configured)"
                lines.append(f"• {describe(s.scope, s.name)}{note}")
        elif chat not in self.settings.chat_ids:
            lines.append("No subscriptions. " + chat_state(self.settings, chat))
        until = mutes.get((self.channel_id, chat))
        if until is not None and until > self.clock():
            lines.append(f"Muted until {when(until)} (/mute off ends it).")
        await reply(update, "\n".join(lines))

    async def mute(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError(usage("mute"))
        chat = _chat(update)
        if args[0].lower() == "off":
            await asyncio.to_thread(self.store.set_mute, self.channel_id, chat, None)
            await reply(update, "Mute ended; alerts held meanwhile arrive as one digest.")
            return
        duration = parse_duration(args[0])
        if duration is None or duration > MAX_MUTE:
            raise UsageError(usage("mute") + " (a whole number with s, m, h or d, at most 365d)")
        until = self.clock() + duration
        await asyncio.to_thread(self.store.set_mute, self.channel_id, chat, until)
        await reply(
            update,
            f"Muted until {when(until)}. Alerts are held and arrive as one digest when the "
            "mute ends; /mute off ends it early.",
        )

    async def history(self, update: Update, args: list[str]) -> None:
        if len(args) != 1 or len(args[0]) > 64:
            raise UsageError(usage("history"))
        product_id = args[0]
        record = await asyncio.to_thread(self.store.product_record, product_id)
        if not record.points:
            await reply(update, f"No history for product {esc(product_id)}.")
            return
        message = update.effective_message
        assert message is not None
        await message.reply_chat_action(ChatAction.UPLOAD_PHOTO)
        png = await chart.render_history_chart_async(record)
        await message.reply_photo(
            photo=png,
            caption=esc(chart.history_summary(record.points, record.title, record.currency)),
            parse_mode=ParseMode.HTML,
            filename=f"history-{product_id}.png",
        )

    async def status(self, update: Update, args: list[str]) -> None:
        """The whole cluster, from the store and config (``report``); a ``status`` callback,
        when given, supplies the watches instead."""
        if not self._is_admin(update):
            await reply(update, "Sorry, /status is for this bot's admins.")
            return
        now = self.clock()
        # both read the database: off the event loop
        report = await asyncio.to_thread(status_report, self.store, self.config, now)
        watches = (
            list(await asyncio.to_thread(self.status_of)) if self.status_of else report.watches
        )
        text = status_text(
            now,
            watches,
            report.credits,
            report.deliveries,
            report.day,
            instances=report.instances,
            cluster=report.cluster,
        )
        await reply(update, text)

    # ------------------------------------------------------------------ tracks

    async def track(self, update: Update, args: list[str]) -> None:
        """A personal target on a product a watch already covers (no new watch, no credits)."""
        if len(args) != 3:
            raise UsageError(usage("track"))
        chat = _chat(update)
        allowed = self.settings.allow_subscribe or chat in self.settings.chat_ids
        if not (allowed or self._is_admin(update)):
            await reply(update, "Sorry, this bot does not take price targets from this chat.")
            return
        product_id = _product_id(args[0], "track")
        target = parse_target(args[1], args[2])
        if target is None:
            raise UsageError(
                usage("track") + " (a price above 0, or a percentage between 0 and 100)"
            )
        kind, value = target
        found = await asyncio.to_thread(self._covering, product_id)
        if found is None:
            await reply(update, not_covered_text(product_id, self.config.watches))
            return
        watch_id, tracked = found
        price = tracked.product.price
        if price is None:
            await reply(update, f"Product {esc(product_id)} has no price to track right now.")
            return
        limit = self.settings.max_tracks_per_chat
        status, saved = await asyncio.to_thread(
            self.store.set_track,
            self.channel_id,
            chat,
            product_id,
            watch_id,
            kind,
            value,
            price,  # a drop's reference; kept for a below too (what it was when set)
            limit=limit,
            now=self.clock(),
        )
        if saved is None:
            await reply(
                update,
                f"This chat has {limit} price targets, the most it may have "
                "(max_tracks_per_chat). /untrack one first; /tracks lists them.",
            )
            return
        now_text = format_money(price, tracked.product.currency)
        await reply(
            update,
            tracked_text(
                saved, tracked, watch=watch_id, replaced=status == "replaced", now_text=now_text
            ),
        )

    async def tracks(self, update: Update, args: list[str]) -> None:
        tracks, products = await asyncio.to_thread(self._tracks_now, _chat(update))
        limit = self.settings.max_tracks_per_chat
        await reply(update, tracks_text(tracks, products, self.config.watches, limit))

    async def untrack(self, update: Update, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError(usage("untrack"))
        chat = _chat(update)
        if args[0].lower() == "all":
            n = await asyncio.to_thread(self.store.untrack, self.channel_id, chat)
            text = f"Removed {n} price target{'s' if n != 1 else ''}." if n else None
            await reply(update, text or "This chat had no price targets.")
            return
        product_id = _product_id(args[0], "untrack")
        n = await asyncio.to_thread(self.store.untrack, self.channel_id, chat, product_id)
        await reply(
            update,
            f"Stopped tracking product {esc(product_id)}."
            if n
            else f"This chat does not track product {esc(product_id)}. /tracks lists its targets.",
        )

    def _tracks_now(self, chat: int) -> tuple[list[Track], dict[tuple[str, str], Tracked]]:
        """The chat's tracks and their products as their watches have them now."""
        tracks = self.store.tracks(self.channel_id, chat)
        watches, products = [t.watch_id for t in tracks], [t.product_id for t in tracks]
        return tracks, self.store.snapshot_products(watches, products)

    def _covering(self, product_id: str) -> tuple[str, Tracked] | None:
        """The first configured watch whose latest snapshot has the product (one where it is
        present before one where it is gone), with the product as it has it."""
        found = self.store.snapshot_products(self.config.watches, [product_id])
        seen = [(w, found[w, product_id]) for w in self.config.watches if (w, product_id) in found]
        seen.sort(key=lambda wt: not wt[1].present)  # stable: config order otherwise
        return seen[0] if seen else None

    # ------------------------------------------------------------------ names

    def _resolve(self, name: str, command: str) -> tuple[str, str]:
        """Rules first, then watches (one namespace); ``all`` is every alert."""
        if name.lower() == "all":
            return "all", ""
        if name in self.config.rules:
            return "rule", name
        if name in self.config.watches:
            return "watch", name
        raise UsageError(
            f"Unknown name {name!r}. {usage(command)}. "
            f"Rules: {names(self.config.rules)}. Watches: {names(self.config.watches)}."
        )

    def _reaches_channel(self, scope: str, name: str) -> bool:
        rules = self.config.rules.values()
        if scope == "rule":
            return self.channel_id in self.config.rules[name].notify
        if scope == "watch":
            return any(self.channel_id in r.notify and r.applies_to(name) for r in rules)
        return any(self.channel_id in r.notify for r in rules)
