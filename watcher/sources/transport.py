"""One provider's HTTP: its session, concurrency and rate limits, capped bodies, redirects.

``Transport.send`` returns a ``Reply`` (any status) or raises ``FetchError``: ``NotSent``
when nothing can have reached upstream (so nothing was billed), a plain ``FetchError`` when
the request may have reached it (a timeout mid-request, a refused redirect, a body over the
cap). Redirects are followed by hand, and only within the provider's origin: the session
carries the API key, which must never reach another host.

In a cluster the provider's limits hold for all instances together: with ``N`` alive, each
takes ``set_share(N)``, that is ``max(1, max_concurrency // N)`` requests in flight and
``requests_per_second / N`` per second. Concurrency rounds down with a floor of one request
per instance, so more instances than ``max_concurrency`` may hold one request each in flight
(``N`` in all); the rate splits exactly. A change of share applies at once: requests in flight
finish, new ones wait for the new limits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp
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


class _Waiters:
    """Futures of the tasks waiting at a gate, first come first served."""

    def __init__(self) -> None:
        self._queue: deque[asyncio.Future[None]] = deque()

    def __bool__(self) -> bool:
        while self._queue and self._queue[0].done():  # cancelled while waiting
            self._queue.popleft()
        return bool(self._queue)

    def join(self) -> asyncio.Future[None]:
        """A place in the queue, done when ``grant`` reaches it."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        return fut

    def grant(self) -> None:
        """Let the first waiter through (the caller checked there is one)."""
        self._queue.popleft().set_result(None)


class Gate:
    """At most ``limit`` holders at once, and ``limit`` can change while it is held
    (``asyncio.Semaphore`` has no way to): holders keep their place, and new ones enter only
    while fewer than the new limit hold it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._waiters = _Waiters()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def held(self) -> int:
        return self._held

    def set_limit(self, limit: int) -> None:
        """Change the limit; call it in the loop the gate serves."""
        if limit < 1:
            raise ValueError(f"a gate admits at least one holder, not {limit}")
        self._limit = limit
        self._admit()

    async def __aenter__(self) -> None:
        if self._held < self._limit and not self._waiters:
            self._held += 1
            return
        place = self._waiters.join()
        try:
            await place
        except asyncio.CancelledError:
            if not place.cancelled():  # let in, then cancelled before it resumed
                self._leave()
            raise

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave()

    def _leave(self) -> None:
        self._held -= 1
        self._admit()

    def _admit(self) -> None:
        while self._held < self._limit and self._waiters:
            self._held += 1
            self._waiters.grant()


class RateGate:
    """A leaky bucket of ``rate`` requests per second whose rate can change while requests
    wait (aiolimiter's ``AsyncLimiter`` has no public way to).

    It holds ``max(1, rate)`` requests (a burst of that many from idle), leaks ``rate`` per
    second, and admits in arrival order; at a change, what leaked so far leaked at the old
    rate and the waiting requests are then spaced by the new one.
    """

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._level = 0.0
        self._checked = time.monotonic()
        self._waiters = _Waiters()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the rate; call it in the loop the gate serves."""
        if rate <= 0:
            raise ValueError(f"a rate must be positive, not {rate}")
        self._leak()
        self._rate = rate
        self._admit()

    async def __aenter__(self) -> None:
        self._leak()
        if not self._waiters and self._room():
            self._level += 1
            return
        place = self._waiters.join()  # a slot granted to a task cancelled meanwhile stays spent
        self._admit()
        await place

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _room(self) -> bool:
        return self._level + 1 <= max(1.0, self._rate)

    def _leak(self) -> None:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._checked) * self._rate)
        self._checked = now

    def _admit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._leak()
        while self._waiters and self._room():
            self._level += 1
            self._waiters.grant()
        if self._waiters:
            delay = (self._level + 1 - max(1.0, self._rate)) / self._rate
            self._timer = asyncio.get_running_loop().call_later(delay, self._admit)


@dataclass(frozen=True, slots=True)
class _Connection:
    """The session and the limits that belong to one event loop."""

    session: aiohttp.ClientSession
    in_flight: Gate
    rate: RateGate


class Transport:
    """GETs below one base URL with fixed headers, within the provider's limits.

    The session and limits are created lazily inside the running loop they belong to;
    ``close`` ends them and a later request opens new ones. ``set_share`` splits the limits
    between the instances of a cluster (see the module's docstring).
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
        self._share = 1
        self._conn: _Connection | None = None

    @property
    def max_in_flight(self) -> int:
        """Requests this instance lets into flight at once: its share of ``max_concurrency``."""
        return max(1, self._max_concurrency // self._share)

    @property
    def rate(self) -> float:
        """Requests per second this instance sends: its share of ``requests_per_second``."""
        return self._rate / self._share

    def set_share(self, instances: int) -> None:
        """Take one share of ``instances`` of the provider's limits (1: all of them).

        Call it in the loop that sends, or before the first request; requests in flight
        finish, later ones obey the new limits.
        """
        if instances < 1:
            raise ValueError(f"a share of {instances} instances: at least one (this one)")
        self._share = instances
        if self._conn is not None:
            self._conn.in_flight.set_limit(self.max_in_flight)
            self._conn.rate.set_rate(self.rate)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.session.closed:
            await conn.session.close()

    def _open(self) -> _Connection:
        if self._conn is None or self._conn.session.closed:
            self._conn = _Connection(
                session=aiohttp.ClientSession(
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ),
                in_flight=Gate(self.max_in_flight),
                rate=RateGate(self.rate),
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
        async with conn.in_flight, conn.rate:
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
