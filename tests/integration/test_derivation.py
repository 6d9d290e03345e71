"""Which stored series serves a bucket, on every backend: a derived candle equals the candle
aggregated from the trades themselves, or is absent — never partial, never built from the
carried price of a quiet interval.

The trades of one tape are turned into 1m, 5m and 1h candles the two ways Kraken hands them
out (its OHLC endpoint: quiet intervals as zero-volume candles repeating the previous close;
its OHLCVT files: quiet intervals left out, the range vouched for by the importer), random
stretches of each are stored, and every timeframe read back is checked against the truth.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from krakked.market.candles import Candle, HistoricalTrade, bucket_start, candles_from_trades
from krakked.store import MarketStore, open_store
from krakked.store.base import Coverage

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)
Q18 = Decimal(1).scaleb(-18)
SPAN_MINUTES = 16 * 60  # the tape: a Monday from 00:00 to 16:00
STORED = (1, 5, 60)
TARGETS = (5, 15, 30, 60, 240, 720)
_names = itertools.count()

EXAMPLES = {"duckdb": 60, "parquet": 12, "csv": 12, "postgresql": 20}


# -- the truth -------------------------------------------------------------------------------

def truth(trades: list[HistoricalTrade], minutes: int, symbol: str,
          span: int = SPAN_MINUTES) -> dict[datetime, Candle]:
    """Every ``minutes`` candle of the tape from its first trade to the end of the span, as
    Kraken's OHLC gives them: a quiet interval is a zero-volume candle at the previous close."""
    traded = {c.timestamp: c for c in candles_from_trades(trades, minutes, symbol=symbol,
                                                         source="rest")}
    out: dict[datetime, Candle] = {}
    bucket = bucket_start(trades[0].timestamp, minutes)
    end = MONDAY + timedelta(minutes=span)
    close: Decimal | None = None
    while bucket < end:
        if bucket in traded:
            out[bucket] = traded[bucket]
            close = traded[bucket].close
        elif close is not None:
            out[bucket] = Candle(symbol, bucket, minutes, close, close, close, close,
                                 Decimal(0), Decimal(0), 0, None, "rest")
        bucket += timedelta(minutes=minutes)
    return out


