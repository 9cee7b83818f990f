"""Which instance of a cluster serves the Telegram bot: leadership through PostgreSQL itself.

Telegram lets one client long-poll a bot token: a second ``getUpdates`` ends the first with
409 Conflict. So of all the ``watcher run`` instances on one database, one, the leader, runs
the bot and the others only send alerts. The leader is whoever holds a session advisory lock
(``pg_try_advisory_lock``, its key a hash of the bot's channel id) on one dedicated
connection; the server releases the lock the moment that session ends, so there is no lease
to wait out and no row to clean up.

What bounds a failover (the issue allows 60 s):

- The leader's process dies (crash, SIGKILL, OOM): its kernel closes the socket, the server
  ends the session and drops the lock at once, and a follower takes it at its next try:
  within ``check_every``.
- The leader's host is lost (power, cable): no FIN ever arrives. The session's server-side
  TCP keepalives (idle ``KEEPALIVE_IDLE``, then ``KEEPALIVE_COUNT`` probes
  ``KEEPALIVE_INTERVAL`` apart) and ``tcp_user_timeout`` (``USER_TIMEOUT_MS``, for data the
  host never acknowledged) end it within about 25 s; a follower takes the lock
  ``check_every`` later: about 30 s with the default 5 s.
- The leader loses the database (network, restart, ``pg_terminate_backend``): it reads its
  connection while it waits, so a closed session is seen at once, and a silent one by the
  client's own keepalives or by ``SELECT 1`` failing within ``CHECK_TIMEOUT``. It stops
  answering at once (``on_deposed``) and campaigns again on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo
from sqlalchemy import make_url

from .. import logs

log = logging.getLogger("watcher.daemon.leader")

KEEPALIVE_IDLE = 10  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 5  # seconds between probes
KEEPALIVE_COUNT = 3  # unanswered probes before the peer is declared gone
USER_TIMEOUT_MS = 25_000  # unacknowledged data this long: the peer is gone
CONNECT_TIMEOUT = 10  # seconds (libpq's connect_timeout is whole seconds)
CHECK_TIMEOUT = 5.0  # the leader's SELECT 1 (and a follower's try) must answer within this
MIGRATION_LOCK = 0x7761746368  # the key watcher.store.schema migrates under: never ours

Callback = Callable[[], Awaitable[None]]


def lock_key(name: str) -> int:
    """The advisory lock key for ``name``: a stable signed 64-bit hash (the same on every
    host and Python; ``hash()`` is salted per process), never the migration lock's key."""
    digest = hashlib.sha256(f"watcher.leader:{name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    return key ^ 1 if key == MIGRATION_LOCK else key


def conninfo(url: str, name: str) -> str:
    """libpq's connection string for the store's SQLAlchemy URL, with keepalives on.

    As SQLAlchemy's psycopg dialect does: the URL's parts, then its query (``?host=/run/pg``,
    ``?sslmode=require``) over them; a repeated key (several hosts) becomes libpq's list.
    """
    parsed = make_url(url)
    parts = {
        "host": parsed.host,
        "port": parsed.port,
        "dbname": parsed.database,
        "user": parsed.username,
        "password": parsed.password,
    }
    params: dict[str, object] = {k: v for k, v in parts.items() if v is not None}
    params.update((k, ",".join(v) if isinstance(v, tuple) else v) for k, v in parsed.query.items())
    params.update(
        application_name=f"watcher leader {name}"[:63],
        connect_timeout=CONNECT_TIMEOUT,
        keepalives=1,
        keepalives_idle=KEEPALIVE_IDLE,
        keepalives_interval=KEEPALIVE_INTERVAL,
        keepalives_count=KEEPALIVE_COUNT,
    )
    if pq.version() >= 120000:  # libpq 12 added tcp_user_timeout
        params["tcp_user_timeout"] = USER_TIMEOUT_MS
    return make_conninfo("", **params)  # type: ignore[arg-type]


class Leadership:
    """Campaigns for leadership of ``name`` on the database at ``url``; calls ``on_elected``
    when it wins and ``on_deposed`` when it loses (or stops), never both at once.

    A follower tries every ``check_every`` seconds; the leader checks its connection as
    often. An ``on_elected`` that raises steps down (another instance may do better), an
    ``on_deposed`` that raises is logged: neither stops the campaign.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        on_elected: Callback,
        on_deposed: Callback,
        check_every: float = 5.0,
    ) -> None:
        self.name = name
        self.key = lock_key(name)
        self.check_every = check_every
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self._conninfo = conninfo(url, name)
        self._conn: psycopg.AsyncConnection | None = None  # type: ignore[type-arg]
        self._leader = False
        self._serving = False  # on_elected was called, on_deposed not yet
        self._failing = False  # the last try could not reach the database
        self._task: asyncio.Task[None] | None = None
        self._calling = asyncio.Lock()  # stop() never cancels a callback halfway

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        """Begin campaigning in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._campaign(), name=f"leader:{self.name}")

    async def stop(self) -> None:
        """Stop campaigning; a leader calls ``on_deposed``, then releases the lock."""
        task, self._task = self._task, None
        if task is not None:
            async with self._calling:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._leader:
            await self._step_down("stop")
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                await asyncio.wait_for(
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)), CHECK_TIMEOUT
                )
            await self._close(conn)

    # ------------------------------------------------------------------ the campaign

    async def _campaign(self) -> None:
        while True:
            if await self._try_lock():
                self._leader = True
                logs.event(log, "bot_leader", channel=self.name)
                if await self._call(self.on_elected, "on_elected", serving=True):
                    await self._hold()
                    continue  # the connection failed: campaign again at once, on a new one
                await self._step_down("on_elected failed")
                await self._drop()
            await asyncio.sleep(self.check_every)

    async def _try_lock(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            cur = await asyncio.wait_for(
                self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)),
                CHECK_TIMEOUT,
            )
            row = await cur.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            # the first failure of a run is a warning; the repeats while it lasts are not
            level = logging.DEBUG if self._failing else logging.WARNING
            self._failing = True
            logs.event(log, "bot_campaign_failed", level, channel=self.name, error=repr(exc))
            await self._drop()
            return False
        self._failing = False
        return bool(row and row[0])

    async def _hold(self) -> None:
        """Stay leader while the connection lives; step down the moment it does not."""
        conn = self._conn
        assert conn is not None
        try:
            while True:
                # Nobody LISTENs here: waiting for notifications reads the socket, so the
                # server closing the session (terminated, restarted) is seen at once.
                async for _ in conn.notifies(timeout=self.check_every):
                    pass
                await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_TIMEOUT)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._step_down(repr(exc))
            await self._drop()

    async def _step_down(self, reason: str) -> None:
        self._leader = False  # at once: no answers while on_deposed runs
        level = logging.INFO if reason == "stop" else logging.WARNING
        logs.event(log, "bot_deposed", level, channel=self.name, reason=reason)
        if self._serving:  # not when stop() came before on_elected could run
            await self._call(self.on_deposed, "on_deposed", serving=False)

    async def _call(self, callback: Callback, which: str, *, serving: bool) -> bool:
        async with self._calling:
            self._serving = serving
            try:
                await callback()
            except Exception as exc:  # the campaign must go on; the failure is logged
                logs.event(
                    log,
                    "bot_leader_callback_failed",
                    logging.ERROR,
                    exc_info=exc,
                    channel=self.name,
                    callback=which,
                    error=repr(exc),
                )
                return False
        return True

    # ------------------------------------------------------------------ the connection

    async def _connect(self) -> psycopg.AsyncConnection:  # type: ignore[type-arg]
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:  # the server's side of the keepalives: it must notice a lost host, not only we
            for setting, value in (
                ("tcp_keepalives_idle", KEEPALIVE_IDLE),
                ("tcp_keepalives_interval", KEEPALIVE_INTERVAL),
                ("tcp_keepalives_count", KEEPALIVE_COUNT),
                ("tcp_user_timeout", USER_TIMEOUT_MS),
            ):
                try:
                    await conn.execute(f"SET {setting} = {int(value)}")
                except psycopg.errors.UndefinedObject:  # tcp_user_timeout: PostgreSQL >= 12
                    logs.event(log, "bot_leader_setting_missing", logging.DEBUG, setting=setting)
        except BaseException:
            await self._close(conn)
            raise
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close(conn)

    @staticmethod
    async def _close(conn: psycopg.AsyncConnection) -> None:  # type: ignore[type-arg]
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()


class LocalLeadership:
    """Always the leader: on SQLite one ``watcher run`` has the file to itself, so the
    daemon can treat a single instance and a cluster alike."""

    def __init__(
        self,
        url: str = "",
        name: str = "",
        *,
        on_elected: Callback,
        on_deposed: Callback,
        check_every: float = 5.0,
    ) -> None:
        self.name = name
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        """Elected at once: returns when ``on_elected`` has run (nothing to wait for)."""
        if not self._leader:
            self._leader = True
            logs.event(log, "bot_leader", channel=self.name)
            await self._call(self.on_elected, "on_elected")

    async def stop(self) -> None:
        if self._leader:
            self._leader = False
            logs.event(log, "bot_deposed", channel=self.name, reason="stop")
            await self._call(self.on_deposed, "on_deposed")

    async def _call(self, callback: Callback, which: str) -> None:
        try:
            await callback()
        except Exception as exc:  # as Leadership: logged, the daemon goes on
            logs.event(
                log,
                "bot_leader_callback_failed",
                logging.ERROR,
                exc_info=exc,
                channel=self.name,
                callback=which,
                error=repr(exc),
            )
