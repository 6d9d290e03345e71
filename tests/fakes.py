"""A small fake Kraken behind httpx.MockTransport, for the clients' unit tests and CLI tests.

It keeps what the simulator has no place for: canned answers, per-call scripted responses and
faults, and whatever clock the test passes. Everything Kraken checks before it serves a private
call (the API key, the signature, the nonce order, the Spot call counter) is the simulator's own
code (``krakked.sim.auth``), so the fake and ``krakked.sim`` cannot disagree on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from krakked.sim.auth import PrivateCallChecks
from krakked.sim.config import DEFAULT_SPOT_COSTS, AccountSpec
from krakked.sim.limits import SpotCounter
from krakked.sim.protocol import FuturesError, SimRequest, SpotError

SPOT_KEY = "SPOTKEYabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU"
SPOT_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
FUT_KEY = "FUTKEYzyxwvutsrqponmlkjihgfedcba9876543210ZYXWVUTSRQPONMLKJIHGFE"
FUT_SECRET = "cHl0aG9uLWtyYWtlbi1zZGsgdW5pdC10ZXN0IHNlY3JldCB2YWx1ZXMgZm9yIGZ1dHVyZXMgYXV0aA=="


@dataclass
class FakeKraken:
    """Spot + Futures endpoints enough for the clients' tests; ``handler`` is the transport.

    ``spot_keys`` / ``futures_keys`` map API keys to secrets and may be changed at any time;
    ``clock`` drives the Spot call counter of ``tier``, charged as the simulator charges it.
    """

    clock: Callable[[], float] = time.monotonic
    tier: str = "starter"
    spot_keys: dict[str, str] = field(default_factory=lambda: {SPOT_KEY: SPOT_SECRET})
    futures_keys: dict[str, str] = field(default_factory=lambda: {FUT_KEY: FUT_SECRET})
    script: dict[str, list[Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._counter = SpotCounter(self.tier, self.clock)
        self._checks = PrivateCallChecks(self._account, counter=self._counter,
                                         spot_costs=DEFAULT_SPOT_COSTS)

    def _account(self, key: str, product: str) -> AccountSpec | None:
        secret = (self.spot_keys if product == "spot" else self.futures_keys).get(key)
        return None if secret is None else AccountSpec(f"fake-{product}", key, secret, product)

    @property
    def rate_limit_rejections(self) -> int:
        """Spot calls Kraken's counter refused."""
        return self._counter.rejections

    @property
    def max_counter_seen(self) -> float:
        """The highest value Kraken's Spot counter reached."""
        return self._counter.peak

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def fault(self, endpoint: str, *responses: Any) -> None:
        """Queue responses for ``endpoint`` (e.g. ``"Balance"``): an httpx.Response, an
        exception instance to raise, or a (status, body) tuple."""
        self.script.setdefault(endpoint, []).extend(responses)

    def counter(self, key: str = SPOT_KEY) -> float:
        """Kraken's Spot counter for ``key`` now."""
        return self._counter.value(key)

    # -- transport -------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        name = path.rstrip("/").rsplit("/", 1)[-1]
        queued = self.script.get(name)
        if queued:
            item = queued.pop(0)
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, httpx.Response):
                return item
            status, body = item
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return httpx.Response(status, content=content)
        if path.startswith("/0/public/"):
            return self._spot_public(name, dict(request.url.params))
        if path.startswith("/0/private/"):
            return self._spot_private(request, name)
        if path.startswith(("/derivatives/", "/api/history/")):
            return self._futures(request, path, name)
        return httpx.Response(404, text="not found")

    # -- spot ------------------------------------------------------------------------------

    def _spot_public(self, name: str, params: dict[str, str]) -> httpx.Response:
        results: dict[str, Any] = {
            "Time": {"unixtime": 1688669448, "rfc1123": "Thu, 06 Jul 23 18:50:48 +0000"},
            "SystemStatus": {"status": "online", "timestamp": "2023-07-06T18:52:00Z"},
            "Ticker": {"XXBTZUSD": {"c": ["30303.20000", "0.00067643"]}},
            "Trades": {"XXBTZUSD": [["30243.40000", "0.34507674", 1688669597.8277369, "b", "m",
                                     "", 61044952, "1688669597827736900"]],
                       "last": "1688671969993150842"},
        }
        if name not in results:
            return _spot_json(["EGeneral:Unknown method"])
        if name == "Trades" and params.get("pair") not in ("XBTUSD", "XXBTZUSD"):
            return _spot_json(["EQuery:Unknown asset pair"])
        return _spot_json([], results[name])

    def _spot_private(self, request: httpx.Request, name: str) -> httpx.Response:
        try:
            self._checks.spot(SimRequest.from_httpx(request), name)
        except SpotError as exc:
            return _spot_json(exc.errors)
        results: dict[str, Any] = {
            "Balance": {"ZUSD": "171288.6158", "XXBT": "1011.1908877900"},
            "Ledgers": {"ledger": {}, "count": 0},
            "TradesHistory": {"trades": {}, "count": 0},
            "ClosedOrders": {"closed": {}, "count": 0},
        }
        if name not in results:
            return _spot_json(["EGeneral:Unknown method"])
        return _spot_json([], results[name])

    # -- futures ---------------------------------------------------------------------------

    def _futures(self, request: httpx.Request, path: str, name: str) -> httpx.Response:
        if name == "tickers":
            return httpx.Response(200, json={"result": "success", "tickers": [
                {"symbol": "PI_XBTUSD", "markPrice": 30209.9, "suspended": False}]})
        try:
            self._checks.futures(SimRequest.from_httpx(request), path.removeprefix("/derivatives"))
        except FuturesError as exc:
            if path.startswith("/api/history/"):
                if exc.error == "authenticationError":
                    return httpx.Response(401, text="Credentials required")
                return httpx.Response(401, json={"result": "error", "error": exc.error})
            return httpx.Response(200, json={"result": "error", "error": exc.error})
        if name == "accounts":
            return httpx.Response(200, json={"result": "success", "accounts": {
                "flex": {"type": "multiCollateralMarginAccount", "portfolioValue": 1234.5}}})
        if name == "executions":
            return httpx.Response(200, json={"elements": [{"uid": "e1", "timestamp": 1}],
                                             "len": 1})
        return httpx.Response(404, text="not found")


def _spot_json(errors: list[str], result: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"error": errors}
    if result is not None:
        body["result"] = result
    return httpx.Response(200, json=body)


class FakeClock:
    """A monotonic clock whose ``sleep`` advances time instantly; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


class served:
    """Serve a FakeKraken on 127.0.0.1 (random port) over real HTTP, for CLI tests."""

    def __init__(self, fake: FakeKraken) -> None:
        self.fake = fake

    def __enter__(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        fake = self.fake

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = httpx.Request(self.command, f"http://fake{self.path}",
                                        headers=dict(self.headers), content=body)
                try:
                    response = fake.handler(request)
                except httpx.TransportError:
                    self.close_connection = True
                    return
                payload = response.read()
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
