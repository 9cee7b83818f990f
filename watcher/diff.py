"""Compare one poll with the stored snapshot of a watch (spec section 4). Pure: no I/O, no clock.

Removals need a complete *and* exhausted poll; rank updates need a complete poll; an empty
poll changes nothing; a product counts as removed only after ``missing_after`` consecutive
complete, exhausted polls without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from watcher.models import Change, DiffResult, EventKind, PollResult, Product, Tracked

# Product fields whose change is an event (and a history row). ``rank`` is handled apart:
# only a complete poll may move it.
_VALUE_EVENTS: tuple[tuple[str, EventKind], ...] = (
    ("price", EventKind.PRICE_CHANGE),
    ("discount_percent", EventKind.DISCOUNT_CHANGE),
    ("sold", EventKind.SOLD_CHANGE),
)


def diff(
    previous: Mapping[str, Tracked] | None,
    poll: PollResult,
    *,
    missing_after: int = 2,
) -> DiffResult:
    """Diff ``poll`` against ``previous`` (the stored state; None for a baseline).

    Args:
        previous: product id → stored state, or None when the watch has no baseline yet.
        poll: what this poll read; its products carry 1-based ranks across the pages read.
        missing_after: complete, exhausted polls a product must be absent to count removed.

    Returns:
        The changes (poll order, then disappearing products in stored order), the full new
        state, and the ids whose price, discount, rank, sold or presence changed.
    """
    products = _unique(poll.products)
    if previous is None:
        tracked = {p.id: Tracked(p) for p in products}
        return DiffResult(
            changes=(),
            tracked=tracked,
            history=tuple(tracked),
            empty=not products,
            baseline=True,
        )
    if not products:
        # An empty result is an upstream or watch problem, not "everything was removed".
        return DiffResult(changes=(), tracked=dict(previous), history=(), empty=True)

    tracked: dict[str, Tracked] = dict(previous)
    changes: list[Change] = []
    history: list[str] = []

    def record(pid: str, old: Product | None, new: Product, events: set[EventKind]) -> None:
        # Every event is a change of price, discount, rank, sold or presence: a history row.
        if events:
            changes.append(Change(pid, old, new, frozenset(events)))
            history.append(pid)

    for fresh in products:
        stored = previous.get(fresh.id)
        old = stored.product if stored is not None else None
        new = fresh if poll.complete else replace(fresh, rank=old.rank if old else None)
        events: set[EventKind] = set()
        if stored is None:
            events.add(EventKind.NEW_ITEM)
        else:
            if not stored.present:
                events.add(EventKind.RETURNED_ITEM)
            events |= _value_events(stored.product, new)
        tracked[fresh.id] = Tracked(new, present=True, missed=0)
        record(fresh.id, old, new, events)

    if poll.complete:
        seen = {p.id for p in products}
        for pid, stored in previous.items():
            if pid in seen or not stored.present:
                continue
            old = stored.product
            new = replace(old, rank=None)
            events = {EventKind.RANK_CHANGE} if old.rank is not None else set()
            missed = stored.missed
            present = True
            if poll.exhausted:
                missed += 1
                if missed >= missing_after:
                    present = False
                    events.add(EventKind.REMOVED_ITEM)
            tracked[pid] = Tracked(new, present=present, missed=missed)
            record(pid, old, new, events)

    return DiffResult(changes=tuple(changes), tracked=tracked, history=tuple(history))


def _value_events(old: Product, new: Product) -> set[EventKind]:
    events = {kind for name, kind in _VALUE_EVENTS if getattr(old, name) != getattr(new, name)}
    if old.rank != new.rank:
        events.add(EventKind.RANK_CHANGE)
    return events


def _unique(products: Iterable[Product]) -> tuple[Product, ...]:
    """Products de-duplicated by id, first occurrence kept (PollResult promises this already)."""
    seen: set[str] = set()
    out: list[Product] = []
    for p in products:
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return tuple(out)
