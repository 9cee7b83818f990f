"""Instances: who holds claims, whether it still lives, and handing back what the dead held.

Claims name the claiming instance (one per Store: a process, never a PID or a host name).
An instance renews its heartbeat while it runs; the claims of one whose heartbeat stopped
(a crash, a SIGKILL, a lost machine) are handed back within ``HEARTBEAT_TIMEOUT``, not when
the outbox's lease runs out.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

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

    def register_instance(self, now: datetime | None = None) -> None:
        """Announce this instance before it claims anything (see ``release_dead_claims``)."""
        now = as_utc(now or utcnow())
        with self.session() as s, s.begin():
            s.add(
                InstanceRow(
                    id=self.instance_id,
                    host=_PROCESS_SCOPE or socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def heartbeat(self, now: datetime | None = None) -> None:
        i = InstanceRow.__table__.c
        with self.session() as s, s.begin():
            s.connection().execute(
                update(InstanceRow.__table__)
                .where(i.id == self.instance_id)
                .values(heartbeat_at=as_utc(now or utcnow()))
            )

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
                for iid, scope, pid in conn.execute(
                    select(i.id, i.host, i.pid).where(i.heartbeat_at >= now - HEARTBEAT_TIMEOUT)
                )
                # Beating recently, but visibly gone: same kernel boot and PID namespace, and
                # no such process. Only then is a PID proof (a reused PID only looks alive,
                # which falls back to the heartbeat); a restart hands back at once.
                if not (_PROCESS_SCOPE and scope == _PROCESS_SCOPE and not _pid_alive(pid))
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
