"""Which claimed deliveries go out now, which wait (quiet hours, a mute), and in how many
messages. Pure: plain data and ``now`` in, a plan out.

Per target (a chat, a webhook URL): held deliveries come back as one digest when their hold
ends; otherwise a poll's alerts (one ``batch``) go as one digest when they are more than
the channel's ``group_over`` (SPEC §6), one message each else. A message is one alert, or,
for a channel whose type ``merges_per_product`` (a chat, the console: a person reads it),
all the alerts of one product in that poll: one message listing each reason. A target's
messages are sent
in order, one after another (a crash then has at most one send of it in flight to repeat);
targets are independent of each other. Each alert keeps its own delivery row either way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ..models import Alert, Delivery
from ..render import product_key

if TYPE_CHECKING:
    from ..configschema import ChannelConfig

Item = tuple[Delivery, Alert]
Mutes = Mapping[tuple[str, int], datetime]


@dataclass(frozen=True, slots=True)
class Message:
    """One send: one alert, the alerts of one product in one poll, or a digest."""

    items: tuple[Item, ...]

    @property
    def ids(self) -> list[int]:
        return [d.id for d, _ in self.items]

    @property
    def alerts(self) -> list[Alert]:
        return [a for _, a in self.items]


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What happens to one target's deliveries in this pass: held, or sent as ``messages``."""

    channel: str
    target: str
    items: tuple[Item, ...]
    held_until: datetime | None = None
    messages: tuple[Message, ...] = ()

    @property
    def ids(self) -> list[int]:
        return [d.id for d, _ in self.items]


def quiet_until(now: datetime, window: tuple[str, str] | None, tz: str) -> datetime | None:
    """When the quiet window that ``now`` falls in ends (UTC), or None outside quiet hours.

    ``window`` is local wall-clock ("23:00", "07:00") in ``tz``; it may cross midnight.
    """
    if not window:
        return None
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    start, end = (time(*map(int, w.split(":"))) for w in window)
    t = local.time().replace(tzinfo=None)
    if start == end:
        return None
    end_day: date = local.date()
    if start < end:
        inside = start <= t < end
    else:
        inside = t >= start or t < end
        if t >= start:
            end_day += timedelta(days=1)
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


def hold_until(
    channel: str, settings: ChannelConfig, target: str, mutes: Mutes, now: datetime
) -> datetime | None:
    """Quiet hours of the channel, or a /mute of the chat: until when to hold its alerts."""
    ends = [quiet_until(now, settings.quiet_hours, settings.timezone)]
    if target.lstrip("-").isdigit():
        muted = mutes.get((channel, int(target)))
        if muted is not None and muted > now:
            ends.append(muted)
    held = [e for e in ends if e is not None]
    return max(held) if held else None


def plan(
    due: Sequence[Item],
    channels: Mapping[str, ChannelConfig],
    mutes: Mutes,
    now: datetime,
    *,
    per_product: Collection[str] = (),
) -> list[TargetPlan]:
    """One plan per (channel, target), in the order the targets first appear in ``due``.

    ``per_product``: the ids of the channels that send a product's alerts of one poll as one
    message (their type's ``merges_per_product``).
    """
    by_target: dict[tuple[str, str], list[Item]] = {}
    for item in due:
        by_target.setdefault((item[0].channel, item[0].target), []).append(item)
    return [
        _target_plan(
            channel, channels[channel], target, tuple(items), mutes, now, channel in per_product
        )
        for (channel, target), items in by_target.items()
    ]


def _target_plan(
    channel: str,
    settings: ChannelConfig,
    target: str,
    items: tuple[Item, ...],
    mutes: Mutes,
    now: datetime,
    per_product: bool,
) -> TargetPlan:
    until = hold_until(channel, settings, target, mutes, now)
    if until is not None:
        return TargetPlan(channel, target, items, held_until=until)
    if any(d.held for d, _ in items):
        # the end of quiet hours or a mute: everything held goes out as one digest
        return TargetPlan(channel, target, items, messages=(Message(items),))
    batches: dict[str, list[Item]] = {}
    for item in items:
        batches.setdefault(item[1].batch, []).append(item)
    messages: list[Message] = []
    for batch in batches.values():
        if len(batch) > settings.group_over:  # SPEC §6: more than group_over alerts
            messages.append(Message(tuple(batch)))
        elif per_product:
            messages += _messages(batch)
        else:
            messages += [Message((item,)) for item in batch]
    return TargetPlan(channel, target, items, messages=tuple(messages))


def _messages(batch: list[Item]) -> list[Message]:
    """One message per product of the poll (``render.product_key``), its alerts in order."""
    groups: dict[object, list[Item]] = {}
    for item in batch:
        groups.setdefault(product_key(item[1]) or object(), []).append(item)
    return [Message(tuple(g)) for g in groups.values()]
