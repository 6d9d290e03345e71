"""The simulator's WS v2 public endpoint (``ws://host:port/v2``), on the same ASGI app as REST.

It speaks Kraken's WS v2 market data (https://docs.kraken.com/api/docs/websocket-v2/ and
``/work/shared/kraken/ws-and-files.md``): a ``status`` frame on connect; ``ping`` -> ``pong``;
``subscribe`` / ``unsubscribe`` answered with one ack per symbol (``Currency pair not supported
<SYM>`` for unknown symbols and v1 names such as ``XBT/USD``, ``Already subscribed``,
``Subscription Not Found``); channels ``ticker``, ``trade`` (snapshot: the last 50 trades, off by
default), ``ohlc`` (intervals 1 .. 21600; snapshot: the last two candles that had trades) and
``book`` (depths 10 .. 1000, served up to 500 levels, as REST ``Depth``); ``heartbeat`` about once
a second while nothing else is sent, once the connection has subscribed; the connection is closed
after ``idle_timeout`` (60 s) without a client message.

The feed is the REST market's tape and clock: every ``poll_interval`` (25 ms, real time) each
connection asks ``SimMarket.trades_since`` for the trades its subscriptions have not seen yet, up
to the simulator clock's "now" (a ``SimClock`` in tests: advance it and the trades appear), and
sends one frame per channel and symbol for them: the trades (same ids, prices, volumes, times as
REST ``Trades``), the ticker, the running candle(s), the book changes.

What a test uses, on ``Simulator.ws``:

* ``inject(kind, times=1)``: the next ``times`` occurrences of a fault (``WS_FAULTS``):
  ``drop`` closes every connection at once with code 1011 (no clean goodbye), ``book_drop``
  leaves one book update out (the next one's checksum no longer matches the client's book),
  ``dup_trade_snapshot`` sends a connection's last trade snapshot again, ``msg_rate`` answers the
  next subscribe with ``Exceeded msg rate`` for each symbol, ``malformed`` sends every connection
  a frame that is not JSON, ``skip_trade_id`` leaves one trade out of the trade feed (never out of
  REST; its id is appended to ``skipped_trade_ids``). ``fired`` counts what fired.
* ``push(frame)``: send a frame (a dict, or bytes already encoded) to every connected client at
  once, ahead of the feed (the benchmark's hook). Returns how many connections it went to.
* ``connections``: how many clients are connected; ``poll_interval``, ``heartbeat_interval``,
  ``idle_timeout`` (seconds, real time) can be set before or while serving.

Choices Kraken leaves open (UNCONFIRMED): error texts other than the ones above (``Unsupported
field``, ``Method not found``); ``event_trigger`` ``bbo`` is accepted and sent like ``trades``
(every trade moves the simulated top of book); one ``trade`` frame per poll carries every new
trade, and one ``ticker`` / ``ohlc`` / ``book`` frame the state after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from krakked.market.book import BOOK_DEPTHS
from krakked.sim.config import SimConfig
from krakked.sim.market import OHLC_INTERVALS, SimMarket
from krakked.sim.pairs import SimPair
from krakked.sim.ws_feed import (
    BookFeed,
    encode,
    ohlc_objects,
    rfc3339,
    ticker_object,
    trade_objects,
)

__all__ = ["WS_FAULTS", "SimWS"]

WS_FAULTS = {
    "drop": "close every connection abruptly (code 1011)",
    "book_drop": "leave one book update out (the client's checksum catches it)",
    "dup_trade_snapshot": "send the last trade snapshot again",
    "msg_rate": "answer the next subscribe with 'Exceeded msg rate'",
    "malformed": "send every connection a frame that is not JSON",
    "skip_trade_id": "leave one trade out of the trade feed (never out of REST)",
}
"""WS fault kinds a test can inject with ``Simulator.ws.inject(kind, times=1)``."""

CHANNELS = ("ticker", "trade", "ohlc", "book")
_MALFORMED = '{"channel":"trade","type":"update","data":[{"symbol":'
_DROP = object()
_IDLE = object()
_GONE = object()

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Sub:
    channel: str
    pair: SimPair
    cursor: int  # ns stamp of the last trade this subscription has shown
    interval: int = 0
    book: BookFeed | None = None


@dataclass
class _Conn:
    loop: asyncio.AbstractEventLoop
    outbox: deque[Any] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    subs: dict[tuple[Any, ...], _Sub] = field(default_factory=dict)
    subscribed: bool = False
    last_client: float = field(default_factory=time.monotonic)
    last_send: float = field(default_factory=time.monotonic)
    trade_snapshot: str | None = None

    def post(self, item: Any) -> None:
        self.outbox.append(item)
        self.wake.set()


class SimWS:
    """The WS v2 side of one ``Simulator``: connections, the feed, faults and the push hook."""

    def __init__(self, market: SimMarket, config: SimConfig) -> None:
        self.market = market
        self.config = config
        self.poll_interval = 0.025
        self.heartbeat_interval = 1.0
        self.idle_timeout = 60.0
        self.fired: Counter[str] = Counter()
        self.skipped_trade_ids: list[int] = []
        self._faults: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._rng = random.Random(config.seed)
        self._pairs = {p.v2name: p for p in market.pairs()}

    # -- the test API --------------------------------------------------------------------------

    def inject(self, kind: str, times: int = 1) -> None:
        """Make the next ``times`` occurrences of ``kind`` (see ``WS_FAULTS``) happen."""
        if kind not in WS_FAULTS:
            raise ValueError(f"unknown WS fault {kind!r}; known: {', '.join(sorted(WS_FAULTS))}")
        with self._lock:
            self._faults[kind] += times

    def clear(self) -> None:
        """Forget the faults not fired yet."""
        with self._lock:
            self._faults.clear()

    def push(self, frame: dict[str, Any] | bytes) -> int:
        """Send ``frame`` to every connected client at once; returns how many it went to."""
        text = frame.decode() if isinstance(frame, bytes) else encode(frame)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.loop.call_soon_threadsafe(conn.post, text)
        return len(conns)

    @property
    def connections(self) -> int:
        """How many clients are connected now."""
        with self._lock:
            return len(self._conns)

    def _take(self, kind: str) -> bool:
        with self._lock:
            if self._faults[kind] <= 0:
                return False
            self._faults[kind] -= 1
            self.fired[kind] += 1
            return True

    # -- serving -------------------------------------------------------------------------------

    async def serve(self, receive: Receive, send: Send) -> None:
        """Run one ASGI websocket connection until either side closes it."""
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        conn = _Conn(asyncio.get_running_loop())
        with self._lock:
            self._conns.append(conn)
        conn.post(encode({"channel": "status", "type": "update", "data": [{
            "api_version": "v2", "connection_id": self._rng.getrandbits(64),
            "system": "online", "version": "2.0.10"}]}))
        reader = asyncio.create_task(self._read(conn, receive))
        try:
            await self._write(conn, send)
        finally:
            reader.cancel()
            with self._lock:
                self._conns.remove(conn)

    async def _read(self, conn: _Conn, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                conn.post(_GONE)
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode(errors="replace")
            conn.last_client = time.monotonic()
            for frame in self._answer(conn, text):
                conn.post(frame)

    async def _write(self, conn: _Conn, send: Send) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.wake.wait(), self.poll_interval)
            conn.wake.clear()
            self._poll(conn)
            now = time.monotonic()
            if now - conn.last_client >= self.idle_timeout:
                conn.post(_IDLE)
            elif conn.subscribed and not conn.outbox and (
                    now - conn.last_send >= self.heartbeat_interval):
                conn.post('{"channel":"heartbeat"}')
            while conn.outbox:
                item = conn.outbox.popleft()
                try:
                    if item is _GONE:
                        return
                    if item is _DROP or item is _IDLE:
                        code = 1011 if item is _DROP else 1000
                        await send({"type": "websocket.close", "code": code})
                        return
                    await send({"type": "websocket.send", "text": item})
                except OSError:  # the client went away (uvicorn's ClientDisconnected)
                    return
                conn.last_send = time.monotonic()

    # -- client requests -----------------------------------------------------------------------

    def _stamp(self) -> str:
        return rfc3339(round(self.config.clock() * 1_000_000))

    def _answer(self, conn: _Conn, text: str) -> list[str]:
        time_in = self._stamp()
        try:
            request = json.loads(text, parse_float=Decimal)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return [encode({"error": "Malformed request", "success": False,
                            "time_in": time_in, "time_out": self._stamp()})]
        method = request.get("method")
        head: dict[str, Any] = {"method": method}
        if "req_id" in request:
            head["req_id"] = request["req_id"]
        if method == "ping":
            return [encode({"method": "pong", **{k: v for k, v in head.items() if k != "method"},
                            "time_in": time_in, "time_out": self._stamp()})]
        if method not in ("subscribe", "unsubscribe"):
            return [encode({**head, "error": "Method not found", "success": False,
                            "time_in": time_in, "time_out": self._stamp()})]
        params = request.get("params")
        params = params if isinstance(params, dict) else {}
        symbols = params.get("symbol")
        symbols = [str(s) for s in symbols] if isinstance(symbols, list) else []
        out: list[str] = []

        def nack(symbol: str | None, error: str) -> None:
            frame = {**head, "error": error, "success": False}
            if symbol is not None:
                frame["symbol"] = symbol
            out.append(encode({**frame, "time_in": time_in, "time_out": self._stamp()}))

        channel = params.get("channel")
        extra = self._params(channel, params)
        if extra is None:
            for symbol in symbols or [None]:
                nack(symbol, "Unsupported field")
            return out
        if method == "subscribe" and self._take("msg_rate"):
            for symbol in symbols or [None]:
                nack(symbol, "Exceeded msg rate")
            return out
        for symbol in symbols:
            pair = self._pairs.get(symbol)
            if pair is None:
                nack(symbol, f"Currency pair not supported {symbol}")
                continue
            key: tuple[Any, ...] = (channel, symbol, extra.get("interval"))
            if method == "unsubscribe":
                if conn.subs.pop(key, None) is None:
                    nack(symbol, "Subscription Not Found")
                    continue
                out.append(self._ack(head, channel, symbol, extra, time_in))
                continue
            if key in conn.subs or (channel == "book" and any(
                    k[:2] == ("book", symbol) for k in conn.subs)):
                nack(symbol, "Already subscribed")
                continue
            out.append(self._ack(head, channel, symbol, extra, time_in))
            out.extend(self._subscribe(conn, key, channel, pair, extra))
            conn.subscribed = True
        return out

    @staticmethod
    def _params(channel: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        """The parameters that take effect (echoed in the ack), None if they are invalid."""
        snapshot = params.get("snapshot", channel != "trade")
        if channel not in CHANNELS or not isinstance(snapshot, bool):
            return None
        if channel == "ticker":
            trigger = params.get("event_trigger", "trades")
            return None if trigger not in ("trades", "bbo") else {
                "event_trigger": trigger, "snapshot": snapshot}
        if channel == "ohlc":
            interval = params.get("interval")
            return None if interval not in OHLC_INTERVALS else {
                "interval": interval, "snapshot": snapshot}
        if channel == "book":
            depth = params.get("depth", 10)
            return None if depth not in BOOK_DEPTHS else {"depth": depth, "snapshot": snapshot}
        return {"snapshot": snapshot}

    def _ack(self, head: dict[str, Any], channel: str, symbol: str, extra: dict[str, Any],
             time_in: str) -> str:
        result: dict[str, Any] = {"channel": channel, **extra, "symbol": symbol}
        if channel == "ohlc" and head["method"] == "subscribe":
            result["warnings"] = ["timestamp is deprecated, use interval_begin"]
        return encode({**head, "result": result, "success": True, "time_in": time_in,
                       "time_out": self._stamp()})

    def _subscribe(self, conn: _Conn, key: tuple[Any, ...], channel: str, pair: SimPair,
                   extra: dict[str, Any]) -> list[str]:
        """Register the subscription; its snapshot frame if one was asked for."""
        last = self.market.last_trade(pair.id)
        now_us = round(self.config.clock() * 1_000_000)
        cursor = int(last[7]) if last else now_us * 1000
        stamp_us = cursor // 1000
        sub = conn.subs[key] = _Sub(channel, pair, cursor, extra.get("interval", 0))
        if channel == "book":
            sub.book = BookFeed(self.market, pair, extra["depth"])
            data = sub.book.snapshot(stamp_us)
            return [encode({"channel": "book", "type": "snapshot", "data": [data]})] if extra[
                "snapshot"] else []
        if not extra["snapshot"]:
            return []
        if channel == "trade":
            rows, _ = self.market.trades_since(pair.id, None, 50)
            sub.cursor = int(rows[-1][7]) if rows else cursor
            conn.trade_snapshot = encode({"channel": "trade", "type": "snapshot",
                                          "data": trade_objects(pair, rows)})
            return [conn.trade_snapshot]
        if channel == "ticker":
            return [encode({"channel": "ticker", "type": "snapshot",
                            "data": [ticker_object(self.market, pair)]})]
        return [encode({"channel": "ohlc", "type": "snapshot",
                        "timestamp": rfc3339(now_us, 9),
                        "data": ohlc_objects(self.market, pair, sub.interval)})]

    # -- the feed ------------------------------------------------------------------------------

    def _poll(self, conn: _Conn) -> None:
        """Queue the frames for trades the clock has passed since the last poll, and faults."""
        if self._take("drop"):
            with self._lock:
                conns = list(self._conns)
            for other in conns:
                other.loop.call_soon_threadsafe(other.post, _DROP)
        if self._take("malformed"):
            with self._lock:
                conns = list(self._conns)
            for other in conns:
                other.loop.call_soon_threadsafe(other.post, _MALFORMED)
        if conn.trade_snapshot is not None and self._take("dup_trade_snapshot"):
            conn.post(conn.trade_snapshot)
        by_pair: dict[str, list[_Sub]] = {}
        for sub in conn.subs.values():
            by_pair.setdefault(sub.pair.id, []).append(sub)
        for subs in by_pair.values():
            pair = subs[0].pair
            rows = self._trades_after(pair, min(s.cursor for s in subs))
            if not rows:
                continue
            for sub in subs:
                new = [r for r in rows if int(r[7]) > sub.cursor]
                if new:
                    sub.cursor = int(new[-1][7])
                    frame = self._update(sub, new)
                    if frame is not None:
                        conn.post(frame)

    def _trades_after(self, pair: SimPair, cursor: int, pages: int = 20) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for _ in range(pages):
            page, _ = self.market.trades_since(pair.id, cursor, 1000)
            rows += page
            if len(page) < 1000:
                break
            cursor = int(page[-1][7])
        return rows

    def _update(self, sub: _Sub, rows: list[list[Any]]) -> str | None:
        pair, stamp_us = sub.pair, int(rows[-1][7]) // 1000
        if sub.channel == "trade":
            if self._take("skip_trade_id"):
                self.skipped_trade_ids.append(rows[0][6])
                rows = rows[1:]
            if not rows:
                return None
            return encode({"channel": "trade", "type": "update",
                           "data": trade_objects(pair, rows)})
        if sub.channel == "ticker":
            return encode({"channel": "ticker", "type": "update",
                           "data": [ticker_object(self.market, pair)]})
        if sub.channel == "ohlc":
            data = ohlc_objects(self.market, pair, sub.interval, [int(r[7]) // 1000 for r in rows])
            return encode({"channel": "ohlc", "type": "update",
                           "timestamp": rfc3339(round(self.config.clock() * 1_000_000), 9),
                           "data": data}) if data else None
        assert sub.book is not None
        book = sub.book.update(stamp_us)
        if book is None or self._take("book_drop"):
            return None
        return encode({"channel": "book", "type": "update", "data": [book]})
