"""The live stream's writer (the original ``DatabaseWriter`` / ``WebSocketDBIntegration`` API) on
DuckDB and PostgreSQL: flushes by size, by interval and at stop, bounded buffers, a failing
store counted and retried, trades deduplicated by ``trade_id`` (a replayed snapshot, a
restart), only closed candles, id holes filled from the simulator's REST ``Trades`` so the
stored trades equal its tape, and a reader process querying the DuckDB store meanwhile."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from krakked.errors import UsageError
from krakked.history import (
    CandleRecord,
    DatabaseWriter,
    TradeRecord,
    WebSocketDBIntegration,
    integrate_db_writer,
)
from krakked.kraken.spot import SpotClient
from krakked.market.candles import epoch_us, from_epoch_us
from krakked.sim import Simulator
from krakked.store import open_store
from krakked.sync.stream_holes import HoleFiller

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
S, RAW = "XBTUSD", "XXBTZUSD"
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
STAT_KEYS = {"trades_written", "candles_written", "flush_count", "error_count",
             "overflow_count", "trade_buffer_size", "candle_buffer_size"}


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def trade(i: int, symbol: str = S) -> TradeRecord:
    """Synthetic trade ``i``: id i, one second apart."""
    return TradeRecord(symbol, T0 + timedelta(seconds=i), Decimal("100.5") + i,
                       Decimal("0.00000001") * (i + 1), "buy" if i % 2 else "sell",
                       trade_id=i, order_type="limit")


def ws_trade(i: int) -> dict[str, Any]:
    """The WS v2 trade object of synthetic trade ``i``."""
    t = trade(i)
    return {"symbol": "BTC/USD", "side": t.side, "price": t.price, "qty": t.volume,
            "ord_type": t.order_type, "trade_id": i,
            "timestamp": t.timestamp.isoformat().replace("+00:00", "Z")}


def stored_ids(url: str, symbol: str = S) -> list[int]:
    with open_store(url) as store:
        return store.read_trades(symbol)["id"].to_pylist()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# -- flushing ------------------------------------------------------------------------------------


def test_a_full_trade_buffer_is_flushed_at_once_and_the_rest_waits_for_its_interval(
        url: str) -> None:
    async def go() -> None:
        writer = DatabaseWriter(url, trade_buffer_size=10, trade_flush_interval=60)
        await writer.start()
        for i in range(1, 11):
            await writer.write_trade(trade(i))
        await until(lambda: writer.get_stats()["flush_count"] == 1)
        assert stored_ids(url) == list(range(1, 11))
        for i in range(11, 14):
            await writer.write_trade(trade(i))
        await asyncio.sleep(0.5)
        assert writer.get_stats()["trade_buffer_size"] == 3
        assert len(stored_ids(url)) == 10
        await writer.stop()

    run(go())
    assert stored_ids(url) == list(range(1, 14))


def test_trades_and_candles_are_flushed_every_interval(url: str) -> None:
    async def go() -> None:
        writer = DatabaseWriter(url, trade_buffer_size=1000, trade_flush_interval=0.2,
                                candle_flush_interval=0.1)
        await writer.start()
        for i in range(1, 4):
            await writer.write_trade(trade(i))
        await writer.write_candle(CandleRecord(S, T0, 1, Decimal(1), Decimal(2), Decimal("0.5"),
                                               Decimal("1.5"), Decimal(3), 4, Decimal("1.25")))
        await until(lambda: writer.get_stats()["trades_written"] == 3
                    and writer.get_stats()["candles_written"] == 1)
        assert stored_ids(url) == [1, 2, 3]
        with open_store(url) as store:
            candle = store.read_stored_candles(S, 1, T0, T0 + timedelta(minutes=1)).to_pylist()
        assert [(c["open"], c["close"], c["volume"], c["trade_count"], c["source"])
                for c in candle] == [(Decimal(1), Decimal("1.5"), Decimal(3), 4, "ws")]
        await writer.stop()

    run(go())


def test_stop_flushes_everything_buffered_and_stats_keep_the_original_keys(url: str) -> None:
    async def go() -> dict[str, int]:
        writer = DatabaseWriter(url, trade_buffer_size=1000, trade_flush_interval=60,
                                candle_flush_interval=60)
        await writer.start()
        for i in range(1, 6):
            await writer.write_trade(trade(i))
        await writer.write_candle(CandleRecord(S, T0, 5, *[Decimal(1)] * 5, 1))
        assert writer.get_stats()["trade_buffer_size"] == 5
        await writer.stop()
        return writer.get_stats()

    stats = run(go())
    assert set(stats) >= STAT_KEYS
    assert (stats["trades_written"], stats["candles_written"], stats["trade_buffer_size"],
            stats["candle_buffer_size"]) == (5, 1, 0, 0)
    assert stored_ids(url) == [1, 2, 3, 4, 5]


def test_past_the_maximum_the_oldest_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"

    async def go() -> dict[str, int]:
        writer = DatabaseWriter(url, trade_buffer_size=1000, trade_flush_interval=60)
        writer.MAX_TRADE_BUFFER_SIZE, writer.MAX_CANDLE_BUFFER_SIZE = 5, 2
        for i in range(1, 9):
            await writer.write_trade(trade(i))
        for m in range(3):
            await writer.write_candle(CandleRecord(S, T0 + timedelta(minutes=m), 1,
                                                   *[Decimal(1)] * 5, 1))
        stats = writer.get_stats()
        assert (stats["overflow_count"], stats["trade_buffer_size"],
                stats["candle_buffer_size"]) == (4, 5, 2)
        await writer.start()
        await writer.stop()
        return writer.get_stats()

    assert run(go())["trades_written"] == 5
    assert stored_ids(url) == [4, 5, 6, 7, 8]


def _rename_trades(url: str, old: str, new: str) -> None:
    if url.startswith("duckdb"):
        import duckdb

        con = duckdb.connect(url.removeprefix("duckdb:///"))
        con.execute(f"ALTER TABLE {old} RENAME TO {new}")
        con.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_a_failing_flush_keeps_its_rows_counts_the_error_and_is_retried(url: str) -> None:
    async def go() -> None:
        writer = DatabaseWriter(url, trade_buffer_size=1000, trade_flush_interval=0.1)
        await writer.start()
        await writer.write_trade(trade(1))
        await until(lambda: writer.get_stats()["trades_written"] == 1)
        await asyncio.to_thread(_rename_trades, url, "trades", "trades_away")
        for i in range(2, 5):
            await writer.write_trade(trade(i))
        await until(lambda: writer.get_stats()["error_count"] >= 1)
        assert writer.get_stats()["trade_buffer_size"] == 3
        await asyncio.to_thread(_rename_trades, url, "trades_away", "trades")
        await until(lambda: writer.get_stats()["trades_written"] == 4)
        assert writer.get_stats()["trade_buffer_size"] == 0
        await writer.stop()

    run(go())
    assert stored_ids(url) == [1, 2, 3, 4]


# -- the integration: dedupe, candles ---------------------------------------------------------


def test_a_replayed_snapshot_and_a_restart_store_each_trade_once(url: str) -> None:
    async def session(ids: list[int]) -> dict[str, int]:
        writer = DatabaseWriter(url)
        await writer.start()
        integration = WebSocketDBIntegration(writer)
        for i in ids:
            await integration.on_trade(S, ws_trade(i))
        await integration.flush_current_candles()
        await writer.stop()
        return writer.get_stats()

    first = run(session([*range(1, 11), *range(6, 13)]))  # a reconnect's snapshot overlaps
    assert first["duplicates_skipped"] == 5
    assert stored_ids(url) == list(range(1, 13))
    second = run(session(list(range(8, 15))))  # a restart: its snapshot overlaps the store
    assert second["duplicates_skipped"] == 5
    assert stored_ids(url) == list(range(1, 15))
    with open_store(url) as store:  # exact values, WS source
        rows = store.read_trades(S).to_pylist()
    assert [(r["price"], r["volume"], r["side"], r["source"]) for r in rows[:2]] == [
        (Decimal("101.5"), Decimal("0.00000002"), "buy", "ws"),
        (Decimal("102.5"), Decimal("0.00000003"), "sell", "ws")]


def ohlc(begin: datetime, close: str, volume: str, trades: int) -> dict[str, Any]:
    return {"symbol": "BTC/USD", "open": Decimal("100.0"), "high": Decimal("101.0"),
            "low": Decimal("99.0"), "close": Decimal(close), "trades": trades,
            "volume": Decimal(volume), "vwap": Decimal("100.2"), "interval": 1,
            "interval_begin": begin.strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
            "timestamp": (begin + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")}


def test_a_candle_is_written_once_closed_and_never_while_running(url: str) -> None:
    clock = {"now": T0 + timedelta(minutes=1, seconds=10)}
    t1 = T0 + timedelta(minutes=1)

    def candles() -> list[tuple[datetime, Decimal, Decimal, int]]:
        with open_store(url) as store:
            table = store.read_stored_candles(S, 1, T0, T0 + timedelta(hours=1))
        return [(c["timestamp"], c["close"], c["volume"], c["trade_count"])
                for c in table.to_pylist()]

    async def go() -> None:
        writer = DatabaseWriter(url, candle_flush_interval=60)
        await writer.start()
        integration = WebSocketDBIntegration(writer, now=lambda: clock["now"])
        await integration.on_ohlc(S, ohlc(T0, "100.1", "1.5", 3))
        await integration.on_ohlc(S, ohlc(T0, "100.3", "2.5", 4))  # the same candle, updated
        await integration.on_ohlc(S, ohlc(t1, "100.4", "0.1", 1))  # a later one begins
        await integration.on_ohlc(S, ohlc(T0, "999", "9", 9))  # late: T0 is closed
        await integration.flush_current_candles()  # t1 is still running at 00:01:10
        await writer.flush()
        assert candles() == [(T0, Decimal("100.3"), Decimal("2.5"), 4)]
        clock["now"] = t1 + timedelta(minutes=1)  # t1 has ended
        await integration.flush_current_candles()
        await writer.stop()

    run(go())
    assert candles() == [(T0, Decimal("100.3"), Decimal("2.5"), 4),
                         (t1, Decimal("100.4"), Decimal("0.1"), 1)]


# -- holes filled from REST --------------------------------------------------------------------


def sim_rows(sim: Simulator, start: datetime, count: int) -> list[list[Any]]:
    rows, _ = sim.market.trades_since(RAW, epoch_us(start) * 1000, count)
    assert len(rows) == count
    return rows


def us_of(row: list[Any]) -> int:
    """A sim row's time in µs, rounded half-even from its ns (as REST rows are stored)."""
    return int((Decimal(row[7]) / 1000).to_integral_value(rounding=ROUND_HALF_EVEN))