@functools.lru_cache(maxsize=8)
def tape(seed: int, quiet: float, span: int = SPAN_MINUTES) -> list[HistoricalTrade]:
    """``span`` minutes of trades from MONDAY: 1-3 in a trading minute; ``quiet`` of the
    minutes, and every 7th hour, without any. The first minute always trades (so a first price
    is known)."""
    rng = random.Random(seed)
    trades: list[HistoricalTrade] = []
    price = Decimal("100.0")
    for minute in range(span):
        if minute and (rng.random() < quiet or (minute // 60) % 7 == 3):
            continue
        for k in range(rng.randint(1, 3)):
            price = max(Decimal("0.1"), price + Decimal(rng.randint(-30, 30)) / 10)
            trades.append(HistoricalTrade(
                None, "X", MONDAY + timedelta(minutes=minute, seconds=10 * k + 1), price,
                Decimal(rng.randint(1, 10**8)) / 10**7, "buy"))
    return trades


@dataclass(frozen=True)
class Case:
    seed: int
    quiet: float
    stretches: dict[int, list[tuple[int, int]]]  # stored interval -> [from, until) in its bars
    omit_quiet: bool  # OHLCVT-style: quiet intervals left out, the range vouched for

    @property
    def trades(self) -> list[HistoricalTrade]:
        return tape(self.seed, self.quiet)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    quiet = draw(st.sampled_from([0.0, 0.3, 0.7, 0.95]))
    seed = draw(st.integers(0, 2**32))
    stretches: dict[int, list[tuple[int, int]]] = {}
    for minutes in STORED:
        bars = SPAN_MINUTES // minutes
        picks = draw(st.lists(st.tuples(st.integers(0, bars - 1), st.integers(1, bars)),
                              max_size=2))
        stretches[minutes] = [(a, min(bars, a + n)) for a, n in picks]
    return Case(seed, quiet, stretches, draw(st.booleans()))


def _store(case: Case, store: MarketStore, symbol: str) -> dict[int, list[tuple[int, int]]]:
    """Store the case's stretches; return what each stored interval covers, in minutes."""
    covered: dict[int, list[tuple[int, int]]] = {}
    for minutes, stretches in case.stretches.items():
        series = truth(case.trades, minutes, symbol)
        for a, b in stretches:
            start = MONDAY + timedelta(minutes=a * minutes)
            end = MONDAY + timedelta(minutes=b * minutes)
            rows = [c for t, c in series.items() if start <= t < end]
            if case.omit_quiet:
                rows = [c for c in rows if c.volume > 0]
                store.upsert_candles(rows, coverage=[Coverage(symbol, minutes, start, end)])
                covered.setdefault(minutes, []).append((a * minutes, b * minutes))
            elif rows:
                store.upsert_candles(rows)
                first = int((rows[0].timestamp - MONDAY).total_seconds()) // 60
                covered.setdefault(minutes, []).append((first, b * minutes))
    return covered


def _same(got: Candle, want: Candle) -> None:
    with localcontext() as ctx:
        ctx.prec = 80
        for name in ("open", "high", "low", "close", "volume", "quote_volume"):
            assert getattr(got, name).quantize(Q18) == getattr(want, name).quantize(Q18), (
                name, got, want)
        assert got.trade_count == want.trade_count, (got, want)
        if want.volume:
            assert got.vwap == (want.quote_volume / want.volume).quantize(Q18), (got, want)
        else:
            assert got.vwap is None, got


def _check(case: Case, store: MarketStore) -> None:
    symbol = f"P{next(_names)}USD"
    covered = _store(case, store, symbol)
    for minutes in TARGETS:
        want = truth(case.trades, minutes, symbol)
        got = store.get_candles(symbol, minutes)
        assert [c.timestamp for c in got] == sorted(c.timestamp for c in got)
        for candle in got:
            assert candle.timestamp in want, (minutes, candle)
            _same(candle, want[candle.timestamp])
        # and nothing a stored series covers whole is missing when it had trades
        present = {c.timestamp for c in got}
        for bucket, candle in want.items():
            offset = int((bucket - MONDAY).total_seconds()) // 60
            whole = any(a <= offset and offset + minutes <= b
                        for source, ranges in covered.items() if minutes % source == 0
                        for a, b in ranges)
            if whole and candle.volume > 0:
                assert bucket in present, (minutes, bucket)


@pytest.fixture
def named_store(store_url: str) -> Iterator[MarketStore]:
    with open_store(store_url) as s:
        s.set_resolver(lambda name: name)
        yield s


@pytest.mark.parametrize("store_url", list(EXAMPLES), indirect=True)
def test_a_derived_candle_equals_the_one_aggregated_from_trades_or_is_absent(
        store_url: str, named_store: MarketStore) -> None:
    backend = store_url.split(":", 1)[0]

    @settings(max_examples=EXAMPLES[backend], deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(cases())
    def check(case: Case) -> None:
        _check(case, named_store)

    check()


# -- the cases a user met --------------------------------------------------------------------

def _between(series: dict[datetime, Candle], start: datetime, end: datetime) -> list[Candle]:
    return [c for t, c in sorted(series.items()) if start <= t < end]


def test_12h_comes_from_the_stored_hours_not_from_the_few_minutes_stored(
        named_store: MarketStore) -> None:
    days = 10
    trades = tape(11, 0.2, days * 1440)
    hours = truth(trades, 60, "XBTUSD", days * 1440)
    minutes = truth(trades, 1, "XBTUSD", days * 1440)
    named_store.upsert_candles(list(hours.values()))
    # 12 hours of 1m, from 06:00 on the last day: half of each of two 12h buckets
    last_day = MONDAY + timedelta(days=days - 1)
    named_store.upsert_candles(_between(minutes, last_day - timedelta(hours=6),
                                        last_day + timedelta(hours=6)))
    want = truth(trades, 720, "XBTUSD", days * 1440)
    got = named_store.get_candles("XBTUSD", "12h")
    assert [c.timestamp for c in got] == sorted(want)  # every bucket, none partial
    for candle in got:
        _same(candle, want[candle.timestamp])
    since = named_store.get_candles("XBTUSD", "12h", start=MONDAY + timedelta(days=3))
    assert len(since) == 2 * (days - 3)


def test_the_first_bucket_of_a_series_is_absent_until_it_is_whole(
        named_store: MarketStore) -> None:
    trades = tape(5, 0.0)
    hours = truth(trades, 60, "XBTUSD")
    named_store.upsert_candles(_between(hours, MONDAY + timedelta(hours=1),
                                        MONDAY + timedelta(hours=10)))
    got = named_store.get_candles("XBTUSD", "4h")
    # 00:00 holds 1 stored hour of 4, 08:00 2 of 4: only 04:00 is whole
    assert [c.timestamp for c in got] == [MONDAY + timedelta(hours=4)]
    _same(got[0], truth(trades, 240, "XBTUSD")[got[0].timestamp])
    named_store.upsert_candles([hours[MONDAY]])  # the missing first hour arrives late
    assert [c.timestamp.hour for c in named_store.get_candles("XBTUSD", "4h")] == [0, 4]


def test_a_bucket_whose_first_minutes_were_quiet_opens_at_its_first_trade(
        named_store: MarketStore) -> None:
    trades = [t for t in tape(3, 0.0) if t.timestamp.minute % 15 not in (0, 1)]
    minutes = truth(trades, 1, "XBTUSD")
    named_store.upsert_candles(list(minutes.values()))  # Kraken's zero-volume filler included
    got = named_store.get_candles("XBTUSD", "15m")
    assert len(got) == 16 * 4 - 1  # the series starts at 00:02: the first quarter is not whole
    for candle in got:
        window = [t.price for t in trades
                  if candle.timestamp <= t.timestamp < candle.close_time]
        before = [t.price for t in trades if t.timestamp < candle.timestamp]
        if not window:  # a quiet quarter (the tape's quiet hours): the carried close
            assert candle.volume == 0 and candle.open == candle.high == before[-1]
            continue
        assert candle.open == window[0]  # not the close carried into its quiet minutes
        assert (candle.high, candle.low, candle.close) == (max(window), min(window), window[-1])


def test_intervals_left_out_as_quiet_are_zero_volume_candles_at_the_carried_close(
        named_store: MarketStore) -> None:
    trades = [t for t in tape(4, 0.0) if t.timestamp.hour != 2]  # quiet 02:00-04:00
    minutes = truth(trades, 1, "XBTUSD")
    traded = [c for c in minutes.values() if c.volume > 0]  # as Kraken's OHLCVT files have it
    end = MONDAY + timedelta(hours=6)
    named_store.upsert_candles([c for c in traded if c.timestamp < end],
                               coverage=[Coverage("XBTUSD", 1, MONDAY, end)])
    hours = named_store.get_candles("XBTUSD", "1h")
    assert [c.timestamp.hour for c in hours] == [0, 1, 2, 3, 4, 5]
    for quiet in hours[2:4]:
        assert quiet.volume == 0 and quiet.trade_count == 0 and quiet.vwap is None
        assert quiet.open == quiet.high == quiet.low == quiet.close == hours[1].close
    # the 1m series itself reads back with the quiet minutes filled the same way
    assert len(named_store.get_candles("XBTUSD", "1m", end=end)) == 6 * 60
    # without the range vouched for, a hole is a hole: no hour across it is derived
    other = "YYYUSD"
    named_store.upsert_candles([dataclasses.replace(c, symbol=other) for c in traded
                                if c.timestamp < end])
    assert [c.timestamp.hour for c in named_store.get_candles(other, "1h")] == [0, 1, 4, 5]
    info = {r["symbol"]: r for r in named_store.info() if r["interval_minutes"] == 1}
    assert (info["XBTUSD"]["missing"], info["XBTUSD"]["gaps"]) == (0, 0)  # quiet, not missing
    assert (info[other]["missing"], info[other]["gaps"]) == (120, 1)


def test_latest_candles_inside_a_window_are_the_newest_in_it(named_store: MarketStore) -> None:
    hours = truth(tape(6, 0.0), 60, "XBTUSD")
    named_store.upsert_candles(list(hours.values()))
    noon = MONDAY + timedelta(hours=12)
    got = named_store.get_latest_candles("XBTUSD", "1h", 2, end=noon)
    assert [c.timestamp.hour for c in got] == [10, 11]
    got = named_store.get_latest_candles("XBTUSD", "1h", 3, start=MONDAY, end=noon)
    assert [c.timestamp.hour for c in got] == [9, 10, 11]
    got = named_store.get_latest_candles("XBTUSD", "4h", 5, start=MONDAY + timedelta(hours=1))
    assert [c.timestamp.hour for c in got] == [4, 8, 12]


class _OhlcAnswers:
    """Kraken's OHLC as some users saw it: intervals without trades simply left out."""

    def __init__(self, rows: list[list[object]], last: int) -> None:
        self.rows, self.last = rows, last

    def get_ohlc(self, pair: str, interval: int, since: int | None = None) -> dict[str, object]:
        rows = [r for r in self.rows if since is None or int(r[0]) > since]  # type: ignore[call-overload]
        return {"XXBTZUSD": rows, "last": self.last}


def test_an_ohlc_answer_vouches_for_the_quiet_intervals_it_left_out(
        named_store: MarketStore) -> None:
    from krakked.sync.ohlc import backfill_ohlc

    trades = tape(8, 0.0)
    hours = [c for c in truth(trades, 60, "XBTUSD").values() if c.volume > 0]  # 03:00, 10:00 out
    assert [c.timestamp.hour for c in hours][2:4] == [2, 4]

    def row(c: Candle) -> list[object]:
        return [int(c.timestamp.timestamp()), str(c.open), str(c.high), str(c.low),
                str(c.close), str(c.vwap), str(c.volume), c.trade_count]

    now = MONDAY + timedelta(hours=16, minutes=5)
    running = row(dataclasses.replace(hours[-1], timestamp=MONDAY + timedelta(hours=16)))
    answers = _OhlcAnswers([row(c) for c in hours] + [running],
                           int((MONDAY + timedelta(hours=15)).timestamp()))
    backfill_ohlc(answers, named_store, "XBTUSD", "1h", now=lambda: now)  # type: ignore[arg-type]
    got = named_store.get_candles("XBTUSD", "4h")
    assert [c.timestamp.hour for c in got] == [0, 4, 8, 12]  # 03:00 and 10:00 had no trades
    want = truth(trades, 240, "XBTUSD")
    for candle in got:
        _same(candle, want[candle.timestamp])


# -- where the coverage lives ------------------------------------------------------------------

def test_the_rollup_views_derive_only_buckets_the_minutes_cover(tmp_path: Path) -> None:
    hours = truth(tape(9, 0.0), 1, "XBTUSD")
    kept = [c for t, c in hours.items() if t != MONDAY + timedelta(hours=5, minutes=30)]
    with open_store(f"duckdb:///{tmp_path / 'm.duckdb'}") as store:
        store.set_resolver(lambda name: name)
        store.upsert_candles(kept)
        view = store._arrow(  # type: ignore[attr-defined]
            "SELECT timestamp FROM candles_1h ORDER BY timestamp")["timestamp"].to_pylist()
        assert [t.hour for t in view] == [h for h in range(16) if h != 5]
        assert [t.hour for t in view] == [
            c.timestamp.hour for c in store.get_candles("XBTUSD", "1h")]
        # a covered hour without any trade: left out of the view, a zero-volume candle in reads
        quiet = [c for c in truth(tape(9, 0.0), 1, "QQQUSD").values() if c.volume > 0]
        end = MONDAY + timedelta(hours=16)
        store.upsert_candles(quiet, coverage=[Coverage("QQQUSD", 1, MONDAY, end)])
        view = store._arrow(  # type: ignore[attr-defined]
            "SELECT timestamp FROM candles_1h WHERE symbol = 'QQQUSD' ORDER BY timestamp")
        assert [t.hour for t in view["timestamp"].to_pylist()] == [
            h for h in range(16) if h % 7 != 3]  # the tape is quiet at 03:00 and 10:00
        reads = store.get_candles("QQQUSD", "1h")
        assert len(reads) == 16 and reads[3].volume == reads[10].volume == 0


def test_a_file_store_records_coverage_only_when_the_rows_do_not_say_it(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    minutes = [c for c in truth(tape(4, 0.0), 1, "XBTUSD").values() if c.volume > 0]
    end = MONDAY + timedelta(hours=16)
    with open_store(f"parquet:///{tmp_path / 'pq'}") as store:
        store.upsert_candles(minutes, coverage=[Coverage("XBTUSD", 1, MONDAY, end)])
        meta = pq.read_metadata(tmp_path / "pq" / "1m" / "XBTUSD.parquet").metadata
        assert json.loads(meta[b"krakked.coverage"]) == [
            [int(MONDAY.timestamp()) * 10**6, int(end.timestamp()) * 10**6]]
    with open_store(f"csv:///{tmp_path / 'csv'}") as store:
        store.upsert_candles(minutes, coverage=[Coverage("XBTUSD", 1, MONDAY, end)])
        assert (tmp_path / "csv" / "1m" / "XBTUSD.csv.coverage.json").exists()
        assert len(store.get_candles("XBTUSD", "1h")) == 16
    with open_store(f"csv:///{tmp_path / 'csv'}") as again:  # read back from the sidecar
        assert len(again.get_candles("XBTUSD", "1h")) == 16


def _v1_duckdb(path: Path, candles: list[Candle]) -> None:
    """A store as version 1 of the schema left it (no coverage record)."""
    import duckdb

    from krakked.store.arrow import candles_to_arrow
    from krakked.store.duckdb import MIGRATIONS

    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    for statement in MIGRATIONS[0][2]:
        con.execute(statement)
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL, description VARCHAR)")
    con.execute("INSERT INTO schema_version VALUES (1, now(), 'v1')")
    batch = candles_to_arrow(candles)
    con.register("batch", batch)
    con.execute("INSERT INTO candles SELECT * FROM batch")
    con.close()


def test_a_version_1_store_is_migrated_to_cover_the_runs_it_holds(tmp_path: Path) -> None:
    minutes = truth(tape(2, 0.0), 1, "XBTUSD")
    kept = [c for t, c in minutes.items() if t.hour != 7]  # a hole at 07:00-08:00
    path = tmp_path / "old.duckdb"
    _v1_duckdb(path, kept)
    with open_store(f"duckdb:///{path}") as store:
        assert store.schema_version() == 3  # type: ignore[attr-defined]
        hours = [c.timestamp.hour for c in store.get_candles("XBTUSD", "1h")]
        assert hours == [h for h in range(16) if h != 7]
        (info,) = [r for r in store.info() if r["interval_minutes"] == 1]
        assert (info["missing"], info["gaps"]) == (60, 1)
