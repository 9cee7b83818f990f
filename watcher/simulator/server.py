"""The aiohttp app serving the simulated world as both upstream APIs, plus fault injection.

One app holds Social Fetch's three routes and KeyAPI's one (their paths do not clash) and a
small control API under ``/_sim``. A request meets faults first (they stand for the network
and upstream infrastructure), then authentication, then parameter checks, then the world.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from .demo import DEFAULT_SEED
from .endpoints import ENDPOINTS, ApiError, Endpoint
from .faults import Fault, fault_response
from .scenarios import build_world
from .world import World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_AUTH_HEADERS = ("x-api-key", "authorization")
# per-request notes the handlers leave for the request log and the credit count
_REQUEST_ID = web.RequestKey("sim_request_id", str)
_FAULT = web.RequestKey("sim_fault", str)
_UNCHARGED = web.RequestKey("sim_uncharged", bool)
_SOCIALFETCH = next(e for e in ENDPOINTS if not e.keyapi)  # speaks for unknown /v1 paths


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as received: which auth headers were present, never their values."""

    method: str
    path: str
    query: dict[str, str]
    headers: tuple[str, ...]
    time: float
    status: int | None  # None: the connection was dropped
    request_id: str | None
    fault: str | None  # the injected fault's body kind, if one hit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "headers": list(self.headers)}


class Simulator:
    """Both fake upstream APIs over one scripted ``World``, usable in-process or served.

    ``app`` is the aiohttp Application; ``step()`` advances the world; ``add_fault()`` queues
    failures; ``requests`` is the log of API requests received; ``credits`` what they cost.
    """

    def __init__(
        self, scenario: str = "demo", *, seed: int = DEFAULT_SEED, page_size: int = 10
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.scenario = scenario
        self.seed = seed
        self.page_size = page_size
        self.world: World = build_world(seed, scenario)
        self.faults: list[Fault] = []
        self.credits: dict[str, int] = {"socialfetch": 0, "keyapi": 0}
        self._log: deque[RequestRecord] = deque(maxlen=50_000)
        self.app = self._build_app()

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self._log)

    def step(self, count: int = 1) -> int:
        """Advance the world ``count`` steps; returns the new step number."""
        for _ in range(count):
            self.world.step()
        return self.world.current_step

    def reset(self, *, scenario: str | None = None, seed: int | None = None) -> None:
        """Back to step 0 (optionally another scenario or seed); faults, log, credits cleared."""
        world = build_world(self.seed if seed is None else seed, scenario or self.scenario)
        self.world, self.seed, self.scenario = world, world.seed, scenario or self.scenario
        self.faults.clear()
        self._log.clear()
        self.credits = {"socialfetch": 0, "keyapi": 0}

    def add_fault(self, path: str | None = None, **options: Any) -> Fault:
        """Queue a ``Fault`` (see its docstring for the options); returns it."""
        fault = Fault(path=path, **options)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def clear_requests(self) -> None:
        self._log.clear()

    def state(self) -> dict[str, Any]:
        """What ``GET /_sim/state`` answers."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "step": self.world.current_step,
            "last_step": self.world.last_step,
            "page_size": self.page_size,
            "requests": len(self._log),
            "credits": dict(self.credits),
            "faults": [f.to_json() for f in self.faults],
            "world": self.world.summary(),
        }

    # ------------------------------------------------------------------ API routes

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._log_requests])
        for endpoint in ENDPOINTS:
            app.router.add_get(endpoint.path, self._handler(endpoint))
        app.router.add_route("*", "/v1/{tail:.*}", self._unknown)
        app.router.add_post("/_sim/step", self._ctl_step)
        app.router.add_post("/_sim/reset", self._ctl_reset)
        app.router.add_post("/_sim/faults", self._ctl_add_fault)
        app.router.add_get("/_sim/faults", self._ctl_faults)
        app.router.add_delete("/_sim/faults", self._ctl_clear_faults)
        app.router.add_get("/_sim/requests", self._ctl_requests)
        app.router.add_delete("/_sim/requests", self._ctl_clear_requests)
        app.router.add_get("/_sim/state", self._ctl_state)
        return app

    @web.middleware
    async def _log_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim"):
            return await handler(request)
        status: int | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            fault = request.get(_FAULT)
            self._log.append(
                RequestRecord(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers=tuple(h for h in _AUTH_HEADERS if h in request.headers),
                    time=time.time(),
                    status=None if fault == "disconnect" else status,
                    request_id=request.get(_REQUEST_ID),
                    fault=fault,
                )
            )

    async def _unknown(self, request: web.Request) -> web.Response:
        """Any other /v1 path: a 404 in Social Fetch's envelope."""
        rid = _SOCIALFETCH.new_request_id()
        request[_REQUEST_ID] = rid
        message = f"No route for {request.method} {request.path}"
        return web.json_response(_SOCIALFETCH.error_body(404, rid, message), status=404)

    def _handler(self, endpoint: Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            response = await self._serve(request, endpoint)
            if not request.get(_UNCHARGED):
                self.credits[endpoint.provider] += endpoint.credits(response.status)
            return response

        return handle

    async def _serve(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        params = {**request.query, **request.match_info}
        rid = endpoint.new_request_id()
        request[_REQUEST_ID] = rid
        fault = self._take_fault(request.path, endpoint.page_of(params, self.page_size), params)
        if fault is not None:
            request[_FAULT] = fault.body
            response = await fault_response(
                request, fault, endpoint, rid, lambda: self._answer(endpoint, params, rid)[1]
            )
            # a dropped connection or a KeyAPI body error is not charged
            request[_UNCHARGED] = fault.body == "disconnect" or bool(fault.keyapi_code)
            return response
        if not endpoint.authorised(request.headers):
            return web.json_response(endpoint.error_body(401, rid), status=401)
        status, body = self._answer(endpoint, params, rid)
        return web.json_response(body, status=status)

    def _answer(self, endpoint: Endpoint, params: dict[str, str], rid: str) -> tuple[int, Any]:
        """Status and body a healthy upstream sends (faults break the body afterwards)."""
        try:
            return 200, endpoint.render(self.world, params, rid, self.page_size)
        except ApiError as exc:
            return exc.status, endpoint.error_body(exc.status, rid, exc.message)

    def _take_fault(self, path: str, page: int | None, params: dict[str, str]) -> Fault | None:
        for fault in self.faults:
            if fault.matches(path, page, params):
                fault.used += 1
                if fault.spent:
                    self.faults.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------------ control API

    async def _ctl_step(self, request: web.Request) -> web.Response:
        count = (await _json_body(request)).get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            return _ctl_error("count must be a positive integer")
        return web.json_response({"step": self.step(count)})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self.reset(scenario=body.get("scenario"), seed=body.get("seed"))
        except ValueError as exc:
            return _ctl_error(str(exc))
        return web.json_response(self.state())

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            faults = [Fault.from_json(f) for f in (body if isinstance(body, list) else [body])]
        except (ValueError, TypeError) as exc:
            return _ctl_error(str(exc))
        self.faults.extend(faults)
        return web.json_response({"faults": [f.to_json() for f in faults]}, status=201)

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_json() for f in self.faults]})

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults": []})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [r.to_json() for r in self._log]})

    async def _ctl_clear_requests(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return web.json_response({"requests": []})

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type="application/json"
        ) from exc


