"""/metrics per instance (every sample labelled with the instance in a cluster, none alone)
and /healthz saying whether the instance is in the cluster, over a real socket."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from watcher.daemon.http import HealthServer
from watcher.metrics import Metrics


def count_some(m: Metrics) -> None:
    m.polls.labels(watch="w1", status="ok").inc(3)
    m.poll_failures.labels(watch="w1").inc()
    m.alerts.labels(rule="r", kind="price_drop").inc(2)
    m.delivery("tg", "sent", 4)
    m.credit("socialfetch", 7)
    m.poll_duration.labels(watch="w1").observe(0.3)


def samples(m: Metrics) -> list[Sample]:
    text = m.render().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    [hit] = [s.value for s in found if s.name == name and s.labels == labels]
    return hit


def test_every_sample_carries_the_instance_and_keeps_its_value() -> None:
    m = Metrics("7f3a-host-a", "host-a", cluster=True)
    count_some(m)
    found = samples(m)
    assert found and all(s.labels.get("instance") == "7f3a-host-a" for s in found)
    i = {"instance": "7f3a-host-a"}
    assert value(found, "watcher_polls_total", watch="w1", status="ok", **i) == 3
    assert value(found, "watcher_poll_failures_total", watch="w1", **i) == 1
    assert value(found, "watcher_alerts_total", rule="r", kind="price_drop", **i) == 2
    assert value(found, "watcher_deliveries_total", channel="tg", outcome="sent", **i) == 4
    assert value(found, "watcher_credits_total", provider="socialfetch", **i) == 7
    assert value(found, "watcher_poll_duration_seconds_count", watch="w1", **i) == 1
    assert value(found, "watcher_poll_duration_seconds_bucket", watch="w1", le="0.5", **i) == 1
    assert value(found, "watcher_poll_duration_seconds_bucket", watch="w1", le="0.25", **i) == 0
    info = [s for s in found if s.name == "watcher_instance_info"]
    assert info == [
        Sample(
            "watcher_instance_info",
            {"instance": "7f3a-host-a", "host": "host-a", "cluster": "true"},
            1.0,
        )
    ]


def test_instance_info_defaults_to_this_host_outside_cluster_mode() -> None:
    found = samples(Metrics("solo"))
    [info] = [s for s in found if s.name == "watcher_instance_info"]
    assert info.labels == {"instance": "solo", "host": socket.gethostname(), "cluster": "false"}


def test_later_counts_appear_labelled_too() -> None:
    """The label is added when /metrics is read, so series created after start have it."""
    m = Metrics("a")
    samples(m)
    m.polls.labels(watch="late", status="failed").inc()
    assert value(samples(m), "watcher_polls_total", watch="late", status="failed", instance="a")


def test_without_an_instance_the_output_is_as_before() -> None:
    m = Metrics()
    count_some(m)
    found = samples(m)
    assert found and not any("instance" in s.labels for s in found)
    assert not any(s.name == "watcher_instance_info" for s in found)
    assert m.render() == generate_latest(m.registry)
    assert value(found, "watcher_credits_total", provider="socialfetch") == 7


def test_two_instances_in_one_process_keep_their_own_counts() -> None:
    a, b = Metrics("a"), Metrics("b")
    a.credit("keyapi", 1)
    b.credit("keyapi", 5)
    assert value(samples(a), "watcher_credits_total", provider="keyapi", instance="a") == 1
    assert value(samples(b), "watcher_credits_total", provider="keyapi", instance="b") == 5


# --------------------------------------------------------------------------- /healthz

CLUSTER_INFO = {
    "instance": "7f3a-host-a",
    "cluster": True,
    "in_cluster": True,
    "instances_alive": 3,
    "serves_bot": False,
}

Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a HealthServer on a free port of 127.0.0.1; its base URL."""
    servers: list[HealthServer] = []

    async def start(
        healthy: Callable[[], bool],
        info: Callable[[], Mapping[str, object]] | None = None,
        metrics: Metrics | None = None,
    ) -> str:
        server = HealthServer(healthy, metrics or Metrics("7f3a-host-a"), info=info)
        servers.append(server)
        port = await server.start("127.0.0.1:0")
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.close()


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def test_healthz_adds_the_cluster_fields(serve: Serve) -> None:
    base = await serve(lambda: True, lambda: CLUSTER_INFO)
    assert await get(f"{base}/healthz") == (200, {"ok": True, **CLUSTER_INFO})


async def test_healthz_status_stays_healthys_own(serve: Serve) -> None:
    """Out of the cluster but healthy is 200 (the fields say so); unhealthy is 503."""
    out = {**CLUSTER_INFO, "in_cluster": False, "instances_alive": 0}
    base = await serve(lambda: True, lambda: out)
    assert await get(f"{base}/healthz") == (200, {"ok": True, **out})
    base = await serve(lambda: False, lambda: {**CLUSTER_INFO, "ok": True})
    assert await get(f"{base}/healthz") == (503, {**CLUSTER_INFO, "ok": False})


async def test_healthz_without_info_is_as_before(serve: Serve) -> None:
    base = await serve(lambda: True)
    assert await get(f"{base}/healthz") == (200, {"ok": True})


async def test_info_that_fails_leaves_the_answer_and_says_why(serve: Serve) -> None:
    def broken() -> Mapping[str, object]:
        raise OSError("connection refused")

    base = await serve(lambda: True, broken)
    assert await get(f"{base}/healthz") == (
        200,
        {"ok": True, "info_error": "OSError: connection refused"},
    )


async def test_slow_info_runs_off_the_event_loop(serve: Serve) -> None:
    """info asks the database: while it blocks, /metrics still answers."""
    release = threading.Event()

    def slow() -> Mapping[str, object]:
        release.wait(10)
        return CLUSTER_INFO

    m = Metrics("7f3a-host-a")
    m.credit("keyapi", 2)
    base = await serve(lambda: True, slow, m)
    health = asyncio.create_task(get(f"{base}/healthz"))
    started = time.monotonic()
    status, text = await asyncio.wait_for(get(f"{base}/metrics"), 5)
    assert time.monotonic() - started < 5 and not health.done()
    assert status == 200
    assert 'watcher_credits_total{instance="7f3a-host-a",provider="keyapi"} 2.0' in text
    release.set()
    assert await health == (200, {"ok": True, **CLUSTER_INFO})
