"""A small fake Kraken behind httpx.MockTransport: verifies signatures and nonces exactly as Kraken
does, enforces Kraken's Spot call counter, and replays scripted faults. Used by the foundation's
tests and bench/limiter.py; the full simulator lives in ``krakked.sim``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

from krakked.kraken.auth import futures_signature, spot_signature

SPOT_KEY = "SPOTKEYabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU"
SPOT_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
FUT_KEY = "FUTKEYzyxwvutsrqponmlkjihgfedcba9876543210ZYXWVUTSRQPONMLKJIHGFE"
FUT_SECRET = "cHl0aG9uLWtyYWtlbi1zZGsgdW5pdC10ZXN0IHNlY3JldCB2YWx1ZXMgZm9yIGZ1dHVyZXMgYXV0aA=="

TIERS = {"starter": (15, 0.33), "intermediate": (20, 0.5), "pro": (20, 1.0)}
COSTS = {"Ledgers": 4, "TradesHistory": 4, "ClosedOrders": 4, "QueryLedgers": 4}


@dataclass
class FakeKraken:
    """Spot + Futures endpoints enough for the clients' tests; ``handler`` is the transport."""

    clock: Callable[[], float] = time.monotonic
    tier: str = "starter"
    spot_keys: dict[str, str] = field(default_factory=lambda: {SPOT_KEY: SPOT_SECRET})
    futures_keys: dict[str, str] = field(default_factory=lambda: {FUT_KEY: FUT_SECRET})
    script: dict[str, list[Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    rate_limit_rejections: int = 0
    max_counter_seen: float = 0.0
    _nonces: dict[str, int] = field(default_factory=dict)
    _counter: dict[str, tuple[float, float]] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def fault(self, endpoint: str, *responses: Any) -> None:
        """Queue responses for ``endpoint`` (e.g. ``"Balance"``): an httpx.Response, an
        exception instance to raise, or a (status, body) tuple."""
        self.script.setdefault(endpoint, []).extend(responses)

    def counter(self, key: str = SPOT_KEY) -> float:
        value, stamp = self._counter.get(key, (0.0, self.clock()))
        return max(0.0, value - (self.clock() - stamp) * TIERS[self.tier][1])

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
        key = request.headers.get("API-Key", "")
        secret = self.spot_keys.get(key)
        if secret is None:
            return _spot_json(["EAPI:Invalid key"])
        body = request.content.decode()
        form = dict(parse_qsl(body, keep_blank_values=True))
        nonce = form.get("nonce", "")
        expected = spot_signature(request.url.path, nonce, body, secret)
        if request.headers.get("API-Sign") != expected:
            return _spot_json(["EAPI:Invalid signature"])
        if not nonce.isdigit() or int(nonce) <= self._nonces.get(key, 0):
            return _spot_json(["EAPI:Invalid nonce"])
        self._nonces[key] = int(nonce)
        cost = COSTS.get(name, 1)
        max_counter = TIERS[self.tier][0]
        current = self.counter(key)
        if current + cost > max_counter:
            self.rate_limit_rejections += 1
            return _spot_json(["EAPI:Rate limit exceeded"])
        self._counter[key] = (current + cost, self.clock())
        self.max_counter_seen = max(self.max_counter_seen, current + cost)
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
        key = request.headers.get("APIKey", "")
        secret = self.futures_keys.get(key)
        signed_path = path.removeprefix("/derivatives")
        if secret is None or request.headers.get("Authent") != futures_signature(
            signed_path, request.url.query.decode(), request.headers.get("Nonce", ""), secret
        ):
            if path.startswith("/api/history/"):
                return httpx.Response(401, text="Credentials required")
            return httpx.Response(200, json={"result": "error", "error": "authenticationError"})
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
