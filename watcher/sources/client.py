"""The only code that talks to the paid data APIs: paging, retries, budget, credits.

One ``ProviderClient`` per provider owns one ``Transport`` (session, concurrency and rate
limits, spec section 9). ``poll`` turns upstream trouble into an incomplete ``PollResult``
with a readable error; only ``PaymentRequired`` (the provider must pause) and
``ProviderUnavailable`` (the daily budget forbids the first request) escape it. What a reply
means and costs is ``responses.read_reply`` with the provider's own definition.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from watcher import logs
from watcher.errors import FetchError, PaymentRequired, ProviderUnavailable
from watcher.models import PollResult, Product
from watcher.sources import PROVIDERS, SOURCES
from watcher.sources.normalise import MalformedPayload, ParsedPage, assign_ranks
from watcher.sources.responses import RETRYABLE_STATUSES, read_reply
from watcher.sources.specs import Request, SourceSpec, WatchParams
from watcher.sources.transport import NotSent, Transport
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

CreditsCallback = Callable[[str, int], None]
CreditsLeft = Callable[[], int | None]
PageCallback = Callable[[str], None]
Sleep = Callable[[float], Awaitable[Any]]


class ProviderSettings(Protocol):
    """What the client reads of a provider's config (``config.ProviderConfig`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def api_key(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def requests_per_second(self) -> float: ...
    @property
    def max_response_mib(self) -> int: ...


class PolledWatch(WatchParams, Protocol):
    """A watch as polled (``config.WatchConfig`` is one)."""

    @property
    def max_pages(self) -> int: ...


@dataclass(slots=True)
class _Progress:
    """What one poll has read and spent so far (a client serves many polls at once)."""

    pages: list[tuple[Product, ...]] = field(default_factory=list)
    read: int = 0
    errors: list[str] = field(default_factory=list)
    complete: bool = True
    exhausted: bool = False
    not_found: bool = False
    credits: int = 0

    def result(self, watch: WatchParams) -> PollResult:
        """Products ranked across the pages read, each id once."""
        products = assign_ranks(self.pages)
        repeats = sum(map(len, self.pages)) - len(products)
        if repeats:
            # Paginated lists shift between requests; the first occurrence is the one kept.
            logs.event(log, "repeats_dropped", watch=watch.id, type=watch.type, repeats=repeats)
        return PollResult(
            products=products,
            complete=self.complete,
            exhausted=self.exhausted,
            not_found=self.not_found,
            errors=tuple(self.errors),
            pages=self.read,
            credits=self.credits,
        )


class _BudgetStop(Exception):
    """The daily budget forbids the next request of a poll that already spent credits."""

    def __init__(self, last_error: FetchError | None) -> None:
        super().__init__("daily credit budget spent")
        self.last_error = last_error


