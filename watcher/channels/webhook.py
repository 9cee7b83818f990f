"""JSON POST per alert (or per digest), signed with HMAC-SHA256 when a secret is set."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence

import aiohttp

from .. import render
from ..config import ChannelConfig
from ..errors import DeliveryError
from ..models import Alert
from . import register

RETRYABLE_4XX = {408, 429}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@register("webhook")
class WebhookChannel:
    def __init__(self, config: ChannelConfig, *, store: object = None) -> None:
        self.id = config.id
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout.total_seconds()),
                headers={"User-Agent": "watcher/0.1"},
            )
        return self._session

    async def send(self, target: str, alerts: Sequence[Alert]) -> None:
        if len(alerts) == 1:
            payload = render.webhook_body(alerts[0])
        else:
            payload = render.digest_body(list(alerts))
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**self.config.headers, "Content-Type": "application/json"}
        if self.config.secret:
            headers["X-Watcher-Signature"] = sign(self.config.secret, body)
            headers["X-Watcher-Timestamp"] = str(int(time.time()))
        assert self.config.url is not None
        try:
            async with self._client().post(self.config.url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return
                text = (await resp.text(errors="replace"))[:200]
                retryable = resp.status >= 500 or resp.status in RETRYABLE_4XX
                raise DeliveryError(
                    f"webhook {self.id}: HTTP {resp.status} {text!r}",
                    retryable=retryable,
                    retry_after=_retry_after(resp.headers.get("Retry-After")),
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(
                f"webhook {self.id}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
