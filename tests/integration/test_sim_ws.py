"""The simulator's WS v2 endpoint: frames per channel, acks, keepalive, faults, REST agreement,
and python-kraken-sdk's SpotWSClient against it (served on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from krakked.market.book import OrderBook
from krakked.sim import SimClock, Simulator
from krakked.sim.server import running

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
_decode = msgspec.json.Decoder(float_hook=Decimal).decode


@pytest.fixture
def ws_url(sim: Simulator) -> Iterator[str]:
    with running(sim) as info:
        yield info["ws_url"]


class Client:
    """A raw WS client that keeps every frame (text and decoded) it received."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.texts: list[str] = []

    async def send(self, **request: Any) -> None:
        await self.ws.send(json.dumps(request))

    async def subscribe(self, channel: str, symbols: list[str], **params: Any) -> None:
        await self.send(method="subscribe", params={"channel": channel, "symbol": symbols,
                                                    **params})

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(text, str)
        self.texts.append(text)
        frame = _decode(text)
        self.frames.append(frame)
        return frame

    async def expect(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 3.0
                     ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            frame = await self.next(max(0.01, end - loop.time()))
            if pred(frame):
                return frame

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Frames other than heartbeats arriving within ``seconds``."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                frame = await self.next(left)
            except TimeoutError:
                break
            if frame.get("channel") != "heartbeat":
                got.append(frame)
        return got


def ack(channel: str, symbol: str, method: str = "subscribe") -> Callable[[dict], bool]:
    return lambda f: (f.get("method") == method and f.get("success") is True
                      and f["result"]["channel"] == channel and f["result"]["symbol"] == symbol)


def data(channel: str, kind: str | None = None) -> Callable[[dict], bool]:
    return lambda f: f.get("channel") == channel and (kind is None or f.get("type") == kind)


def run(coro_fn: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 60))


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Client]:
    """A connection whose first frame was the online ``status``."""
    async with connect(url) as ws:
        client = Client(ws)
        status = await client.next()
        assert status["channel"] == "status" and status["data"][0]["system"] == "online"
        yield client


def rest(sim: Simulator, method: str, **params: Any) -> dict[str, Any]:
    with httpx.Client(transport=sim.transport(), base_url="http://sim") as http:
        body = http.get(f"/0/public/{method}", params=params).json()
    assert body["error"] == []
    return body["result"]


