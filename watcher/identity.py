"""Identity of an alert: the deterministic ``alert_id`` of one transition.

Pure and stdlib-only, so every layer (rules, render, the pipeline, the store) may use it.
Re-processing the same poll gives the same id, which is what makes the outbox idempotent.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal

from watcher.util import iso_utc

_NUMBER_ERRORS = (ArithmeticError, ValueError, TypeError)


def alert_id(
    rule_id: str | None,
    watch_id: str | None,
    product_id: str | None,
    kind: str,
    old: object,
    new: object,
    seq: int,
) -> str:
    """A stable id for one transition: the same poll re-processed gives the same id.

    ``seq`` is the sequence number of the snapshot the poll replaced, so the same 20 → 15
    drop weeks later is a different alert.
    """
    payload = {
        "rule": rule_id,
        "watch": watch_id,
        "product": product_id,
        "kind": kind,
        "old": _canonical(old),
        "new": _canonical(new),
        "seq": seq,
    }
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def decimal_text(value: Decimal | None) -> str | None:
    """Canonical decimal text: ``Decimal("20.00")`` and ``Decimal("20")`` both give "20"."""
    if value is None:
        return None
    try:
        text = f"{value.normalize():f}"
    except _NUMBER_ERRORS:
        return str(value)
    return "0" if text in ("-0", "0") else text


def _canonical(value: object) -> object:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
