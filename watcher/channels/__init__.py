"""Delivery channels, one module per kind, registered by the config's channel ``type``.

A channel's ``send(target, alerts)`` delivers one alert, or a digest when given several,
and raises ``DeliveryError`` saying whether a retry can help.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from ..config import ChannelConfig, Config
from ..models import Alert

if TYPE_CHECKING:
    from ..store import Store


class Channel(Protocol):
    id: str
    config: ChannelConfig

    async def send(self, target: str, alerts: Sequence[Alert]) -> None: ...

    async def close(self) -> None: ...


ChannelFactory = Callable[..., Channel]  # (config, *, store) -> Channel
CHANNELS: dict[str, ChannelFactory] = {}


def register(kind: str) -> Callable[[ChannelFactory], ChannelFactory]:
    def deco(factory: ChannelFactory) -> ChannelFactory:
        CHANNELS[kind] = factory
        return factory

    return deco


def build_channels(
    config: Config, *, store: Store | None = None, kinds: Sequence[str] | None = None
) -> dict[str, Channel]:
    """Instantiate every configured channel whose kind has an implementation (and is wanted)."""
    from . import console, webhook  # noqa: F401  (registers the kinds)

    if any(c.type == "telegram" for c in config.channels.values()):
        from . import telegram  # noqa: F401  (python-telegram-bot is slow to import)

    out: dict[str, Channel] = {}
    for cid, cfg in config.channels.items():
        if kinds is not None and cfg.type not in kinds:
            continue
        factory = CHANNELS.get(cfg.type)
        if factory is not None:
            out[cid] = factory(cfg, store=store)
    return out
