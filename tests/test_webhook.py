"""The webhook channel over a real local socket: body, signature, and status → retry policy."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from watcher.channels.webhook import WebhookChannel
from watcher.config import ChannelConfig
from watcher.errors import DeliveryError
from watcher.models import Alert, Product

from .support import WebhookReceiver

ALERT = Alert(
    alert_id="abc123",
    kind="price_drop",
    watch_id="goli-store",
    detected_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    rule_id="price-drop-10",
    product=Product(id="1729", title="Gummies", price=Decimal("14.96"), currency="USD"),
    previous=Product(id="1729", price=Decimal("19.99")),
    message="Gummies $19.99 → $14.96",
)


@pytest.fixture
async def receiver():
    r = WebhookReceiver(secret="s3cret")
    await r.start()
    yield r
    await r.close()


def channel(url: str, **kw) -> WebhookChannel:
    return WebhookChannel(ChannelConfig(id="hooks", type="webhook", url=url, **kw))


async def test_signed_json_body(receiver):
    ch = channel(receiver.url, secret="s3cret", headers={"X-Team": "pricing"})
    await ch.send("", [ALERT])
    await ch.close()
    assert receiver.bad_signatures == 0
    [req] = receiver.requests
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["X-Team"] == "pricing"
    body = json.loads(req["raw"])
    assert body["alert_id"] == "abc123"
    assert body["product"]["price"] == "14.96"
    assert body["previous"]["price"] == "19.99"


async def test_wrong_secret_is_rejected_by_receiver(receiver):
    ch = channel(receiver.url, secret="other")
    with pytest.raises(DeliveryError) as e:
        await ch.send("", [ALERT])
    await ch.close()
    assert receiver.bad_signatures == 1
    assert e.value.retryable is False  # 401: a config problem, retrying cannot help


async def test_digest_body_lists_every_alert(receiver):
    ch = channel(receiver.url, secret="s3cret")
    second = replace(ALERT, alert_id="def456")
    await ch.send("", [ALERT, second])
    await ch.close()
    assert [a["alert_id"] for a in receiver.alerts()] == ["abc123", "def456"]


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (408, True),
        (429, True),
        (400, False),
        (404, False),
        (410, False),
    ],
)
async def test_status_mapping(receiver, status, retryable):
    receiver.fail_next, receiver.fail_status, receiver.retry_after = 1, status, "12"
    ch = channel(receiver.url, secret="s3cret")
    with pytest.raises(DeliveryError) as e:
        await ch.send("", [ALERT])
    await ch.close()
    assert e.value.retryable is retryable
    assert e.value.retry_after == 12


async def test_connection_refused_is_retryable():
    ch = channel("http://127.0.0.1:9/hook")
    with pytest.raises(DeliveryError) as e:
        await ch.send("", [ALERT])
    await ch.close()
    assert e.value.retryable
