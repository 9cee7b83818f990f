"""Telegram delivery through python-telegram-bot: one alert (or the alerts of one product in
one poll, as one message listing each reason), a digest, or a notice per send.

The channel owns ONE ``telegram.ext.ExtBot`` (exposed as ``.bot``) which the command bot
(``watcher.bot.BotService``) shares, so sends and replies go through one rate limiter
(Telegram allows ~30 messages/s overall and 20/min per group). The limiter never retries a
``RetryAfter`` itself: the outbox honours ``retry_after`` and keeps its own attempt count.

Error mapping (spec section 6): flood control, timeouts and network errors are retryable;
a blocked or kicked bot (Forbidden) is ``ChatGone``: final, and the dispatcher forgets the
chat; a group upgraded to a supergroup (ChatMigrated) is ``ChatMoved``: the dispatcher
moves the chat's subscriptions and delivers to the new id at once; any other Bad Request is
final. The channel never writes to the store.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from .. import logs, render
from ..errors import ChatGone, ChatMoved, DeliveryError
from ..kinds import DELIVERY_PARAMS, ChannelType
from ..models import Alert
from ..param import Param
from ..util import redact

if TYPE_CHECKING:  # python-telegram-bot is slow to import: only when a channel is built
    from telegram.error import RetryAfter, TelegramError
    from telegram.ext import ExtBot

    from ..configschema import ChannelConfig
    from ..kinds import Subscribers

log = logging.getLogger("watcher.channels.telegram")

# httpx logs every request URL at INFO, and the URL contains the bot token.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)
# PTB's bot loggers print the API URL (token included) at DEBUG; keep them at INFO unless the
# operator set a level on purpose.
for _name in ("telegram.Bot", "telegram.ext.ExtBot"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)


class _DropRetryAfterTraceback(logging.Filter):
    """The limiter logs a traceback for every RetryAfter; the outbox already reports it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from telegram.error import RetryAfter

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, RetryAfter)


logging.getLogger("telegram.ext.AIORateLimiter").addFilter(_DropRetryAfterTraceback())

DEFAULT_BASE_URL = "https://api.telegram.org/bot"
MESSAGE_LIMIT = 4096  # characters of a text message
CAPTION_LIMIT = 1024  # characters of a photo caption


@dataclass(frozen=True, slots=True)
class _Message:
    """One Bot API call of a delivery: a photo with caption, or a text message."""

    text: str
    photo: str | None = None
    preview: bool = False


