"""The only code that talks to the paid data APIs: paging, retries, rate limits, credits.

One ``ProviderClient`` per provider owns one aiohttp session, a concurrency limit and a rate
limit (spec section 9). ``poll`` turns upstream trouble into an incomplete ``PollResult`` with
a readable error (a parser that raises anything but ``FetchError`` yields a ``MalformedPayload``
failed page); only ``PaymentRequired`` (the provider must pause) and
``ProviderUnavailable`` (the daily budget forbids the first request) escape it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random as _random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from multidict import CIMultiDictProxy
from yarl import URL

from watcher.config import ProviderConfig, WatchConfig
from watcher.errors import FetchError, PaymentRequired, ProviderUnavailable
from watcher.models import PollResult, Product
from watcher.sources.normalise import MalformedPayload, ParsedPage, assign_ranks
from watcher.sources.specs import PROVIDERS, SOURCES, ProviderSpec, Request, SourceSpec
from watcher.util import MAX_RETRY_AFTER, USER_AGENT, retry_after_seconds

__all__ = [
    "MAX_ATTEMPTS",
    "RETRYABLE_STATUSES",
    "USER_AGENT",
    "ProviderClient",
    "retry_after_seconds",
]

log = logging.getLogger("watcher.sources")

MAX_ATTEMPTS = 3  # in all, first try included (spec section 9)
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503})
_MESSAGE_LIMIT = 200

CreditsCallback = Callable[[str, int], None]
CreditsLeft = Callable[[], int | None]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass(slots=True)
class _Tally:
    """Credits recorded during one poll (a client serves many polls at once)."""

    credits: int = 0


@dataclass(frozen=True, slots=True)
class _Connection:
    """The session and the limits that belong to one event loop."""

    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    limiter: AsyncLimiter


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    reason: str | None
    headers: CIMultiDictProxy[str]
    body: bytes


class _BudgetStop(Exception):
    """The daily budget forbids the next request of a poll that already spent credits."""

    def __init__(self, last_error: FetchError | None) -> None:
        super().__init__("daily credit budget spent")
        self.last_error = last_error


_NOT_JSON = object()


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


MAX_REDIRECTS = 3  # same-origin redirects followed per request


def _decode(body: bytes) -> Any:
    """JSON with exact decimals, or ``_NOT_JSON`` (HTML error pages, truncated bodies)."""
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _phrase(status: int, reason: str | None = None) -> str:
    if reason:
        return reason
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


class ProviderClient:
    """Fetches pages of every watch of one provider.

    Args:
        provider: the provider's config (key, base URL, concurrency, rate).
        on_credits: called ``(provider, credits)`` after every attempt, with
            ``meta.creditsCharged`` or else the documented price.
        credits_left: remaining daily budget, or None for unlimited; a request whose
            documented price exceeds it is not sent.
        backoff_base: first retry delay bound in seconds (full jitter, doubling).
        timeout: total seconds per request.
        sleep: awaited for backoff delays (tests inject a recorder).
        random: returns a float in [0, 1) for jitter.
    """

    def __init__(
        self,
        provider: ProviderConfig,
        *,
        on_credits: CreditsCallback | None = None,
        credits_left: CreditsLeft | None = None,
        backoff_base: float = 0.5,
        timeout: float = 30,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if provider.name not in PROVIDERS:
            raise ValueError(f"unknown provider {provider.name!r}")
        self._config = provider
        self._spec: ProviderSpec = PROVIDERS[provider.name]
        self._on_credits = on_credits
        self._credits_left = credits_left
        self._backoff_base = backoff_base
        self._timeout = timeout
        self._sleep = sleep
        self._random = random
        self._base_url = provider.base_url.rstrip("/")
        self._max_body = provider.max_response_mib * 2**20
        self._conn: _Connection | None = None

    @property
    def name(self) -> str:
        return self._config.name

    def __repr__(self) -> str:  # never show the key
        return f"ProviderClient({self.name!r}, base_url={self._base_url!r})"

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; a later request opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.session.closed:
            await conn.session.close()

    def _open(self) -> _Connection:
        """Create the session and limits lazily, inside the running loop they belong to."""
        if self._conn is None or self._conn.session.closed:
            rate = self._config.requests_per_second
            self._conn = _Connection(
                session=aiohttp.ClientSession(
                    headers={"User-Agent": USER_AGENT, **self._spec.auth(self._config.api_key)},
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ),
                semaphore=asyncio.Semaphore(self._config.max_concurrency),
                # a leaky bucket cannot hold less than one request: stretch the period instead
                limiter=AsyncLimiter(rate, 1) if rate >= 1 else AsyncLimiter(1, 1 / rate),
            )
        return self._conn

    # ------------------------------------------------------------------ polling

    async def poll(self, watch: WatchConfig) -> PollResult:
        """Read up to ``watch.max_pages`` pages and rank the products across them.

        Raises:
            PaymentRequired: upstream answered 402; the caller pauses the provider.
            ProviderUnavailable: the daily budget forbids even the first request.
        """
        source = SOURCES[watch.type]
        if source.provider != self.name:
            raise ValueError(f"watch {watch.id!r} ({watch.type}) is not served by {self.name}")
        tally = _Tally()
        pages: list[tuple[Product, ...]] = []
        pages_read = 0
        errors: list[str] = []
        complete, exhausted, not_found = True, False, False
        request = source.first_request(watch)
        for page_no in range(1, watch.max_pages + 1):
            try:
                page = await self._fetch_page(source, request, first=page_no == 1, tally=tally)
            except _BudgetStop as stop:
                complete = False
                if stop.last_error is not None:
                    errors.append(self._failure(watch, page_no, stop.last_error, budget=True))
                break
            except PaymentRequired:
                raise
            except FetchError as error:
                complete = False
                errors.append(self._failure(watch, page_no, error))
                break
            pages_read += 1
            if page.not_found:
                not_found, exhausted = True, True
                break
            pages.append(page.products)
            if page.skipped:
                # An unusable product is not an absent one: no removals, no rank moves
                # (the ones after it would shift) from this poll.
                complete = False
                log.warning(
                    "%s %s page %d: %d unusable products skipped, first: %s",
                    watch.type,
                    watch.id,
                    page_no,
                    len(page.skipped),
                    page.skipped[0],
                )
            if not page.has_more or page.next is None:
                exhausted = True  # only upstream can say there is no more
                break
            if not page.products:
                # Spec section 1 stops paging on an empty page, but one that still says
                # hasMore may be a glitch: products beyond it must not look removed.
                log.info(
                    "%s %s page %d: empty page with more to come", watch.type, watch.id, page_no
                )
                break
            request = source.next_request(watch, page.next)
        products = assign_ranks(pages)
        repeats = sum(map(len, pages)) - len(products)
        if repeats:
            # Paginated lists shift between requests; the first occurrence is the one kept.
            log.info("%s %s: %d repeated product ids dropped", watch.type, watch.id, repeats)
        return PollResult(
            products=products,
            complete=complete,
            exhausted=exhausted,
            not_found=not_found,
            errors=tuple(errors),
            pages=pages_read,
            credits=tally.credits,
        )

    def _failure(
        self, watch: WatchConfig, page_no: int, error: FetchError, *, budget: bool = False
    ) -> str:
        """One line naming the watch, the page, what went wrong and the request id."""
        message = f"{watch.type} {watch.id} page {page_no}: {error}"
        if error.request_id:
            message += f" (request {error.request_id})"
        if budget:
            message += "; not retried: daily credit budget spent"
        if isinstance(error, MalformedPayload):
            log.warning("malformed upstream payload: %s", message)
        else:
            log.warning("page failed: %s", message)
        return message

    async def _fetch_page(
        self, source: SourceSpec, request: Request, *, first: bool, tally: _Tally
    ) -> ParsedPage:
        """One page with retries; raises the last ``FetchError`` when it cannot be read."""
        last_error: FetchError | None = None
        for attempt in range(MAX_ATTEMPTS):
            left = self._credits_left() if self._credits_left is not None else None
            if left is not None and left < self._spec.price:
                if first and attempt == 0:
                    raise ProviderUnavailable(
                        f"provider {self.name}: daily credit budget spent "
                        f"({left} credits left, a request costs {self._spec.price})"
                    )
                raise _BudgetStop(last_error)
            try:
                return await self._attempt(source, request, tally)
            except PaymentRequired:
                raise
            except FetchError as error:
                last_error = error
                if not error.retryable or attempt == MAX_ATTEMPTS - 1:
                    raise
                delay = self._delay(attempt, error.retry_after)
                log.info(
                    "%s %s: %s, attempt %d of %d, retrying in %.2fs",
                    self.name,
                    request.path,
                    error,
                    attempt + 1,
                    MAX_ATTEMPTS,
                    delay,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Upstream's ``Retry-After`` when given, else full jitter over a doubling bound."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return self._random() * self._backoff_base * 2**attempt

    def _record(self, tally: _Tally, credits: int) -> None:
        tally.credits += credits
        if self._on_credits is not None:
            self._on_credits(self.name, credits)

    async def _attempt(self, source: SourceSpec, request: Request, tally: _Tally) -> ParsedPage:
        """One HTTP request → a parsed page, or a ``FetchError`` saying whether to retry."""
        try:
            reply = await self._send(request)
        except FetchError:  # a refused redirect, a body over the cap: it was answered
            self._record(tally, self._spec.charge(None))
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            self._record(tally, 0)  # nothing was sent
            raise FetchError(
                f"timed out connecting after {self._timeout:g}s", retryable=True
            ) from exc
        except TimeoutError as exc:
            # the request may have reached upstream: assume its documented price
            self._record(tally, self._spec.charge(None))
            raise FetchError(f"timed out after {self._timeout:g}s", retryable=True) from exc
        except aiohttp.ClientConnectorError as exc:
            self._record(tally, 0)  # nothing was sent
            raise FetchError(f"cannot connect: {exc}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            self._record(tally, self._spec.charge(None))
            raise FetchError(
                f"network error: {type(exc).__name__}: {_one_line(str(exc))}".rstrip(": "),
                retryable=True,
            ) from exc
        return self._interpret(source, reply, tally)

    async def _send(self, request: Request) -> _Reply:
        conn = self._open()
        url = URL(self._base_url + request.path, encoded=True)
        params: Mapping[str, str] | None = request.params
        async with conn.semaphore, conn.limiter:
            for _ in range(MAX_REDIRECTS + 1):
                # Redirects are followed by hand, and only within the provider's origin: the
                # session carries the API key, which must never reach another host.
                async with conn.session.get(url, params=params, allow_redirects=False) as resp:
                    target = resp.headers.get("Location") if 300 <= resp.status < 400 else None
                    if target is None:
                        body = await read_capped(resp, self._max_body)
                        return _Reply(resp.status, resp.reason, resp.headers, body)
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

    def _interpret(self, source: SourceSpec, reply: _Reply, tally: _Tally) -> ParsedPage:
        spec = self._spec
        payload = _decode(reply.body)
        body = None if payload is _NOT_JSON else payload
        request_id = spec.request_id(body) or reply.headers.get("x-request-id")
        http_ok = 200 <= reply.status < 300
        body_status = spec.body_status(body) if http_ok else None
        status = body_status or reply.status

        charged = _charged(body)
        self._record(tally, charged if charged is not None else spec.charge(reply.status))

        if 200 <= status < 300:
            if payload is _NOT_JSON:
                snippet = _one_line(reply.body[:60].decode("utf-8", "replace"), 60)
                raise MalformedPayload(
                    f"response is not valid JSON (starts {snippet!r})", request_id=request_id
                )
            try:
                return source.parse(payload)
            except MalformedPayload as error:
                error.request_id = error.request_id or request_id
                raise
            except FetchError:
                raise
            except Exception as exc:
                # A parser bug or a value it did not expect: one failed page, never a crash.
                log.debug("parser %s raised", source.watch_type, exc_info=True)
                raise MalformedPayload(
                    f"parser raised {type(exc).__name__}: {_one_line(str(exc))}".rstrip(": "),
                    request_id=request_id,
                ) from exc

        if body_status is not None:
            what = f"HTTP {reply.status} with body code {status} {_phrase(status)}"
        else:
            what = f"HTTP {status} {_phrase(status, reply.reason)}"
        upstream = spec.error_message(body)
        if status == 402:
            raise PaymentRequired(
                f"provider {self.name} is out of credits: {what}"
                + (f": {_one_line(upstream)}" if upstream else ""),
                request_id=request_id,
            )
        if status == 401:
            what += f": check the api_key of provider {self.name}"
        elif upstream:
            what += f": {_one_line(upstream)}"
        retryable = status in RETRYABLE_STATUSES
        retry_after = retry_after_seconds(reply.headers.get("Retry-After")) if retryable else None
        raise FetchError(
            what,
            retryable=retryable,
            status=status,
            retry_after=retry_after,
            request_id=request_id,
        )


def _charged(body: Any) -> int | None:
    """``meta.creditsCharged`` when the body carries a sane one."""
    meta = body.get("meta") if isinstance(body, dict) else None
    credits = meta.get("creditsCharged") if isinstance(meta, dict) else None
    if isinstance(credits, bool) or not isinstance(credits, int) or credits < 0:
        return None
    return credits
