"""Notifications through the apprise library: Discord, Slack, e-mail, ntfy, Gotify, Telegram
and a hundred more services, each named by an apprise URL in the channel's ``urls``.

**One target per URL.** Every URL is its own delivery target (``<scheme>-<8 hex of the
URL's sha256>``, e.g. ``discord-1f3a9c0e``: stable while the URL is, and it names no
secret), so the outbox keeps one delivery row per URL: a URL that fails is retried alone,
and a success on the others is recorded at once and never repeated by that retry. (One
apprise call for all the URLs would report one True/False: a retry would send again to the
URLs that had already succeeded.) A digest or quiet hours work per URL as for any target.
A delivery whose URL is no longer in ``urls`` (changed or removed) is dead with a message
saying so.

**Failures.** apprise answers a send with success or failure and keeps the HTTP status to
its log; every failure is retryable (``max_attempts`` bounds them) except a json://, form://
or xml:// receiver's 4xx other than 408 and 429, which apprise's warning names and a retry
cannot fix. A timeout (the channel's ``timeout``, all of one send) is retryable; a send that
timed out may still arrive late, so a receiver can see it twice (at least once, as for any
channel).

**Secrets.** apprise URLs hold tokens. apprise logs a full URL at DEBUG, so its logger (and
urllib3's, under requests) stays at WARNING (``watcher.logs.URL_LOGGERS``), and apprise's
own lines never reach watcher's log: what they say about a failed send (already masked by
apprise) travels in the ``DeliveryError``, so each failure is told once (``event=retry`` /
``dead``, ``watcher alerts --failed``). Targets and errors never contain a URL in clear.

apprise is imported only when a channel of this type is checked or sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import render
from ..errors import DeliveryError
from ..kinds import DELIVERY_PARAMS, ChannelType
from ..models import Alert
from ..param import Param
from ..rules import RULE_KINDS
from ..util import redact

if TYPE_CHECKING:
    import apprise as apprise_lib

    from ..configschema import ChannelConfig

_APPRISE_LOG = logging.getLogger("apprise")
if _APPRISE_LOG.level == logging.NOTSET:
    _APPRISE_LOG.setLevel(logging.WARNING)
_APPRISE_LOG.propagate = False  # its reasons travel in DeliveryError / ConfigIssue instead
# requests' urllib3 logs each request's path (a webhook token) at DEBUG
if logging.getLogger("urllib3").level == logging.NOTSET:
    logging.getLogger("urllib3").setLevel(logging.WARNING)

# apprise's own HTTP plugins: a 4xx (but 408, 429) from the receiver is final
_HTTP_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
RETRYABLE_4XX = {408, 429}
_STATUS = re.compile(r"\berror=(\d{3})\b")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_GRACE = 5.0  # seconds past apprise's own deadline before watcher stops waiting for it


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case, or "" when it has none."""
    m = _SCHEME.match(url.strip())
    return m.group(1).lower() if m else ""


def target_id(url: str) -> str:
    """The delivery target of one URL: its scheme and a short hash, never the URL itself."""
    return f"{scheme_of(url) or 'url'}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def _targets(config: ChannelConfig, *_: Any) -> list[str]:
    """Every URL receives every rule alert and notice (one target each)."""
    return list(dict.fromkeys(target_id(u) for u in config.urls))


class _Collect(logging.Handler):
    """apprise's log records while one URL is checked (it says there why a URL is refused);
    only this thread's, not those of sends running meanwhile."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.messages.append(record.getMessage())


def _secrets(url: str) -> list[str]:
    """What to mask in a message about a URL: the URL, and its password if it has one."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return [url, password or ""]


def _instantiate(url: str) -> tuple[Any, list[str]]:
    """apprise's plugin for ``url`` (None if apprise refuses it) and apprise's reasons.

    Nothing is sent: apprise only parses the URL and builds the plugin.
    """
    import apprise

    collect = _Collect()
    _APPRISE_LOG.addHandler(collect)
    try:
        plugin = apprise.Apprise.instantiate(url)
    finally:
        _APPRISE_LOG.removeHandler(collect)
    # a line that only repeats the (masked) URL says nothing the config issue does not
    reasons = [redact(m, _secrets(url), "<url>") for m in collect.messages]
    return plugin, [m for m in reasons if "<url>" not in m]


def check_urls(values: dict[str, Any], what: str) -> Iterator[tuple[str, int | None, str]]:
    """Config issues of ``urls``: none given, listed twice, or a URL apprise cannot read
    (an unknown scheme, a missing token); found without sending anything."""
    urls = values.get("urls")
    if urls is None:
        return
    if not urls:
        yield "urls", None, f"'urls' in {what} is empty; list at least one apprise URL"
        return
    try:
        import apprise
    except ImportError:
        yield (
            "urls",
            None,
            f"{what} needs the apprise package: pip install 'watcher[apprise]'",
        )
        return
    known = apprise.NotificationManager()
    seen: dict[str, int] = {}
    for index, url in enumerate(urls):
        where = f"'urls' item {index + 1} in {what}"
        if url in seen:
            yield "urls", index, f"{where} repeats item {seen[url] + 1}; list each URL once"
            continue
        seen[url] = index
        scheme = scheme_of(url)
        plugin, reasons = _instantiate(url)
        if plugin is not None:
            continue
        if not scheme:
            reason = "it has no scheme; write it like discord://webhook_id/webhook_token"
        elif scheme not in known and scheme not in ("http", "https"):
            reason = f"unknown scheme '{scheme}://'"
        else:
            reason = f"apprise cannot read this {scheme}:// URL"
        said = "; ".join(dict.fromkeys(reasons))
        yield (
            "urls",
            index,
            f"{where}: {reason}{f' ({said})' if said else ''}; "
            "see https://github.com/caronc/apprise/wiki for the URL of each service",
        )


