"""What the bot says: the command list, usage lines, and the pure text of its replies.

Plain data in, Telegram HTML out (every user-supplied or configured name escaped); no I/O,
no python-telegram-bot, the clock passed in, so replies can be tested without a bot.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

from .. import util
from ..config import ChannelConfig, RuleConfig, WatchConfig
from ..models import InstanceInfo
from ..rules import RULE_KINDS
from ..status import WatchStatus, instance_state, relative

COMMANDS: tuple[tuple[str, str, str], ...] = (  # name, arguments, what it does
    ("start", "", "what this bot does"),
    ("help", "", "commands"),
    ("watches", "", "what is watched, and how often"),
    ("rules", "", "the alert rules"),
    ("subscribe", "<rule|watch|all>", "get alerts of a rule, a watch, or everything"),
    ("unsubscribe", "<rule|watch|all>", "stop them (all: every subscription)"),
    ("mysubs", "", "this chat's subscriptions"),
    ("mute", "<30m|2h|1d|off>", "hold alerts for a while, then get one digest"),
    ("history", "<product id>", "price chart of a product"),
)
ADMIN_COMMANDS = (("status", "", "admins: watches, errors, credits, deliveries, instances"),)
MAX_MUTE = timedelta(days=365)
LIST_MAX = 12  # names shown in a usage line


def esc(text: str) -> str:
    """Escape for Telegram HTML text (quotes need no escaping outside attributes)."""
    return html.escape(text, quote=False)


def usage(name: str) -> str:
    """The one-line usage of a command."""
    for cmd, args, what in (*COMMANDS, *ADMIN_COMMANDS):
        if cmd == name:
            return f"Usage: /{cmd}{' ' + args if args else ''} — {what}"
    return f"Unknown command /{name}. Commands: " + " ".join(f"/{c}" for c, _, _ in COMMANDS)


def parse_duration(text: str) -> timedelta | None:
    """``30m``, ``2h``, ``1d``, ``45s`` → timedelta; None when malformed or zero."""
    text = text.strip().lower()
    if len(text) > 7:  # six digits and a unit at most: a mute is at most a year anyway
        return None
    try:
        return util.parse_duration(text)
    except util.DurationError:
        return None


# ---------------------------------------------------------------------- replies


def help_text(settings: ChannelConfig, chat_id: int, *, admin: bool) -> str:
    """/start and /help: what the bot does, its commands, and where this chat stands."""
    lines = [
        "<b>watcher</b> watches TikTok Shop stores, showcases, searches and rankings, and "
        "tells you when a product drops in price, crosses a discount, sells out, comes "
        "back, appears in a showcase or climbs a ranking.",
        "",
        *(f"/{c}{' ' + esc(a) if a else ''} — {esc(w)}" for c, a, w in COMMANDS),
    ]
    if admin:
        lines += [f"/{c} — {esc(w)}" for c, _, w in ADMIN_COMMANDS]
    lines += ["", chat_state(settings, chat_id)]
    return "\n".join(lines)


def chat_state(settings: ChannelConfig, chat_id: int) -> str:
    """Whether this chat gets alerts already, may subscribe, or may not."""
    if chat_id in settings.chat_ids:
        return "This chat already receives every alert of this bot."
    if not settings.allow_subscribe:
        return "Sorry, this bot does not take subscriptions; an admin can add this chat."
    return "Start with /subscribe all, or /subscribe &lt;rule|watch&gt; (see /rules)."


def watches_text(watches: Iterable[WatchConfig]) -> str:
    watches = list(watches)
    lines = [f"<b>Watches</b> ({len(watches)})"] if watches else ["No watches configured."]
    lines += [
        f"• <code>{esc(w.id)}</code> {esc(w.type)}: {esc(watch_target(w))} — {esc(schedule(w))}"
        for w in watches
    ]
    return "\n".join(lines)


def status_text(
    now: datetime,
    watches: Iterable[WatchStatus],
    credits: Mapping[str, int],
    counts: Mapping[str, int],
    today: date,
    *,
    instances: Sequence[InstanceInfo] = (),
    cluster: bool | None = None,
) -> str:
    """/status: each watch's last and next poll, credits spent today, the outbox, and (when
    ``cluster`` is known) the instances: alive or gone, their last heartbeat, the bot's."""
    lines = [f"<b>Status</b> {when(now)}", "<b>Watches</b>"]
    for w in watches:
        state = f"error: {w.last_error[:200]}" if w.last_error else "ok"
        lines.append(
            f"• <code>{esc(w.watch_id)}</code> last poll {when(w.last_poll)}, "
            f"next {'now (polling)' if w.polling else when(w.next_poll)}, "
            f"{w.products} products, {esc(state)}"
        )
    spent = ", ".join(f"{esc(n)} {c}" for n, c in credits.items()) or "none"
    lines.append(f"<b>Credits today</b> ({today.isoformat()} UTC): {spent}")
    lines.append(
        f"<b>Deliveries</b>: {counts.get('pending', 0)} pending, {counts.get('dead', 0)} dead"
    )
    if cluster is not None:
        lines += instances_lines(now, instances, cluster=cluster)
    return "\n".join(lines)


def instances_lines(
    now: datetime, instances: Sequence[InstanceInfo], *, cluster: bool
) -> list[str]:
    """The instances section of /status: where each runs, what, and its last heartbeat."""
    alive = sum(i.alive for i in instances)
    mode = "cluster on PostgreSQL" if cluster else "single host"
    lines = [f"<b>Instances</b> ({mode}, {alive} alive)"]
    if not instances:
        lines.append("none registered")
    lines += [
        f"• <code>{esc(i.host)}</code> pid {i.pid} {esc(i.command or '?')}: "
        f"{instance_state(i)}, heartbeat {relative(i.heartbeat_at, now)}"
        for i in instances
    ]
    return lines


# ---------------------------------------------------------------------- pieces


def names(ids: Iterable[str]) -> str:
    shown_all = list(ids)
    if not shown_all:
        return "none"
    shown = ", ".join(shown_all[:LIST_MAX])
    more = len(shown_all) - LIST_MAX
    return shown + (f", … (+{more})" if more > 0 else "")


def describe(scope: str, name: str) -> str:
    return "every alert" if scope == "all" else f"{scope} {esc(name)}"


def when(at: datetime | None) -> str:
    if at is None:
        return "—"
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M UTC")


def span(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def schedule(w: WatchConfig) -> str:
    return f"every {span(w.every)}" if w.every is not None else f"cron {w.cron or '?'}"


def watch_target(w: WatchConfig) -> str:
    if w.url:
        what = w.url
    elif w.handle:
        what = f"@{util.strip_handle(w.handle)}"
    elif w.query:
        what = f'"{w.query}"'
    else:
        what = " ".join(x for x in (w.category_id and f"category {w.category_id}",
                                     w.keyword and f'"{w.keyword}"') if x)  # fmt: skip
    return f"{what} ({w.region})" if w.region else what


def rule_params(r: RuleConfig) -> list[str]:
    kind = RULE_KINDS.get(r.when)
    settings = kind.settings(r.params) if kind else dict(r.params)
    out = [
        f"{k}={span(v) if isinstance(v, timedelta) else v}"
        for k, v in settings.items()
        if v is not None
    ]
    m = r.match
    out += [
        f"{k}={v}"
        for k in ("title", "min_price", "max_price", "min_rating")
        if (v := getattr(m, k)) is not None
    ]
    if m.product_ids:
        out.append(f"product_ids={len(m.product_ids)}")
    if r.cooldown != timedelta(hours=6):
        out.append(f"cooldown={span(r.cooldown)}")
    return out
