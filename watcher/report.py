"""The status report of the whole cluster, from the store and the config alone: what both
``watcher status`` and the bot's /status show.

Next polls come from where the polls are scheduled. On PostgreSQL that is the job queue every
instance shares (a waiting poll job: its time; a running one: polling now; none: nothing
will poll the watch). On SQLite it is the one daemon's scheduler, in memory; its schedule is
deterministic (``triggers``), so the next poll is computed here the way it computes it, as
long as a daemon is alive to run it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import make_url

from .config import Config, WatchConfig
from .models import InstanceInfo, WatchState
from .status import StatusReport, WatchStatus
from .store import Store, schema
from .triggers import trigger_for
from .util import as_utc, utcnow


def open_to_read(db: str | None) -> Store:
    """The database as a status report reads it: never created, never migrated (a newer
    ``watcher status`` must not upgrade a running cluster's schema under it).

    Raises RuntimeError with the one line to show when there is nothing to read.
    """
    store = Store(db, must_exist=True, migrate=False)
    try:
        state = schema.current(store.engine)
        schema.check_known(state.current)
    except BaseException:
        store.close()
        raise
    if not state.up_to_date:
        store.close()
        shown = make_url(store.url).render_as_string(hide_password=True)
        if state.current is None:
            raise RuntimeError(
                f"no watcher database at {shown}; run `watcher once` or `watcher run` first"
            )
        raise RuntimeError(
            f"{shown} has schema {state.current}, this watcher reads {state.head}; "
            "`watcher db upgrade` migrates it"
        )
    return store


def status_report(store: Store, config: Config, now: datetime | None = None) -> StatusReport:
    """Read everything the report shows (a few small queries; call it off the event loop)."""
    now = as_utc(now or utcnow())
    cluster = store.engine.dialect.name == "postgresql"
    states = store.all_watch_states()
    instances = tuple(store.instances(now))
    queued = store.queued_polls() if cluster else {}
    since = scheduler_since(instances)
    watches = []
    for w in config.watches.values():
        st = states.get(w.id)
        if cluster:
            next_at, polling = queued_next_poll(queued.get(w.id), now)
        else:
            next_at, polling = local_next_poll(w, st, since, now), False
        watches.append(
            WatchStatus(
                watch_id=w.id,
                last_poll=st.last_poll_at if st else None,
                next_poll=next_at,
                last_error=st.last_error if st else None,
                products=st.products if st else 0,
                polling=polling,
            )
        )
    day = now.date()
    return StatusReport(
        at=now,
        database=make_url(store.url).render_as_string(hide_password=True),
        cluster=cluster,
        watches=tuple(watches),
        day=day,
        credits={name: store.credits_on(name, day) for name in config.providers},
        budgets={name: p.daily_credit_budget for name, p in config.providers.items()},
        deliveries=store.delivery_counts(),
        instances=instances,
    )


def queued_next_poll(
    job: tuple[datetime | None, str] | None, now: datetime
) -> tuple[datetime | None, bool]:
    """(next poll, polling now) from the watch's job in the queue: a running job is polling
    now; a waiting one polls at its time (none set: as soon as a worker is free)."""
    if job is None:
        return None, False
    scheduled_at, status = job
    if status == "doing":
        return None, True
    return scheduled_at or now, False


def scheduler_since(instances: tuple[InstanceInfo, ...]) -> datetime | None:
    """When the oldest living daemon started (its scheduler holds the next polls), or None.

    A ``once`` is no scheduler; an instance of a watcher older than the command column
    (command None) is taken for a daemon.
    """
    starts = [i.started_at for i in instances if i.alive and i.command != "once"]
    return min(starts) if starts else None


def local_next_poll(
    watch: WatchConfig, state: WatchState | None, since: datetime | None, now: datetime
) -> datetime | None:
    """The next poll the single-host daemon's scheduler makes: at its start for a watch it
    has not polled since (a time not after ``now``: due), then on the watch's trigger after
    the last poll. None without a living daemon: nothing will poll it."""
    if since is None:
        return None
    last = state.last_poll_at if state else None
    if last is None or as_utc(last) < since:
        return since
    return trigger_for(watch).get_next_fire_time(as_utc(last), now)
