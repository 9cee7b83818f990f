"""A fake Telegram Bot API on 127.0.0.1 that python-telegram-bot talks to over real sockets.

It serves ``/bot<token>/<method>``, reads PTB's form-encoded and multipart bodies, records
every send, serves queued updates through a long-polling ``getUpdates`` (held open until
its ``timeout`` or until an update arrives, as Telegram does), and answers with the real
Bot API error bodies on demand so PTB raises its real exception types.

As Telegram does when two clients long-poll one token, a ``getUpdates`` that arrives while
another is held open ends the held one with 409 Conflict; ``conflicts`` counts those a client
was still there to receive (PTB's own stop drops its held request first: that is no conflict).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-token-abcdefghijklmnopqrstuvw"
BOT_USER = {
    "id": 123456,
    "is_bot": True,
    "first_name": "Watcher",
    "username": "watcher_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
SEND_METHODS = {
    "sendMessage",
    "sendPhoto",
    "sendDocument",
    "sendMediaGroup",
    "sendChatAction",
    "editMessageText",
}


@dataclass
class Sent:
    """One successful send, as the fake understood it."""

    method: str
    chat_id: int | str | None
    text: str | None = None  # text or caption
    parse_mode: str | None = None
    photo: bytes | str | None = None  # uploaded bytes, or the URL / file id
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> str:
        return self.text or ""


@dataclass
class Request:
    """Every request the fake received (including failures and polls)."""

    method: str
    params: dict[str, Any]
    status: int


CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)


@dataclass
class _Held:
    """A getUpdates held open, and whether a later one ended it."""

    request: web.Request
    ended: bool = False


@dataclass
class _Failure:
    mode: str
    times: int
    methods: frozenset[str] | None
    description: str | None


class FakeBotAPI:
    """The fake server; ``await start()`` returns the ``base_url`` for PTB."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.base_url = ""
        self.sends: list[Sent] = []
        self.requests: list[Request] = []
        self.commands_set: list[dict[str, Any]] = []
        self.conflicts = 0  # getUpdates ended by another while its client still waited
        self._held: list[_Held] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._failures: dict[str, list[_Failure]] = {}
        self._changed = asyncio.Condition()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/bot"
        return self.base_url

    async def close(self) -> None:
        self._closing = True
        await self._notify()  # release held getUpdates
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ test helpers

    def fail(
        self,
        chat_id: int | str,
        mode: str,
        times: int = 1,
        *,
        methods: Iterable[str] | None = None,
        description: str | None = None,
    ) -> None:
        """Make the next ``times`` sends to ``chat_id`` fail.

        Modes: ``forbidden``, ``retry_after:N``, ``migrate:NEW_CHAT_ID``, ``bad_request``,
        ``server_error``, ``bad_gateway``, ``slow:SECONDS`` (answer late, so the client
        times out), ``not_found`` (chat not found, a 400).
        """
        self._failures.setdefault(str(chat_id), []).append(
            _Failure(mode, times, frozenset(methods) if methods else None, description)
        )

    def command(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str | None = None,
    ) -> dict[str, Any]:
        """Queue a message update whose text starts with a bot command; returns it."""
        first = text.split(maxsplit=1)[0] if text else ""
        entities = (
            [{"type": "bot_command", "offset": 0, "length": len(first)}]
            if first.startswith("/")
            else []
        )
        return self.message(chat_id, user_id, text, chat_type=chat_type, entities=entities)

    def message(
        self,
        chat_id: int,
        user_id: int,
        text: str | None = None,
        *,
        chat_type: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Queue any message update (``extra`` adds fields such as ``migrate_to_chat_id``)."""
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = f"User{user_id}"
        else:
            chat["title"] = f"Group {chat_id}"
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"},
            **extra,
        }
        if text is not None:
            message["text"] = text
        if entities:
            message["entities"] = entities
        return self.queue_update({"message": message})

    def queue_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **payload}
        self._updates.append(update)
        self._notify_soon()
        return update

    def sent_to(self, chat_id: int | str, method: str | None = None) -> list[Sent]:
        return [
            s
            for s in self.sends
            if str(s.chat_id) == str(chat_id) and (method is None or s.method == method)
        ]

    def texts(self, chat_id: int | str) -> list[str]:
        """Text and captions of messages and photos sent to ``chat_id``, in order."""
        return [s.body for s in self.sent_to(chat_id) if s.method != "sendChatAction"]

    @property
    def holding(self) -> int:
        """How many getUpdates are held open right now."""
        return len(self._held)

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    async def wait_for(
        self, predicate: Callable[[list[Sent]], Any], timeout: float = 10
    ) -> list[Sent]:
        """Wait until ``predicate(sends)`` is truthy; AssertionError after ``timeout``."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: predicate(self.sends)), timeout
                )
            except TimeoutError:
                got = [(s.method, s.chat_id, (s.text or "")[:80]) for s in self.sends]
                raise AssertionError(
                    f"condition not met within {timeout}s; sends: {got}"
                ) from None
        return self.sends

    async def wait_reply(self, chat_id: int | str, count: int = 1, timeout: float = 10) -> Sent:
        """The ``count``-th message sent to ``chat_id`` (1-based), waiting for it."""
        await self.wait_for(
            lambda _: (
                len([s for s in self.sent_to(chat_id) if s.method != "sendChatAction"]) >= count
            ),
            timeout,
        )
        return [s for s in self.sent_to(chat_id) if s.method != "sendChatAction"][count - 1]

    async def wait_polled(self, after: int = 0, timeout: float = 10) -> None:
        """Wait until getUpdates was called more than ``after`` times."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.calls("getUpdates")) > after), timeout
            )

    # ------------------------------------------------------------------ server

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _notify_soon(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: nobody is waiting
            task = asyncio.get_running_loop().create_task(self._notify())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params = await _read_params(request)
        if method == "getUpdates":
            status, body = await self._get_updates(request, params)
        else:
            status, body = await self._dispatch(method, params)
        self.requests.append(Request(method, params, status))
        await self._notify()
        return web.json_response(body, status=status)

    async def _dispatch(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "getMe":
            return 200, {"ok": True, "result": BOT_USER}
        if method == "setMyCommands":
            self.commands_set.append(params)
            return 200, {"ok": True, "result": True}
        if method == "getMyCommands":
            cmds = self.commands_set[-1].get("commands", []) if self.commands_set else []
            return 200, {"ok": True, "result": cmds}
        chat_id = params.get("chat_id")
        if method in SEND_METHODS and chat_id is not None:
            failure = self._take_failure(str(chat_id), method)
            if failure is not None:
                return await _failure_response(failure, method)
            return 200, {"ok": True, "result": self._record(method, params)}
        # deleteWebhook, close, logOut, answerCallbackQuery, ...: succeed quietly
        return 200, {"ok": True, "result": True}

    def _take_failure(self, chat_id: str, method: str) -> _Failure | None:
        for failure in self._failures.get(chat_id, []):
            if failure.times > 0 and (failure.methods is None or method in failure.methods):
                failure.times -= 1
                return failure
        return None

    def _record(self, method: str, params: dict[str, Any]) -> Any:
        chat_id = params.get("chat_id")
        if method == "sendChatAction":
            self.sends.append(Sent(method, chat_id, params=params))
            return True
        text = params.get("text", params.get("caption"))
        photo = params.get("photo")
        self.sends.append(Sent(method, chat_id, text, params.get("parse_mode"), photo, params))
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": _chat(chat_id),
            "from": {k: BOT_USER[k] for k in ("id", "is_bot", "first_name", "username")},
        }
        if method == "sendPhoto":
            message["photo"] = [
                {
                    "file_id": f"photo{message['message_id']}",
                    "file_unique_id": f"u{message['message_id']}",
                    "width": 800,
                    "height": 400,
                }
            ]
            if text is not None:
                message["caption"] = text
        elif text is not None:
            message["text"] = text
        return message

    async def _get_updates(
        self, request: web.Request, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        for other in self._held:  # Telegram serves one poller: the newest wins
            other.ended = True
        if self._held:
            await self._notify()
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

        def pending() -> list[dict[str, Any]]:
            return [u for u in self._updates if u["update_id"] >= offset][:limit]

        held = _Held(request)
        if not pending() and timeout > 0 and not self._closing:
            self._held.append(held)
            try:
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._changed.wait_for(
                                lambda: bool(pending()) or self._closing or held.ended
                            ),
                            timeout,
                        )
            finally:
                self._held.remove(held)
        if held.ended:
            transport = request.transport
            if transport is not None and not transport.is_closing():
                self.conflicts += 1  # a client still waited for this answer
            return 409, {"ok": False, "error_code": 409, "description": CONFLICT}
        return 200, {"ok": True, "result": pending()}


def _chat(chat_id: Any) -> dict[str, Any]:
    try:
        cid = int(chat_id)
    except (TypeError, ValueError):
        return {"id": -1, "type": "channel", "title": str(chat_id)}
    if cid > 0:
        return {"id": cid, "type": "private", "first_name": f"User{cid}"}
    return {"id": cid, "type": "supergroup", "title": f"Group {cid}"}


def _error(code: int, description: str, **parameters: Any) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


async def _failure_response(failure: _Failure, method: str) -> tuple[int, dict[str, Any]]:
    mode, _, arg = failure.mode.partition(":")

    def err(code: int, text: str, **parameters: Any) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": code,
            "description": failure.description or text,
        }
        if parameters:
            body["parameters"] = parameters
        return code, body

    if mode == "forbidden":
        return err(403, "Forbidden: bot was blocked by the user")
    if mode == "retry_after":
        seconds = int(arg or 5)
        return err(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
    if mode == "migrate":
        return err(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            migrate_to_chat_id=int(arg),
        )
    if mode == "bad_request":
        text = (
            "Bad Request: wrong type of the web page content"
            if method == "sendPhoto"
            else "Bad Request: can't parse entities"
        )
        return err(400, text)
    if mode == "not_found":
        return err(400, "Bad Request: chat not found")
    if mode == "server_error":
        return err(500, "Internal Server Error")
    if mode == "bad_gateway":
        return err(502, "Bad Gateway")
    if mode == "slow":
        await asyncio.sleep(float(arg or 5))  # the client gives up first
        return err(500, "Internal Server Error: too slow")
    raise ValueError(f"unknown failure mode {failure.mode!r}")


async def _read_params(request: web.Request) -> dict[str, Any]:
    """PTB sends forms (urlencoded, or multipart for uploads); JSON only from other clients."""
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    form = await request.post()
    files: dict[str, bytes] = {}
    out: dict[str, Any] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            files[key] = value.file.read()
            out[key] = files[key]
        else:
            out[key] = _decode(str(value))
    for key, value in list(out.items()):  # "attach://name" refers to another multipart part
        if isinstance(value, str) and value.startswith("attach://"):
            out[key] = files.get(value.removeprefix("attach://"), value)
    if "chat_id" in out:
        with contextlib.suppress(TypeError, ValueError):
            out["chat_id"] = int(out["chat_id"])
    return out


def _decode(value: str) -> Any:
    """Lists and objects arrive as JSON text inside the form; scalars stay strings."""
    if value[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value
