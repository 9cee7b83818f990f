"""One way to log: ``event(log, "poll", watch=..., pages=3)`` → ``event=poll watch=x pages=3``.

Operators read these lines in the journal and grep them, so every line is one event name
and ``key=value`` fields, quoted when a value has a space, a quote or an ``=``; never a
multi-line value. ``setup`` is the one place the handlers and levels are chosen.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/@+,#%")


def field(value: object) -> str:
    """A value as one token: bare when it is plain, else a JSON-like quoted string."""
    text = (
        value
        if isinstance(value, str)
        else repr(value)
        if isinstance(value, BaseException)
        else str(value)
    )
    if text and all(c in _PLAIN for c in text):
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def line(name: str, fields: dict[str, Any]) -> str:
    """``event=NAME k=v ...``; a None field is left out (absent, not "None")."""
    parts = [f"event={name}"]
    parts += [f"{k}={field(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def event(
    logger: logging.Logger,
    name: str,
    level: int = logging.INFO,
    *,
    exc_info: bool | BaseException = False,
    **fields: Any,
) -> None:
    """Log one event; the line is only built when the level is enabled. ``exc_info``: True
    for the exception being handled, or the exception itself (its traceback follows)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", _Lazy(name, fields), exc_info=exc_info)


def fields_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]] | None:
    """The event name and fields of a record ``event`` logged; None for any other record
    (a library's). Lets a caller tell which events the log has shown."""
    args = record.args
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], _Lazy):
        return args[0].name, args[0].fields
    return None


class _Lazy:
    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self.name = name
        self.fields = fields

    def __str__(self) -> str:
        return line(self.name, self.fields)


def level_for(verbose: int, quiet: int, default: int = logging.WARNING) -> int:
    """Each -v one level more detail, each -q one less, from the command's default."""
    return min(max(default - 10 * verbose + 10 * quiet, logging.DEBUG), logging.CRITICAL)


LIBRARIES = (
    "apscheduler",
    "procrastinate",
    "psycopg.pool",
    "telegram",
    "aiohttp.access",
    "alembic",
)
# their INFO and DEBUG lines carry request URLs, and a Bot API URL holds the bot token (an
# apprise URL its service's token; requests' urllib3 logs the path, a webhook's token)
URL_LOGGERS = ("httpx", "httpcore", "apprise", "urllib3")


def setup(level: int, *, libraries: bool = False, stream: Any = None) -> None:
    """Lines go to stderr as ``TIME LEVEL logger event=...``; the one logging setup.

    Third-party loggers (APScheduler says "Running job ..." for every poll) stay at WARNING
    unless ``libraries`` (``-vv``: the operator asks for everything); never louder than
    ``level``. The HTTP clients' loggers stay at WARNING even then: a secret is never logged.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(level if libraries else max(level, logging.WARNING))
    for name in URL_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
