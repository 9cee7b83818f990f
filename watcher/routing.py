"""Which (channel, target) pairs receive an alert: spec sections 6 and 7.

Rule alerts go to the rule's ``notify`` channels, notices to every channel; each channel's
type says which of its targets get them (``ChannelType.alert_targets`` and
``notice_targets``: a Telegram channel's ``chat_ids`` plus subscribed chats, and its admins;
a webhook or the console is its own single target). A track's alert (``/track``) goes to
the one chat that set it, nowhere else (``track_targets``).
"""

from __future__ import annotations

from .config import Config  # loading it registered the channel types
from .kinds import CHANNEL_TYPES, Subscribers
from .models import Alert
from .rules.tracks import Track, is_track_rule

__all__ = ["Subscribers", "route", "track_targets"]


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
    if is_track_rule(alert.rule_id):
        raise ValueError(f"{alert.rule_id}: a track's alert is routed by track_targets")
    rule = config.rules.get(alert.rule_id)  # type: ignore[arg-type]
    # a reload between the poll's rules and its commit removed the rule: the channels the
    # alert was made for, those that still exist
    notify = rule.notify if rule is not None else alert.channels
    targets: list[tuple[str, str]] = []
    for channel_id in notify:
        ch = config.channels.get(channel_id)
        if ch is None:
            continue
        targets += [
            (ch.id, t) for t in CHANNEL_TYPES[ch.type].alert_targets(ch, alert, subscribers)
        ]
    return targets


def track_targets(config: Config, track: Track) -> list[tuple[str, str]]:
    """A track's alert goes to its own chat alone (never to webhooks, ``chat_ids`` or
    subscribers); nowhere when its channel is no longer a configured bot."""
    ch = config.channels.get(track.channel)
    if ch is None or not CHANNEL_TYPES[ch.type].has_bot:
        return []
    return [(ch.id, str(track.chat_id))]
