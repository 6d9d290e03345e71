"""The market store against every backend (DuckDB, Parquet, CSV, PostgreSQL): the same promises,
then what only one kind of backend promises (DuckDB's lock, schema and views; the file layouts)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path

import pyarrow as pa
import pytest

from krakked.errors import ConfigError, StoreError, StoreLockedError, UsageError
from krakked.market.candles import Candle, HistoricalTrade, resample
from krakked.store import MarketStore, SyncUpdate, open_store, resolve_store_url
from krakked.store.arrow import CANDLE_SCHEMA, PAIR_SCHEMA, trades_to_arrow
from krakked.store.base import ROLLUPS, SCHEMA_VERSION, RetentionPolicy

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
Q18 = Decimal(1).scaleb(-18)
ALIASES = {"BTC/USD": "XBTUSD", "XBT/USD": "XBTUSD", "ETH/USD": "ETHUSD"}


def _resolve(name: str) -> str:
    return ALIASES.get(name, name.replace("/", "").upper())


@pytest.fixture
def s(store: MarketStore) -> MarketStore:
    """The parametrized store with an offline alias resolver."""
    store.set_resolver(_resolve)
    return store


def candle(minute: int, *, volume: str = "1.5", close: str = "100.1", symbol: str = "XBTUSD",
           interval: int = 1, start: datetime = MONDAY, source: str = "rest") -> Candle:
    c = Decimal(close)
    return Candle(symbol, start + timedelta(minutes=minute), interval, Decimal("100"),
                  max(c, Decimal("100.5")), min(c, Decimal("99.5")), c, Decimal(volume),
                  None, 3, Decimal("100.05"), source)


def minute_candles(start: datetime, n: int, *, seed: int = 7,
                   symbol: str = "XBTUSD") -> list[Candle]:
    """``n`` realistic 1m candles: prices with one decimal, volumes with eight; every third
    carries only a vwap (REST-like), the others their quote volume (built from trades)."""
    rng = random.Random(seed)
    price = Decimal("42000.0")
    out = []
    for i in range(n):
        o = price
        c = o + Decimal(rng.randint(-50, 50)) / 10
        h = max(o, c) + Decimal(rng.randint(0, 20)) / 10
        low = min(o, c) - Decimal(rng.randint(0, 20)) / 10
        vol = Decimal(rng.randint(1, 10**9)) / Decimal(10**8)
        vwap = (low + (h - low) * Decimal(rng.randint(0, 100)) / 100).quantize(Decimal("0.01"))
        quote = None if i % 3 == 0 else vwap * vol
        out.append(Candle(symbol, start + timedelta(minutes=i), 1, o, h, low, c, vol, quote,
                          rng.randint(1, 40), vwap, "rest" if quote is None else "trades"))
        price = c
    return out


def q(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Q18)


def assert_same_candles(got: list[Candle], want: list[Candle]) -> None:
    """Field by field, decimals compared at the store's 18 places (exactly)."""
    assert [c.timestamp for c in got] == [c.timestamp for c in want]
    for g, w in zip(got, want, strict=True):
        for name in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
            assert q(getattr(g, name)) == q(getattr(w, name)), (name, g, w)
        assert (g.symbol, g.interval_minutes, g.trade_count, g.source) == (
            w.symbol, w.interval_minutes, w.trade_count, w.source)


def complete(resampled: list[Candle], source: list[Candle]) -> list[Candle]:
    """Buckets the (gapless) source spans whole: opening at or after its first candle, closing
    by its last candle's close. A partial bucket at either end is never derived."""
    first = min(c.timestamp for c in source)
    last_close = max(c.close_time for c in source)
    return [c for c in resampled if c.timestamp >= first and c.close_time <= last_close]


# --- every backend ---------------------------------------------------------------------------

def test_round_trip_keeps_exact_decimals_and_aware_utc_times(s: MarketStore) -> None:
    bars = [candle(0, volume="0.1"), candle(1, volume="0.30000001", close="100.2"),
            candle(2, volume="12345678.123456789012345678")]
    assert s.upsert_candles(bars) == 3
    got = s.get_candles("BTC/USD", "1m")
    assert got == bars
    assert got[0].volume == Decimal("0.1") and str(got[0].volume) == "0.1"
    assert all(c.timestamp.tzinfo is not None and c.timestamp.utcoffset() == timedelta(0)
               for c in got)


EXTREMES = ["99999999999999999999.999999999999999999", "-99999999999999999999.999999999999999999",
            "0", "1E-18", "-0.5", "1E-10", "30306.1", "100"]