def _headline(alert: Alert) -> str:
    kind = RULE_KINDS.get(alert.kind)
    return kind.headline if kind else alert.kind.replace("_", " ").capitalize()


def compose(alerts: Sequence[Alert]) -> tuple[str, str]:
    """(title, body) of one send: an alert's headline and product title over its plain-text
    message (several rules on one product: their reasons in one headline), or the digest's
    header ("N alerts on M products") over its entries. The body does not repeat the title."""
    if len(alerts) == 1:
        alert = alerts[0]
        text = alert.message or render.render_text(alert)
        if alert.product is not None:
            title = f"{_headline(alert)}: {alert.product.title or f'Product {alert.product.id}'}"
        else:
            title = f"{_headline(alert)}: {alert.watch_id}" if alert.watch_id else _headline(alert)
        first, _, rest = text.partition("\n")
        return title, rest if first == title and rest else text
    if len(render.by_product(alerts)) == 1:  # one product, several rules, one poll
        text = render.render_product_text(alerts)
        first, _, rest = text.partition("\n")
        return first, rest or text
    text = render.render_digest_text(list(alerts))  # "N alerts (on M products)", entries
    title, _, rest = text.partition("\n\n")
    return title, rest or text


def _notify_type(alerts: Sequence[Alert]) -> str:
    """info for alerts, warning for notices (success for a recovery)."""
    if all(a.kind.endswith("_recovered") for a in alerts):
        return "success"
    return "warning" if all(a.is_notice for a in alerts) else "info"


class AppriseChannel:
    """Sends to each of the channel's apprise URLs; ``target`` is ``target_id(url)``."""

    def __init__(self, config: ChannelConfig) -> None:
        self.id = config.id
        self.config = config
        self._urls = {target_id(u): u for u in config.urls}
        self._senders: dict[str, apprise_lib.Apprise] = {}

    def _sender(self, target: str) -> apprise_lib.Apprise:
        import apprise  # here, not at import: loading the config must stay fast

        if target in self._senders:
            return self._senders[target]
        url = self._urls.get(target)
        if url is None:
            raise DeliveryError(
                f"apprise {self.id}: target {target} is no longer among the channel's urls "
                "(its URL was changed or removed)",
                retryable=False,
            )
        plugin, reasons = _instantiate(url)
        if plugin is None:
            raise DeliveryError(
                f"apprise {self.id} {target}: apprise refuses the URL ({'; '.join(reasons)})",
                retryable=False,
            )
        sender = apprise.Apprise()
        sender.add(plugin)
        self._senders[target] = sender
        return sender

    async def send(self, target: str, alerts: Sequence[Alert]) -> None:
        import apprise

        sender = self._sender(target)
        title, body = compose(alerts)
        seconds = self.config.timeout.total_seconds()
        try:
            async with asyncio.timeout(seconds + _GRACE):
                result = await sender.async_notify(
                    body=body,
                    title=title,
                    notify_type=apprise.NotifyType(_notify_type(alerts)),
                    body_format=apprise.NotifyFormat.TEXT,
                    timeout=seconds,
                )
        except TimeoutError:
            raise DeliveryError(
                f"apprise {self.id} {target}: no answer within {seconds:g}s", retryable=True
            ) from None
        if result:
            return
        raise self._failure(target, result, seconds)

    def _failure(self, target: str, result: Any, seconds: float) -> DeliveryError:
        """The DeliveryError for a send apprise reported as failed."""
        import apprise

        url = self._urls[target]
        reasons = [e.message for e in result.logs() if e.level not in ("DEBUG", "TRACE", "INFO")]
        said = redact("; ".join(dict.fromkeys(reasons)), _secrets(url), "<url>")
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            return DeliveryError(
                f"apprise {self.id} {target}: no answer within {seconds:g}s", retryable=True
            )
        status = None
        if scheme_of(url) in _HTTP_SCHEMES:
            codes = [int(m.group(1)) for r in reasons for m in _STATUS.finditer(r)]
            status = codes[-1] if codes else None
        retryable = status is None or status >= 500 or status in RETRYABLE_4XX
        head = f"HTTP {status}" if status is not None else "failed"
        return DeliveryError(
            f"apprise {self.id} {target}: {head}{f': {said}' if said else ''}",
            retryable=retryable,
        )

    async def close(self) -> None:
        self._senders.clear()


TYPE = ChannelType(
    "apprise",
    "Discord, Slack, e-mail, ntfy, Gotify and 100+ more services through apprise URLs.",
    {
        "urls": Param(
            "str_list", required=True, doc="apprise URLs, one target each, e.g. discord://id/token"
        ),
        "timeout": Param("duration", doc="per send to one URL (default 10s)"),
        **DELIVERY_PARAMS,
    },
    factory=AppriseChannel,
    alert_targets=_targets,
    notice_targets=_targets,
    merges_per_product=True,  # Discord, Slack, e-mail: a person reads it
    check=check_urls,
)

__all__ = ["TYPE", "AppriseChannel", "check_urls", "compose", "scheme_of", "target_id"]
