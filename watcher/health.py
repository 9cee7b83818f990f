"""Watch health as pure steps: what a poll saw, in; the next state and its notices, out.

Four once-per-episode machines (SPEC section 9), each telling its episode once:

- **empty**: a poll that read no product at all starts an episode (one ``watch_empty``);
  a poll that reads products ends it.
- **failing / recovered**: ``notify_failures_after`` failed polls in a row (a poll with a
  failed page counts) send one ``watch_failing``; the first good poll after it sends one
  ``watch_recovered``.
- **not found**: the store is gone upstream: one ``watch_not_found`` per episode; a poll
  with an answer ends it. Not a failure: it neither counts nor resets the failures.
- **payment** (per provider): an HTTP 402 pauses the provider for an hour with one
  ``provider_paused`` per episode; any answer to the probe after the hour ends it.

No I/O, no clock: ``now`` is passed in. The pipeline stores the new state (the same
columns as ever: ``watch_state`` and ``provider_state``) and turns the notices into alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .models import PollResult, ProviderState, WatchState
from .util import as_utc

if TYPE_CHECKING:
    from .configschema import WatchConfig

PAUSE_ON_402 = timedelta(hours=1)


class Seen(StrEnum):
    """What one poll saw, as far as health goes."""

    OK = "ok"  # products, no failed page (stopped early by the budget is ok too)
    PARTIAL = "partial"  # products, but a page failed: counts as a failure
    EMPTY = "empty"  # an answer without a single product
    FAILED = "failed"  # no product, an error
    NOT_FOUND = "not_found"  # the store does not exist upstream
    PAYMENT_REQUIRED = "payment_required"  # HTTP 402: the provider's credits ran out


@dataclass(frozen=True, slots=True)
class Observation:
    seen: Seen
    error: str | None = None  # the last error (failed, partial, payment required)
    baseline: bool = False  # the poll was a baseline (an empty one: "check its definition")

    @classmethod
    def of(cls, result: PollResult, *, baseline: bool = False) -> Observation:
        """What a poll's result means for health; the order is the pipeline's order."""
        if result.not_found:
            return cls(Seen.NOT_FOUND)
        if result.errors:
            seen = Seen.PARTIAL if result.products else Seen.FAILED
            return cls(seen, error=result.errors[-1], baseline=baseline)
        return cls(Seen.OK if result.products else Seen.EMPTY, baseline=baseline)


@dataclass(frozen=True, slots=True)
class Health:
    """The health columns of a watch's state row.

    ``seq`` is read, never written here: with ``last_success_at`` it names the episode
    (see ``episode``). ``last_poll_at`` is what guards the state write (another process's
    write in between moves it).
    """

    seq: int = 0
    consecutive_failures: int = 0
    failing_notified: bool = False
    last_error: str | None = None
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    empty_episode: bool = False
    not_found_episode: bool = False

    @classmethod
    def of(cls, state: WatchState) -> Health:
        return cls(**{name: getattr(state, name) for name in _HEALTH_FIELDS})

    def columns(self) -> dict[str, Any]:
        """The values to store (every health column but ``seq``, which the commit owns)."""
        return {name: getattr(self, name) for name in _HEALTH_FIELDS if name != "seq"}


_HEALTH_FIELDS = tuple(f.name for f in fields(Health))


@dataclass(frozen=True, slots=True)
class Settings:
    """The watch's configuration the machines need."""

    watch_id: str
    notify_failures_after: int = 3
    url: str | None = None  # a store watch's URL: the not-found notice names it

    @classmethod
    def of(cls, watch: WatchConfig) -> Settings:
        return cls(watch.id, watch.notify_failures_after, watch.url)


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice to send, as plain data; ``key`` (with kind and watch) is its identity."""

    kind: str
    watch_id: str | None
    message: str
    key: str


def episode(state: Health) -> str:
    """What tells one failing or not-found episode of a watch from the next.

    The seq alone does not (quiet polls leave it), but a successful poll always ends an
    episode and moves ``last_success_at``; two processes polling the same episode read the
    same state and so produce the same notice id, which the outbox stores once.
    """
    since = state.last_success_at.isoformat() if state.last_success_at else "-"
    return f"{state.seq}:{since}"


def step(
    state: Health, observation: Observation, now: datetime, *, settings: Settings
) -> tuple[Health, tuple[Notice, ...]]:
    """The watch's next health and the notices this poll sends (empty, failing, recovered,
    not found). A 402 leaves the watch as it was: it is the provider's (``pause_step``)."""
    seen = observation.seen
    if seen is Seen.PAYMENT_REQUIRED:
        return state, ()
    now = as_utc(now)
    watch_id = settings.watch_id
    if seen is Seen.NOT_FOUND:
        found: tuple[Notice, ...] = ()
        if not state.not_found_episode:
            message = f"Watch {watch_id}: the store {settings.url} was not found upstream"
            found = (Notice("watch_not_found", watch_id, message, f"not_found:{episode(state)}"),)
        new = replace(
            state, not_found_episode=True, last_poll_at=now, last_error="store not found"
        )
        return new, found
    failed = seen in (Seen.FAILED, Seen.PARTIAL)
    new, notices = _failures(state, failed, observation.error, now, settings)
    new = replace(new, last_poll_at=now, last_error=observation.error if failed else None)
    if seen is Seen.FAILED:
        return new, notices
    # an answer with or without products: the store is there
    new = replace(new, not_found_episode=False, empty_episode=seen is Seen.EMPTY)
    if seen is Seen.EMPTY and not state.empty_episode:
        message = f"Watch {watch_id} returned no products" + (
            " on its first poll; check its definition" if observation.baseline else ""
        )
        notices += (Notice("watch_empty", watch_id, message, str(state.seq)),)
    return new, notices


