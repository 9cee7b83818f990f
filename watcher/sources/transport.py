"""One provider's HTTP: its session, concurrency and rate limits, capped bodies, redirects.

``Transport.send`` returns a ``Reply`` (any status) or raises ``FetchError``: ``NotSent``
when nothing can have reached upstream (so nothing was billed), a plain ``FetchError`` when
the request may have reached it (a timeout mid-request, a refused redirect, a body over the
cap). Redirects are followed by hand, and only within the provider's origin: the session
carries the API key, which must never reach another host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiolimiter import AsyncLimiter
from yarl import URL

from watcher.errors import FetchError
from watcher.sources.responses import Reply, one_line
from watcher.sources.specs import Request
from watcher.util import USER_AGENT

MAX_REDIRECTS = 3  # same-origin redirects followed per request


class NotSent(FetchError):
    """The request never left (no connection): retryable, and nothing was billed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class BodyTooLarge(FetchError):
    """A response body over the cap, counted after decompression: a failed page."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"response body over {limit // 2**20} MiB after decompression; not read",
            retryable=False,
        )


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it passes ``limit`` bytes.

    aiohttp decompresses as it streams, so a gzip bomb is stopped at ``limit`` decoded
    bytes instead of filling memory.
    """
    if response.content_length is not None and response.content_length > limit:
        raise BodyTooLarge(limit)  # the declared (compressed) size is already over
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class _Connection:
    """The session and the limits that belong to one event loop."""

    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    limiter: AsyncLimiter


class Transport:
    """GETs below one base URL with fixed headers, within the provider's limits.

    The session and limits are created lazily inside the running loop they belong to;
    ``close`` ends them and a later request opens new ones.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_concurrency: int,
        requests_per_second: float,
        max_body: int,
        timeout: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self._max_concurrency = max_concurrency
        self._rate = requests_per_second
        self._max_body = max_body
        self._timeout = timeout
        self._conn: _Connection | None = None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.session.closed:
            await conn.session.close()

    def _open(self) -> _Connection:
        if self._conn is None or self._conn.session.closed:
            rate = self._rate
            self._conn = _Connection(
                session=aiohttp.ClientSession(
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ),
                semaphore=asyncio.Semaphore(self._max_concurrency),
                # a leaky bucket cannot hold less than one request: stretch the period instead
                limiter=AsyncLimiter(rate, 1) if rate >= 1 else AsyncLimiter(1, 1 / rate),
            )
        return self._conn

    async def send(self, request: Request) -> Reply:
        """One request's reply, or the ``FetchError`` that says why there is none."""
        try:
            return await self._get(request)
        except FetchError:  # a refused redirect, a body over the cap: it was answered
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise NotSent(f"timed out connecting after {self._timeout:g}s") from exc
        except TimeoutError as exc:
            # the request may have reached upstream
            raise FetchError(f"timed out after {self._timeout:g}s", retryable=True) from exc
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"cannot connect: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise FetchError(
                f"network error: {type(exc).__name__}: {one_line(str(exc))}".rstrip(": "),
                retryable=True,
            ) from exc

    async def _get(self, request: Request) -> Reply:
        conn = self._open()
        url = URL(self.base_url + request.path, encoded=True)
        params: Mapping[str, str] | None = request.params
        async with conn.semaphore, conn.limiter:
            for _ in range(MAX_REDIRECTS + 1):
                async with conn.session.get(url, params=params, allow_redirects=False) as resp:
                    target = resp.headers.get("Location") if 300 <= resp.status < 400 else None
                    if target is None:
                        body = await read_capped(resp, self._max_body)
                        return Reply(resp.status, resp.reason, resp.headers, body)
                    nxt = resp.url.join(URL(target))
                    if nxt.origin() != url.origin():
                        raise FetchError(
                            f"HTTP {resp.status} redirect to another origin "
                            f"({nxt.scheme}://{nxt.host}) refused: the API key stays with "
                            f"{url.host}",
                            retryable=False,
                            status=resp.status,
                        )
                    url, params = nxt, None
            raise FetchError(f"more than {MAX_REDIRECTS} redirects", retryable=False)
