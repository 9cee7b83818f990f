"""Who receives an alert: spec sections 6 and 7."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..config import Config
from ..models import Alert

Subscribers = Callable[[str, str | None, str | None], Iterable[int]]


def route(
    config: Config, alert: Alert, subscribers: Subscribers | None = None
) -> list[tuple[str, str]]:
    """Which (channel, target) pairs receive an alert: spec sections 6 and 7.

    Rule alerts go to the rule's ``notify`` channels (Telegram: ``chat_ids`` plus subscribed
    chats); notices go to every webhook and console channel and to every Telegram admin.
    """
    targets: list[tuple[str, str]] = []
    if alert.is_notice:
        for ch in config.channels.values():
            if ch.type == "telegram":
                targets += [(ch.id, str(a)) for a in ch.admins]
            else:
                targets.append((ch.id, ""))
        return targets
    rule = config.rules[alert.rule_id]  # type: ignore[index]
    for channel_id in rule.notify:
        ch = config.channels[channel_id]
        if ch.type == "telegram":
            chats = list(ch.chat_ids)
            if subscribers is not None:
                chats += list(subscribers(ch.id, alert.rule_id, alert.watch_id))
            targets += [(ch.id, str(c)) for c in dict.fromkeys(chats)]
        else:
            targets.append((ch.id, ""))
    return targets