def _ctl_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


# ---------------------------------------------------------------------- serving


@dataclass
class RunningSimulator:
    """A ``Simulator`` served on a real socket; ``await close()`` (or ``async with``) stops it."""

    simulator: Simulator
    base_url: str
    runner: web.AppRunner
    stepper: asyncio.Task[None] | None = None

    @property
    def world(self) -> World:
        return self.simulator.world

    @property
    def requests(self) -> list[RequestRecord]:
        return self.simulator.requests

    def step(self, count: int = 1) -> int:
        return self.simulator.step(count)

    def add_fault(self, path: str | None = None, **options: Any) -> Fault:
        return self.simulator.add_fault(path, **options)

    def reset(self, *, scenario: str | None = None, seed: int | None = None) -> None:
        self.simulator.reset(scenario=scenario, seed=seed)

    async def close(self) -> None:
        if self.stepper is not None:
            self.stepper.cancel()
            await asyncio.gather(self.stepper, return_exceptions=True)
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    scenario: str = "demo",
    page_size: int = 10,
    seed: int = DEFAULT_SEED,
    step_every: float | None = None,
) -> RunningSimulator:
    """Serve a new ``Simulator`` on ``host:port`` (0 = a free port) and return it running.

    With ``step_every`` (seconds) the world advances by itself until its script ends, which is
    what ``watcher demo`` needs; tests leave it None and call ``step()``.
    """
    simulator = Simulator(scenario, seed=seed, page_size=page_size)
    # a short shutdown: a fault that delays an answer must not hold up closing the simulator
    runner = web.AppRunner(simulator.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    running = RunningSimulator(simulator, f"http://{shown}:{bound_port}", runner)
    if step_every is not None:
        running.stepper = asyncio.create_task(_auto_step(simulator, step_every))
    return running


async def _auto_step(simulator: Simulator, every: float) -> None:
    while simulator.world.current_step < simulator.world.last_step:
        await asyncio.sleep(every)
        simulator.step()
