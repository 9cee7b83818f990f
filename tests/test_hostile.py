"""Hostile upstreams and receivers over real sockets: redirects that would carry the API key
or the signature to another host, and bodies that expand without bound."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from watcher.channels.webhook import WebhookChannel
from watcher.config import ChannelConfig, ProviderConfig, WatchConfig
from watcher.errors import DeliveryError
from watcher.models import Alert, Product
from watcher.sources.client import ProviderClient

UPSTREAM = Path(__file__).parent / "data" / "upstream"
KEY = "sfk_live_do_not_leak"
STORE = WatchConfig(
    id="goli-store", type="store", url="https://www.tiktok.com/shop/store/goli/1", region="US"
)
ALERT = Alert(
    alert_id="abc123",
    kind="price_drop",
    watch_id="goli-store",
    detected_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    rule_id="price-drop-10",
    product=Product(id="1729", title="Gummies", price=Decimal("14.96"), currency="USD"),
    message="Gummies $14.96",
)


class Server:
    """One local HTTP server (one origin) whose handlers the test sets, recording requests."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.headers: list[dict[str, str]] = []
        self.routes: dict[str, Any] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        await request.read()
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)

    async def start(self) -> Server:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def servers():
    made: list[Server] = []

    async def make() -> Server:
        made.append(await Server().start())
        return made[-1]

    yield make
    for s in made:
        await s.close()


def store_page() -> dict[str, Any]:
    body = json.loads((UPSTREAM / "store_found.json").read_text())
    body["data"]["page"] = {"nextCursor": None, "hasMore": False}
    return body


def client(base_url: str, **provider: Any) -> ProviderClient:
    return ProviderClient(
        ProviderConfig("socialfetch", KEY, base_url, **provider), backoff_base=0.0
    )


def redirect(to: str, status: int = 302):
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": to})

    return handler


def answer(body: dict[str, Any]):
    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(body)

    return handler


# ---------------------------------------------------------------- upstream


async def test_an_upstream_redirect_to_another_host_never_receives_the_api_key(servers):
    api, elsewhere = await servers(), await servers()
    api.routes["/v1/tiktok/shop/products"] = redirect(f"{elsewhere.url}/steal")
    elsewhere.routes["/steal"] = answer(store_page())
    c = client(api.url)
    try:
        result = await c.poll(STORE)
    finally:
        await c.close()
    assert elsewhere.requests == []  # not one request, so not the key either
    assert result.products == () and not result.complete
    (error,) = result.errors
    assert "redirect to another origin" in error and "refused" in error
    assert KEY not in error
    assert len(api.requests) == 1  # not retried: the answer will not change


async def test_a_same_origin_redirect_is_followed(servers):
    api = await servers()
    api.routes["/v1/tiktok/shop/products"] = redirect("/v2/products", status=307)
    api.routes["/v2/products"] = answer(store_page())
    c = client(api.url)
    try:
        result = await c.poll(STORE)
    finally:
        await c.close()
    assert result.complete and len(result.products) == len(store_page()["data"]["products"])
    assert [h.get("x-api-key") for h in api.headers] == [KEY, KEY]


async def test_a_gzip_bomb_is_a_failed_page_stopped_at_the_cap(servers):
    api = await servers()
    page = json.dumps(store_page()).encode()
    bomb = gzip.compress(page[:-1] + b" " * (40 * 2**20) + page[-1:], compresslevel=9)
    assert len(bomb) < 2**20 // 2  # tiny on the wire, 40 MiB once expanded

    async def gzipped(_request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    api.routes["/v1/tiktok/shop/products"] = gzipped
    c = client(api.url, max_response_mib=2)
    try:
        result = await c.poll(STORE)
    finally:
        await c.close()
    assert result.products == ()
    (error,) = result.errors
    assert "over 2 MiB after decompression" in error
    # within the cap, the same page compressed is read as usual
    api.routes["/v1/tiktok/shop/products"] = _gzip_answer(gzip.compress(page))
    c = client(api.url, max_response_mib=2)
    try:
        assert (await c.poll(STORE)).complete
    finally:
        await c.close()


def _gzip_answer(data: bytes):
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(
            body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    return handler


# ---------------------------------------------------------------- webhooks


def hook(url: str, **kw: Any) -> WebhookChannel:
    return WebhookChannel(
        ChannelConfig(
            id="hooks",
            type="webhook",
            url=url,
            secret="whsec_do_not_leak",
            headers={"Authorization": "Bearer tok_do_not_leak"},
            **kw,
        )
    )


async def test_a_webhook_redirect_is_not_followed_by_default(servers):
    receiver, elsewhere = await servers(), await servers()
    receiver.routes["/hook"] = redirect(f"{elsewhere.url}/hook", status=307)
    ch = hook(f"{receiver.url}/hook")
    try:
        with pytest.raises(DeliveryError) as caught:
            await ch.send("", [ALERT])
    finally:
        await ch.close()
    assert caught.value.retryable is False  # a wrong url: dead, see `watcher alerts --failed`
    assert "redirect not followed" in str(caught.value)
    assert elsewhere.requests == []


async def test_a_followed_webhook_redirect_never_carries_the_signature_to_another_host(servers):
    receiver, elsewhere = await servers(), await servers()

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    receiver.routes["/old"] = redirect("/hook", status=308)  # same origin: still signed
    receiver.routes["/hook"] = ok
    elsewhere.routes["/hook"] = ok
    ch = hook(f"{receiver.url}/old", follow_redirects=True)
    try:
        await ch.send("", [ALERT])
        assert [h.get("x-watcher-signature", "")[:7] for h in receiver.headers] == [
            "sha256=",
            "sha256=",
        ]
        receiver.routes["/old"] = redirect(f"{elsewhere.url}/hook", status=307)
        await ch.send("", [ALERT])
    finally:
        await ch.close()
    (moved,) = elsewhere.headers
    assert "x-watcher-signature" not in moved and "authorization" not in moved
    assert json.loads(await elsewhere.requests[0].read())["alert_id"] == "abc123"


async def test_a_huge_webhook_reply_is_not_read_whole(servers):
    receiver = await servers()

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=500)
        await resp.prepare(request)
        for _ in range(64):  # 64 MiB of error page, if anyone read it all
            await resp.write(b"x" * 2**20)
        return resp

    receiver.routes["/hook"] = huge
    ch = hook(f"{receiver.url}/hook")
    try:
        with pytest.raises(DeliveryError) as caught:
            await ch.send("", [ALERT])
    finally:
        await ch.close()
    assert caught.value.retryable is True and "HTTP 500" in str(caught.value)
    assert len(str(caught.value)) < 400