class TelegramChannel:
    """Sends alerts to Telegram chats; ``target`` is the chat id as a string."""

    def __init__(self, config: ChannelConfig, bot: ExtBot | None = None) -> None:
        self.id = config.id
        self.config = config
        self._progress: dict[tuple[str, tuple[str, ...]], int] = {}  # digest parts sent
        if bot is None:
            from telegram.ext import AIORateLimiter, ExtBot
            from telegram.request import HTTPXRequest

            if not config.token:
                raise ValueError(f"telegram channel {config.id!r} needs a token")
            timeout = config.timeout.total_seconds()
            bot = ExtBot(
                config.token,
                base_url=config.base_url or DEFAULT_BASE_URL,
                request=HTTPXRequest(
                    connection_pool_size=32,
                    read_timeout=timeout,
                    write_timeout=timeout,
                    pool_timeout=timeout,  # sends queue behind the limiter, then the pool
                ),
                rate_limiter=AIORateLimiter(max_retries=0),
            )
        self.bot: ExtBot = bot
        self._token = config.token or bot.token

    async def start(self) -> None:
        """Open the HTTP pool and check the token (getMe). Idempotent."""
        await self.bot.initialize()

    async def close(self) -> None:
        """Close the HTTP pool; stop a ``BotService`` sharing this bot first."""
        await self.bot.shutdown()

    # ------------------------------------------------------------------ sending

    async def send(self, target: str, alerts: Sequence[Alert]) -> None:
        """Deliver one alert, a notice, or a digest of several to chat ``target``.

        Raises:
            DeliveryError: ``retryable`` says whether the outbox should try again.
            ChatMoved: the chat has a new id; the dispatcher moves it and sends there.
            ChatGone: the bot was blocked or kicked; the dispatcher forgets the chat.
        """
        from telegram.error import TelegramError

        if not alerts:
            return
        try:
            chat_id = int(target)
        except ValueError:
            raise DeliveryError(
                f"telegram {self.id}: target {target!r} is not a chat id", retryable=False
            ) from None
        messages = plan_messages(alerts)
        # A digest split into parts: a retry resumes after the parts that already arrived
        # (in this process), so a failure on part 3 does not repeat parts 1 and 2; so does
        # the send to a migrated chat's new id.
        ids = tuple(a.alert_id for a in alerts)
        i = self._progress.pop((target, ids), 0)
        while i < len(messages):
            try:
                await self.bot.initialize()  # no-op when open; reopens after a shutdown
                await self._send_one(chat_id, messages[i])
            except TelegramError as exc:
                raise self._outcome(exc, chat_id, (target, ids), i) from exc
            i += 1

    def _outcome(
        self, exc: TelegramError, chat_id: int, key: tuple[str, tuple[str, ...]], sent: int
    ) -> DeliveryError:
        """The typed outcome of a failed call; ``sent`` parts of the delivery arrived."""
        from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter

        if isinstance(exc, ChatMigrated):
            new_id = int(exc.new_chat_id)
            if sent:  # the rest goes to the new id (earlier parts arrived already)
                self._progress[(str(new_id), key[1])] = sent
            return ChatMoved(self._text(exc, chat_id), old_id=chat_id, new_id=new_id)
        if sent:
            self._progress[key] = sent
        if isinstance(exc, RetryAfter):
            return self._error(exc, chat_id, retryable=True, retry_after=retry_after_seconds(exc))
        if isinstance(exc, Forbidden):  # blocked or kicked: the dispatcher forgets the chat
            return ChatGone(self._text(exc, chat_id), chat_id=chat_id)
        if isinstance(exc, BadRequest):  # checked first: BadRequest subclasses NetworkError
            return self._error(exc, chat_id, retryable=False)
        # TimedOut, NetworkError (5xx, connection), InvalidToken, anything else: try again
        return self._error(exc, chat_id, retryable=True)

    async def _send_one(self, chat_id: int, msg: _Message) -> None:
        from telegram import LinkPreviewOptions
        from telegram.error import BadRequest

        if msg.photo is not None:
            try:
                await self.bot.send_photo(
                    chat_id, photo=msg.photo, caption=msg.text, parse_mode="HTML"
                )
                return
            except BadRequest as exc:  # Telegram could not fetch or use the image
                error = self._redact(str(exc))  # the text goes instead
                logs.event(
                    log,
                    "photo_rejected",
                    logging.WARNING,
                    channel=self.id,
                    chat=chat_id,
                    error=error,
                )
        await self.bot.send_message(
            chat_id,
            msg.text,
            parse_mode="HTML",
            link_preview_options=None if msg.preview else LinkPreviewOptions(is_disabled=True),
        )

    def _error(
        self,
        exc: TelegramError,
        chat_id: int,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> DeliveryError:
        return DeliveryError(
            self._text(exc, chat_id), retryable=retryable, retry_after=retry_after
        )

    def _text(self, exc: TelegramError, chat_id: int) -> str:
        text = self._redact(f"{type(exc).__name__}: {exc}")
        return f"telegram {self.id} chat {chat_id}: {text}"

    def _redact(self, text: str) -> str:
        """Error texts can carry the token (InvalidToken quotes it): never pass it on."""
        return redact(text, [self._token])


# ---------------------------------------------------------------------- rendering


def plan_messages(alerts: Sequence[Alert]) -> list[_Message]:
    """The Bot API calls that deliver ``alerts``: fewest messages, each within its limit.

    One alert, or several of one product in one poll (``render.by_product``), is one
    message: a photo when the caption fits, else text; anything else is a digest.
    """
    if len(render.by_product(alerts)) > 1:
        return [_Message(t) for t in split_html(render.render_digest_html(alerts))]
    alert = alerts[0]
    if alert.is_notice or alert.product is None:
        text = render.render_html(alert) or html.escape(alert.kind.replace("_", " "))
        return [_Message(t) for t in split_html(text)]
    text = render.render_product_html(alerts)
    image = alert.product.image_url
    if image and image.startswith(("https://", "http://")) and utf16_len(text) <= CAPTION_LIMIT:
        return [_Message(text, photo=image, preview=True)]  # preview: for the text fallback
    return [_Message(t, preview=True) for t in split_html(text)]


def alert_html(alert: Alert) -> str:
    """One alert as Telegram HTML; a rule ``template`` arrives as the alert's ``message``
    (``render.custom_message``) and is sent escaped."""
    return render.render_product_html([alert])


def split_html(text: str) -> list[str]:
    """``render.split_message`` below 4,096, measured in UTF-16 units as Telegram counts.

    Emoji count twice; when a chunk is too long that way, split with a smaller limit.
    """
    limit = MESSAGE_LIMIT
    while True:
        parts = render.split_message(text, limit)
        if limit <= MESSAGE_LIMIT // 2 or all(utf16_len(p) <= MESSAGE_LIMIT for p in parts):
            return parts
        limit -= 512


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _alert_chats(
    config: ChannelConfig, alert: Alert, subscribers: Subscribers | None
) -> list[str]:
    """A rule alert goes to the channel's ``chat_ids`` and to the chats subscribed to it."""
    chats = list(config.chat_ids)
    if subscribers is not None:
        chats += list(subscribers(config.id, alert.rule_id, alert.watch_id))
    return [str(c) for c in dict.fromkeys(chats)]


def _admin_chats(config: ChannelConfig) -> list[str]:
    """A notice (a watch failing, a provider paused) goes to the channel's admins."""
    return [str(a) for a in config.admins]


def retry_after_seconds(exc: RetryAfter) -> float:
    """``retry_after`` in seconds; PTB 22 gives an int or a timedelta (and warns on read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


TYPE = ChannelType(
    "telegram",
    "Messages to Telegram chats through a bot.",
    {
        "token": Param("str", required=True, doc="bot token"),
        "base_url": Param("str", doc="Bot API base, e.g. http://127.0.0.1:8081/bot"),
        "chat_ids": Param("int_list", doc="chats that always receive this channel"),
        "admins": Param("int_list", doc="user ids allowed admin commands"),
        "allow_subscribe": Param("bool", doc="other chats may /subscribe and /track (true)"),
        "max_tracks_per_chat": Param("positive_int", doc="/track targets per chat (50)"),
        **DELIVERY_PARAMS,
    },
    factory=TelegramChannel,
    alert_targets=_alert_chats,
    notice_targets=_admin_chats,
    has_bot=True,
    merges_per_product=True,
)

__all__ = [
    "CAPTION_LIMIT",
    "DEFAULT_BASE_URL",
    "MESSAGE_LIMIT",
    "TYPE",
    "TelegramChannel",
    "alert_html",
    "plan_messages",
    "retry_after_seconds",
    "split_html",
    "utf16_len",
]