class ProviderClient:
    """Fetches pages of every watch of one provider.

    Args:
        provider: the provider's config (key, base URL, concurrency, rate).
        on_credits: called ``(provider, credits)`` after every attempt, with what the
            provider's ``credits`` says the response cost.
        credits_left: remaining daily budget, or None for unlimited; a request whose
            documented price exceeds it is not sent.
        backoff_base: first retry delay bound in seconds (full jitter, doubling).
        timeout: total seconds per request.
        sleep: awaited for backoff delays (tests inject a recorder).
        random: returns a float in [0, 1) for jitter.
        on_page: called ``(watch id)`` after each page read, for a progress report (the
            ``on_page`` attribute may also be set later).
    """

    def __init__(
        self,
        provider: ProviderSettings,
        *,
        on_credits: CreditsCallback | None = None,
        credits_left: CreditsLeft | None = None,
        backoff_base: float = 0.5,
        timeout: float = 30,
        sleep: Sleep = asyncio.sleep,
        random: Callable[[], float] = _random.random,
        on_page: PageCallback | None = None,
    ) -> None:
        if provider.name not in PROVIDERS:
            raise ValueError(f"unknown provider {provider.name!r}")
        self.name = provider.name
        self._spec = PROVIDERS[provider.name]
        self._on_credits = on_credits
        self._credits_left = credits_left
        self._backoff_base = backoff_base
        self._sleep = sleep
        self._random = random
        self.on_page = on_page
        self._transport = Transport(
            provider.base_url,
            self._spec.auth(provider.api_key),
            max_concurrency=provider.max_concurrency,
            requests_per_second=provider.requests_per_second,
            max_body=provider.max_response_mib * 2**20,
            timeout=timeout,
        )

    def __repr__(self) -> str:  # never show the key
        return f"ProviderClient({self.name!r}, base_url={self._transport.base_url!r})"

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def set_share(self, instances: int) -> None:
        """Take this instance's share when ``instances`` are alive in the cluster.

        The provider's ``max_concurrency`` and ``requests_per_second`` are the cluster's:
        this instance then allows ``max(1, max_concurrency // instances)`` requests in
        flight (so with more instances than ``max_concurrency`` each still has one) and
        ``requests_per_second / instances`` per second. 1 (the default) is all of it. Call
        it from the loop that polls; requests in flight finish, later ones obey the new
        limits.
        """
        self._transport.set_share(instances)

    @property
    def limits(self) -> tuple[int, float]:
        """This instance's (requests in flight, requests per second) under its share."""
        return self._transport.max_in_flight, self._transport.rate

    async def close(self) -> None:
        """Close the session; a later request opens a new one."""
        await self._transport.close()

    async def poll(self, watch: PolledWatch) -> PollResult:
        """Read up to ``watch.max_pages`` pages and rank the products across them.

        Raises:
            PaymentRequired: upstream answered 402; the caller pauses the provider.
            ProviderUnavailable: the daily budget forbids even the first request.
        """
        source = SOURCES[watch.type]
        if source.provider != self.name:
            raise ValueError(f"watch {watch.id!r} ({watch.type}) is not served by {self.name}")
        progress = _Progress()
        request = source.first_request(watch)
        for page_no in range(1, watch.max_pages + 1):
            try:
                page = await self._fetch_page(source, request, page_no == 1, progress)
            except _BudgetStop as stop:
                progress.complete = False
                if stop.last_error is not None:
                    progress.errors.append(_failure(watch, page_no, stop.last_error, budget=True))
                break
            except PaymentRequired:
                raise
            except FetchError as error:
                progress.complete = False
                progress.errors.append(_failure(watch, page_no, error))
                break
            progress.read += 1
            if self.on_page is not None:
                self.on_page(watch.id)
            if page.not_found:
                progress.not_found = progress.exhausted = True
                break
            progress.pages.append(page.products)
            if page.skipped:
                # An unusable product is not an absent one: no removals, no rank moves
                # (the ones after it would shift) from this poll.
                progress.complete = False
                logs.event(
                    log,
                    "products_skipped",
                    logging.WARNING,
                    watch=watch.id,
                    type=watch.type,
                    page=page_no,
                    skipped=len(page.skipped),
                    first=page.skipped[0],
                )
            if not page.has_more or page.next is None:
                progress.exhausted = True  # only upstream can say there is no more
                break
            if not page.products:
                # Spec section 1 stops paging on an empty page, but one that still says
                # hasMore may be a glitch: products beyond it must not look removed.
                logs.event(
                    log, "empty_page_with_more", watch=watch.id, type=watch.type, page=page_no
                )
                break
            request = source.next_request(watch, page.next)
        return progress.result(watch)

    async def _fetch_page(
        self, source: SourceSpec, request: Request, first: bool, progress: _Progress
    ) -> ParsedPage:
        """One page with retries; raises the last ``FetchError`` when it cannot be read."""
        last_error: FetchError | None = None
        price = self._spec.price
        for attempt in range(MAX_ATTEMPTS):
            left = self._credits_left() if self._credits_left is not None else None
            if left is not None and left < price:
                if first and attempt == 0:
                    raise ProviderUnavailable(
                        f"provider {self.name}: daily credit budget spent "
                        f"({left} credits left, a request costs {price})"
                    )
                raise _BudgetStop(last_error)
            try:
                return await self._attempt(source, request, progress)
            except PaymentRequired:
                raise
            except FetchError as error:
                last_error = error
                if not error.retryable or attempt == MAX_ATTEMPTS - 1:
                    raise
                delay = _backoff(attempt, error.retry_after, self._backoff_base, self._random)
                logs.event(
                    log,
                    "retry",
                    provider=self.name,
                    path=request.path,
                    error=str(error),
                    attempt=attempt + 1,
                    attempts=MAX_ATTEMPTS,
                    delay=f"{delay:.2f}s",
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, progress: _Progress, credits: int) -> None:
        progress.credits += credits
        if self._on_credits is not None:
            self._on_credits(self.name, credits)

    async def _attempt(
        self, source: SourceSpec, request: Request, progress: _Progress
    ) -> ParsedPage:
        """One HTTP request → a parsed page, or a ``FetchError`` saying whether to retry."""
        try:
            reply = await self._transport.send(request)
        except NotSent:
            self._record(progress, 0)
            raise
        except FetchError:  # it may have reached upstream: the provider says what it costs
            self._record(progress, self._spec.credits(None, None))
            raise
        answer = read_reply(self._spec, source, reply)
        self._record(progress, answer.credits)
        if answer.error is not None:
            raise answer.error
        assert answer.page is not None
        return answer.page


def _backoff(
    attempt: int, retry_after: float | None, base: float, random: Callable[[], float]
) -> float:
    """Upstream's ``Retry-After`` when given, else full jitter over a doubling bound."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return random() * base * 2**attempt


def _failure(watch: WatchParams, page_no: int, error: FetchError, *, budget: bool = False) -> str:
    """One line naming the watch, the page, what went wrong and the request id."""
    message = f"{watch.type} {watch.id} page {page_no}: {error}"
    if error.request_id:
        message += f" (request {error.request_id})"
    if budget:
        message += "; not retried: daily credit budget spent"
    name = "malformed_payload" if isinstance(error, MalformedPayload) else "page_failed"
    logs.event(
        log,
        name,
        logging.WARNING,
        watch=watch.id,
        type=watch.type,
        page=page_no,
        error=str(error),
        request=error.request_id,
        budget=budget or None,
    )
    return message
