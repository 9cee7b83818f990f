"""Credits spent per provider and day, and the providers' pause state."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..models import Alert, ProviderState
from ..util import as_utc, utcnow
from .alerts import insert_alerts
from .tables import CreditRow, ProviderStateRow, provider_state_from_row

Credits = tuple[str, date, int, int]  # (provider, UTC day, credits, requests)


def increment_credits(conn: Connection, credits: Iterable[Credits]) -> None:
    """Atomic increments in the caller's transaction (an upsert on both backends)."""
    summed: dict[tuple[str, str], list[int]] = {}
    for provider, day, n, requests in credits:
        slot = summed.setdefault((provider, day.isoformat()), [0, 0])
        slot[0] += n
        slot[1] += requests
    if not summed:
        return
    t = CreditRow.__table__
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        upsert = pg_insert(t)
    else:
        upsert = sqlite_insert(t)
    upsert = upsert.on_conflict_do_update(
        index_elements=[t.c.provider, t.c.day],
        set_={
            "credits": t.c.credits + upsert.excluded.credits,
            "requests": t.c.requests + upsert.excluded.requests,
        },
    )
    for (provider, day), (n, requests) in sorted(summed.items()):
        conn.execute(upsert.values(provider=provider, day=day, credits=n, requests=requests))


class ProviderStore:
    """Credit and provider methods of ``Store`` (it provides ``session`` and ``engine``)."""

    session: Any
    engine: Any

    def add_credits(self, provider: str, day: date, credits: int, requests: int) -> None:
        """Atomic increment: concurrent polls (and processes) must never lose credits."""
        self.add_spent([(provider, day, credits, requests)])

    def add_spent(self, credits: Iterable[Credits]) -> None:
        with self.engine.begin() as conn:
            increment_credits(conn, credits)

    def credits_on(self, provider: str, day: date) -> int:
        with self.session() as s:
            row = s.get(CreditRow, (provider, day.isoformat()))
            return row.credits if row else 0

    def provider_state(self, provider: str) -> ProviderState | None:
        with self.session() as s:
            row = s.get(ProviderStateRow, provider)
            return None if row is None else provider_state_from_row(row)

    def pause_provider(
        self,
        provider: str,
        until: datetime,
        notices: list[tuple[Alert, list[tuple[str, str]]]] | None = None,
    ) -> bool:
        """Pause a provider until ``until``; True when this starts an episode.

        Atomic: several watches hitting the same 402 at once pause it once, and the episode's
        ``notices`` are stored in the same transaction, so a crash cannot lose them.
        """
        t = ProviderStateRow.__table__
        until = as_utc(until)
        for _ in range(2):
            try:
                with self.session() as s, s.begin():
                    conn = s.connection()
                    fresh = conn.execute(
                        update(t)
                        .where(t.c.provider == provider)
                        .where(t.c.pause_notified.is_(False))
                        .values(paused_until=until, pause_notified=True)
                    )
                    if fresh.rowcount != 1:
                        again = conn.execute(
                            update(t).where(t.c.provider == provider).values(paused_until=until)
                        )
                        if again.rowcount == 1:
                            return False
                        conn.execute(
                            insert(t).values(
                                provider=provider, paused_until=until, pause_notified=True
                            )
                        )
                    insert_alerts(conn, notices or [], utcnow())
                    return True
            except IntegrityError:
                continue  # another writer created the row first: update it instead
        return False

    def set_provider_state(self, provider: str, **values: Any) -> None:
        with self.session() as s, s.begin():
            row = s.get(ProviderStateRow, provider) or ProviderStateRow(provider=provider)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)
