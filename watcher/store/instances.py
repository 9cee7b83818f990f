"""Instances: who holds claims, whether it still lives, and handing back what the dead held.

Claims name the claiming instance (one per Store: a process, never a PID or a host name).
An instance renews its heartbeat while it runs; the claims of one whose heartbeat stopped
(a crash, a SIGKILL, a lost machine) are handed back within ``HEARTBEAT_TIMEOUT``, not when
the outbox's lease runs out. ``instances`` is the cluster as an operator sees it.

The ``host`` column holds the host name and, after a space, the process scope (kernel boot
and PID namespace) in which the PID means one process; a row of an older watcher holds the
scope alone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from ..models import InstanceInfo
from ..util import as_utc, utcnow
from .tables import DeliveryRow, InstanceRow

HEARTBEAT_EVERY = timedelta(seconds=10)
HEARTBEAT_TIMEOUT = timedelta(seconds=30)  # three missed beats: the instance is gone
INSTANCE_FORGET = timedelta(days=1)  # rows of instances gone this long are deleted


class InstanceStore:
    """Instance methods of ``Store`` (it provides ``session``, ``instance_id`` and
    ``release_claim``)."""

    session: Any
    instance_id: str
    release_claim: Any

    def register_instance(
        self, now: datetime | None = None, *, command: str | None = None
    ) -> None:
        """Announce this instance before it claims anything (see ``release_dead_claims``);
        ``command`` (run, once, demo) is what ``watcher status`` shows it doing."""
        now = as_utc(now or utcnow())
        host = socket.gethostname()
        with self.session() as s, s.begin():
            s.add(
                InstanceRow(
                    id=self.instance_id,
                    host=f"{host} {_PROCESS_SCOPE}" if _PROCESS_SCOPE else host,
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    command=command,
                )
            )

    def _set_mine(self, **values: Any) -> None:
        """Write ``values`` to this instance's row."""
        with self.session() as s, s.begin():
            s.connection().execute(
                update(InstanceRow.__table__)
                .where(InstanceRow.__table__.c.id == self.instance_id)
                .values(**values)
            )

    def set_serves_bot(self, flag: bool) -> None:
        """Mark this instance as the one answering the Telegram bot (or no longer)."""
        self._set_mine(serves_bot=flag)

    def set_config_loaded(self, at: datetime) -> None:
        """When this daemon (re)loaded the config it runs: ``watcher status`` shows it."""
        self._set_mine(config_loaded_at=as_utc(at))

    def set_poll_workers(self, worker_ids: Iterable[int]) -> None:
        """Name this instance's job-queue workers (cluster mode): once the instance is known
        dead, the jobs they held are retried at once, not after the workers' heartbeat."""
        self._set_mine(poll_workers=",".join(str(w) for w in sorted(worker_ids)) or None)

    def dead_poll_workers(self, now: datetime | None = None) -> list[int]:
        """The job-queue workers of instances that are gone, told the way
        ``release_dead_claims`` tells it (a restart on the same host: at once)."""
        now = as_utc(now or utcnow())
        i = InstanceRow.__table__.c
        with self.session() as s:
            rows = s.connection().execute(
                select(i.id, i.host, i.pid, i.heartbeat_at, i.poll_workers).where(
                    i.poll_workers.is_not(None)
                )
            )
            return [
                int(w)
                for iid, host, pid, beat, workers in rows
                if iid != self.instance_id
                and not _alive(as_utc(beat), _host_and_scope(host)[1], pid, now)
                for w in workers.split(",")
                if w.isdigit()
            ]

    def instances(self, now: datetime | None = None) -> list[InstanceInfo]:
        """Every registered instance, oldest first, each told ``alive`` or not the way
        ``release_dead_claims`` tells it (a clean exit deletes its row)."""
        now = as_utc(now or utcnow())
        with self.session() as s:
            rows = s.exec(select(InstanceRow).order_by(InstanceRow.started_at)).scalars().all()
        out = []
        for r in rows:
            name, scope = _host_and_scope(r.host)
            out.append(
                InstanceInfo(
                    id=r.id,
                    host=name,
                    pid=r.pid,
                    command=r.command,
                    started_at=as_utc(r.started_at),
                    heartbeat_at=as_utc(r.heartbeat_at),
                    serves_bot=bool(r.serves_bot),
                    alive=_alive(as_utc(r.heartbeat_at), scope, r.pid, now),
                    config_loaded_at=as_utc(r.config_loaded_at) if r.config_loaded_at else None,
                )
            )
        return out

    def heartbeat(self, now: datetime | None = None) -> None:
        self._set_mine(heartbeat_at=as_utc(now or utcnow()))

    def end_instance(self, now: datetime | None = None) -> None:
        """A clean exit: hand back whatever this instance still holds, and sign off."""
        now = as_utc(now or utcnow())
        d = DeliveryRow.__table__.c
        with self.session() as s, s.begin():
            s.connection().execute(
                update(DeliveryRow.__table__)
                .where(d.claim.like(f"{self.instance_id}:%"))
                .where(d.status == "pending")
                .values(claim=None, next_attempt_at=now)
            )
            s.connection().execute(
                delete(InstanceRow.__table__).where(InstanceRow.__table__.c.id == self.instance_id)
            )

    def release_dead_claims(self, now: datetime | None = None) -> int:
        """Hand back the claims of instances that stopped their heartbeat (a crash, a SIGKILL,
        a lost machine): their deliveries are due now, not when the lease runs out.

        Returns how many claims were released. Claims in the pre-instance form (host:pid:…)
        are left to their lease: their owner cannot be told alive or dead.
        """
        now = as_utc(now or utcnow())
        d = DeliveryRow.__table__.c
        i = InstanceRow.__table__.c
        with self.session() as s:
            conn = s.connection()
            tokens = {
                row[0]
                for row in conn.execute(
                    select(d.claim)
                    .where(d.status == "pending")
                    .where(d.claim.is_not(None))
                    .distinct()
                )
            }
            alive = {
                iid
                for iid, host, pid, beat in conn.execute(
                    select(i.id, i.host, i.pid, i.heartbeat_at).where(
                        i.heartbeat_at >= now - HEARTBEAT_TIMEOUT
                    )
                )
                if _alive(as_utc(beat), _host_and_scope(host)[1], pid, now)
            }
        alive.add(self.instance_id)
        dead = [t for t in tokens if t.count(":") == 1 and t.split(":", 1)[0] not in alive]
        for token in dead:
            self.release_claim(token, now)
        with self.session() as s, s.begin():
            s.connection().execute(
                delete(InstanceRow.__table__).where(i.heartbeat_at < now - INSTANCE_FORGET)
            )
        return len(dead)


def _alive(heartbeat_at: datetime, scope: str | None, pid: int, now: datetime) -> bool:
    """Beating within the timeout, and not visibly gone: same kernel boot and PID namespace
    as this process, and no such process. Only then is a PID proof (a reused PID only looks
    alive, which falls back to the heartbeat); a restart hands back at once."""
    if heartbeat_at < now - HEARTBEAT_TIMEOUT:
        return False
    return not (_PROCESS_SCOPE and scope == _PROCESS_SCOPE and not _pid_alive(pid))


def _host_and_scope(host: str) -> tuple[str, str | None]:
    """The ``host`` column → (host name, process scope or None); an older watcher's row
    holds the scope alone (it has a slash, which no host name has)."""
    name, sep, scope = host.partition(" ")
    if sep:
        return name, scope
    return host, host if "/" in host else None


def _process_scope() -> str | None:
    """Where a PID means one process: this kernel boot and this PID namespace (Linux).

    Host names do not say it (containers share them), PIDs alone do not (every container's
    daemon is PID 1), so without /proc there is no scope and only heartbeats count.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or a PID we cannot ask about: alive
    return True


_PROCESS_SCOPE = _process_scope()
