"""The bot's lifecycle on the channel's own bot, in the daemon's event loop.

One ``BotService`` per telegram channel. It builds a ``telegram.ext.Application`` around the
channel's ``ExtBot`` (one rate limiter for alerts and replies) and runs it with
``initialize`` / ``updater.start_polling`` / ``start`` — never ``run_polling``, which wants
to own the loop. Subscriptions and mutes live in the Store, so they survive restarts.

In a cluster one instance at a time runs the bot (``daemon.leader``), but an update that a
leader took and never confirmed to Telegram (it died first) is handed to the next leader
too: every update is claimed in the Store before any handler sees it, and one that another
leader claimed is not answered again.

Stop the ``BotService`` before closing its channel: ``Application.shutdown`` also shuts the
shared bot down (the channel reopens it on its next send).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from telegram import BotCommand, BotCommandScopeChat, ChatMember, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from .. import logs, util
from ..channels.telegram import TelegramChannel
from ..config import Config
from ..errors import WatcherError
from ..status import WatchStatus
from ..store import Store
from .commands import Commands, Handler, UsageError, reply
from .format import ADMIN_COMMANDS, COMMANDS, esc, usage

log = logging.getLogger("watcher.bot")


class BotStartError(WatcherError):
    """The command bot could not start (token rejected, Bot API unreachable)."""


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
        self.poll_timeout = poll_timeout
        self.commands = Commands(
            config, store, channel.id, channel.config, status=status, clock=clock
        )
        self._app: Application | None = None  # type: ignore[type-arg]

    @property
    def running(self) -> bool:
        return self._app is not None and self._app.running

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (SIGHUP): commands answer from it and from the channel's new
        settings (``channel.config``, updated in place; the bot client stays)."""
        self.config = config
        self.settings = self.channel.config
        self.commands.config = config
        self.commands.settings = self.channel.config

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
        logs.event(log, "bot_started", channel=self.channel_id, bot=f"@{app.bot.username}")

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
                logs.event(
                    log,
                    "bot_stop_failed",
                    logging.WARNING,
                    channel=self.channel_id,
                    error=self._redact(exc),
                )

    async def _set_commands(self) -> None:
        bot = self.channel.bot
        public = [BotCommand(c, f"{a + ' — ' if a else ''}{w}") for c, a, w in COMMANDS]
        admin = public + [BotCommand(c, w) for c, _, w in ADMIN_COMMANDS]
        try:
            await bot.set_my_commands(public)
        except TelegramError as exc:
            logs.event(
                log,
                "set_commands_failed",
                logging.WARNING,
                channel=self.channel_id,
                error=self._redact(exc),
            )
        for user in self.settings.admins:
            try:  # fails when the admin never opened a chat with the bot: harmless
                await bot.set_my_commands(admin, scope=BotCommandScopeChat(user))
            except TelegramError:
                logs.event(
                    log, "admin_scope_missing", logging.DEBUG, channel=self.channel_id, user=user
                )

    def _register(self, app: Application) -> None:  # type: ignore[type-arg]
        app.add_handler(TypeHandler(Update, self._claim), group=-1)  # before any reply
        messages = filters.UpdateType.MESSAGE
        for name, callback in self.commands.handlers().items():
            # a chart takes CPU time: /history must not hold up other chats' commands
            block = name != "history"
            app.add_handler(CommandHandler(name, self._guard(name, callback), messages, block))
        app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self._migrated))
        app.add_handler(MessageHandler(filters.COMMAND & messages, self._unknown))
        app.add_handler(ChatMemberHandler(self._membership, ChatMemberHandler.MY_CHAT_MEMBER))
        app.add_error_handler(self._on_error)

    def _guard(self, name: str, callback: Handler) -> Callable[..., object]:
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            try:
                await callback(update, list(context.args or []))
            except UsageError as exc:
                await reply(update, esc(str(exc) or usage(name)))

        return run

    def _redact(self, exc: BaseException) -> str:
        return util.redact(f"{type(exc).__name__}: {exc}", [self.settings.token])

    # ------------------------------------------------------------------ other updates

    async def _claim(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Let the update through only if no leader took it before (exactly one reply).

        When the Store cannot say, the update is dropped, not answered: an instance cut off
        from the database cannot know whether another leader answered, and is about to be
        deposed; the user can ask again.
        """
        try:
            mine = await asyncio.to_thread(
                self.store.claim_update, self.channel_id, update.update_id
            )
        except Exception as exc:  # the database (or the driver) failing: cannot tell
            logs.event(
                log,
                "bot_claim_failed",
                logging.WARNING,
                channel=self.channel_id,
                update=update.update_id,
                error=self._redact(exc),
            )
            raise ApplicationHandlerStop from None
        if not mine:
            logs.event(log, "bot_update_taken", channel=self.channel_id, update=update.update_id)
            raise ApplicationHandlerStop

    async def _unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        command = message.text.split(maxsplit=1)[0][1:]
        name, _, to = command.partition("@")
        if to and to.lower() != (context.bot.username or "").lower():
            return  # addressed to another bot in a group
        await reply(update, esc(usage(name)))

    async def _migrated(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None and message.migrate_to_chat_id:
            old, new = message.chat_id, message.migrate_to_chat_id
            logs.event(log, "chat_migrated", channel=self.channel_id, chat=old, to=new)
            await asyncio.to_thread(self.store.migrate_chat, self.channel_id, old, new)

    async def _membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        gone = (ChatMember.LEFT, ChatMember.BANNED)
        if change is not None and change.new_chat_member.status in gone:
            logs.event(log, "chat_removed", channel=self.channel_id, chat=change.chat.id)
            await asyncio.to_thread(self.store.forget_chat, self.channel_id, change.chat.id)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        logs.event(
            log,
            "command_failed",
            logging.ERROR,
            exc_info=error if not isinstance(error, TelegramError) else False,
            channel=self.channel_id,
            error=self._redact(error) if error else "?",
        )
        if isinstance(update, Update) and update.effective_message is not None:
            with contextlib.suppress(TelegramError):
                await reply(update, "Sorry, that did not work. Try again later, or /help.")
