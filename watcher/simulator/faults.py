"""Injected failures: which requests they hit and the broken responses they produce."""

from __future__ import annotations

import asyncio
import fnmatch
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .endpoints import Endpoint

FAULT_BODIES = ("json", "html", "truncated", "garbage", "wrong_types", "empty", "disconnect")
_BAD_200_BODIES = frozenset(FAULT_BODIES) - {"json"}
GARBAGE = b"\x1f\x8b\x08\x00<!--\xff\xfe garbage {{["
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "path": (str, type(None)),
    "status": (int, type(None)),
    "times": (int, type(None)),
    "retry_after": (int, float, type(None)),
    "body": (str,),
    "page": (int, type(None)),
    "keyapi_code": (int, type(None)),
    "params": (dict,),
    "delay": (int, float),
}


@dataclass
class Fault:
    """Make the next ``times`` matching API requests fail (``times=None``: until cleared).

    Matches on ``path`` (exact, or a glob such as ``/v1/tiktok/profiles/*``; None = any API
    path), on the 1-based ``page`` (cursor position for cursor endpoints) and on request
    ``params`` (query or path values, e.g. ``{"url": ...}`` or ``{"handle": ...}``).
    ``body`` is ``json`` (the provider's error envelope with ``status``, default 503), or one
    of ``html``, ``truncated``, ``garbage``, ``wrong_types``, ``empty`` (default status 200),
    or ``disconnect`` (the connection is dropped; aiohttp clients retry that once by
    themselves). ``keyapi_code`` makes KeyAPI answer HTTP ``status`` (default 200) with that
    body ``code``. ``retry_after`` sets the Retry-After header; ``delay`` waits first.
    """

    path: str | None = None
    status: int | None = None
    times: int | None = 1
    retry_after: float | None = None
    body: str = "json"
    page: int | None = None
    keyapi_code: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    used: int = 0

    def __post_init__(self) -> None:
        if self.body not in FAULT_BODIES:
            raise ValueError(f"body must be one of {', '.join(FAULT_BODIES)}, not {self.body!r}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or null: until cleared)")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {self.status}")

    @property
    def http_status(self) -> int:
        if self.status is not None:
            return self.status
        return 200 if self.keyapi_code is not None or self.body in _BAD_200_BODIES else 503

    @property
    def spent(self) -> bool:
        return self.times is not None and self.used >= self.times

    def matches(self, path: str, page: int | None, params: dict[str, str]) -> bool:
        if (
            self.path is not None
            and path != self.path
            and not fnmatch.fnmatchcase(path, self.path)
        ):
            return False
        if self.page is not None and page != self.page:
            return False
        return all(params.get(k) == v for k, v in self.params.items())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Build from a control-API body; ValueError says which key is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(data) - set(_FIELD_TYPES)
        if unknown:
            raise ValueError(
                f"unknown fault keys {sorted(unknown)}; allowed: {sorted(_FIELD_TYPES)}"
            )
        for key, value in data.items():
            if not isinstance(value, _FIELD_TYPES[key]) or isinstance(value, bool):
                raise ValueError(f"fault key {key!r} has the wrong type: {value!r}")
        return cls(**data)


async def fault_response(
    request: web.Request,
    fault: Fault,
    endpoint: Endpoint,
    request_id: str,
    render: Callable[[], Any],
) -> web.StreamResponse:
    """The broken answer ``fault`` asks for; ``render`` gives the real body to break."""
    if fault.delay:
        await asyncio.sleep(fault.delay)
    status = fault.http_status
    headers = {}
    if fault.retry_after is not None:
        ra = fault.retry_after
        headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
    if fault.body == "disconnect":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=status)  # never reaches the client
    if fault.body == "json":
        code = fault.keyapi_code if endpoint.keyapi and fault.keyapi_code else status
        body = endpoint.error_body(code, request_id)
        return web.json_response(body, status=status, headers=headers)
    if fault.body == "html":
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        text = (
            f"<html><head><title>{status} {reason}</title></head><body><center>"
            f"<h1>{status} {reason}</h1></center><hr><center>nginx</center></body></html>"
        )
        return web.Response(text=text, status=status, headers=headers, content_type="text/html")
    if fault.body in ("garbage", "empty"):
        raw = GARBAGE if fault.body == "garbage" else b""
        return web.Response(
            body=raw, status=status, headers=headers, content_type="application/json"
        )
    payload = render()
    if fault.body == "wrong_types":
        payload = wrong_types(payload)
    text = json.dumps(payload)
    if fault.body == "truncated":
        text = text[: len(text) // 2]
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")


def wrong_types(payload: Any) -> Any:
    """The same payload with documented types broken (ids as numbers, prices as floats…)."""
    payload = json.loads(json.dumps(payload))
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return payload
    for p in data.get("products", []):
        p["id"] = int(p["id"])
        price = p.get("price") or {}
        for key in ("current", "salePrice"):
            if price.get(key) is not None:
                price[key] = float(price[key])
        counts = p.get("metrics") or p.get("sales") or {}
        for key in ("sold", "soldCount"):
            if counts.get(key) is not None:
                counts[key] = f"{counts[key] / 1000:.1f}K"
    if isinstance(data.get("page"), dict):
        data["page"]["hasMore"] = str(data["page"]["hasMore"]).lower()
    if isinstance(data.get("pagination"), dict):
        data["pagination"]["has_more"] = str(data["pagination"]["has_more"]).lower()
        for row in data.get("list", []):
            row["impression"] = f"{row['impression'] / 1e6:.1f}M"
            if row.get("third_ecom_category"):
                row["third_ecom_category"]["id"] = int(row["third_ecom_category"]["id"])
    return payload
