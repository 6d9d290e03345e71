"""The live stream end to end: ``Market.live`` against the simulator's WS v2 and REST, with the
socket killed mid-stream, trades left out of the feed, a dropped book update and a replayed
trade snapshot — the stored trades must equal the simulator's tape exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from krakked.errors import NoDataError, UsageError
from krakked.market.book import OrderBook
from krakked.sim import SimClock, Simulator
from krakked.sim.server import running
from krakked.store import open_store
from tests.integration.simkit import sim_market as _market

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FAST = {"ping_interval": 1.0, "dead_after": 5.0, "request_interval": 0.01,
        "resync_wait": 0.05, "resync_interval": 0.5, "ack_timeout": 3.0}


@pytest.fixture
def served(sim: Simulator) -> Iterator[dict[str, Any]]:
    sim.ws.poll_interval = 0.01
    with running(sim) as info:
        yield info


async def _until(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _tape(sim: Simulator, first_id: int, last_id: int) -> list[tuple[Any, ...]]:
    """The simulator's REST trades of XBTUSD with ids in [first_id, last_id]."""
    rows: list[tuple[Any, ...]] = []
    cursor = 0
    while True:
        page, cursor_s = sim.market.trades_since("XXBTZUSD", cursor)
        if not page:
            break
        for r in page:
            if first_id <= int(r[6]) <= last_id:
                rows.append((int(r[6]), Decimal(r[0]), Decimal(r[1])))
        if int(page[-1][6]) >= last_id:
            break
        cursor = int(cursor_s)
    return rows


def test_stream_survives_a_killed_socket_and_stores_exactly_the_tape(
        sim: Simulator, clock: SimClock, served: dict[str, Any], db_url: str,
        tmp_path: Path) -> None:
    clock.advance(0)
    market = _market(sim, tmp_path, db_url)
    live = market.live(["BTC/USD"], channels=("ticker", "trade", "ohlc", "book"), tf="1m",
                       persist=True, ws_url=served["ws_url"], ws_options=FAST, wall=clock.now)
    start_us = round(clock.now() * 1_000_000)

    async def run() -> dict[str, Any]:
        await live.start()
        await _until(lambda: "XBTUSD" in live.cache.books)
        for step in range(120):
            clock.advance(180)  # three minutes of tape per step
            if step == 20:
                sim.ws.inject("skip_trade_id", 2)
            if step == 40:
                sim.ws.inject("book_drop")
            if step == 60:
                sim.ws.inject("drop")  # the socket dies mid-stream
            if step == 62:
                await _until(lambda: live.ws.connected, 15)
            if step == 80:
                sim.ws.inject("dup_trade_snapshot")
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.3)
        await _until(lambda: not live.cache.needs_resync, 10)
        status = live.get_data_status()
        price = live.get_latest_price("XBTUSD")
        book = live.get_book("BTC/USD", 10)
        candle = live.get_live_ohlc("XXBTZUSD", "1m")
        await live.stop()
        return {"status": status, "price": price, "book": book, "candle": candle}

    try:
        out = asyncio.run(run())
    finally:
        market.close()
    status = out["status"]
    assert status["ws_connected"] and status["reconnects"] >= 1
    assert status["checksum_failures"].get("XBTUSD", 0) >= 1
    assert status["book_resubscribes"] >= 1 and status["rejected"] == {}
    assert status["rest_reachable"] is True and status["pairs_with_fresh_ticker"] == 1
    assert {"trades_written", "flush_count", "error_count", "overflow_count",
            "trade_buffer_size"} <= set(status["writer"])
    assert not status["per_pair"]["XBTUSD"]["book"]["stale"]
    assert sim.ws.fired["skip_trade_id"] == 2 and sim.ws.fired["drop"] == 1
    # the book served after the resync is Kraken's: its checksum is the simulator's
    ref = OrderBook("BTC/USD", 10, price_decimals=1, qty_decimals=8)
    ref.apply([{"price": p, "qty": q} for p, q in out["book"].bids],
              [{"price": p, "qty": q} for p, q in out["book"].asks], snapshot=True)
    assert out["book"].checksum == ref.checksum() and not ref.crossed

    with open_store(db_url, read_only=True) as store:
        stored = store.read_trades("XBTUSD").to_pylist()
        ids = [r["id"] for r in stored]
        assert len(ids) == len(set(ids)) > 150  # no duplicate
        assert ids == list(range(ids[0], ids[-1] + 1))  # no hole
        tape = _tape(sim, ids[0], ids[-1])
        assert [(r["id"], r["price"], r["volume"]) for r in stored] == tape
        first = datetime.fromtimestamp(start_us / 1e6, UTC) - timedelta(days=1)
        assert stored[0]["timestamp"] >= first  # the trade snapshot's 50 before the start
        assert out["price"] == stored[-1]["price"]  # the last trade price
        candles = store.read_candles("XBTUSD", 1).to_pylist()
    # every stored closed 1m candle is the simulator's own OHLC candle of that minute
    ohlc = {int(r[0]): r for r in sim.market.ohlc("XXBTZUSD", 1, None)[0]}
    assert len(candles) > 20
    for c in candles:
        ref_row = ohlc.get(int(c["timestamp"].timestamp()))
        if ref_row is None:
            continue  # older than the 720 bars OHLC serves
        assert (c["open"], c["high"], c["low"], c["close"], c["volume"]) == tuple(
            Decimal(x) for x in (ref_row[1], ref_row[2], ref_row[3], ref_row[4], ref_row[6]))
    assert out["candle"].timestamp > candles[-1]["timestamp"] - timedelta(minutes=1)


