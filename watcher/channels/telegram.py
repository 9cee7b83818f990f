"""Telegram delivery through python-telegram-bot: one alert, a digest, or a notice per send.

The channel owns ONE ``telegram.ext.ExtBot`` (exposed as ``.bot``) which the command bot
(``watcher.bot.BotService``) shares, so sends and replies go through one rate limiter
(Telegram allows ~30 messages/s overall and 20/min per group). The limiter never retries a
``RetryAfter`` itself: the outbox honours ``retry_after`` and keeps its own attempt count.

Error mapping (spec section 6): flood control, timeouts and network errors are retryable;
a blocked or kicked bot (Forbidden) forgets the chat and is final; a group upgraded to a
supergroup (ChatMigrated) moves the chat's subscriptions and is delivered to the new id at
once; any other Bad Request is final.
"""

from __future__ import annotations

import asyncio
import html
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from telegram import LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    RetryAfter,
    TelegramError,
)
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from .. import render
from ..config import ChannelConfig
from ..errors import DeliveryError
from ..models import Alert
from ..store import Store
from ..util import redact
from . import register

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
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, RetryAfter)


logging.getLogger("telegram.ext.AIORateLimiter").addFilter(_DropRetryAfterTraceback())

DEFAULT_BASE_URL = "https://api.telegram.org/bot"
MESSAGE_LIMIT = 4096  # characters of a text message
CAPTION_LIMIT = 1024  # characters of a photo caption
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


@dataclass(frozen=True, slots=True)
class _Message:
    """One Bot API call of a delivery: a photo with caption, or a text message."""

    text: str
    photo: str | None = None
    preview: bool = False


@register("telegram")
class TelegramChannel:
    """Sends alerts to Telegram chats; ``target`` is the chat id as a string."""

    def __init__(
        self,
        config: ChannelConfig,
        store: Store | None = None,
        bot: ExtBot | None = None,
    ) -> None:
        self.id = config.id
        self.config = config
        self.store = store
        self._progress: dict[tuple[str, tuple[str, ...]], int] = {}  # digest parts sent
        if bot is None:
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
        """
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
        # (in this process), so a failure on part 3 does not repeat parts 1 and 2.
        key = (target, tuple(a.alert_id for a in alerts))
        migrated = False
        i = self._progress.pop(key, 0)
        while i < len(messages):
            try:
                await self.bot.initialize()  # no-op when open; reopens after a shutdown
                await self._send_one(chat_id, messages[i])
            except ChatMigrated as exc:
                if migrated:  # migrated twice in one delivery: let the outbox retry
                    raise self._error(exc, chat_id, retryable=True) from exc
                migrated = True
                new_id = int(exc.new_chat_id)
                log.info("channel=%s chat %s migrated to %s", self.id, chat_id, new_id)
                if self.store is not None:
                    await asyncio.to_thread(self.store.migrate_chat, self.id, chat_id, new_id)
                chat_id = new_id
                continue  # resend the message that failed (earlier parts arrived already)
            except TelegramError as exc:
                if i:
                    self._progress[key] = i
                raise await self._map_error(exc, chat_id) from exc
            i += 1

    async def _send_one(self, chat_id: int, msg: _Message) -> None:
        if msg.photo is not None:
            try:
                await self.bot.send_photo(
                    chat_id, photo=msg.photo, caption=msg.text, parse_mode=ParseMode.HTML
                )
                return
            except BadRequest as exc:  # Telegram could not fetch or use the image
                log.warning(
                    "channel=%s chat=%s photo rejected (%s); sending text",
                    self.id,
                    chat_id,
                    self._redact(str(exc)),
                )
        await self.bot.send_message(
            chat_id,
            msg.text,
            parse_mode=ParseMode.HTML,
            link_preview_options=None if msg.preview else _NO_PREVIEW,
        )

    async def _map_error(self, exc: TelegramError, chat_id: int) -> DeliveryError:
        if isinstance(exc, RetryAfter):
            return self._error(exc, chat_id, retryable=True, retry_after=retry_after_seconds(exc))
        if isinstance(exc, Forbidden):
            log.warning("channel=%s chat=%s forbidden: forgetting the chat", self.id, chat_id)
            if self.store is not None:
                await asyncio.to_thread(self.store.forget_chat, self.id, chat_id)
            return self._error(exc, chat_id, retryable=False)
        if isinstance(exc, BadRequest):  # checked first: BadRequest subclasses NetworkError
            return self._error(exc, chat_id, retryable=False)
        # TimedOut, NetworkError (5xx, connection), InvalidToken, anything else: try again
        return self._error(exc, chat_id, retryable=True)

    def _error(
        self,
        exc: TelegramError,
        chat_id: int,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> DeliveryError:
        text = self._redact(f"{type(exc).__name__}: {exc}")
        return DeliveryError(
            f"telegram {self.id} chat {chat_id}: {text}",
            retryable=retryable,
            retry_after=retry_after,
        )

    def _redact(self, text: str) -> str:
        """Error texts can carry the token (InvalidToken quotes it): never pass it on."""
        return redact(text, [self._token])


# ---------------------------------------------------------------------- rendering


def plan_messages(alerts: Sequence[Alert]) -> list[_Message]:
    """The Bot API calls that deliver ``alerts``: fewest messages, each within its limit."""
    if len(alerts) > 1:
        return [_Message(t) for t in split_html(render.render_digest_html(alerts))]
    alert = alerts[0]
    if alert.is_notice or alert.product is None:
        text = render.render_html(alert) or html.escape(alert.kind.replace("_", " "))
        return [_Message(t) for t in split_html(text)]
    text = alert_html(alert)
    image = alert.product.image_url
    if image and image.startswith(("https://", "http://")) and utf16_len(text) <= CAPTION_LIMIT:
        return [_Message(text, photo=image, preview=True)]  # preview: for the text fallback
    return [_Message(t, preview=True) for t in split_html(text)]


def alert_html(alert: Alert) -> str:
    """One alert as Telegram HTML; a rule ``template`` arrives as the alert's ``message``.

    The pipeline renders ``message`` with the rule's template (the channel does not know
    the rules); when it differs from the default text, it is the template's, sent escaped.
    """
    if alert.message and alert.product is not None and alert.message != render.render_text(alert):
        return html.escape(alert.message)
    return render.render_html(alert)


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


def retry_after_seconds(exc: RetryAfter) -> float:
    """``retry_after`` in seconds; PTB 22 gives an int or a timedelta (and warns on read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


__all__ = [
    "CAPTION_LIMIT",
    "DEFAULT_BASE_URL",
    "MESSAGE_LIMIT",
    "TelegramChannel",
    "alert_html",
    "plan_messages",
    "retry_after_seconds",
    "split_html",
    "utf16_len",
]
