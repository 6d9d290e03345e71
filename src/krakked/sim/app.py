"""The simulator core: routing, rate limits and faults, behind two doors.

One request handler serves two doors: an ASGI app (``Simulator.app``, for uvicorn or
``httpx.AsyncClient(transport=httpx.ASGITransport(sim.app))``) and a sync httpx transport
(``Simulator.transport()``) for krakked's sync clients in-process, with no event loop and no
socket. Private calls pass ``auth.PrivateCallChecks`` first; the endpoint handlers live in
``spot_public``, ``spot_private`` and ``futures``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from krakked.sim import futures, spot_private, spot_public
from krakked.sim.auth import PrivateCallChecks
from krakked.sim.config import AccountSpec, FaultRule, SimConfig
from krakked.sim.futures_book import FuturesBook
from krakked.sim.limits import Bucket, SpotCounter
from krakked.sim.market import SimMarket
from krakked.sim.protocol import (
    FuturesError,
    SimRequest,
    SimResponse,
    SpotError,
    html_response,
    json_response,
)
from krakked.sim.spot_book import SpotBook
from krakked.sim.ws import SimWS

__all__ = ["Simulator"]

class _Faults:
    """Scripted faults (tests) first, then the probabilistic rules (``--faults``)."""

    def __init__(self, rules: tuple[FaultRule, ...], seed: int) -> None:
        self.rules = rules
        self.rng = random.Random(seed)
        self._queue: list[tuple[str, str | None, list[int]]] = []
        self._lock = threading.Lock()
        self.fired: Counter[str] = Counter()

    def inject(self, kind: str, endpoint: str | None = None, times: int = 1) -> None:
        with self._lock:
            self._queue.append((kind, endpoint, [times]))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pick(self, endpoint: str, allowed: frozenset[str]) -> str | None:
        with self._lock:
            for kind, target, left in self._queue:
                if left[0] > 0 and kind in allowed and target in (None, endpoint):
                    left[0] -= 1
                    self.fired[kind] += 1
                    return kind
            for rule in self.rules:
                if rule.kind in allowed and rule.endpoint in (None, endpoint) and (
                    self.rng.random() < rule.probability
                ):
                    self.fired[rule.kind] += 1
                    return rule.kind
        return None


_SPOT_FAULTS = frozenset({"http500", "http502", "timeout", "unavailable", "busy", "toomany",
                          "ratelimit", "malformed", "permission"})
_FUTURES_FAULTS = frozenset({"http500", "http502", "timeout", "unavailable", "ratelimit",
                             "malformed", "notoken", "permission"})


class Simulator:
    """An offline Kraken. ``Simulator(SimConfig(seed=7))``; see ``krakked.sim.config``."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.market = SimMarket(self.config)
        self.faults = _Faults(self.config.faults, self.config.seed)
        mono = self.config.monotonic
        self.counter = SpotCounter(self.config.tier, mono)
        self.public_bucket = (
            Bucket(self.config.public_burst, self.config.public_rate, mono)
            if self.config.public_rate > 0 else None
        )
        self.derivatives = Bucket(self.config.derivatives_budget,
                                  self.config.derivatives_budget / 10.0, mono)
        self.history = Bucket(self.config.history_capacity,
                              self.config.history_refill_per_second, mono)
        self.checks = PrivateCallChecks(
            self._account, counter=self.counter if self.config.rate_limits else None,
            spot_costs=self.config.spot_costs)
        self._books: dict[str, Any] = {}
        self._books_lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.ws = SimWS(self.market, self.config)
        self.app = _AsgiApp(self)

    # -- what tests and the demo use -----------------------------------------------------------

    def now(self) -> float:
        """The simulator's wall clock (Unix seconds): tapes and histories end here."""
        return self.config.clock()

    def transport(self) -> httpx.BaseTransport:
        """A sync httpx transport calling the simulator in-process."""
        return _SyncTransport(self)

    def inject(self, kind: str, endpoint: str | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls (to ``endpoint``, e.g. ``"Balance"``) fail with
        ``kind``."""
        self.faults.inject(kind, endpoint, times)

    def book(self, spec: AccountSpec) -> Any:
        """The account history behind ``spec`` (built on first use, then kept)."""
        with self._books_lock:
            book = self._books.get(spec.api_key)
            if book is None:
                cls = SpotBook if spec.product == "spot" else FuturesBook
                book = self._books[spec.api_key] = cls(spec, self.market, self.config)
            return book

    def _account(self, key: str, product: str) -> AccountSpec | None:
        for spec in self.config.accounts:
            if spec.api_key == key and spec.product == product:
                return spec
        return None

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, req: SimRequest) -> SimResponse:
        """Answer one HTTP request as Kraken would."""
        path = req.path
        if path.startswith("/0/public/"):
            return self._spot(req, path[len("/0/public/"):], private=False)
        if path.startswith("/0/private/"):
            return self._spot(req, path[len("/0/private/"):], private=True)
        if path.startswith("/derivatives/api/v3/"):
            return self._derivatives(req, path[len("/derivatives/api/v3/"):])
        if path.startswith("/api/history/"):
            return self._history(req, path)
        return SimResponse(404, b"Not Found", {"content-type": "text/plain"})

    def _fault_response(self, kind: str, spot: bool) -> SimResponse | None:
        if kind in ("http500", "http502"):
            return html_response(500 if kind == "http500" else 502)
        if kind == "timeout":
            return SimResponse(504, b"", stall=True)
        if spot:
            errors = {"unavailable": "EService:Unavailable", "busy": "EService:Busy",
                      "toomany": "EGeneral:Too many requests",
                      "ratelimit": "EAPI:Rate limit exceeded",
                      "permission": "EGeneral:Permission denied"}
            if kind in errors:
                return json_response({"error": [errors[kind]]})
        return None

    def _spot(self, req: SimRequest, method: str, *, private: bool) -> SimResponse:
        self.requests[method] += 1
        table = spot_private.HANDLERS if private else spot_public.HANDLERS
        handler = table.get(method)
        try:
            if handler is None:
                raise SpotError("EGeneral:Unknown method")
            if private:
                if req.method != "POST":
                    raise SpotError("EGeneral:Invalid arguments:use POST")
                spec, params = self.checks.spot(req, method)
            else:
                params = req.query if req.method == "GET" else dict(
                    parse_qsl(req.body.decode(errors="replace")))
                if self.public_bucket is not None and self.public_bucket.take(req.client, 1):
                    raise SpotError("EGeneral:Too many requests")
                spec = None
            fault = self.faults.pick(method, _SPOT_FAULTS)
            if fault is not None:
                canned = self._fault_response(fault, spot=True)
                if canned is not None:
                    return canned
            result = handler(self, params) if spec is None else handler(
                self, self.book(spec), params)
            response = json_response({"error": [], "result": result})
        except SpotError as exc:
            return json_response({"error": exc.errors})
        if fault == "malformed":
            response.body = response.body[: max(1, len(response.body) // 2)]
        return response

    def _derivatives(self, req: SimRequest, name: str) -> SimResponse:
        self.requests[name] += 1
        entry = futures.DERIVATIVES.get(name)
        server_time = datetime.fromtimestamp(self.now(), UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        try:
            if entry is None:
                return SimResponse(404, b'{"result":"error","error":"notFound"}')
            handler, private, cost = entry
            spec = None
            if private:
                spec = self.checks.futures(req, req.path.removeprefix("/derivatives"))
                if self.config.rate_limits and self.derivatives.take(spec.api_key, cost):
                    raise FuturesError("apiLimitExceeded")
            fault = self.faults.pick(name, _FUTURES_FAULTS)
            if fault is not None:
                canned = self._fault_response(fault, spot=False)
                if canned is not None:
                    return canned
                mapped = {"unavailable": "Unavailable", "ratelimit": "apiLimitExceeded",
                          "permission": "permissionDenied"}
                if fault in mapped:
                    raise FuturesError(mapped[fault])
            payload = handler(self, self.book(spec) if spec else None, req.query)
        except FuturesError as exc:
            return json_response({"result": "error", "serverTime": server_time, "error": exc.error},
                         exc.status)
        response = json_response({"result": "success", "serverTime": server_time, **payload})
        if fault == "malformed":
            response.body = response.body[: max(1, len(response.body) // 2)]
        return response

    def _history(self, req: SimRequest, path: str) -> SimResponse:
        parts = path.split("/")  # ['', 'api', 'history', 'v3', 'executions']
        version, name = (parts[3], parts[4]) if len(parts) >= 5 else ("", "")
        self.requests[name] += 1
        entry = futures.HISTORY.get(name)
        if entry is None or version not in entry[1]:
            return SimResponse(404, b"Not Found", {"content-type": "text/plain"})
        handler, _, cost_of = entry
        if not req.headers.get("apikey"):
            return SimResponse(401, b"Credentials required", {"content-type": "text/plain"})
        try:
            spec = self.checks.futures(req, path)
        except FuturesError as exc:
            return json_response({"result": "error", "error": exc.error}, 401)
        query = req.query
        if self.config.rate_limits:
            wait = self.history.take(spec.api_key, cost_of(query))
            if wait is not None:
                return SimResponse(429, b"Too many requests",
                                   {"content-type": "text/plain",
                                    "rate-limit-reset": str(max(1, round(wait + 0.5)))})
        fault = self.faults.pick(name, _FUTURES_FAULTS)
        if fault is not None:
            canned = self._fault_response(fault, spot=False)
            if canned is not None:
                return canned
            if fault == "ratelimit":
                return SimResponse(429, b"Too many requests",
                                   {"content-type": "text/plain", "rate-limit-reset": "1"})
            if fault == "permission":
                return json_response({"result": "error", "error": "permissionDenied"}, 403)
            if fault == "unavailable":
                return json_response({"result": "error", "error": "Unavailable"}, 503)
        try:
            payload = handler(self, self.book(spec), query, version)
        except FuturesError as exc:
            return json_response({"result": "error", "error": exc.error}, exc.status or 400)
        if fault == "notoken":
            payload.pop("continuationToken", None)
        response = json_response(payload)
        if fault == "malformed":
            response.body = response.body[: max(1, len(response.body) // 2)]
        return response


class _SyncTransport(httpx.BaseTransport):
    """httpx sync transport -> Simulator.handle, in-process."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.sim.handle(SimRequest.from_httpx(request))
        if response.stall:
            raise httpx.ReadTimeout("simulated timeout", request=request)
        return httpx.Response(response.status, headers=response.headers, content=response.body,
                              request=request)


class _AsgiApp:
    """The ASGI door: HTTP, and the WS v2 endpoint at ``/v2`` (``krakked.sim.ws``)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            if scope["path"].rstrip("/") == "/v2":
                await self.sim.ws.serve(receive, send)
            else:  # refused before the handshake: the client sees HTTP 403
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        client = scope.get("client") or ("127.0.0.1", 0)
        req = SimRequest(
            method=scope["method"],
            path=scope["path"],
            raw_query=scope.get("query_string", b"").decode(),
            headers={k.decode().lower(): v.decode() for k, v in scope.get("headers", [])},
            body=b"".join(chunks),
            client=client[0],
        )
        response = self.sim.handle(req)
        if response.stall:
            await asyncio.sleep(self.sim.config.timeout_seconds)
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
