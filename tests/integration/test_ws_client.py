"""KrakenWS against a small WS v2 fake server on 127.0.0.1 (frames shaped as Kraken sends them).

Timeouts are sub-second; backoff waits go through an injected sleep that records them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from krakked.errors import NetworkError, UsageError
from krakked.kraken.ws import KrakenWS, ReconnectPolicy, WSEvent

STATUS = {"channel": "status", "type": "update", "data": [{
    "api_version": "v2", "connection_id": 13834774380200032777, "system": "online",
    "version": "2.0.10"}]}
TIMES = {"time_in": "2026-10-06T17:39:49.588049Z", "time_out": "2026-10-06T17:39:49.588083Z"}


class FakeKraken:
    """A WS v2 public endpoint: status on connect, one ack per symbol, pong, scripted faults."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []  # every subscribe/unsubscribe, all connections
        self.pings = 0
        self.connections = 0
        self.reject: dict[str, str] = {}  # symbol -> error text
        self.msg_rate_times = 0  # the next N subscribe requests get "Exceeded msg rate"
        self.silent = False  # answer nothing (not even pings): a dead connection
        self.ack_nothing = False
        self.system = "online"
        self.on_subscribe: Callable[[ServerConnection, dict[str, Any]], Awaitable[None]] | None \
            = None
        self.live: set[ServerConnection] = set()
        self.url = ""

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        self.live.add(conn)
        try:
            await conn.send(json.dumps({**STATUS, "data": [{**STATUS["data"][0],
                                                             "system": self.system}]}))
            async for raw in conn:
                if self.silent:
                    continue
                msg = json.loads(raw)
                if msg["method"] == "ping":
                    self.pings += 1
                    await conn.send(json.dumps({"method": "pong", "req_id": msg["req_id"],
                                                **TIMES}))
                    continue
                self.requests.append(msg)
                if self.ack_nothing:
                    continue
                await self.ack(conn, msg)
                if self.on_subscribe and msg["method"] == "subscribe":
                    await self.on_subscribe(conn, msg)
        except ConnectionClosed:
            pass  # dropped on purpose by a test
        finally:
            self.live.discard(conn)

    async def ack(self, conn: ServerConnection, msg: dict[str, Any]) -> None:
        params = msg["params"]
        limited = msg["method"] == "subscribe" and self.msg_rate_times > 0
        if limited:
            self.msg_rate_times -= 1
        for sym in params.get("symbol", [None]):
            error = "Exceeded msg rate" if limited else self.reject.get(sym or "")
            if error:
                ack = {"error": error, "method": msg["method"], "success": False,
                       "req_id": msg["req_id"], **TIMES}
                if sym:
                    ack["symbol"] = sym
            else:
                result = {k: v for k, v in params.items() if k != "symbol"}
                if sym:
                    result["symbol"] = sym
                ack = {"method": msg["method"], "result": result, "success": True,
                       "req_id": msg["req_id"], **TIMES}
            await conn.send(json.dumps(ack))

    async def push(self, frame: str | dict[str, Any]) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        for conn in list(self.live):
            await conn.send(text)

    def drop(self) -> None:
        for conn in list(self.live):
            conn.transport.abort()

    def subscribed(self, channel: str, method: str = "subscribe") -> list[dict[str, Any]]:
        return [r["params"] for r in self.requests
                if r["method"] == method and r["params"]["channel"] == channel]


async def run_with_fake(test: Callable[[FakeKraken], Awaitable[None]]) -> FakeKraken:
    fake = FakeKraken()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/v2"
        await asyncio.wait_for(test(fake), 10)
    return fake