def ws_of(row: list[Any]) -> dict[str, Any]:
    """What Kraken's WS v2 sends for a sim tape row."""
    ts = from_epoch_us(us_of(row)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"symbol": "BTC/USD", "side": "buy" if row[3] == "b" else "sell",
            "price": Decimal(row[0]), "qty": Decimal(row[1]),
            "ord_type": "market" if row[4] == "m" else "limit", "trade_id": int(row[6]),
            "timestamp": ts}


def test_holes_in_the_feed_and_after_a_reconnect_are_filled_from_rest_to_equal_the_tape(
        url: str, sim: Simulator, client: SpotClient) -> None:
    rows = sim_rows(sim, NOW - timedelta(hours=6), 260)
    feed = [*rows[0:30], *rows[33:100],  # ids 30..32 skipped by the feed itself
            # a reconnect: 100..179 missed, the new snapshot holds the last 50, then one
            # duplicated snapshot, then live trades
            *rows[180:230], *rows[220:230], *rows[230:260]]
    filler = HoleFiller(client, lambda symbol: symbol)

    async def go() -> dict[str, int]:
        writer = DatabaseWriter(url, trade_buffer_size=40, trade_flush_interval=0.05)
        await writer.start()
        integration = WebSocketDBIntegration(writer, fill_holes=filler)
        for row in feed:
            await integration.on_trade(S, ws_of(row))
        await integration.flush_current_candles()
        await writer.stop()
        return writer.get_stats()

    stats = run(go())
    assert (stats["holes_filled"], stats["duplicates_skipped"]) == (3 + 80, 10)
    with open_store(url) as store:
        stored = store.read_trades(S).to_pylist()
        coverage = store.read_trade_coverage(S)
        first_minute = from_epoch_us(us_of(rows[0]) // 60_000_000 * 60_000_000 + 60_000_000)
        built = store.read_stored_candles(S, 1, first_minute, from_epoch_us(us_of(rows[-1])))
    expected = [(int(r[6]), from_epoch_us(us_of(r)), Decimal(r[0]), Decimal(r[1]),
                 "buy" if r[3] == "b" else "sell", "market" if r[4] == "m" else "limit")
                for r in rows]
    assert [(r["id"], r["timestamp"], r["price"], r["volume"], r["side"], r["order_type"])
            for r in stored] == expected
    assert {r["id"]: r["source"] for r in stored}[int(rows[31][6])] == "rest"
    # one unbroken id chain: the trades vouch for everything after the first one
    assert coverage == [(us_of(rows[0]) + 1, us_of(rows[-1]))]
    # ... so the 1m candles of the whole minutes they span are built from them
    by_minute: dict[int, list[list[Any]]] = {}
    for r in rows:
        by_minute.setdefault(us_of(r) // 60_000_000, []).append(r)
    candles = {epoch_us(c["timestamp"]) // 60_000_000: c for c in built.to_pylist()
               if c["trade_count"]}
    assert candles and set(candles) <= set(by_minute)
    for minute, candle in candles.items():
        group = by_minute[minute]
        assert (candle["open"], candle["close"], candle["volume"], candle["trade_count"]) == (
            Decimal(group[0][0]), Decimal(group[-1][0]), sum(Decimal(r[1]) for r in group),
            len(group))


def test_a_hole_rest_cannot_fill_is_left_open_and_the_stream_goes_on(
        tmp_path: Path, sim: Simulator, client: SpotClient) -> None:
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"
    rows = sim_rows(sim, NOW - timedelta(hours=6), 20)
    feed = [*rows[:10], *rows[15:20]]

    async def go() -> dict[str, int]:
        writer = DatabaseWriter(url)
        await writer.start()
        refused = HoleFiller(client, lambda symbol: "NOSUCHPAIR")  # Kraken refuses the pair
        integration = WebSocketDBIntegration(writer, fill_holes=refused)
        for row in feed:
            await integration.on_trade(S, ws_of(row))
        await integration.flush_current_candles()
        await writer.stop()
        return writer.get_stats()

    assert run(go())["holes_filled"] == 0
    assert stored_ids(url) == [int(r[6]) for r in feed]
    with open_store(url) as store:  # nothing vouches across the hole
        coverage = store.read_trade_coverage(S)
    assert coverage == [(us_of(rows[0]) + 1, us_of(rows[9])),
                        (us_of(rows[15]) + 1, us_of(rows[19]))]


# -- a reader while it writes, attaching, status ------------------------------------------------


READER = """
import json, sys, time
from krakked.store import open_store
url, seconds = sys.argv[1], float(sys.argv[2])
counts, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    with open_store(url, read_only=True) as store:
        counts.append(store.read_trades("XBTUSD").num_rows)
    time.sleep(0.02)
print(json.dumps(counts))
"""


def test_a_reader_process_queries_the_duckdb_store_while_the_writer_flushes(
        tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"

    async def go() -> tuple[list[int], int]:
        writer = DatabaseWriter(url, trade_buffer_size=10, trade_flush_interval=0.05)
        await writer.start()
        await writer.write_trade(trade(0))
        await writer.flush()
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER, url, "3", stdout=subprocess.PIPE)
        for i in range(1, 301):
            await writer.write_trade(trade(i))
            await asyncio.sleep(0.008)
        out, _ = await reader.communicate()
        assert reader.returncode == 0
        await writer.stop()
        return json.loads(out), writer.get_stats()["flush_count"]

    counts, flushes = run(go())
    assert flushes >= 10
    assert len(counts) >= 5 and counts == sorted(counts)
    assert len(set(counts)) >= 3  # it saw flushes land while the writer was running
    assert stored_ids(url) == list(range(0, 301))


class HandlerClient:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_handler(self, channel: str, callback: Any) -> None:
        self.handlers[channel] = callback


class CallbackClient:
    on_trade: Any = None
    on_ohlc: Any = None


def test_integrate_db_writer_attaches_to_handlers_or_callback_attributes(tmp_path: Path
                                                                          ) -> None:
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"

    async def go() -> None:
        writer = DatabaseWriter(url)
        await writer.start()
        by_handler = HandlerClient()
        integrate_db_writer(by_handler, writer)
        assert set(by_handler.handlers) == {"trade", "ohlc"}
        await by_handler.handlers["trade"]({"channel": "trade", "type": "update",
                                            "data": [ws_trade(1), ws_trade(2)]})
        by_callback = CallbackClient()
        integration = integrate_db_writer(by_callback, writer)
        assert by_callback.on_trade == integration.on_trade
        await by_callback.on_trade(S, ws_trade(3))
        with pytest.raises(UsageError, match="add_handler"):
            integrate_db_writer(object(), writer)
        await writer.stop()

    run(go())
    assert stored_ids(url) == [1, 2, 3]  # BTC/USD stored as XBTUSD


def test_update_sync_status_describes_the_stored_rows(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"

    async def go() -> None:
        writer = DatabaseWriter(url)
        await writer.start()
        for i in range(1, 4):
            await writer.write_trade(trade(i))
        await writer.flush()
        await writer.update_sync_status(S, "trades", NOW)
        with pytest.raises(UsageError, match="data_sync_status"):
            await writer.update_sync_status(S, "ticks", NOW)
        await writer.stop()

    run(go())
    with open_store(url) as store:
        row = next(r for r in store.read_sync_status(S) if r["data_type"] == "trades")
    assert (row["total_records"], row["newest_timestamp"]) == (3, trade(3).timestamp)


def test_the_original_records_keep_their_fields_and_tuples() -> None:
    t = TradeRecord(S, T0, Decimal("1.5"), Decimal("2"), "buy")
    assert t.to_tuple() == (S, T0, Decimal("1.5"), Decimal("2"), "buy")
    assert (t.trade_id, t.source) == (None, "ws")
    c = CandleRecord(S, T0, 1, Decimal(1), Decimal(2), Decimal(0), Decimal(1), Decimal(5), 3)
    assert c.to_tuple() == (S, T0, 1, Decimal(1), Decimal(2), Decimal(0), Decimal(1),
                            Decimal(5), 3, None)
    assert DatabaseWriter.MAX_TRADE_BUFFER_SIZE == 10000
    assert DatabaseWriter.MAX_CANDLE_BUFFER_SIZE == 1000

