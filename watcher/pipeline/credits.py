"""Credits spent per provider per UTC day, counted as the clients report them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

from ..store import Credits, Store
from ..util import utcnow


class CreditMeter:
    """Counts credits per provider per UTC day; the clients report, the polls commit them.

    The daily budget check reads stored spend plus what is not committed yet, so a budget
    holds across runs and processes sharing the database. Credits a poll takes ride in its
    own transaction (``take`` then ``settle``); ``flush`` writes the rest on its own.
    """

    def __init__(self, store: Store, budgets: Mapping[str, int | None], clock=utcnow) -> None:
        self._store = store
        self._budgets = dict(budgets)
        self._clock = clock
        self._pending: dict[tuple[str, date], list[int]] = {}
        self._inflight: dict[tuple[str, date], int] = {}
        self._stored: dict[tuple[str, date], int] = {}
        self._lock = threading.Lock()  # record() runs on the loop, the rest in worker threads
        self._refresh_lock = threading.Lock()  # see carrying()

    def set_budgets(self, budgets: Mapping[str, int | None]) -> None:
        """A reloaded config's daily budgets: the next request is checked against them."""
        with self._lock:
            self._budgets = dict(budgets)

    def record(self, provider: str, credits: int) -> None:
        key = (provider, self._clock().date())
        with self._lock:
            slot = self._pending.setdefault(key, [0, 0])
            slot[0] += credits
            slot[1] += 1

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def spent_today(self, provider: str) -> int:
        key = (provider, self._clock().date())
        if key not in self._stored:
            stored = self._store.credits_on(provider, key[1])
            with self._lock:
                self._stored.setdefault(key, stored)
        with self._lock:
            return (
                self._stored[key] + self._pending.get(key, [0, 0])[0] + self._inflight.get(key, 0)
            )

    def left(self, provider: str) -> int | None:
        budget = self._budgets.get(provider)
        return None if budget is None else budget - self.spent_today(provider)

    def refresh_due(self, provider: str) -> bool:
        """A budgeted provider's spend is re-read before every poll: another live process
        may have spent the rest of the day's budget a second ago (one primary-key read)."""
        return self._budgets.get(provider) is not None

    def refresh(self, provider: str) -> None:
        """Re-read today's stored spend of a budgeted provider: other processes spend too."""
        if self._budgets.get(provider) is None:
            return
        key = (provider, self._clock().date())
        with self._refresh_lock:
            total = self._store.credits_on(provider, key[1])
            with self._lock:
                self._stored[key] = total

    @contextmanager
    def carrying(self) -> Iterator[list[Credits]]:
        """Credits for the caller's transaction: taken on entry, settled on exit (committed
        when the block ends without an exception). With a budgeted provider among them the
        block runs under the lock ``refresh`` takes, so a refresh never reads the database
        between the commit and the settle (which would count them twice) or across them
        (which would drop them)."""
        taken = self.take()
        budgeted = any(self._budgets.get(p) is not None for p, *_ in taken)
        with self._refresh_lock if budgeted else contextlib.nullcontext():
            ok = False
            try:
                yield taken
                ok = True
            finally:
                self.settle(taken, ok)

    def take(self) -> list[Credits]:
        """Everything recorded and not yet committed, for the caller's transaction."""
        with self._lock:
            pending, self._pending = self._pending, {}
            for key, (credits, _requests) in pending.items():
                self._inflight[key] = self._inflight.get(key, 0) + credits
        return [(p, day, c, r) for (p, day), (c, r) in pending.items()]

    def settle(self, taken: list[Credits], committed: bool) -> None:
        """After the transaction that carried ``taken``: counted as stored, or pending again."""
        with self._lock:
            for provider, day, credits, requests in taken:
                key = (provider, day)
                self._inflight[key] -= credits
                if committed:
                    if key in self._stored:
                        self._stored[key] += credits
                else:
                    slot = self._pending.setdefault(key, [0, 0])
                    slot[0] += credits
                    slot[1] += requests

    def flush(self) -> None:
        with self.carrying() as taken:
            if taken:
                self._store.add_spent(taken)
