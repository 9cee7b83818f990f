"""``watcher run --http HOST:PORT``: ``/healthz`` for a load balancer or a probe, and
Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .. import logs
from ..metrics import Metrics

log = logging.getLogger("watcher.daemon")


class HealthServer:
    """200 ``{"ok": true}`` while ``healthy()`` says so, 503 otherwise; ``healthy`` may block
    (it asks the database), so it runs in a worker thread.

    ``info``, when given, adds its fields to the body (in a cluster: the instance id, whether
    it is in the cluster, how many instances are alive, whether it serves the bot); it may
    block too and runs in the same thread. Its fields never change the status code, which is
    ``healthy()``'s alone; if it fails, the body says so in ``info_error``.
    """

    def __init__(
        self,
        healthy: Callable[[], bool],
        metrics: Metrics,
        *,
        info: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        self.healthy = healthy
        self.info = info
        self.metrics = metrics
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, spec: str) -> int:
        """Listen on ``HOST:PORT`` (host defaults to 127.0.0.1, port 0 picks one); the port."""
        host, _, port = spec.rpartition(":")
        host = host or "127.0.0.1"
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        logs.event(log, "http_listening", addr=f"{host}:{self.port}")
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self._health)
        return web.json_response(body, status=200 if body["ok"] else 503)

    def _health(self) -> dict[str, Any]:
        ok = self.healthy()
        if self.info is None:
            return {"ok": ok}
        try:
            extra = dict(self.info())
        except Exception as exc:  # a probe still gets healthy()'s answer, and why info is absent
            logs.event(log, "health_info_failed", logging.WARNING, exc_info=True)
            extra = {"info_error": f"{type(exc).__name__}: {exc}"}
        return {**extra, "ok": ok}

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain")
