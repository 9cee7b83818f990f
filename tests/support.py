"""Real-socket test helpers: a webhook receiver that checks signatures, and a CLI runner."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

WATCHER = str(Path(sys.executable).with_name("watcher"))


class WebhookReceiver:
    """A local webhook endpoint: records every request, verifies the HMAC, can fail on purpose.

    ``fail_next`` answers that many requests with ``fail_status`` before accepting.
    """

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_next = 0
        self.fail_status = 503
        self.retry_after: str | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        entry = {"headers": dict(request.headers), "raw": raw}
        self.requests.append(entry)
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
            got = request.headers.get("X-Watcher-Signature", "")
            if (
                not hmac.compare_digest(expected, got)
                or not request.headers.get("X-Watcher-Timestamp", "").isdigit()
            ):
                self.bad_signatures += 1
                return web.Response(status=401, text="bad signature")
        if self.fail_next > 0:
            self.fail_next -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.fail_status, text="try later", headers=headers)
        body = json.loads(raw)
        entry["body"] = body
        self.accepted.append(body)
        return web.json_response({"ok": True})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def alerts(self) -> list[dict[str, Any]]:
        """Every accepted alert, digests flattened, in arrival order."""
        out: list[dict[str, Any]] = []
        for body in self.accepted:
            out.extend(body.get("alerts", [body]))
        return out


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    extra: dict[str, Any] = field(default_factory=dict)


async def run_watcher(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> Result:
    """Run the real ``watcher`` console script without blocking the test's event loop.

    The loop keeps serving the simulator and the webhook receiver meanwhile.
    """
    full_env = {**os.environ, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        WATCHER,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"watcher {args} timed out\n{err.decode()}") from None
    return Result(proc.returncode or 0, out.decode(), err.decode())
