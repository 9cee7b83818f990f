"""Prints alerts to standard output: the demo's channel, and handy beside a webhook."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .. import render
from ..kinds import DELIVERY_PARAMS, ChannelType
from ..models import Alert

if TYPE_CHECKING:
    from ..configschema import ChannelConfig


class ConsoleChannel:
    def __init__(self, config: ChannelConfig, *, stream: TextIO | None = None) -> None:
        self.id = config.id
        self.config = config
        self._stream = stream

    async def send(self, target: str, alerts: Sequence[Alert]) -> None:
        stream = self._stream or sys.stdout
        if len(alerts) == 1:
            a = alerts[0]
            head = f"[{a.kind}] {a.rule_id or 'notice'} · {a.watch_id or '-'}"
            text = f"{head}\n  " + alerts[0].message.replace("\n", "\n  ")
        else:
            text = render.render_digest_text(list(alerts))
        stream.write(text + "\n\n")
        stream.flush()

    async def close(self) -> None:
        return None


TYPE = ChannelType(
    "console",
    "Prints alerts to standard output.",
    {"group_over": DELIVERY_PARAMS["group_over"]},
    factory=ConsoleChannel,
)