def rfc_us(text: str) -> int:
    """An RFC3339 stamp as Unix microseconds (exact)."""
    stamp = datetime.fromisoformat(text)
    return (stamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# -- acks, keepalive ---------------------------------------------------------------------------


def test_connect_sends_status_then_one_ack_per_symbol_and_nacks_v1_and_unknown_names(
        ws_url: str) -> None:
    async def go() -> list[dict]:
        async with opened(ws_url) as c:
            await c.send(method="subscribe", req_id=7, params={
                "channel": "ticker", "symbol": ["BTC/USD", "XBT/USD", "NOPE/USD", "ETH/USD"]})
            return [await c.expect(lambda f: "method" in f) for _ in range(4)]

    acks = run(go)
    assert [(a["success"], a.get("symbol") or a["result"]["symbol"]) for a in acks] == [
        (True, "BTC/USD"), (False, "XBT/USD"), (False, "NOPE/USD"), (True, "ETH/USD")]
    assert acks[1]["error"] == "Currency pair not supported XBT/USD"
    assert acks[2]["error"] == "Currency pair not supported NOPE/USD"
    assert all(a["req_id"] == 7 and a["time_in"].endswith("Z") for a in acks)
    assert acks[0]["result"] == {"channel": "ticker", "event_trigger": "trades",
                                 "snapshot": True, "symbol": "BTC/USD"}


def test_second_subscribe_is_already_subscribed_and_unsubscribe_stops_the_feed(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    async def go() -> tuple[dict, dict, list[dict]]:
        async with opened(ws_url) as c:
            await c.subscribe("trade", ["BTC/USD"])
            await c.expect(ack("trade", "BTC/USD"))
            await c.subscribe("trade", ["BTC/USD"])
            again = await c.expect(lambda f: f.get("method") == "subscribe")
            await c.send(method="unsubscribe", params={"channel": "trade",
                                                       "symbol": ["BTC/USD", "ETH/USD"]})
            await c.expect(ack("trade", "BTC/USD", "unsubscribe"))
            missing = await c.expect(lambda f: f.get("method") == "unsubscribe")
            clock.advance(3600)
            return again, missing, await c.quiet(0.4)

    again, missing, after = run(go)
    assert (again["success"], again["error"], again["symbol"]) == (
        False, "Already subscribed", "BTC/USD")
    assert (missing["success"], missing["symbol"]) == (False, "ETH/USD")
    assert after == []


def test_heartbeat_only_after_a_subscription_and_ping_is_answered(
        sim: Simulator, ws_url: str) -> None:
    sim.ws.heartbeat_interval = 0.1

    async def go() -> tuple[list[dict], dict, dict]:
        async with opened(ws_url) as c:
            before = await c.quiet(0.4)
            await c.send(method="ping", req_id=101)
            pong = await c.expect(lambda f: f.get("method") == "pong")
            await c.subscribe("trade", ["BTC/USD"])
            await c.expect(ack("trade", "BTC/USD"))
            beat = await c.expect(data("heartbeat"), timeout=1.0)
            return before, pong, beat

    before, pong, beat = run(go)
    assert before == [] and not any(f.get("channel") == "heartbeat" for f in before)
    assert pong["req_id"] == 101 and pong["time_in"] == "2026-03-02T12:00:00.000000Z"
    assert "time_out" in pong
    assert beat == {"channel": "heartbeat"}


def test_connection_without_client_messages_is_closed_after_the_idle_timeout(
        sim: Simulator, ws_url: str) -> None:
    sim.ws.idle_timeout = 0.3

    async def go() -> bool:
        async with opened(ws_url) as c:
            try:
                await c.quiet(2.0)
            except ConnectionClosed:
                return True
            return False

    assert run(go)


def test_every_kraken_interval_and_depth_is_accepted_and_others_are_not(
        sim: Simulator, ws_url: str) -> None:
    symbols = ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "LTC/USD")
    assert set(symbols) <= {p.v2name for p in sim.market.pairs()}

    async def go() -> tuple[list[dict], list[dict]]:
        async with opened(ws_url) as c:
            good, bad = [], []
            for interval in (1, 5, 15, 30, 60, 240, 1440, 10080, 21600):
                await c.subscribe("ohlc", ["ETH/USD"], interval=interval, snapshot=False)
                good.append(await c.expect(lambda f: "method" in f))
            for depth, symbol in zip((10, 25, 100, 500, 1000), symbols, strict=True):
                await c.subscribe("book", [symbol], depth=depth, snapshot=False)
                good.append(await c.expect(lambda f: "method" in f))
            for channel, params in (("ohlc", {"interval": 2}), ("book", {"depth": 11}),
                                    ("nope", {})):
                await c.subscribe(channel, ["ETH/USD"], **params)
                bad.append(await c.expect(lambda f: "method" in f))
            return good, bad

    good, bad = run(go)
    assert all(f["success"] for f in good) and len(good) == 14
    assert [f["result"].get("interval") or f["result"]["depth"] for f in good] == [
        1, 5, 15, 30, 60, 240, 1440, 10080, 21600, 10, 25, 100, 500, 1000]
    assert [(f["success"], f["symbol"]) for f in bad] == [(False, "ETH/USD")] * 3
    assert (sim.ws.heartbeat_interval, sim.ws.idle_timeout) == (1.0, 60.0)  # Kraken's


def test_paths_other_than_v2_are_refused(sim: Simulator, ws_url: str) -> None:
    async def go() -> None:
        async with connect(ws_url.removesuffix("/v2") + "/v1"):
            pass

    with pytest.raises(InvalidStatus):
        run(go)


# -- channels agree with REST ------------------------------------------------------------------


def test_trade_feed_has_rest_trades_ids_prices_volumes_and_times(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    async def go() -> tuple[dict, list[dict]]:
        async with opened(ws_url) as c:
            await c.subscribe("trade", ["BTC/USD"], snapshot=True)
            snap = await c.expect(data("trade", "snapshot"))
            clock.advance(1800)
            trades: list[dict] = []
            with pytest.raises(TimeoutError):
                while True:
                    trades += (await c.expect(data("trade", "update"), timeout=0.5))["data"]
            return snap, trades

    rest_snap = rest(sim, "Trades", pair="XBTUSD", count=50)["XXBTZUSD"]
    snap, updates = run(go)
    since = rest_snap[-1][7]
    rest_new = rest(sim, "Trades", pair="XBTUSD", since=since)["XXBTZUSD"]

    def key(t: dict) -> tuple:
        return (t["trade_id"], t["price"], t["qty"], "b" if t["side"] == "buy" else "s",
                "m" if t["ord_type"] == "market" else "l", rfc_us(t["timestamp"]))

    def rest_key(r: list) -> tuple:
        return (r[6], Decimal(r[0]), Decimal(r[1]), r[3], r[4], int(r[7]) // 1000)

    assert len(snap["data"]) == 50
    assert [key(t) for t in snap["data"]] == [rest_key(r) for r in rest_snap]
    assert len(rest_new) >= 5
    assert [key(t) for t in updates] == [rest_key(r) for r in rest_new]


def test_trade_snapshot_is_off_unless_asked(clock: SimClock, ws_url: str) -> None:
    async def go() -> list[dict]:
        async with opened(ws_url) as c:
            await c.subscribe("trade", ["BTC/USD"])
            await c.expect(ack("trade", "BTC/USD"))
            return await c.quiet(0.3)

    assert run(go) == []


def test_ohlc_running_candle_equals_the_rest_bar_keyed_by_interval_begin(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    async def go() -> tuple[dict, dict, dict]:
        async with opened(ws_url) as c:
            await c.subscribe("ohlc", ["BTC/USD"], interval=5)
            sub = await c.expect(ack("ohlc", "BTC/USD"))
            snap = await c.expect(data("ohlc", "snapshot"))
            clock.advance(900)
            updates = []
            with pytest.raises(TimeoutError):
                while True:
                    updates.append(await c.expect(data("ohlc", "update"), timeout=0.5))
            return sub, snap, updates[-1]

    sub, snap, last = run(go)
    assert sub["result"]["interval"] == 5 and sub["result"]["warnings"] == [
        "timestamp is deprecated, use interval_begin"]
    assert snap["data"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z",
                                         snap["data"][-1]["interval_begin"])
    assert re.fullmatch(r".*\.\d{9}Z", last["timestamp"])
    candle = last["data"][-1]
    begin = rfc_us(candle["interval_begin"]) // 1_000_000
    assert rfc_us(candle["timestamp"]) // 1_000_000 == begin + 300  # deprecated: the end
    bars = {row[0]: row for row in rest(sim, "OHLC", pair="XBTUSD", interval=5)["XXBTZUSD"]}
    row = bars[begin]
    assert [candle[k] for k in ("open", "high", "low", "close", "vwap", "volume")] == [
        Decimal(v) for v in row[1:7]]
    assert candle["trades"] == row[7] and candle["interval"] == 5


def test_book_snapshot_and_updates_verify_with_orderbook_and_end_as_rest_depth(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    pair = sim.market.pair("XBTUSD")

    async def go() -> tuple[list[dict], list[str]]:
        async with opened(ws_url) as c:
            await c.subscribe("book", ["BTC/USD"], depth=25)
            sub = await c.expect(ack("book", "BTC/USD"))
            assert sub["result"]["depth"] == 25
            frames = [await c.expect(data("book", "snapshot"))]
            for _ in range(4):
                clock.advance(300)
                frames.append(await c.expect(data("book", "update"), timeout=5))
            frames += [f for f in await c.quiet(0.3) if f.get("channel") == "book"]
            return frames, c.texts

    frames, texts = run(go)
    book = OrderBook("BTC/USD", 25, price_decimals=pair.pair_decimals,
                     qty_decimals=pair.lot_decimals)
    for frame in frames:
        body = frame["data"][0]
        assert book.apply(body["bids"], body["asks"], snapshot=frame["type"] == "snapshot",
                          checksum=body["checksum"])
    depth = rest(sim, "Depth", pair="XBTUSD", count=25)["XXBTZUSD"]
    assert book.asks() == [(Decimal(p), Decimal(q)) for p, q, _ in depth["asks"]]
    assert book.bids() == [(Decimal(p), Decimal(q)) for p, q, _ in depth["bids"]]
    texts = [t for t in texts if t.startswith('{"channel":"book"')]
    assert all(len(p) == pair.pair_decimals for t in texts
               for p in re.findall(r'"price":\d+\.(\d+)', t))
    assert all(len(q) == pair.lot_decimals for t in texts
               for q in re.findall(r'"qty":\d+\.(\d+)', t))


def test_small_priced_pair_is_written_in_fixed_notation_and_its_checksum_verifies(
        sim: Simulator, ws_url: str) -> None:
    pair = max(sim.market.pairs(), key=lambda p: p.pair_decimals)
    assert pair.pair_decimals >= 7

    async def go() -> tuple[str, dict]:
        async with opened(ws_url) as c:
            await c.subscribe("book", [pair.v2name])
            frame = await c.expect(data("book", "snapshot"))
            return c.texts[-1], frame

    text, frame = run(go)
    assert not re.search(r"\d[eE][-+]?\d", text)
    book = OrderBook(pair.v2name, 10)  # wire precision alone reproduces the checksum
    body = frame["data"][0]
    assert book.apply(body["bids"], body["asks"], snapshot=True, checksum=body["checksum"])


def test_ticker_updates_on_trades_with_rest_last_and_book_top(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    async def go() -> dict:
        async with opened(ws_url) as c:
            await c.subscribe("ticker", ["BTC/USD"])
            await c.expect(data("ticker", "snapshot"))
            clock.advance(600)
            return await c.expect(data("ticker", "update"), timeout=5)

    tick = run(go)["data"][0]
    last = rest(sim, "Trades", pair="XBTUSD", count=1)["XXBTZUSD"][-1]
    ticker = rest(sim, "Ticker", pair="XBTUSD")["XXBTZUSD"]
    assert tick["last"] == Decimal(last[0]) == Decimal(ticker["c"][0])
    assert (tick["bid"], tick["ask"]) == (Decimal(ticker["b"][0]), Decimal(ticker["a"][0]))
    assert tick["volume"] == Decimal(ticker["v"][1])
    assert rfc_us(tick["timestamp"]) == int(last[7]) // 1000


# -- faults and the push hook ------------------------------------------------------------------


def test_drop_closes_every_connection_abruptly(sim: Simulator, ws_url: str) -> None:
    async def go() -> list[bool]:
        async with opened(ws_url) as a, opened(ws_url) as b:
            sim.ws.inject("drop")
            closed = []
            for c in (a, b):
                try:
                    await c.quiet(2.0)
                    closed.append(False)
                except ConnectionClosedError as exc:
                    closed.append(exc.rcvd is not None and exc.rcvd.code == 1011)
            return closed

    assert run(go) == [True, True]
    assert sim.ws.fired["drop"] == 1


def test_book_drop_makes_the_next_update_fail_the_clients_checksum(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    pair = sim.market.pair("XBTUSD")

    async def go() -> list[dict]:
        async with opened(ws_url) as c:
            await c.subscribe("book", ["BTC/USD"])
            frames = [await c.expect(data("book", "snapshot"))]
            clock.advance(300)
            frames.append(await c.expect(data("book", "update"), timeout=5))
            sim.ws.inject("book_drop")
            for _ in range(2):
                clock.advance(300)
                await asyncio.sleep(0.2)
            frames.append(await c.expect(data("book", "update"), timeout=5))
            return frames

    frames = run(go)
    book = OrderBook("BTC/USD", 10, price_decimals=pair.pair_decimals,
                     qty_decimals=pair.lot_decimals)
    verdicts = [book.apply(f["data"][0]["bids"], f["data"][0]["asks"],
                           snapshot=f["type"] == "snapshot", checksum=f["data"][0]["checksum"])
                for f in frames]
    assert verdicts == [True, True, False]
    assert sim.ws.fired["book_drop"] == 1


def test_dup_trade_snapshot_sends_the_last_snapshot_again(sim: Simulator, ws_url: str) -> None:
    async def go() -> tuple[dict, dict]:
        async with opened(ws_url) as c:
            await c.subscribe("trade", ["BTC/USD"], snapshot=True)
            first = await c.expect(data("trade", "snapshot"))
            sim.ws.inject("dup_trade_snapshot")
            return first, await c.expect(data("trade", "snapshot"))

    first, second = run(go)
    assert first == second and len(first["data"]) == 50


def test_msg_rate_nacks_every_symbol_of_the_next_subscribe_only(
        sim: Simulator, ws_url: str) -> None:
    sim.ws.inject("msg_rate")

    async def go() -> tuple[list[dict], dict]:
        async with opened(ws_url) as c:
            await c.subscribe("trade", ["BTC/USD", "ETH/USD"])
            nacks = [await c.expect(lambda f: "method" in f) for _ in range(2)]
            await c.subscribe("trade", ["BTC/USD"])
            return nacks, await c.expect(lambda f: "method" in f)

    nacks, retry = run(go)
    assert [(n["success"], n["error"], n["symbol"]) for n in nacks] == [
        (False, "Exceeded msg rate", "BTC/USD"), (False, "Exceeded msg rate", "ETH/USD")]
    assert retry["success"] is True


def test_malformed_sends_a_non_json_frame_and_the_connection_goes_on(
        sim: Simulator, ws_url: str) -> None:
    async def go() -> tuple[str, dict]:
        async with opened(ws_url) as c:
            sim.ws.inject("malformed")
            bad = await asyncio.wait_for(c.ws.recv(), 3)
            await c.send(method="ping", req_id=1)
            return bad, await c.expect(lambda f: f.get("method") == "pong")

    bad, pong = run(go)
    with pytest.raises(ValueError):
        json.loads(bad)
    assert pong["req_id"] == 1


def test_skip_trade_id_leaves_one_trade_out_of_the_feed_but_not_out_of_rest(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    async def go() -> tuple[dict, list[dict]]:
        async with opened(ws_url) as c:
            await c.subscribe("trade", ["BTC/USD"], snapshot=True)
            snap = await c.expect(data("trade", "snapshot"))
            sim.ws.inject("skip_trade_id")
            clock.advance(1800)
            trades: list[dict] = []
            with pytest.raises(TimeoutError):
                while True:
                    trades += (await c.expect(data("trade", "update"), timeout=0.5))["data"]
            return snap, trades

    snap, trades = run(go)
    rest_ids = [r[6] for r in rest(sim, "Trades", pair="XBTUSD",
                                   since=str(rfc_us(snap["data"][-1]["timestamp"]) * 1000 + 999)
                                   )["XXBTZUSD"]]
    ws_ids = [t["trade_id"] for t in trades]
    assert len(sim.ws.skipped_trade_ids) == 1
    assert sorted([*ws_ids, *sim.ws.skipped_trade_ids]) == rest_ids
    assert sim.ws.skipped_trade_ids[0] not in ws_ids


def test_push_sends_a_frame_to_every_connected_client(sim: Simulator, ws_url: str) -> None:
    async def go() -> list[dict]:
        async with opened(ws_url) as a, opened(ws_url) as b:
            assert sim.ws.push({"channel": "trade", "type": "update", "data": []}) == 2
            sim.ws.push(b'{"channel":"ticker","type":"update","data":[]}')
            return [await c.next() for c in (a, b) for _ in range(2)]

    got = run(go)
    assert [f["channel"] for f in got] == ["trade", "ticker", "trade", "ticker"]


def test_unknown_fault_kind_is_refused(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="unknown WS fault 'dropp'"):
        sim.ws.inject("dropp")


# -- a third-party client ----------------------------------------------------------------------


def test_python_kraken_sdk_spotwsclient_gets_acks_ticker_trade_ohlc_and_a_verified_book(
        sim: Simulator, clock: SimClock, ws_url: str) -> None:
    from kraken.spot import SpotWSClient

    pair = sim.market.pair("XBTUSD")
    received: list[dict] = []

    async def on_message(message: dict) -> None:
        received.append(message)

    async def go() -> None:
        client = SpotWSClient(callback=on_message, ws_url=ws_url.removesuffix("/v2"))
        await client.start()
        try:
            for params in ({"channel": "ticker"}, {"channel": "trade"},
                           {"channel": "ohlc", "interval": 1}, {"channel": "book", "depth": 10}):
                await client.subscribe(params={**params, "symbol": ["BTC/USD"]})
            for _ in range(100):
                await asyncio.sleep(0.05)
                if sum(1 for m in received if m.get("method") == "subscribe") == 4:
                    break
            for _ in range(3):
                clock.advance(300)
                await asyncio.sleep(0.3)
        finally:
            await client.close()

    run(go)
    acks = [m for m in received if m.get("method") == "subscribe"]
    assert sorted(a["result"]["channel"] for a in acks if a["success"]) == [
        "book", "ohlc", "ticker", "trade"]
    channels = {m.get("channel") for m in received}
    assert {"status", "ticker", "trade", "ohlc", "book"} <= channels
    book = OrderBook("BTC/USD", 10, price_decimals=pair.pair_decimals,
                     qty_decimals=pair.lot_decimals)
    frames = [m for m in received if m.get("channel") == "book"]
    assert len(frames) >= 2
    for m in frames:  # the SDK decodes floats; at the pair's decimals they still verify
        body = m["data"][0]
        assert book.apply(body["bids"], body["asks"], snapshot=m["type"] == "snapshot",
                          checksum=body["checksum"])
