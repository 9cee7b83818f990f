"""Delivery channels, one module per type, each holding its ``ChannelType`` and its class.

A channel's ``send(target, alerts)`` delivers one alert, or a digest when given several,
and raises ``DeliveryError`` saying whether a retry can help; a chat that is gone or moved
is a ``ChatGone`` / ``ChatMoved`` the dispatcher applies to the store (channels never
write to it). Importing this package registers every type in ``kinds.CHANNEL_TYPES``
without importing python-telegram-bot, aiohttp or apprise: each module imports those when a channel
is built, so ``watcher check`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..kinds import CHANNEL_TYPES, ChannelType, register_channel_type
from . import apprise, console, telegram, webhook

if TYPE_CHECKING:
    from ..configschema import ChannelConfig, Config
    from ..models import Alert

# The registration, explicit and in the order the config's hints list them.
TYPES: tuple[ChannelType, ...] = tuple(
    register_channel_type(t) for t in (telegram.TYPE, webhook.TYPE, apprise.TYPE, console.TYPE)
)


class Channel(Protocol):
    id: str
    config: ChannelConfig

    async def send(self, target: str, alerts: Sequence[Alert]) -> None: ...

    async def close(self) -> None: ...


def channel_type(name: str) -> ChannelType:
    """The definition of a channel type, e.g. ``channel_type(cfg.type).has_bot``."""
    return CHANNEL_TYPES[name]


def build_channels(config: Config, *, kinds: Sequence[str] | None = None) -> dict[str, Channel]:
    """Instantiate every configured channel whose type has an implementation (and is wanted)."""
    out: dict[str, Channel] = {}
    for cid, cfg in config.channels.items():
        if kinds is not None and cfg.type not in kinds:
            continue
        factory = CHANNEL_TYPES[cfg.type].factory if cfg.type in CHANNEL_TYPES else None
        if factory is not None:
            out[cid] = factory(cfg)
    return out
