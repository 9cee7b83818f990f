"""The database: sqlmodel tables and the only code that opens sessions.

SQLite (WAL) by default, any SQLAlchemy URL otherwise. Datetimes are aware UTC
(sqlmodel's UTCDateTime).
Decimal prices are stored as TEXT so they round-trip exactly on every backend.
Everything one poll produces (snapshot, history, alerts, deliveries, state) is written in one
transaction by ``commit_poll``: a crash leaves either all of it or none of it.

``Store`` is composed of one mixin per unit of work: polls (watch state and the poll commit),
history, alerts, credits and providers, retention, the outbox and chats, the chats' tracks,
and the job queue's view for status reports; the engine is opened in ``engine``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import make_url, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from ..models import ProviderState, WatchState
from ..util import as_utc, utcnow
from . import schema
from .alerts import AlertStore
from .botupdates import BotUpdateStore
from .chats import ChatStore
from .credits import Credits, ProviderStore
from .engine import default_db_url, make_engine, require_existing, resolve_url
from .history import HistoryStore
from .instances import HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, InstanceStore
from .outbox import CLAIM_LEASE, OutboxStore
from .polls import UNCHECKED, PollStore, PollWrite
from .retention import RetentionStore
from .status import StatusStore
from .tables import (
    AlertRow,
    CreditRow,
    DeliveryRow,
    HistoryRow,
    InstanceRow,
    Mute,
    ProviderStateRow,
    SnapshotRow,
    Subscription,
    TrackRow,
    WatchStateRow,
    product_from_json,
    product_to_json,
    snapshot_values,
)
from .tracks import TrackStore


class Store(
    PollStore,
    HistoryStore,
    AlertStore,
    ProviderStore,
    RetentionStore,
    InstanceStore,
    OutboxStore,
    ChatStore,
    StatusStore,
    BotUpdateStore,
    TrackStore,
):
    """Opens the database, creates the schema, and offers one method per unit of work."""

    def __init__(
        self,
        url: str | None = None,
        *,
        echo: bool = False,
        must_exist: bool = False,
        migrate: bool = True,
        instance_id: str | None = None,
    ) -> None:
        self.url = resolve_url(url)
        # names this Store's claims (see outbox); a daemon may choose it (its metrics carry it)
        self.instance_id = instance_id or uuid.uuid4().hex
        if must_exist:
            require_existing(self.url)
        self.engine: Engine = make_engine(self.url, echo=echo)
        try:
            self.schema = schema.upgrade(self.engine)[1] if migrate else None
        except OperationalError as exc:  # unreachable: say where, in one line
            self.engine.dispose()
            shown = make_url(self.url).render_as_string(hide_password=True)
            reason = " ".join(str(exc.orig).split())
            raise RuntimeError(f"cannot open the database {shown}: {reason}") from exc
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def ping(self) -> bool:
        with self.session() as s:
            s.exec(select(1))
        return True


__all__ = [
    "CLAIM_LEASE",
    "HEARTBEAT_EVERY",
    "HEARTBEAT_TIMEOUT",
    "UNCHECKED",
    "AlertRow",
    "CreditRow",
    "Credits",
    "DeliveryRow",
    "HistoryRow",
    "InstanceRow",
    "Mute",
    "PollWrite",
    "ProviderState",
    "ProviderStateRow",
    "SnapshotRow",
    "Store",
    "Subscription",
    "TrackRow",
    "WatchState",
    "WatchStateRow",
    "as_utc",
    "default_db_url",
    "product_from_json",
    "product_to_json",
    "snapshot_values",
    "utcnow",
]
