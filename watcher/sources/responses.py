"""An upstream reply → a parsed page or a readable ``FetchError``, and what it cost. Pure.

``read_reply`` applies the provider's conventions (request ids, body status codes, error
messages, credits) and the watch type's parser. A parser that raises anything but
``FetchError`` yields a ``MalformedPayload`` failed page, never a crash; 402 becomes
``PaymentRequired`` (the provider must pause).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from watcher import logs
from watcher.errors import FetchError, PaymentRequired
from watcher.sources.normalise import MalformedPayload, ParsedPage
from watcher.sources.specs import ProviderSpec, SourceSpec
from watcher.util import retry_after_seconds

log = logging.getLogger("watcher.sources")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503})
MESSAGE_LIMIT = 200
NOT_JSON = object()


@dataclass(frozen=True, slots=True)
class Reply:
    """What upstream answered: status, reason, headers (case-insensitive) and raw body."""

    status: int
    reason: str | None
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply read: its credits, and either the page or the error to raise."""

    credits: int
    page: ParsedPage | None = None
    error: FetchError | None = None


def decode_json(body: bytes) -> Any:
    """JSON with exact decimals, or ``NOT_JSON`` (HTML error pages, truncated bodies)."""
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError):
        return NOT_JSON


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def phrase(status: int, reason: str | None = None) -> str:
    if reason:
        return reason
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def read_reply(provider: ProviderSpec, source: SourceSpec, reply: Reply) -> Answer:
    """The page of a 2xx reply (or of a failure status inside one), else the error."""
    payload = decode_json(reply.body)
    body = None if payload is NOT_JSON else payload
    request_id = provider.request_id(body) or reply.headers.get("x-request-id")
    http_ok = 200 <= reply.status < 300
    body_status = provider.body_status(body) if http_ok else None
    status = body_status or reply.status
    credits = provider.credits(reply.status, body)
    if 200 <= status < 300:
        try:
            return Answer(credits, page=_parse(source, reply, payload, request_id))
        except FetchError as error:
            return Answer(credits, error=error)
    if body_status is not None:
        what = f"HTTP {reply.status} with body code {status} {phrase(status)}"
    else:
        what = f"HTTP {status} {phrase(status, reply.reason)}"
    upstream = provider.error_message(body)
    if status == 402:
        error: FetchError = PaymentRequired(
            f"provider {provider.name} is out of credits: {what}"
            + (f": {one_line(upstream)}" if upstream else ""),
            request_id=request_id,
        )
        return Answer(credits, error=error)
    if status == 401:
        what += f": check the api_key of provider {provider.name}"
    elif upstream:
        what += f": {one_line(upstream)}"
    retryable = status in RETRYABLE_STATUSES
    retry_after = retry_after_seconds(reply.headers.get("Retry-After")) if retryable else None
    error = FetchError(
        what, retryable=retryable, status=status, retry_after=retry_after, request_id=request_id
    )
    return Answer(credits, error=error)


def _parse(source: SourceSpec, reply: Reply, payload: Any, request_id: str | None) -> ParsedPage:
    if payload is NOT_JSON:
        snippet = one_line(reply.body[:60].decode("utf-8", "replace"), 60)
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
        logs.event(log, "parser_raised", logging.DEBUG, exc_info=True, type=source.watch_type)
        raise MalformedPayload(
            f"parser raised {type(exc).__name__}: {one_line(str(exc))}".rstrip(": "),
            request_id=request_id,
        ) from exc
