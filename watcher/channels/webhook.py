"""JSON POST per alert (or per digest), signed with HMAC-SHA256 when a secret is set."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import render
from ..errors import DeliveryError
from ..kinds import DELIVERY_PARAMS, ChannelType
from ..models import Alert
from ..param import Param
from ..util import USER_AGENT, retry_after_seconds

if TYPE_CHECKING:
    import aiohttp

    from ..configschema import ChannelConfig

RETRYABLE_4XX = {408, 429}
FOLLOWED = {301, 302, 307, 308}  # re-POSTed with the same body, when follow_redirects is set
MAX_REDIRECTS = 3
REPLY_CAP = 64 * 1024  # bytes of a receiver's answer read, at most (its status is what counts)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """POSTs to the channel's ``url``; its one target is ""."""

    def __init__(self, config: ChannelConfig) -> None:
        self.id = config.id
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at import: loading the config must stay fast

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout.total_seconds()),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def send(self, target: str, alerts: Sequence[Alert]) -> None:
        import aiohttp
        from yarl import URL

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
        url = URL(self.config.url)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._client().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    if 200 <= resp.status < 300:
                        return
                    location = resp.headers.get("Location")
                    if resp.status in FOLLOWED and location and self.config.follow_redirects:
                        nxt = resp.url.join(URL(location))
                        if nxt.origin() != url.origin():
                            # the signature and the channel's headers are for its own host
                            headers = {"Content-Type": "application/json"}
                        url = nxt
                        continue
                    text = (await resp.content.read(REPLY_CAP)).decode("utf-8", "replace")
                    if 300 <= resp.status < 400:
                        raise DeliveryError(
                            f"webhook {self.id}: HTTP {resp.status} redirect not followed "
                            "(fix the url, or set follow_redirects: true)",
                            retryable=False,
                        )
                    retryable = resp.status >= 500 or resp.status in RETRYABLE_4XX
                    raise DeliveryError(
                        f"webhook {self.id}: HTTP {resp.status} {text[:200]!r}",
                        retryable=retryable,
                        retry_after=retry_after_seconds(
                            resp.headers.get("Retry-After"), cap=math.inf
                        ),  # the dispatcher caps it,
                    )
            raise DeliveryError(
                f"webhook {self.id}: more than {MAX_REDIRECTS} redirects", retryable=False
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(
                f"webhook {self.id}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


TYPE = ChannelType(
    "webhook",
    "JSON POST, optionally HMAC-SHA256 signed.",
    {
        "url": Param("str", required=True),
        "secret": Param("str", doc="HMAC-SHA256 signing secret"),
        "headers": Param("str_map", doc="extra request headers"),
        "timeout": Param("duration", doc="per request (default 10s)"),
        "follow_redirects": Param(
            "bool", doc="follow redirects (default false); never signed to another host"
        ),
        **DELIVERY_PARAMS,
    },
    factory=WebhookChannel,
)
