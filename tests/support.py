"""Real-socket test helpers: a webhook receiver that checks signatures, and a CLI runner."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.sql import Executable

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
        self.delay = 0.0  # seconds before answering (a slow receiver)
        self.hang_next = 0  # that many requests are never answered (until the sender goes)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        entry = {"headers": dict(request.headers), "raw": raw}
        self.requests.append(entry)
        if self.hang_next > 0:
            self.hang_next -= 1
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)
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
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
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


class DaemonProcess:
    """A real ``watcher run`` subprocess whose log lines the test can wait for."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> DaemonProcess:
        self.proc = await asyncio.create_subprocess_exec(
            WATCHER,
            "run",
            *self.args,
            "-v",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._new_line.set()

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    async def wait_log(self, needle: str, *, count: int = 1, timeout: float = 20) -> None:
        """Wait until ``needle`` appeared in ``count`` log lines (or fail with the log)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count(needle) < count:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}\n" + self.log())
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {needle!r} x{count} in time\n" + self.log())
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), min(left, 0.5))

    def log(self) -> str:
        return "\n".join(self.lines[-80:])

    async def stop(self, sig: int = 15, timeout: float = 15) -> tuple[int, float]:
        """Send ``sig`` (SIGTERM by default); return (exit code, seconds it took)."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("daemon did not stop in time\n" + self.log()) from None
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        return code, loop.time() - started

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def wait_until(predicate, *, timeout: float = 20, what: str = "condition") -> None:
    """Poll ``predicate`` with a deadline: end-to-end waits never sleep and hope."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def sql(url: str, statement: str | Executable, **params: Any) -> list[tuple]:
    """Run one statement against the test database (SQLite or PostgreSQL) and return its rows.

    Tests look at the stored state through this rather than a backend's own client, so the
    same assertion holds on both.
    """
    engine = create_engine(url)
    try:
        with engine.begin() as con:
            stmt = text(statement) if isinstance(statement, str) else statement
            result = con.execute(stmt, params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def table_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, sorted, by table name."""
    engine = create_engine(url)
    try:
        names = inspect(engine).get_table_names()
        with engine.connect() as con:
            out = {}
            for name in names:
                table = Table(name, MetaData(), autoload_with=con)
                out[name] = sorted(map(tuple, con.execute(select(table))), key=repr)
            return out
    finally:
        engine.dispose()
