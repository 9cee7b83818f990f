"""Which (channel, target) pairs receive an alert: spec sections 6 and 7.

Rule alerts go to the rule's ``notify`` channels, notices to every channel; each channel's
type says which of its targets get them (``ChannelType.alert_targets`` and
``notice_targets``: a Telegram channel's ``chat_ids`` plus subscribed chats, and its admins;
a webhook or the console is its own single target).
"""

from __future__ import annotations

from .config import Config  # loading it registered the channel types
from .kinds import CHANNEL_TYPES, Subscribers
from .models import Alert

__all__ = ["Subscribers", "route"]


def route(
    config: Config, alert: Alert, subscribers: Subscribers | None = None
) -> list[tuple[str, str]]:
    """The (channel id, target) pairs of an alert: notices in the order of the channels,
    rule alerts in the order of the rule's ``notify``."""
    if alert.is_notice:
        return [
            (ch.id, target)
            for ch in config.channels.values()
            for target in CHANNEL_TYPES[ch.type].notice_targets(ch)
        ]
    rule = config.rules[alert.rule_id]  # type: ignore[index]
    targets: list[tuple[str, str]] = []
    for channel_id in rule.notify:
        ch = config.channels[channel_id]
        targets += [
            (ch.id, t) for t in CHANNEL_TYPES[ch.type].alert_targets(ch, alert, subscribers)
        ]
    return targets
