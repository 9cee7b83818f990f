"""What the bot says: the command list, usage lines, and the pure text of its replies.

Plain data in, Telegram HTML out (every user-supplied or configured name escaped); no I/O,
no python-telegram-bot, the clock passed in, so replies can be tested without a bot.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from .. import util
from ..config import ChannelConfig, RuleConfig, WatchConfig
from ..formatting import format_money
from ..models import InstanceInfo, Tracked
from ..rules import RULE_KINDS
from ..rules.tracks import BELOW, DROP, Track
from ..status import WatchStatus, instance_state, relative

COMMANDS: tuple[tuple[str, str, str], ...] = (  # name, arguments, what it does
    ("start", "", "what this bot does"),
    ("help", "", "commands"),
    ("watches", "", "what is watched, and how often"),
    ("rules", "", "the alert rules"),
    ("subscribe", "<rule|watch|all>", "get alerts of a rule, a watch, or everything"),
    ("unsubscribe", "<rule|watch|all>", "stop them (all: every subscription)"),
    ("mysubs", "", "this chat's subscriptions"),
    ("track", "<product id|link> below <price> | drop <N>%", "alert this chat at your price"),
    ("tracks", "", "this chat's price targets, with the prices now"),
    ("untrack", "<product id|link|all>", "remove a price target (all: every one)"),
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


def help_text(
    settings: ChannelConfig, chat_id: int, *, admin: bool, user_id: int | None = None
) -> str:
    """/start and /help: what the bot does, its commands, where this chat stands, and the
    ids an operator puts in ``chat_ids`` and ``admins``."""
    lines = [
        "<b>watcher</b> watches TikTok Shop stores, showcases, searches and rankings, and "
        "tells you when a product drops in price, crosses a discount, sells out, comes "
        "back, appears in a showcase or climbs a ranking.",
        "",
        *(f"/{c}{' ' + esc(a) if a else ''} — {esc(w)}" for c, a, w in COMMANDS),
    ]
    if admin:
        lines += [f"/{c} — {esc(w)}" for c, _, w in ADMIN_COMMANDS]
    lines += ["", chat_state(settings, chat_id), "", ids_text(chat_id, user_id)]
    return "\n".join(lines)


def ids_text(chat_id: int, user_id: int | None) -> str:
    """This chat's id and the user's: what ``chat_ids`` and ``admins`` take."""
    text = f"This chat's id: <code>{chat_id}</code> (for <code>chat_ids</code>)"
    if user_id is not None:
        text += f"; your user id: <code>{user_id}</code> (for <code>admins</code>)"
    return text + "."


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
        + (f", config loaded {relative(i.config_loaded_at, now)}" if i.config_loaded_at else "")
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


# ---------------------------------------------------------------------- tracks

_BARE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,30}")
_HUNDRED = Decimal(100)
_MAX_PRICE = Decimal(10) ** 12


def product_ref(text: str) -> str | None:
    """The product id in ``text``: a bare id, or a TikTok Shop product link, as the
    upstreams give them (``https://www.tiktok.com/shop/pdp/<id>``, ``…/pdp/<slug>/<id>``) or
    as the app shares them (``https://shop.tiktok.com/view/product/<id>?region=US``);
    None for anything else."""
    text = text.strip().strip("<>")
    if _BARE_ID.fullmatch(text):
        return text
    if len(text) > 2000:
        return None
    url = urlsplit(text if "://" in text else f"https://{text}")
    host = (url.hostname or "").lower()
    if url.scheme not in ("http", "https") or not (
        host == "tiktok.com" or host.endswith(".tiktok.com")
    ):
        return None
    parts = [p for p in url.path.split("/") if p]
    if not ({"pdp", "product"} & {p.lower() for p in parts}):
        return None
    ids = [p for p in parts if _DIGITS.fullmatch(p)]
    return ids[-1] if ids else None


def parse_target(kind: str, value: str) -> tuple[str, Decimal] | None:
    """``below 19.99`` (a price, "$" allowed) or ``drop 10%`` (0 < N < 100); None else."""
    kind = kind.lower()
    value = value.strip()
    if kind == BELOW:
        value = value.removeprefix("$")
    elif kind == DROP:
        value = value.removesuffix("%")
    else:
        return None
    if len(value) > 20:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    if not number.is_finite() or number <= 0:
        return None
    if kind == BELOW and number >= _MAX_PRICE:
        return None
    if kind == DROP and number >= _HUNDRED:
        return None
    return kind, number


def target_text(track: Track, currency: str | None) -> str:
    """``below $19.99`` / ``drop 10% from $24.99``."""
    if track.kind == BELOW:
        return f"below {format_money(track.target, currency)}"
    ref = format_money(track.reference, currency) if track.reference is not None else "?"
    return f"drop {percent_text(track.target)}% from {ref}"


def percent_text(value: Decimal) -> str:
    """``10``, ``12.5``: a percent as typed, without trailing zeros."""
    return f"{value.normalize():f}"


def drop_price(reference: Decimal, percent: Decimal) -> Decimal:
    """The highest price that is ``percent`` below ``reference``, to the cent (down)."""
    return (reference * (_HUNDRED - percent) / _HUNDRED).quantize(Decimal("0.01"), "ROUND_DOWN")


def tracked_text(
    track: Track, tracked: Tracked, *, watch: str, replaced: bool, now_text: str
) -> str:
    """/track's answer: what is tracked, where, at what price now, and when it alerts."""
    p = tracked.product
    title = esc(p.title or f"Product {p.id}")
    verb = "Changed this chat's target on" if replaced else "Tracking"
    lines = [f"{verb} <b>{title}</b> (<code>{esc(p.id)}</code>, watch {esc(watch)})."]
    gone = "" if tracked.present else " (gone from the watch's listing for now)"
    lines.append(f"Now: {esc(now_text)}{gone}.")
    if track.kind == BELOW:
        target = format_money(track.target, p.currency)
        if p.price is not None and p.price <= track.target:
            lines.append(
                f"It is already at or below {esc(target)}: this chat is alerted the next time "
                f"it comes down to {esc(target)} or less after going above it."
            )
        else:
            lines.append(f"This chat is alerted when it drops to {esc(target)} or less.")
    else:
        assert track.reference is not None
        ref = format_money(track.reference, p.currency)
        limit = format_money(drop_price(track.reference, track.target), p.currency)
        lines.append(
            f"This chat is alerted when it falls {percent_text(track.target)}% or more below "
            f"{esc(ref)} (to {esc(limit)} or less), then again at each further "
            f"{percent_text(track.target)}% fall."
        )
    lines.append("/tracks lists this chat's targets; /untrack removes one.")
    return "\n".join(lines)


def not_covered_text(product_id: str, watches: Iterable[str]) -> str:
    """/track of a product no watch has: tracking adds no watch (and spends no credits)."""
    return (
        f"No watch covers product {esc(product_id)}, so it cannot be tracked: /track only "
        "follows products the configured watches already poll (it adds no watch and spends "
        f"no credits). Watches: {esc(names(watches))} (see /watches)."
    )


def tracks_text(
    tracks: Sequence[Track],
    products: Mapping[tuple[str, str], Tracked],
    configured: Iterable[str],
    limit: int,
) -> str:
    """/tracks: each target with the product's title and price now (from its watch)."""
    if not tracks:
        return (
            "This chat tracks no product. /track &lt;product id|link&gt; below &lt;price&gt; "
            "or drop &lt;N&gt;% sets one."
        )
    known = set(configured)
    lines = [f"<b>Price targets</b> ({len(tracks)} of {limit})"]
    for t in tracks:
        tracked = products.get((t.watch_id, t.product_id))
        p = tracked.product if tracked else None
        title = esc((p.title if p else None) or f"Product {t.product_id}")
        currency = p.currency if p else None
        now = format_money(p.price, currency) if p and p.price is not None else "price unknown"
        if t.watch_id not in known:
            note = f" (watch {esc(t.watch_id)} is no longer configured: it cannot fire)"
        elif tracked is not None and not tracked.present:
            note = " (gone from its watch for now)"
        else:
            note = ""
        lines.append(
            f"• <b>{title}</b> (<code>{esc(t.product_id)}</code>) now {esc(now)} — "
            f"{esc(target_text(t, currency))}{note}"
        )
    return "\n".join(lines)
