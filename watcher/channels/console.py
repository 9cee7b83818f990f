"""Prints alerts to standard output: the demo's channel, and handy beside a webhook.

One alert prints as ``[kind] rule · watch`` and its message; the alerts of one product in
one poll as one entry, ``[kind, kind] rule, rule · watch``, listing each reason.
"""

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
            text = f"{head}\n  " + a.message.replace("\n", "\n  ")
        elif len(render.by_product(alerts)) == 1:  # one product, several rules, one poll
            kinds = ", ".join(a.kind for a in alerts)
            rules = ", ".join(a.rule_id or "notice" for a in alerts)
            head = f"[{kinds}] {rules} · {alerts[0].watch_id or '-'}"
            text = f"{head}\n  " + render.render_product_text(alerts).replace("\n", "\n  ")
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
    merges_per_product=True,
)
