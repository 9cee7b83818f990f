"""The shape of a provider definition: what each upstream module declares, nothing more.

A provider module (``socialfetch``, ``keyapi``) builds one ``ProviderSpec``: its name,
default base URL, regions, auth header, how its envelope carries request ids, error
messages and body status codes, the credits a response costs, and one ``SourceSpec`` per
watch type it serves (path, query parameters, paging, parser). ``watcher.sources`` lists the
modules. Pure, and light to import: the config loader (``watcher check``) reads these facts,
so this module imports neither aiohttp nor ``watcher.config`` (a watch is read through
``WatchParams``), and the provider modules import their parsing helpers on first parse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from watcher.param import Param

if TYPE_CHECKING:
    from watcher.sources.normalise import ParsedPage

Params = dict[str, str]


class WatchParams(Protocol):
    """What a source reads of a watch (``config.WatchConfig`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def handle(self) -> str | None: ...
    @property
    def query(self) -> str | None: ...
    @property
    def category_id(self) -> str | None: ...
    @property
    def keyword(self) -> str | None: ...
    @property
    def time_scope(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Request:
    """One page request: path below the provider's base URL and its query parameters."""

    path: str
    params: Params


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One watch type: what the config says of it, and how it is fetched and parsed.

    ``params`` returns the watch's own query parameters (omitting unset ones); every page
    request repeats them beside ``cursor`` or ``page`` (spec section 1).
    """

    watch_type: str
    provider: str
    paging: Literal["cursor", "page"]
    path: Callable[[WatchParams], str]
    params: Callable[[WatchParams], Params]
    parse: Callable[[Any], ParsedPage]
    # what the config says of the type: its one-line doc and its own keys (the schedule
    # keys every watch has are added by ``kinds.WATCH_TYPES``)
    doc: str = ""
    keys: Mapping[str, Param] = field(default_factory=dict)
    tracks_stock: bool = False  # a product absent long enough is out of stock, not just gone
    one_of: tuple[str, ...] = ()  # at least one of these optional keys must be set

    def first_request(self, watch: WatchParams) -> Request:
        """Cursor sources omit the cursor on the first page; numbered ones ask for page 1."""
        return self.next_request(watch, None if self.paging == "cursor" else 1)

    def next_request(self, watch: WatchParams, next_token: str | int | None) -> Request:
        params = self.params(watch)
        if next_token is not None:
            params[self.paging] = str(next_token)
        return Request(self.path(watch), params)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything about one upstream (spec section 1, "Credits"), declared by its module.

    ``credits(status, body)`` is the one decision of what a response cost: ``status`` None
    when the request may have reached upstream but no reply was read. ``regions`` are the
    region codes it accepts (empty: free text).
    """

    name: str
    base_url: str  # default, when the config names none
    price: int  # documented credits per request, assumed by budget checks
    auth: Callable[[str], dict[str, str]]
    credits: Callable[[int | None, Any], int]
    request_id: Callable[[Any], str | None]
    error_message: Callable[[Any], str | None]
    body_status: Callable[[Any], int | None]  # a failure status reported inside a 2xx body
    sources: tuple[SourceSpec, ...]
    regions: tuple[str, ...] = ()


def text_at(body: Any, *keys: str) -> str | None:
    """The non-blank string at ``body[k1][k2]...``, else None (envelope fields)."""
    for key in keys:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body if isinstance(body, str) and body.strip() else None


def charged_credits(body: Any) -> int | None:
    """``meta.creditsCharged`` when the body carries a sane one (Social Fetch's authoritative
    field): the one reader of it, for the page and for each provider's ``credits``."""
    meta = body.get("meta") if isinstance(body, Mapping) else None
    credits = meta.get("creditsCharged") if isinstance(meta, Mapping) else None
    if isinstance(credits, bool) or not isinstance(credits, int) or credits < 0:
        return None
    return credits


def present(**params: str | None) -> Params:
    """Drop unset parameters: upstream defaults apply, and empty strings are not sent."""
    return {key: value for key, value in params.items() if value is not None and value != ""}


def required(watch: WatchParams, key: str) -> str:
    """A parameter the watch type cannot do without (the config loader has checked it)."""
    value = getattr(watch, key)
    if not value:
        raise ValueError(f"watch {watch.id!r} ({watch.type}) has no {key}")
    return value