"""What DECIMAL(38,18) holds at its edges (the largest, the smallest step, zero, negatives)."""


def test_edge_decimals_nulls_and_times_read_back_exactly(s: MarketStore) -> None:
    n = len(EXTREMES)
    bars = [Candle("XBTUSD", MONDAY + timedelta(minutes=i), 1, Decimal(EXTREMES[i]),
                   Decimal(EXTREMES[(i + 1) % n]), Decimal(EXTREMES[(i + 2) % n]),
                   Decimal(EXTREMES[(i + 3) % n]), Decimal(("1E-18", "0", "-2.5", "7")[i % 4]),
                   None if i % 2 else Decimal(("1E-18", "12345678.123456789012345678")[i % 4 // 2]),
                   None if i % 3 == 0 else i, None if i % 3 else Decimal(EXTREMES[i]), "rest")
            for i in range(n)]
    assert s.upsert_candles(bars) == n
    table = s.get_candles("XBTUSD", "1m", as_="arrow")
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    for name in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
        assert table.schema.field(name).type == pa.decimal128(38, 18)
        assert table[name].to_pylist() == [getattr(c, name) for c in bars], name
    assert table["trade_count"].to_pylist() == [c.trade_count for c in bars]
    got = s.get_candles("XBTUSD", "1m")
    assert got == bars
    assert [c.to_dict() for c in got] == [c.to_dict() for c in bars]


def test_reupserting_the_same_candles_stores_nothing_twice(s: MarketStore) -> None:
    bars = [candle(i) for i in range(10)]
    assert s.upsert_candles(bars) == 10
    assert s.upsert_candles(bars) == 10  # equal volume: replaced by itself
    assert s.get_candles("XBTUSD", "1m") == bars
    (row,) = [r for r in s.coverage("XBTUSD") if r["interval_minutes"] == 1]
    assert row["rows"] == 10


def test_a_candle_is_replaced_only_by_one_with_at_least_its_volume(s: MarketStore) -> None:
    s.upsert_candles([candle(0, volume="2.0", close="100.1")])
    assert s.upsert_candles([candle(0, volume="1.9", close="90.0")]) == 0
    assert s.get_candles("XBTUSD", "1m")[0].close == Decimal("100.1")
    assert s.upsert_candles([candle(0, volume="2.0", close="100.3")]) == 1
    assert s.get_candles("XBTUSD", "1m")[0].close == Decimal("100.3")
    assert s.upsert_candles([candle(0, volume="2.5", close="100.4")]) == 1
    (got,) = s.get_candles("XBTUSD", "1m")
    assert (got.volume, got.close) == (Decimal("2.5"), Decimal("100.4"))


def test_duplicates_in_one_batch_keep_the_highest_volume_then_the_later(
        s: MarketStore) -> None:
    batch = [candle(1, volume="3", close="101"), candle(0, volume="1", close="100.1"),
             candle(0, volume="5", close="100.2"), candle(0, volume="2", close="100.3"),
             candle(1, volume="3", close="102")]
    assert s.upsert_candles(batch) == 2
    got = s.get_candles("XBTUSD", "1m")
    assert [(c.volume, c.close) for c in got] == [(Decimal(5), Decimal("100.2")),
                                                  (Decimal(3), Decimal(102))]


def test_reads_are_oldest_first_and_limits_pick_the_documented_end(s: MarketStore) -> None:
    bars = [candle(i, close=f"100.{i}") for i in range(10)]
    s.upsert_candles(list(reversed(bars)))
    assert s.get_candles("XBTUSD", "1m") == bars
    assert s.get_candles("XBTUSD", "1m", limit=3) == bars[:3]
    assert s.get_candles("XBTUSD", "1m", start=bars[2].timestamp, end=bars[5].timestamp) == \
        bars[2:5]
    assert s.get_latest_candles("XBTUSD", "1m", 3) == bars[-3:]
    assert s.get_ohlc("XBTUSD", "1m", 4) == bars[-4:]
    assert s.get_ohlc("XBTUSD", "1m") == bars
    assert s.get_ohlc_since("XBTUSD", "1m", bars[7].timestamp) == bars[7:]
    assert s.get_ohlc_since("XBTUSD", "1m", int(bars[8].timestamp.timestamp())) == bars[8:]
    assert s.get_bars("XBTUSD", "1m", lookback=2) == bars[-2:]
    assert s.get_bars("XBTUSD", "1m", lookback=2, since=bars[3].timestamp.isoformat()) == \
        bars[8:]
    assert s.get_warmup_data("XBTUSD", "1m", 2) == bars[-2:]
    with pytest.raises(UsageError):
        s.get_ohlc_since("XBTUSD", "1m", datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(UsageError):
        s.get_candles("XBTUSD", "1m", start=bars[5].timestamp, end=bars[2].timestamp)


def test_append_bars_stores_under_the_pair_and_timeframe_given(s: MarketStore) -> None:
    bars = [candle(60 * i, symbol="ignored", interval=1) for i in range(3)]
    assert s.append_bars("BTC/USD", "1h", bars) == 3
    assert s.append_bars("BTC/USD", "1h", bars) == 3
    got = s.get_bars("XBT/USD", "1h")
    assert [(c.symbol, c.interval_minutes, c.timestamp) for c in got] == [
        ("XBTUSD", 60, b.timestamp) for b in bars]


@pytest.mark.parametrize("tf", ["5m", "1h", "4h", "1d", "1w"])
def test_derived_timeframes_equal_exact_python_resampling(s: MarketStore, tf: str) -> None:
    # Thursday 10:07 to 25 days later: a partial first week, three whole ones, a running one.
    source = minute_candles(MONDAY - timedelta(days=4, hours=-10, minutes=-7), 25 * 1440 + 33)
    s.upsert_candles(source)
    minutes = {"5m": 5, "1h": 60, "4h": 240, "1d": 1440, "1w": 10080}[tf]
    want = complete(resample(source, minutes), source)
    got = s.get_candles("XBTUSD", tf)
    assert len(got) == len(want) > 1
    assert_same_candles(got, want)
    if tf == "1w":
        assert all(c.timestamp.weekday() == 0 and c.timestamp.hour == 0 for c in got)
    window = s.get_candles("XBTUSD", tf, start=want[1].timestamp, end=want[-1].timestamp)
    assert_same_candles(window, want[1:-1])
    assert_same_candles(s.get_latest_candles("XBTUSD", tf, 2), want[-2:])


def test_derived_quote_volume_and_vwap_are_exact_for_long_decimals(s: MarketStore) -> None:
    rng = random.Random(3)
    rows = []
    for i in range(10):
        vwap = Decimal(rng.randint(10**18, 10**23)).scaleb(-18)  # 18 places, up to 100,000
        vol = Decimal(rng.randint(1, 10**21)).scaleb(-18)
        rows.append(Candle("XBTUSD", MONDAY + timedelta(minutes=i), 1, vwap, vwap, vwap, vwap,
                           vol, None, 1, vwap, "rest"))
    s.upsert_candles(rows)
    got = s.get_candles("XBTUSD", "5m")
    with localcontext() as ctx:
        ctx.prec = 120
        for k, bucket in enumerate(got):
            part = rows[5 * k:5 * k + 5]
            quote = sum((c.vwap * c.volume for c in part), Decimal(0)).quantize(Q18)  # type: ignore[operator]
            volume = sum((c.volume for c in part), Decimal(0))
            assert bucket.quote_volume == quote
            assert bucket.vwap == (quote / volume).quantize(Q18)


def test_weeks_start_on_monday_like_krakens(s: MarketStore) -> None:
    sunday = datetime(2023, 12, 31, tzinfo=UTC)  # Sunday .. Sunday two weeks later
    s.upsert_candles([candle(0, start=sunday + timedelta(days=d), interval=1440)
                      for d in range(15)])
    weeks = s.get_candles("XBTUSD", "1w")
    # the week holding the first Sunday is not whole: absent, not built from one day
    assert [w.timestamp for w in weeks] == [datetime(2024, 1, 1, tzinfo=UTC),
                                            datetime(2024, 1, 8, tzinfo=UTC)]
    assert weeks[1].volume == Decimal("1.5") * 7


def test_the_running_bucket_is_never_derived(s: MarketStore) -> None:
    s.upsert_candles([candle(i) for i in range(60 + 31)])  # 00:00 .. 01:30
    assert [c.timestamp.hour for c in s.get_candles("XBTUSD", "1h")] == [0]
    s.upsert_candles([candle(i) for i in range(91, 120)])  # .. 01:59: hour 1 complete
    hours = s.get_candles("XBTUSD", "1h")
    assert [c.timestamp.hour for c in hours] == [0, 1]
    assert hours[1].volume == Decimal("1.5") * 60


def test_stored_kraken_candles_win_over_derived_ones(s: MarketStore) -> None:
    source = minute_candles(MONDAY, 180)
    s.upsert_candles(source)
    kraken = Candle("XBTUSD", MONDAY + timedelta(hours=1), 60, Decimal(1), Decimal(2),
                    Decimal("0.5"), Decimal("1.5"), Decimal("9.9"), None, 7, Decimal("1.2"),
                    "rest")
    s.upsert_candles([kraken])
    derived = complete(resample(source, 60), source)
    got = s.get_candles("XBTUSD", "1h")
    assert_same_candles(got, [derived[0], kraken, derived[2]])


def test_derives_from_the_finest_stored_interval_when_there_is_no_1m(
        s: MarketStore) -> None:
    base = minute_candles(MONDAY, 8 * 60)
    fifteen = resample(base, 15)
    s.upsert_candles(fifteen)
    got = s.get_candles("XBTUSD", "1h")
    assert_same_candles(got, resample(fifteen, 60))
    assert s.get_candles("XBTUSD", "5m") == []  # nothing finer than 15m to build 5m from


def test_sync_status_is_written_with_the_rows(s: MarketStore) -> None:
    before = datetime.now(UTC)
    bars = [candle(i) for i in range(5)]
    s.upsert_candles(bars, sync=[SyncUpdate("XBTUSD", "candles_1m", 1_704_067_500)])
    (row,) = s.get_sync_status("BTC/USD")
    assert row["symbol"] == "XBTUSD" and row["data_type"] == "candles_1m"
    assert row["oldest_timestamp"] == bars[0].timestamp
    assert row["newest_timestamp"] == bars[-1].timestamp
    assert row["total_records"] == 5
    assert row["last_kraken_since"] == 1_704_067_500
    assert row["last_sync_at"] >= before - timedelta(seconds=1)
    s.upsert_candles([candle(5)], sync=[SyncUpdate("XBTUSD", "candles_1m")])
    (row,) = s.get_sync_status("XBTUSD")
    assert row["total_records"] == 6 and row["last_kraken_since"] == 1_704_067_500
    trades = [HistoricalTrade(1, "XBTUSD", MONDAY, Decimal("100.1"), Decimal("0.5"), "buy")]
    s.upsert_trades(trades, sync=[SyncUpdate("XBTUSD", "trades", 1_704_067_200_000_000_000)])
    kinds = {r["data_type"]: r for r in s.get_sync_status()}
    assert set(kinds) == {"candles_1m", "trades"}
    assert kinds["trades"]["total_records"] == 1
    assert kinds["trades"]["last_kraken_since"] == 1_704_067_200_000_000_000


def test_a_sync_status_naming_no_known_data_is_refused(s: MarketStore) -> None:
    with pytest.raises(UsageError, match="candles_2m"):
        s.upsert_candles([candle(9)], sync=[SyncUpdate("XBTUSD", "candles_2m")])
    assert s.get_candles("XBTUSD", "1m") == []


def test_a_sync_status_of_the_other_kind_of_data_is_refused(s: MarketStore) -> None:
    with pytest.raises(UsageError, match="'trades' does not describe the candles written"):
        s.upsert_candles([candle(9)], sync=[SyncUpdate("XBTUSD", "trades")])
    trade = HistoricalTrade(1, "XBTUSD", MONDAY, Decimal("100.1"), Decimal("0.5"), "buy")
    with pytest.raises(UsageError, match="'candles_1m' does not describe the trades written"):
        s.upsert_trades([trade], sync=[SyncUpdate("XBTUSD", "candles_1m")])
    assert s.get_candles("XBTUSD", "1m") == [] and s.read_trades("XBTUSD").num_rows == 0


def test_trades_are_stored_once_in_time_order(s: MarketStore) -> None:
    t = [HistoricalTrade(i, "XBTUSD", MONDAY + timedelta(seconds=i // 2),
                         Decimal("100.1") + i, Decimal("0.1"), "buy" if i % 2 else "sell",
                         "limit", "") for i in range(1, 7)]
    assert s.upsert_trades(list(reversed(t))) == 6
    assert s.upsert_trades(t) == 0
    got = s.read_trades("XBTUSD")
    assert got.column("id").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert got.column("price").to_pylist()[0] == Decimal("101.1")
    assert got.column("misc").to_pylist()[0] == ""
    assert s.read_trades("XBTUSD", start=t[2].timestamp, limit=2).num_rows == 2


def test_trades_without_kraken_ids_are_stored_once_too(s: MarketStore) -> None:
    second = MONDAY + timedelta(seconds=5)
    rows = [HistoricalTrade(None, "XBTUSD", second, Decimal("100"), Decimal("0.1"), "buy"),
            HistoricalTrade(None, "XBTUSD", second, Decimal("100"), Decimal("0.1"), "buy"),
            HistoricalTrade(None, "XBTUSD", second, Decimal("101"), Decimal("0.2"), "sell")]
    assert s.upsert_trades(trades_to_arrow(rows, source="csv")) == 3
    assert s.upsert_trades(trades_to_arrow(rows, source="csv")) == 0
    got = s.read_trades("XBTUSD")
    assert got.column("price").to_pylist() == [Decimal(100), Decimal(100), Decimal(101)]
    assert got.column("id").to_pylist() == [None, None, None]


def test_a_csv_trade_and_its_api_twin_are_stored_once_as_the_api_row(s: MarketStore) -> None:
    when = MONDAY + timedelta(seconds=30)
    csv_row = HistoricalTrade(None, "XBTUSD", when, Decimal("100.5"), Decimal("0.25"), "buy")
    api_row = HistoricalTrade(77, "XBTUSD", when + timedelta(microseconds=123_456),
                              Decimal("100.5"), Decimal("0.25"), "buy", "limit")
    other = HistoricalTrade(None, "XBTUSD", when, Decimal("100.6"), Decimal("0.25"), "sell")
    s.upsert_trades(trades_to_arrow([csv_row, other], source="csv"))
    s.upsert_trades([api_row])
    got = s.read_trades("XBTUSD").to_pylist()
    assert [(r["id"], r["price"]) for r in got] == [(None, Decimal("100.6")),
                                                    (77, Decimal("100.5"))]
    assert s.upsert_trades(trades_to_arrow([csv_row], source="csv")) == 0
    assert s.read_trades("XBTUSD").num_rows == 2


def test_coverage_counts_missing_buckets_and_gap_runs(s: MarketStore) -> None:
    s.upsert_candles([candle(m) for m in (0, 1, 2, 5, 6, 9)])
    s.upsert_candles([candle(0, start=MONDAY + timedelta(weeks=w), interval=10080)
                      for w in (0, 2, 3)])
    rows = {r["interval_minutes"]: r for r in s.info()}
    assert rows[1]["rows"] == 6 and rows[1]["missing"] == 4 and rows[1]["gaps"] == 2
    assert rows[1]["first"] == MONDAY and rows[1]["last"] == MONDAY + timedelta(minutes=9)
    assert rows[10080]["missing"] == 1 and rows[10080]["gaps"] == 1
    assert s.get_data_range("BTC/USD") == {"oldest": MONDAY,
                                           "newest": MONDAY + timedelta(minutes=9),
                                           "total_candles": 6, "interval_minutes": 1}
    assert s.get_symbols() == ["XBTUSD"]


def test_retention_deletes_only_when_configured(s: MarketStore) -> None:
    old = [candle(i, start=MONDAY - timedelta(days=30)) for i in range(3)]
    new = [candle(i) for i in range(2)]
    s.upsert_candles(old + new, sync=[SyncUpdate("XBTUSD", "candles_1m", 5)])
    now = MONDAY + timedelta(days=1)
    assert s.apply_retention(now) == {"trades": 0, "candles": 0}
    assert len(s.get_candles("XBTUSD", "1m")) == 5
    s.retention = RetentionPolicy(candles_days=7)
    assert s.apply_retention(now) == {"trades": 0, "candles": 3}
    assert s.get_candles("XBTUSD", "1m") == new
    (status,) = s.get_sync_status("XBTUSD")
    assert status["total_records"] == 2 and status["oldest_timestamp"] == MONDAY
    assert status["last_kraken_since"] == 5


def test_arrow_output_and_a_clear_error_for_missing_dataframe_libraries(
        s: MarketStore) -> None:
    s.upsert_candles([candle(i) for i in range(3)])
    table = s.get_candles("XBTUSD", "1m", as_="arrow")
    assert isinstance(table, pa.Table) and table.schema.equals(CANDLE_SCHEMA)
    assert table.num_rows == 3
    for kind, module in (("polars", "polars"), ("pandas", "pandas")):
        if importlib.util.find_spec(module) is None:
            with pytest.raises(UsageError, match=f"pip install {module}"):
                s.get_candles("XBTUSD", "1m", as_=kind)  # type: ignore[arg-type]
        else:
            assert len(s.get_candles("XBTUSD", "1m", as_=kind)) == 3  # type: ignore[arg-type]


def test_pairs_snapshot_is_replaced_whole(s: MarketStore) -> None:
    def snapshot(*names: str) -> pa.Table:
        return pa.Table.from_pylist(
            [{"canonical": n, "base": "XBT", "quote": "USD", "lot_size": Decimal("0.00000001"),
              "updated_at": MONDAY} for n in names], schema=PAIR_SCHEMA)

    s.write_pairs(snapshot("XBTUSD", "ETHUSD"))
    s.write_pairs(snapshot("XBTUSD"))
    pairs = s.read_pairs()
    assert pairs.column("canonical").to_pylist() == ["XBTUSD"]
    assert pairs.column("lot_size").to_pylist() == [Decimal("0.00000001")]


def test_health_check_reports_instead_of_raising(s: MarketStore) -> None:
    s.upsert_candles([candle(0)])
    health = s.health_check()
    assert health["ok"] and health["symbols"] == 1 and health["backend"] == s.backend
    s.require_candles("XBTUSD", "1m")
    with pytest.raises(Exception, match="ETHUSD"):
        s.require_candles("ETH/USD", "1m")


# --- DuckDB only -------------------------------------------------------------------------------

@pytest.fixture
def duck_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'data' / 'market.duckdb'}"


def _python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],  # noqa: S603
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_a_store_object_does_not_hold_the_file_between_operations(duck_url: str) -> None:
    code = """
        import sys
        from krakked.store import open_store
        with open_store(sys.argv[1], read_only=True) as s:
            s.set_resolver(lambda p: p)
            print(len(s.get_candles("XBTUSD", "1m")))
        with open_store(sys.argv[1]) as s:
            s.set_resolver(lambda p: p)
            from tests.integration.test_store import candle
            s.upsert_candles([candle(1)])
    """
    with open_store(duck_url) as held:
        held.upsert_candles([candle(0)])
        done = _python(code, duck_url)  # another process reads and writes meanwhile
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "1"
        assert len(held.get_candles("XBTUSD", "1m")) == 2


def test_a_file_held_past_the_timeout_is_store_locked_error_naming_the_file(
        duck_url: str) -> None:
    import duckdb

    with open_store(duck_url) as store:
        store.upsert_candles([candle(0)])
    path = str(_root(duck_url))
    code = """
        import sys, time
        from krakked.errors import StoreLockedError
        from krakked.store import open_store
        started = time.monotonic()
        try:
            open_store(sys.argv[1], read_only=True, lock_timeout=0.5)
        except StoreLockedError as exc:
            print(f"{type(exc).__name__}: {exc}")
            print(round(time.monotonic() - started, 2))
            sys.exit(7)
        sys.exit(0)
    """
    foreign = duckdb.connect(path)  # a process that is not krakked holds the file
    try:
        done = _python(code, duck_url)
    finally:
        foreign.close()
    assert done.returncode == 7, done.stderr
    message, waited = done.stdout.strip().splitlines()
    assert message.startswith(StoreLockedError.__name__)
    assert path in message and "locked by another process" in message
    assert float(waited) >= 0.5  # it retried before giving up
    assert "Traceback" not in done.stderr


def test_a_reader_waits_out_a_brief_hold_instead_of_failing(duck_url: str) -> None:
    with open_store(duck_url) as store:
        store.upsert_candles([candle(0)])
    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time, duckdb
            con = duckdb.connect(sys.argv[1])
            print("held", flush=True)
            time.sleep(1.5)
            con.close()
        """), str(_root(duck_url))], stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with open_store(duck_url, read_only=True) as reader:
            reader.set_resolver(_resolve)
            assert len(reader.get_candles("XBTUSD", "1m")) == 1
        assert time.monotonic() - started >= 0.5


def test_readers_in_another_process_succeed_throughout_a_long_backfill(duck_url: str) -> None:
    with open_store(duck_url) as store:
        store.upsert_candles([candle(0)])
    counts = []
    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from datetime import timedelta
            from tests.integration.test_store import MONDAY, minute_candles
            from krakked.store import open_store
            with open_store(sys.argv[1]) as s:
                for page in range(120):  # a backfill: one page, one transaction
                    start = MONDAY + timedelta(minutes=1 + 500 * page)
                    s.upsert_candles(minute_candles(start, 500, seed=page))
                    if page == 0:
                        print("writing", flush=True)
        """), duck_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as writer:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        while writer.poll() is None:
            done = _python("""
                import sys
                from krakked.store import open_store
                with open_store(sys.argv[1], read_only=True) as s:
                    s.set_resolver(lambda p: p)
                    print(len(s.get_candles("XBTUSD", "1h", as_="arrow")))
            """, duck_url)
            assert done.returncode == 0, done.stderr  # never locked out
            counts.append(int(done.stdout))
        _, errors = writer.communicate(timeout=300)
    assert writer.returncode == 0, errors
    assert len(counts) >= 3 and counts == sorted(counts)  # reads saw the backfill advance
    with open_store(duck_url, read_only=True) as after:
        after.set_resolver(_resolve)
        assert len(after.get_candles("XBTUSD", "1m")) == 1 + 120 * 500


def test_schema_is_versioned_and_migrating_again_changes_nothing(duck_url: str) -> None:
    with open_store(duck_url) as first:
        first.upsert_candles([candle(0)])
        assert first.schema_version() == SCHEMA_VERSION == 3  # type: ignore[attr-defined]
    with open_store(duck_url) as again:
        rows = again._rows(  # type: ignore[attr-defined]
            "SELECT version FROM schema_version ORDER BY version")
        assert rows == [{"version": 1}, {"version": 2}, {"version": 3}]
        assert len(again.get_candles("XBTUSD", "1m")) == 1
    with open_store(duck_url, read_only=True) as ro:
        assert len(ro.get_candles("XBTUSD", "1m")) == 1
        with pytest.raises(StoreError, match="read-only"):
            ro.upsert_candles([candle(1)])


def test_rollup_views_exist_under_the_original_names_and_agree_with_reads(
        duck_url: str) -> None:
    source = minute_candles(MONDAY, 3 * 1440 + 17)
    with open_store(duck_url) as store:
        store.upsert_candles(source)
        for minutes, view in ROLLUPS.items():
            rows = store._arrow(  # type: ignore[attr-defined]
                f"SELECT * FROM {view} WHERE symbol = 'XBTUSD' ORDER BY timestamp")  # noqa: S608
            assert rows.to_pylist() == store.read_candles("XBTUSD", minutes).to_pylist(), view


def test_duckdb_parent_directory_is_created_private(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "m.duckdb"
    with open_store(f"duckdb:///{target}") as store:
        assert store.backend == "duckdb"
    assert target.exists() and (target.parent.stat().st_mode & 0o777) == 0o700


def test_a_file_that_is_not_a_database_is_a_store_error_naming_it(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_bytes(b"this is not a duckdb file" * 100)
    with pytest.raises(StoreError, match=re.escape(str(bogus))):
        open_store(f"duckdb:///{bogus}")


def test_in_memory_duckdb_store_works() -> None:
    with open_store("duckdb:///:memory:") as store:
        store.upsert_candles([candle(0)])
        assert store.get_candles("XBTUSD", "1m") == [candle(0)]


# --- Parquet and CSV only ----------------------------------------------------------------------

@pytest.fixture(params=["parquet", "csv"])
def file_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"{request.param}:///{tmp_path / request.param}"


def _root(url: str) -> Path:
    return Path("/" + url.split("://", 1)[1].lstrip("/"))


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name != ".krakked.lock"]


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` refuses new files, even to root (``chattr +i`` when root, else ``chmod``)."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr") or "/usr/bin/chattr"
        subprocess.run([chattr, "+i", str(path)], check=True)  # noqa: S603
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(path)], check=True)  # noqa: S603
    else:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)


def test_files_follow_the_timeframe_and_pair_layout(file_url: str) -> None:
    fmt, root = file_url.split(":")[0], _root(file_url)
    with open_store(file_url) as store:
        store.upsert_candles([candle(0), candle(0, interval=60), candle(0, symbol="ETHUSD")],
                             sync=[SyncUpdate("XBTUSD", "candles_1m", 9)])
        store.upsert_trades([HistoricalTrade(1, "XBTUSD", MONDAY, Decimal(1), Decimal(1),
                                             "buy")])
        store.write_pairs(pa.Table.from_pylist([{"canonical": "XBTUSD"}], schema=PAIR_SCHEMA))
    for rel in ("1m/XBTUSD", "1h/XBTUSD", "1m/ETHUSD", "trades/XBTUSD", "pairs"):
        assert (root / f"{rel}.{fmt}").is_file(), rel
    if fmt == "csv":
        assert (root / "1m" / "XBTUSD.csv.status.json").is_file()
        header = (root / "1m" / "XBTUSD.csv").read_text().splitlines()[0]
        assert header.replace('"', "").split(",") == CANDLE_SCHEMA.names
    else:
        import pyarrow.parquet as pq

        assert b"krakked.sync_status" in (pq.read_metadata(root / "1m" / "XBTUSD.parquet")
                                          .metadata or {})
    assert _temp_files(root) == []


def test_a_write_replaces_the_file_atomically_and_leaves_no_temp_file(file_url: str) -> None:
    root = _root(file_url)
    with open_store(file_url) as store:
        store.upsert_candles([candle(i) for i in range(3)])
        path = next((root / "1m").iterdir())
        inode = path.stat().st_ino
        store.upsert_candles([candle(i) for i in range(3, 6)])
        assert path.stat().st_ino != inode  # a new file renamed over the old one
        assert sorted(p.name for p in (root / "1m").iterdir()) == [path.name]
        assert len(store.get_candles("XBTUSD", "1m")) == 6


def test_a_corrupted_parquet_file_is_a_store_error_naming_it(tmp_path: Path) -> None:
    url = f"parquet:///{tmp_path / 'pq'}"
    with open_store(url) as store:
        store.upsert_candles([candle(0)])
        path = tmp_path / "pq" / "1m" / "XBTUSD.parquet"
        path.write_bytes(b"PAR1 garbage, not a parquet file")
        with pytest.raises(StoreError, match=re.escape(str(path))) as read_error:
            store.get_candles("XBTUSD", "1m")
        assert "\n" not in str(read_error.value)
        with pytest.raises(StoreError, match=re.escape(str(path))):
            store.upsert_candles([candle(1)])
        assert path.read_bytes() == b"PAR1 garbage, not a parquet file"
        assert _temp_files(tmp_path / "pq") == []
        with pytest.raises(StoreError, match=re.escape(str(path))):
            store.get_candles("XBTUSD", "1h")


def test_an_unwritable_directory_is_a_store_error_and_nothing_is_written(
        file_url: str) -> None:
    root = _root(file_url)
    with open_store(file_url) as store:
        store.upsert_candles([candle(0)])
        minute_file = next((root / "1m").iterdir())
        before = minute_file.read_bytes()
        blocked = re.escape(str(root / "1m"))
        with unwritable(root / "1m"), pytest.raises(StoreError, match=blocked):
            store.upsert_candles([candle(1)])
        assert minute_file.read_bytes() == before
        (root / "1h").write_text("a file where the 1h directory should be")
        with pytest.raises(StoreError, match=re.escape(str(root / "1h"))):
            store.upsert_candles([candle(2), candle(0, interval=60)])
        assert minute_file.read_bytes() == before  # the 1m file is not half of a write
        assert _temp_files(root) == []
    with unwritable(root), pytest.raises(StoreError, match=re.escape(str(root))):
        open_store(file_url)


# --- choosing the store ------------------------------------------------------------------------

def test_an_unknown_url_scheme_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'sqlite'.*sqlite:///x\.db"):
        open_store("sqlite:///x.db")
    with pytest.raises(ConfigError, match="postgress") as typo:
        open_store("postgress://me:s3cret@db.example/market")
    assert "s3cret" not in str(typo.value)


def test_a_password_in_the_query_of_a_bad_scheme_url_never_appears_in_the_error() -> None:
    url = "postgress://me:userinfo-secret@db.example/market?sslmode=require&password=secret"
    with pytest.raises(ConfigError, match="postgress") as caught:
        open_store(url)
    message = str(caught.value)
    assert "secret" not in message
    assert "postgress://me:***@db.example/market?sslmode=require&password=***" in message


def test_a_printed_store_url_masks_every_password_parameter_and_keeps_the_rest() -> None:
    from krakked.store.base import redact_url

    url = "postgresql://me:pw-1@db:5432/market?sslpassword=pw-2&application_name=x&PASSWORD=pw-3"
    assert redact_url(url) == (
        "postgresql://me:***@db:5432/market?sslpassword=***&application_name=x&PASSWORD=***")
    assert redact_url("duckdb:///home/me/market.duckdb") == "duckdb:///home/me/market.duckdb"


def test_a_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=re.escape(str(blocker))):
        open_store(f"parquet:///{blocker / 'store'}")
    with pytest.raises(StoreError, match=re.escape(str(blocker))):
        open_store(f"duckdb:///{blocker / 'sub' / 'm.duckdb'}")
    with pytest.raises(StoreError, match="no such"):
        open_store(f"csv:///{tmp_path / 'missing'}", read_only=True)


def test_the_store_flag_wins_over_settings(tmp_path: Path) -> None:
    from krakked.config import load_settings

    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    assert resolve_store_url("csv:///x", settings) == ("csv:///x", "--store")
    url, source = resolve_store_url(None, settings)
    assert source == "default" and url.startswith("duckdb:///") and str(tmp_path) in url
    env = load_settings({"KRAKKED_HOME": str(tmp_path), "KRAKKED_STORE": "parquet:///p"})
    assert resolve_store_url(None, env) == ("parquet:///p", "env:KRAKKED_STORE")
    with open_store(settings=settings) as store:
        assert store.backend == "duckdb"
        assert _root(store.url).parent == tmp_path / "data"

