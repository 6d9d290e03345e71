"""Trades in the market store, on every backend: each trade stored once without an index (the
writer keeps the key), CSV rows reconciled with API rows as multisets, the recorded trade
coverage, 1-minute candles built from trades in the engine — by sequence, only for whole
covered minutes, incrementally — and the holes in Kraken's trade-id sequence."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from krakked.market.candles import HistoricalTrade
from krakked.store import MarketStore, open_store
from krakked.store.arrow import trades_to_arrow
from krakked.store.base import SyncUpdate, TradeCoverage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
S = "XBTUSD"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def api(i: int, seconds: float, price: str, volume: str = "1",
        side: str = "buy") -> HistoricalTrade:
    return HistoricalTrade(i, S, at(seconds), Decimal(price), Decimal(volume), side)  # type: ignore[arg-type]


def csv(seconds: int, price: str, volume: str = "1") -> HistoricalTrade:
    return HistoricalTrade(None, S, at(seconds), Decimal(price), Decimal(volume), None)  # type: ignore[arg-type]


def cover(a: float, b: float) -> TradeCoverage:
    return TradeCoverage(S, at(a), at(b))


def minute_rows(store: MarketStore) -> list[tuple]:
    return [(c["timestamp"], c["open"], c["high"], c["low"], c["close"], c["volume"],
             c["trade_count"], c["vwap"], c["source"])
            for c in store.read_candles(S, 1).to_pylist()]


def reference(trades: list[HistoricalTrade], minutes: list[datetime]) -> list[tuple]:
    """1m candles of ``trades`` (in sequence order) for the given minutes, in Python."""
    out = []
    for m in minutes:
        inside = [t for t in trades if m <= t.timestamp < m + timedelta(minutes=1)]
        if not inside:
            continue
        volume = sum((t.volume for t in inside), Decimal(0))
        quote = sum((t.price * t.volume for t in inside), Decimal(0))
        vwap = (quote / volume).quantize(Decimal(1).scaleb(-18))
        out.append((m, inside[0].price, max(t.price for t in inside),
                    min(t.price for t in inside), inside[-1].price, volume, len(inside), vwap,
                    "trades"))
    return out


def test_each_trade_is_stored_once_across_overlapping_pages(store: MarketStore) -> None:
    page1 = [api(i, i * 7, str(100 + i)) for i in range(1, 11)]
    page2 = [api(i, i * 7, str(100 + i)) for i in range(6, 16)]
    assert store.upsert_trades(page1, [SyncUpdate(S, "trades", last_kraken_since=1)]) == 10
    assert store.upsert_trades(page2, [SyncUpdate(S, "trades", last_kraken_since=2)]) == 5
    assert store.upsert_trades(page1 + page2) == 0
    got = store.read_trades(S)
    assert got.column("id").to_pylist() == list(range(1, 16))
    (status,) = [r for r in store.read_sync_status(S) if r["data_type"] == "trades"]
    assert (status["total_records"], status["last_kraken_since"]) == (15, 2)


def test_duckdb_trades_carry_no_index_and_a_version_2_store_keeps_its_trades(
        tmp_path: Path) -> None:
    import duckdb

    from krakked.store.duckdb import MIGRATIONS

    path = tmp_path / "v2.duckdb"
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL, description VARCHAR)")
    for version, _, statements in MIGRATIONS[:2]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, now(), 'old')", [version])
    con.register("batch", trades_to_arrow([api(1, 1, "10"), api(2, 2, "11")]))
    con.execute("INSERT INTO trades SELECT * FROM batch")
    con.close()
    with open_store(f"duckdb:///{path}") as store:
        assert store.read_trades(S).column("id").to_pylist() == [1, 2]
        keys = store._rows(  # type: ignore[attr-defined]
            "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'trades' "
            "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')")
        assert keys == []
        assert store.upsert_trades([api(2, 2, "11"), api(3, 3, "12")]) == 1
        assert store.read_trades(S).column("id").to_pylist() == [1, 2, 3]


def test_candles_follow_the_trade_sequence_where_timestamps_tie(store: MarketStore) -> None:
    # Kraken's ids order trades sharing one timestamp; the batch arrives in another order.
    trades = [api(12, 5, "7"), api(10, 5, "5"), api(11, 5, "9"), api(13, 30, "6"),
              api(14, 30, "8")]
    store.upsert_trades(trades, coverage=[cover(0, 60)])
    ((_, o, h, lo, c, v, n, vwap, src),) = minute_rows(store)
    assert (o, h, lo, c, v, n, src) == (5, 9, 5, 8, 5, 5, "trades")
    assert vwap == Decimal("7")


def test_only_whole_covered_minutes_get_candles(store: MarketStore) -> None:
    trades = [api(i, 20 + i * 20, str(100 + i)) for i in range(1, 12)]  # 10:00:40 .. 10:04:00
    store.upsert_trades(trades, coverage=[cover(30, 200)])  # 10:00:30 .. 10:03:20
    assert [r[0] for r in minute_rows(store)] == [at(60), at(120)]
    assert store.read_trade_coverage(S) == [(int(at(30).timestamp() * 1e6),
                                             int(at(200).timestamp() * 1e6))]
    assert store.upsert_trades([], coverage=[cover(200, 240)]) == 0  # 10:03 now whole
    assert [r[0] for r in minute_rows(store)] == [at(60), at(120), at(180)]
    assert minute_rows(store) == reference(trades, [at(60), at(120), at(180)])


def test_a_minute_split_across_pages_is_built_when_its_end_arrives(
        store: MarketStore) -> None:
    trades = [api(i, i * 9, str(50 + i % 7), "0.5") for i in range(1, 40)]  # 0:09 .. 5:51
    cut = 17  # page 1 ends inside minute 2
    store.upsert_trades(trades[:cut], coverage=[cover(0, trades[cut - 1].timestamp.second
                                                      + 120)])
    assert [r[0] for r in minute_rows(store)] == [at(0), at(60)]
    end = (trades[-1].timestamp - T0).total_seconds()
    store.upsert_trades(trades[cut:], coverage=[cover(153, end)])
    minutes = [at(60 * k) for k in range(5)]
    assert minute_rows(store) == reference(trades, minutes)


@pytest.mark.parametrize("csv_first", [True, False])
def test_csv_rows_and_api_rows_are_one_trade_once(store: MarketStore, csv_first: bool) -> None:
    # second 10 holds two identical trades and a third; the CSV file has all three
    csv_rows = [csv(9, "99"), csv(10, "100"), csv(10, "100"), csv(10, "101", "2")]
    api_rows = [api(7, 10.25, "100"), api(8, 10.5, "100"), api(9, 10.75, "101", "2"),
                api(10, 11.5, "102")]
    writes = [(csv_rows, cover(0, 10)), (api_rows, cover(10, 12))]
    for rows, cov in (writes if csv_first else writes[::-1]):
        store.upsert_trades(trades_to_arrow(rows, source="csv" if rows is csv_rows
                                            else "rest"), coverage=[cov])
    got = store.read_trades(S).to_pylist()
    assert [(t["id"], f"{t['price'].normalize():f}") for t in got] == [
        (None, "99"), (7, "100"), (8, "100"), (9, "101"), (10, "102")]
    # again, in any order: nothing changes
    store.upsert_trades(trades_to_arrow(csv_rows, source="csv"))
    store.upsert_trades(api_rows)
    assert len(store.read_trades(S)) == 5


def test_a_partial_api_second_keeps_the_csv_trades_it_lacks(store: MarketStore) -> None:
    store.upsert_trades(trades_to_arrow([csv(10, "100"), csv(10, "100"), csv(10, "100")],
                                        source="csv"))
    store.upsert_trades([api(5, 10.9, "100")])  # the API tail starts late in second 10
    prices = store.read_trades(S).column("id").to_pylist()
    assert sorted(prices, key=lambda x: (x is not None, x)) == [None, None, 5]


def test_a_csv_file_imported_twice_stores_each_row_once_in_file_order(
        store: MarketStore) -> None:
    rows = [csv(1, "5"), csv(1, "3"), csv(1, "4"), csv(61, "6")]
    for _ in range(2):
        store.upsert_trades(trades_to_arrow(rows, source="csv"), coverage=[cover(0, 120)])
    got = store.read_trades(S)
    assert [str(p.normalize()) for p in got.column("price").to_pylist()] == ["5", "3", "4", "6"]
    first = minute_rows(store)[0]
    assert (first[1], first[4]) == (5, 4)  # open and close follow the file's order


def test_random_pages_build_the_candles_of_the_trades(store: MarketStore) -> None:
    rng = random.Random(11)
    trades, t, i = [], 0.0, 1000
    while t < 600:
        t += rng.choice([0, 0, 0.5, 2.5, 7, 40])  # ties, bursts and quiet stretches
        i += 1
        trades.append(api(i, round(t, 6), str(rng.randint(990, 1010) / 10),
                          str(rng.randint(1, 400) / 100)))
    start = 0.0
    pos = 0
    while pos < len(trades):
        n = rng.randint(1, 60)
        page = trades[pos:pos + n]
        pos += n
        end = (page[-1].timestamp - T0).total_seconds()
        store.upsert_trades(list(reversed(page)), coverage=[cover(start, end)])
        start = end
    last = (trades[-1].timestamp - T0).total_seconds()
    minutes = [at(60 * k) for k in range(int(last // 60))]
    assert minute_rows(store) == reference(trades, minutes)
    assert store.build_candles_from_trades(S) == len(reference(trades, minutes))
    assert minute_rows(store) == reference(trades, minutes)


def test_holes_in_the_trade_id_sequence_and_the_summary(store: MarketStore) -> None:
    assert store.trades_summary(S) is None
    store.upsert_trades([api(i, i, "10") for i in (1, 2, 3, 7, 8, 12)])
    store.upsert_trades(trades_to_arrow([csv(100, "9")], source="csv"))
    holes = store.trade_id_holes(S)
    assert [(h["after_id"], h["before_id"], h["missing"]) for h in holes] == [
        (3, 7, 3), (8, 12, 3)]
    assert holes[0]["after_time"] == at(3) and holes[0]["before_time"] == at(7)
    summary = store.trades_summary(S)
    assert summary is not None
    assert (summary["rows"], summary["last_id"], summary["first"], summary["last"],
            summary["last_api_time"]) == (7, 12, at(1), at(100), at(12))


def test_candles_of_any_interval_are_read_from_trades_without_writing(
        store: MarketStore) -> None:
    trades = [api(i, i * 13, str(200 + (i * 7) % 11), "0.25") for i in range(1, 60)]
    store.upsert_trades(trades, build_candles=False)
    ones = store.read_trade_candles(S, 1, at(0), at(600))
    assert [tuple(r.values()) for r in ones.select(
        ["timestamp", "open", "high", "low", "close", "volume", "trade_count", "vwap",
         "source"]).to_pylist()] == reference(trades, [at(60 * k) for k in range(10)])
    fives = store.read_trade_candles(S, 5, at(0), at(900)).to_pylist()
    assert [c["timestamp"] for c in fives] == [at(0), at(300), at(600)]
    assert fives[1]["open"] == next(t for t in trades if t.timestamp >= at(300)).price
    assert fives[0]["trade_count"] == len([t for t in trades if t.timestamp < at(300)])
    assert store.read_candles(S, 1).num_rows == 0  # nothing was written


def test_pairs_sharing_seconds_keep_their_own_trades(store: MarketStore) -> None:
    eth = [HistoricalTrade(None, "ETHUSD", at(10), Decimal("100"), Decimal("1"), None),  # type: ignore[arg-type]
           HistoricalTrade(None, "ETHUSD", at(70), Decimal("101"), Decimal("1"), None)]  # type: ignore[arg-type]
    store.upsert_trades(trades_to_arrow(eth, source="csv"),
                        coverage=[TradeCoverage("ETHUSD", at(0), at(120))])
    # an XBTUSD API trade with the same second, price and volume is not ETHUSD's twin
    store.upsert_trades([api(1, 10.5, "100"), api(2, 70.5, "101")],
                        coverage=[cover(0, 120)])
    assert len(store.read_trades("ETHUSD")) == 2 and len(store.read_trades(S)) == 2
    assert store.upsert_trades(trades_to_arrow(eth, source="csv")) == 0
    assert [c["close"] for c in store.read_candles("ETHUSD", 1).to_pylist()] == [100, 101]
    assert [c["trade_count"] for c in store.read_candles(S, 1).to_pylist()] == [1, 1]