def test_live_reads_before_data_and_bad_arguments(sim: Simulator, served: dict[str, Any],
                                                  tmp_path: Path) -> None:
    market = _market(sim, tmp_path, f"duckdb:///{tmp_path / 'm.duckdb'}")
    try:
        with pytest.raises(UsageError, match="channel"):
            market.live(["XBTUSD"], channels=("ticker", "candles"), ws_url=served["ws_url"])
        with pytest.raises(UsageError, match="720-minute"):
            market.live(["XBTUSD"], channels=("ohlc",), tf="12h", ws_url=served["ws_url"])
        with pytest.raises(UsageError, match="depth"):
            market.live(["XBTUSD"], channels=("book",), book_depth=7, ws_url=served["ws_url"])
        live = market.live(["XBTUSD", "ETH/USD"], channels=("ticker",), ws_url=served["ws_url"],
                           ws_options=FAST)

        async def run() -> None:
            with pytest.raises(NoDataError):
                live.get_latest_price("ETHUSD")
            async with live:
                await _until(lambda: live.cache.fresh_tickers() == 2)
                assert live.get_best_bid_ask("ETH/USD")[0] < live.get_best_bid_ask("ETHUSD")[1]
                with pytest.raises(UsageError, match="not streamed"):
                    live.get_latest_price("SOLUSD")
                with pytest.raises(NoDataError):
                    live.get_book("XBTUSD")  # no book subscribed
                status = live.get_data_status()
                assert status["pairs_with_fresh_ticker"] == 2 and status["writer"] is None

        asyncio.run(run())
    finally:
        market.close()


def test_original_integrate_db_writer_attaches_to_live_market(
        sim: Simulator, clock: SimClock, served: dict[str, Any], tmp_path: Path) -> None:
    from krakked.history import DatabaseWriter, integrate_db_writer

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    market = _market(sim, tmp_path, f"duckdb:///{tmp_path / 'm.duckdb'}")
    live = market.live(["XBTUSD"], channels=("trade",), ws_url=served["ws_url"],
                       ws_options=FAST)

    async def run() -> None:
        writer = DatabaseWriter(url, trade_flush_interval=0.2)
        await writer.start()
        integration = integrate_db_writer(live, writer)  # the original wiring
        await live.start()
        for _ in range(30):
            clock.advance(120)
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.3)
        await live.stop()
        await integration.flush_current_candles()
        await writer.stop()
        assert writer.get_stats()["trades_written"] > 0

    try:
        asyncio.run(run())
    finally:
        market.close()
    with open_store(url, read_only=True) as store:
        stored = store.read_trades("XBTUSD").to_pylist()
    ids = [r["id"] for r in stored]
    assert len(ids) > 20 and ids == list(range(ids[0], ids[-1] + 1))
    assert [(r["id"], r["price"], r["volume"]) for r in stored] == _tape(sim, ids[0], ids[-1])


def test_quiet_pair_stays_fresh_on_heartbeats_and_goes_stale_when_the_feed_dies(
        sim: Simulator, served: dict[str, Any], tmp_path: Path) -> None:
    from krakked.errors import DataStaleError

    sim.ws.heartbeat_interval = 0.1
    market = _market(sim, tmp_path, f"duckdb:///{tmp_path / 'm.duckdb'}")
    live = market.live(["XBTUSD"], channels=("ticker",), ws_url=served["ws_url"],
                       ws_options={**FAST, "dead_after": 30.0, "ping_interval": 20.0})

    async def run() -> None:
        async with live:
            live.cache.stale_tolerance = 0.6
            await _until(lambda: live.cache.fresh_tickers() == 1)
            await asyncio.sleep(1.5)  # the clock stands still: no trade, no ticker update
            assert live.get_latest_price("XBTUSD") > 0  # heartbeats prove it is current
            sim.ws.heartbeat_interval = 60.0  # the feed goes silent, the socket stays open
            await asyncio.sleep(1.0)
            with pytest.raises(DataStaleError, match="XBTUSD"):
                live.get_best_bid_ask("XBTUSD")
            assert live.get_data_status()["per_pair"]["XBTUSD"]["ticker"]["stale"]

    try:
        asyncio.run(run())
    finally:
        market.close()
