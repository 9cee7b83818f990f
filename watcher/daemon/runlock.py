"""One ``watcher run`` per SQLite file: a second one refuses to start and names the first.

Two daemons on one SQLite file would each poll every watch (credits twice) and fight over
every commit; a cluster needs PostgreSQL. The lock is an ``flock`` on a file beside the
database, so the kernel releases it the moment its holder dies (a SIGKILL, a crash): a stale
lock cannot keep the next start out. A manual ``watcher once`` takes no lock and keeps
working beside a daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path

from sqlalchemy import make_url

from ..errors import WatcherError
from ..util import iso_utc, utcnow


class AlreadyRunning(WatcherError):
    """Another ``watcher run`` holds this SQLite database."""


def lock_path(url: str) -> Path | None:
    """The lock file of a SQLite database on disk (None: not SQLite, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    db = Path(parsed.database)  # type: ignore[arg-type]
    return db.with_name(db.name + ".run.lock")


class RunLock:
    """Held from start to exit of one ``watcher run`` on SQLite."""

    def __init__(self, url: str) -> None:
        self.path = lock_path(url)
        self.database = make_url(url).database
        self._fd: int | None = None
        self._since = ""

    def acquire(self, instance_id: str = "starting") -> None:
        """Take the lock, or raise ``AlreadyRunning`` naming the daemon that holds it."""
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"{self.database} is in use by another `watcher run` ({holder}); stop it "
                "first, or run several on PostgreSQL (README: Running a cluster)"
            ) from None
        self._fd = fd
        self._since = iso_utc(utcnow())
        self.name(instance_id)

    def name(self, instance_id: str) -> None:
        """Say who holds the lock (the instance id is known once the store is open)."""
        if self._fd is None:
            return
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "instance": instance_id,
            "since": self._since,
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw or b"{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "starting"
    return (
        f"pid {info.get('pid')} on {info.get('host')}, instance "
        f"{str(info.get('instance'))[:8]}, since {info.get('since')}"
    )