def _failures(
    state: Health, failed: bool, error: str | None, now: datetime, settings: Settings
) -> tuple[Health, tuple[Notice, ...]]:
    """One watch_failing per outage and one watch_recovered after it."""
    watch_id = settings.watch_id
    if failed:
        failures = state.consecutive_failures + 1
        new = replace(state, consecutive_failures=failures)
        if failures >= settings.notify_failures_after and not state.failing_notified:
            message = f"Watch {watch_id} failed {failures} polls in a row; last error: {error}"
            key = f"failing:{episode(state)}"
            return replace(new, failing_notified=True), (
                Notice("watch_failing", watch_id, message, key),
            )
        return new, ()
    new = replace(state, consecutive_failures=0, last_success_at=now, failing_notified=False)
    if state.failing_notified:
        message = f"Watch {watch_id} recovered after {state.consecutive_failures} failed polls"
        return new, (Notice("watch_recovered", watch_id, message, f"recovered:{episode(state)}"),)
    return new, ()


# ---------------------------------------------------------------- the provider's pause


def paused(state: ProviderState | None, now: datetime) -> bool:
    """Polls of the provider wait: its pause has not run out yet."""
    return bool(state and state.paused_until and as_utc(now) < state.paused_until)


def pause_notice(provider: str, until: datetime) -> Notice:
    message = (
        f"Provider {provider} answered 402 (out of credits): polls paused until "
        f"{until:%Y-%m-%d %H:%M} UTC, then one probe"
    )
    return Notice("provider_paused", None, message, f"{provider}:{until:%Y%m%d%H%M}")


def pause_step(
    state: ProviderState, observation: Observation, now: datetime
) -> tuple[ProviderState, tuple[Notice, ...]]:
    """The provider's next pause state: a 402 pauses it for ``PAUSE_ON_402`` (told once per
    episode); any other answer while a pause is stored is the probe's, and ends the episode.

    ``Store.pause_provider`` applies the 402 step as one compare-and-set, so processes
    sharing the database tell an episode once between them.
    """
    if observation.seen is Seen.PAYMENT_REQUIRED:
        until = as_utc(now) + PAUSE_ON_402
        notices = () if state.pause_notified else (pause_notice(state.provider, until),)
        return replace(state, paused_until=until, pause_notified=True), notices
    if state.paused_until is not None:
        return replace(state, paused_until=None, pause_notified=False), ()
    return state, ()