class Recorder:
    """on_frame / on_event sinks and a sleep that records waits (and yields, never waits)."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.events: list[WSEvent] = []
        self.sleeps: list[float] = []

    def on_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def on_event(self, event: WSEvent) -> None:
        self.events.append(event)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def client(fake: FakeKraken, rec: Recorder, **kw: Any) -> KrakenWS:
    kw.setdefault("ping_interval", 5.0)
    kw.setdefault("dead_after", 10.0)
    kw.setdefault("ack_timeout", 2.0)
    kw.setdefault("sleep", rec.sleep)
    kw.setdefault("backoff", ReconnectPolicy(base=0.01, first_delay=0.0))
    return KrakenWS(fake.url, on_frame=rec.on_frame, on_event=rec.on_event, **kw)


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


def test_subscribe_sends_batches_of_batch_size_and_waits_for_every_symbols_ack() -> None:
    symbols = [f"S{i}/USD" for i in range(7)]

    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec, batch_size=3)
        await ws.start()
        result = await ws.subscribe("ticker", symbols, event_trigger="bbo")
        assert result.accepted == tuple(symbols) and result.rejected == {}
        assert [p["symbol"] for p in fake.subscribed("ticker")] == [
            symbols[0:3], symbols[3:6], symbols[6:7]]
        assert all(p["event_trigger"] == "bbo" for p in fake.subscribed("ticker"))
        assert len(rec.sleeps) == 2  # paced: a wait before the 2nd and 3rd request
        assert ws.stats()["subscriptions"] == {"ticker": symbols}
        assert rec.kinds() == ["connected", "status", "subscribed"]
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_rejected_symbols_are_reported_with_krakens_text_and_not_kept() -> None:
    async def go(fake: FakeKraken) -> None:
        fake.reject = {"XBT/USD": "Currency pair not supported XBT/USD"}
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        result = await ws.subscribe("trade", ["BTC/USD", "XBT/USD"])
        assert result.accepted == ("BTC/USD",)
        assert result.rejected == {"XBT/USD": "Currency pair not supported XBT/USD"}
        stats = ws.stats()
        assert stats["rejected"] == {"XBT/USD": "Currency pair not supported XBT/USD"}
        assert stats["subscriptions"] == {"trade": ["BTC/USD"]}
        rejected = [e for e in rec.events if e.kind == "rejected"]
        assert rejected == [WSEvent("rejected", "trade: Currency pair not supported XBT/USD",
                                    ("XBT/USD",))]
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_already_subscribed_keeps_a_symbol_that_was_subscribed_before() -> None:
    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        await ws.subscribe("trade", ["BTC/USD"])
        fake.reject = {"BTC/USD": "Already subscribed", "ETH/USD": "Already subscribed"}
        result = await ws.subscribe("trade", ["BTC/USD", "ETH/USD"])
        assert result.rejected == {"BTC/USD": "Already subscribed", "ETH/USD": "Already subscribed"}
        # ETH/USD was never ours (another client's state is not ours to claim): not kept
        assert ws.stats()["subscriptions"] == {"trade": ["BTC/USD"]}
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_exceeded_msg_rate_backs_off_and_retries_the_batch() -> None:
    async def go(fake: FakeKraken) -> None:
        fake.msg_rate_times = 2
        rec = Recorder()
        ws = client(fake, rec, request_interval=0.0, msg_rate_backoff=1.5)
        await ws.start()
        result = await ws.subscribe("ohlc", ["BTC/USD", "ETH/USD"], interval=5)
        assert result.accepted == ("BTC/USD", "ETH/USD") and result.rejected == {}
        assert len(fake.subscribed("ohlc")) == 3  # two refused, the third accepted
        assert rec.sleeps == [1.5, 3.0]  # backoff doubles
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_msg_rate_that_never_clears_ends_as_a_rejection() -> None:
    async def go(fake: FakeKraken) -> None:
        fake.msg_rate_times = 100
        rec = Recorder()
        ws = client(fake, rec, request_interval=0.0, msg_rate_retries=2)
        await ws.start()
        result = await ws.subscribe("trade", ["BTC/USD"])
        assert result.rejected == {"BTC/USD": "Exceeded msg rate"}
        assert len(fake.subscribed("trade")) == 3
        assert ws.stats()["subscriptions"] == {}
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_a_missing_ack_becomes_a_rejection_after_ack_timeout() -> None:
    async def go(fake: FakeKraken) -> None:
        fake.ack_nothing = True
        rec = Recorder()
        ws = client(fake, rec, ack_timeout=0.2)
        await ws.start()
        result = await ws.subscribe("book", ["BTC/USD"], depth=10)
        assert result.rejected == {"BTC/USD": "no acknowledgement within 0.2 s"}
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_data_frames_reach_on_frame_in_order_with_exact_decimals_and_nothing_else() -> None:
    trade = {"channel": "trade", "type": "update", "data": [{
        "symbol": "BTC/USD", "side": "sell", "price": 45283.5, "qty": 0.10000000,
        "ord_type": "market", "trade_id": 4665906, "timestamp": "2023-09-25T07:49:37.708706Z"}]}

    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        await ws.subscribe("trade", ["BTC/USD"])
        await fake.push({"channel": "heartbeat"})
        # raw text so the wire digits are Kraken's (json.dumps would rewrite 0.10000000)
        await fake.push(json.dumps(trade).replace('"qty": 0.1', '"qty": 0.10000000'))
        await fake.push({"channel": "ticker", "type": "update", "data": [{"symbol": "BTC/USD",
                                                                          "last": 1.5}]})
        await until(lambda: len(rec.frames) == 2)
        assert [f["channel"] for f in rec.frames] == ["trade", "ticker"]
        qty = rec.frames[0]["data"][0]["qty"]
        assert isinstance(qty, Decimal) and str(qty) == "0.10000000"
        assert rec.frames[0]["data"][0]["trade_id"] == 4665906
        stats = ws.stats()
        assert stats["data_frames"] == 2 and stats["frames"] >= 5  # status, ack, heartbeat...
        assert stats["system"] == "online" and stats["last_frame_age"] < 1
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_client_pings_every_ping_interval_and_pongs_keep_an_idle_connection_alive() -> None:
    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec, ping_interval=0.05, dead_after=0.3)
        await ws.start()
        await asyncio.sleep(0.6)  # twice dead_after with no data: only pongs arrive
        assert fake.pings >= 5 and ws.stats()["pongs"] >= 5
        assert fake.connections == 1 and "disconnected" not in rec.kinds()
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_silent_connection_is_declared_dead_dropped_and_reopened() -> None:
    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec, ping_interval=0.05, dead_after=0.2)
        await ws.start()
        fake.silent = True
        await until(lambda: fake.connections == 2)
        fake.silent = False
        await until(lambda: ws.connected)
        assert WSEvent("disconnected", "no frame for 0.2 s") in rec.events
        assert ws.stats()["reconnects"] == 1
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_drop_reconnects_and_resubscribes_everything_with_the_same_params() -> None:
    async def go(fake: FakeKraken) -> None:
        fake.reject = {"XBT/USD": "Currency pair not supported XBT/USD"}
        rec = Recorder()
        ws = client(fake, rec, stable_after=0.0, backoff=ReconnectPolicy(rng=lambda: 0.0))
        await ws.start()
        await ws.subscribe("book", ["BTC/USD", "ETH/USD"], depth=25)
        await ws.subscribe("trade", ["BTC/USD", "XBT/USD"])
        await ws.subscribe("ohlc", ["ETH/USD"], interval=5)
        await ws.subscribe("ohlc", ["ETH/USD"], interval=60)
        await ws.subscribe("ticker", ["SOL/USD"])
        await ws.unsubscribe("ticker", ["SOL/USD"])
        fake.requests.clear()
        rec.events.clear()
        fake.drop()
        await until(lambda: "resubscribed" in rec.kinds())
        assert sorted(map(json.dumps, (r["params"] for r in fake.requests))) == sorted(map(
            json.dumps, [
                {"channel": "book", "depth": 25, "symbol": ["BTC/USD", "ETH/USD"]},
                {"channel": "trade", "snapshot": True, "symbol": ["BTC/USD"]},
                {"channel": "ohlc", "interval": 5, "symbol": ["ETH/USD"]},
                {"channel": "ohlc", "interval": 60, "symbol": ["ETH/USD"]}]))
        assert rec.kinds() == ["disconnected", "reconnecting", "connected", "resubscribed"]
        assert set(rec.events[-1].symbols) == {"BTC/USD", "ETH/USD"}
        # the first retry after a random drop is immediate
        assert rec.events[1] == WSEvent("reconnecting", "attempt 1 in 0.0 s")
        stats = ws.stats()
        assert stats["reconnects"] == 1 and stats["connected"]
        assert stats["subscriptions"] == {"book": ["BTC/USD", "ETH/USD"], "trade": ["BTC/USD"],
                                          "ohlc": ["ETH/USD"]}
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_a_resubscribe_rejection_after_reconnect_is_reported_and_dropped() -> None:
    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        await ws.subscribe("trade", ["BTC/USD", "LUNA/USD"])
        fake.reject = {"LUNA/USD": "Currency pair not supported LUNA/USD"}
        fake.drop()
        await until(lambda: "resubscribed" in rec.kinds())
        assert WSEvent("rejected", "trade: Currency pair not supported LUNA/USD",
                       ("LUNA/USD",)) in rec.events
        assert ws.stats()["subscriptions"] == {"trade": ["BTC/USD"]}
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_after_a_maintenance_status_the_reconnect_waits_at_least_five_seconds() -> None:
    async def go(fake: FakeKraken) -> None:
        fake.system = "maintenance"
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        await until(lambda: ws.stats()["system"] == "maintenance")
        fake.system = "online"
        fake.drop()
        await until(lambda: ws.stats()["reconnects"] == 1 and ws.stats()["system"] == "online")
        assert rec.sleeps == [5.0]
        assert [e.detail for e in rec.events if e.kind == "status"] == ["maintenance", "online"]
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_first_connect_retries_with_backoff_then_raises_network_error_naming_the_url(
        caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        sock = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = sock.sockets[0].getsockname()[1]
        sock.close()
        await sock.wait_closed()  # the port is now closed: every connect is refused
        rec = Recorder()
        ws = KrakenWS(f"ws://127.0.0.1:{port}/v2?token=secret", on_frame=rec.on_frame,
                      on_event=rec.on_event, sleep=rec.sleep, start_attempts=4,
                      backoff=ReconnectPolicy(rng=lambda: 1.0))
        with pytest.raises(NetworkError) as info:
            await ws.start()
        assert f"ws://127.0.0.1:{port}/v2: could not connect after 4 attempts" in str(info.value)
        assert rec.sleeps == [0.5, 1.2, 2.4]  # fast first retry, then exponential + jitter
        assert ws.stats()["attempts"] == 4 and not ws.connected

    with caplog.at_level(logging.DEBUG, logger="krakked.kraken.ws"):
        asyncio.run(go())
    assert "secret" not in caplog.text and "token" not in caplog.text


def test_a_reconnect_storm_never_makes_more_than_150_attempts_per_ten_minutes() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    attempts: list[float] = []

    fake = FakeKraken()

    async def serve_it() -> None:
        async def route(conn: ServerConnection) -> None:
            attempts.append(clock.now)
            fake.live.add(conn)
            await conn.send(json.dumps(STATUS))
            conn.transport.abort()

        async with serve(route, "127.0.0.1", 0) as server:
            fake.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v2"
            rec = Recorder()

            async def fake_sleep(seconds: float) -> None:
                clock.now += seconds
                await asyncio.sleep(0)

            policy = ReconnectPolicy(clock=clock, base=0.05, cap=0.05, first_delay=0.0)
            ws = KrakenWS(fake.url, on_frame=rec.on_frame, on_event=rec.on_event, clock=clock,
                          sleep=fake_sleep, backoff=policy, stable_after=1e9)
            await ws.start()
            await until(lambda: len(attempts) >= 200, timeout=8)
            await ws.stop()

    asyncio.run(serve_it())
    for i, start in enumerate(attempts):
        assert len([t for t in attempts[i:] if t < start + 600]) <= 150
    assert attempts[150] >= attempts[0] + 600  # the 151st waited for the window


def test_malformed_frames_are_skipped_counted_and_reported() -> None:
    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        await fake.push("{not json")
        await fake.push("[1, 2]")
        await fake.push({"channel": "ticker", "type": "update", "data": []})
        await until(lambda: len(rec.frames) == 1)
        assert ws.stats()["malformed"] == 2 and ws.connected
        assert [e.kind for e in rec.events].count("malformed") == 2
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_a_1000_level_book_snapshot_and_frames_past_websockets_1_mib_default_arrive() -> None:
    def side(start: int, step: int) -> str:
        return ", ".join(f'{{"price": {start + step * i}.{i % 10}00000000, '
                         f'"qty": 1234.56789012000000}}' for i in range(1000))
    book = ('{"channel": "book", "type": "snapshot", "data": [{"symbol": "BTC/USD", '
            f'"bids": [{side(49999, -1)}], "asks": [{side(50001, 1)}], "checksum": 1}}]}}')
    big = json.dumps({"channel": "instrument", "type": "snapshot", "data": {
        "pairs": [{"symbol": f"P{i}/USD", "status": "online"} for i in range(60000)]}})
    assert len(big) > 2**20  # websockets' default max_size would close the connection

    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec)
        await ws.start()
        await fake.push(book)
        await fake.push(big)
        await until(lambda: len(rec.frames) == 2)
        bids = rec.frames[0]["data"][0]["bids"]
        assert len(bids) == 1000 and str(bids[999]["qty"]) == "1234.56789012000000"
        assert len(rec.frames[1]["data"]["pairs"]) == 60000 and ws.connected
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_book_resync_unsubscribes_waits_and_subscribes_again_at_most_once_per_interval() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()

    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec, clock=clock, resync_wait=1.0, resync_interval=30.0,
                    request_interval=0.0)
        await ws.start()
        await ws.subscribe("book", ["BTC/USD", "ETH/USD"], depth=100)
        fake.requests.clear()
        await ws.resubscribe("book", "BTC/USD")
        assert [(r["method"], r["params"]) for r in fake.requests] == [
            ("unsubscribe", {"channel": "book", "depth": 100, "symbol": ["BTC/USD"]}),
            ("subscribe", {"channel": "book", "depth": 100, "symbol": ["BTC/USD"]})]
        assert rec.sleeps == [1.0]
        clock.now += 29.0
        await ws.resubscribe("book", "BTC/USD")  # too soon: skipped
        await ws.resubscribe("book", "ETH/USD")  # another book: allowed
        clock.now += 2.0
        await ws.resubscribe("book", "BTC/USD")  # 31 s later: allowed
        assert len(fake.requests) == 6
        stats = ws.stats()
        assert stats["resyncs"] == 3 and stats["resyncs_skipped"] == 1
        assert stats["subscriptions"] == {"book": ["BTC/USD", "ETH/USD"]}
        await ws.stop()

    asyncio.run(run_with_fake(go))


def test_stop_is_clean_idempotent_and_leaves_no_task_behind() -> None:
    async def go(fake: FakeKraken) -> None:
        rec = Recorder()
        ws = client(fake, rec, ping_interval=0.05, dead_after=0.2)
        await ws.stop()  # never started: nothing to do
        before = asyncio.all_tasks()
        await ws.start()
        await ws.subscribe("ticker", ["BTC/USD"])
        assert asyncio.all_tasks() - before  # the client's reader, keepalive, supervisor
        await ws.stop()
        await ws.stop()
        await until(lambda: not fake.live)  # the server saw the close
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() - before == set()
        assert not ws.connected and rec.kinds()[-1] == "disconnected"
        assert rec.kinds().count("disconnected") == 1 and fake.connections == 1
        with pytest.raises(UsageError):
            await ws.subscribe("ticker", ["BTC/USD"])

    asyncio.run(run_with_fake(go))
