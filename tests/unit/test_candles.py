"""Candles: timeframes, UTC bucketing (weeks on Monday), exact aggregation, resampling, the
closed-candle rule, and Kraken OHLC parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krakked.errors import MalformedResponseError, UsageError
from krakked.market.candles import (
    TIMEFRAMES,
    Candle,
    HistoricalTrade,
    bucket_start,
    candles_from_trades,
    closed_only,
    interval_minutes,
    resample,
    timeframe_name,
)
from krakked.sync.ohlc import parse_ohlc

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday


def test_timeframe_table_matches_kraken_minutes() -> None:
    assert TIMEFRAMES == {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240,
                          "12h": 720, "1d": 1440, "1w": 10080, "15d": 21600}
    assert interval_minutes("4h") == 240 and interval_minutes(60) == 60
    assert timeframe_name(1440) == "1d"
    with pytest.raises(UsageError, match="unsupported timeframe '2h'"):
        interval_minutes("2h")


def test_buckets_align_to_utc_and_weeks_start_on_monday() -> None:
    wed = datetime(2026, 3, 4, 13, 47, 12, tzinfo=UTC)
    assert bucket_start(wed, 1) == datetime(2026, 3, 4, 13, 47, tzinfo=UTC)
    assert bucket_start(wed, 240) == datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    assert bucket_start(wed, 1440) == datetime(2026, 3, 4, tzinfo=UTC)
    assert bucket_start(wed, 10080) == T0
    assert bucket_start(wed, 10080).weekday() == 0
    with pytest.raises(UsageError, match="no time zone"):
        bucket_start(wed.replace(tzinfo=None), 1)


def trade(i: int, seconds: float, price: str, volume: str) -> HistoricalTrade:
    return HistoricalTrade(i, "XBTUSD", T0 + timedelta(seconds=seconds), Decimal(price),
                           Decimal(volume), "buy")


def test_trades_aggregate_exactly_into_candles() -> None:
    trades = [trade(1, 5, "100.1", "0.1"), trade(2, 20, "100.3", "0.2"),
              trade(3, 59, "99.9", "0.3"), trade(4, 61, "101", "1")]
    c1, c2 = candles_from_trades(trades, 1)
    assert (c1.open, c1.high, c1.low, c1.close) == (Decimal("100.1"), Decimal("100.3"),
                                                    Decimal("99.9"), Decimal("99.9"))
    assert c1.volume == Decimal("0.6") and c1.trade_count == 3
    assert c1.quote_volume == Decimal("10.01") + Decimal("20.06") + Decimal("29.97")
    assert c1.vwap == c1.quote_volume / c1.volume
    assert c2.timestamp == T0 + timedelta(minutes=1) and c2.trade_count == 1


def test_candle_properties_and_to_dict() -> None:
    c = Candle("XBTUSD", T0, 60, Decimal("10"), Decimal("14"), Decimal("8"), Decimal("12"),
               Decimal("3"), Decimal("33"), 4, Decimal("11"))
    assert c.typical_price == Decimal("34") / 3
    assert (c.range, c.body_size, c.is_bullish) == (Decimal("6"), Decimal("2"), True)
    assert (c.upper_wick, c.lower_wick) == (Decimal("2"), Decimal("2"))
    assert c.to_dict()["open"] == "10" and c.to_dict()["timestamp"] == T0.isoformat()
    assert c.close_time == T0 + timedelta(hours=1)


def test_closed_only_drops_the_running_candle() -> None:
    cs = [Candle("X", T0 + timedelta(minutes=i), 1, *(Decimal(1),) * 5) for i in range(3)]
    now = T0 + timedelta(minutes=2, seconds=30)
    assert [c.timestamp for c in closed_only(cs, now)] == [T0, T0 + timedelta(minutes=1)]


def test_resample_refuses_coarser_or_misaligned_sources() -> None:
    c = Candle("X", T0, 60, *(Decimal(1),) * 5)
    with pytest.raises(UsageError, match="cannot build 30m"):
        resample([c], 30)


prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("100000"), places=4)
volumes = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("50"), places=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * 86400 - 1), prices, volumes), min_size=1,
                max_size=150))
def test_resampling_1m_to_1h_equals_building_1h_from_the_same_trades(rows) -> None:
    trades = [trade(i, s, str(p), str(v)) for i, (s, p, v) in enumerate(sorted(rows))]
    direct = candles_from_trades(trades, 60)
    via_minutes = resample(candles_from_trades(trades, 1), 60)
    assert [(c.timestamp, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
             c.trade_count) for c in via_minutes] == [
        (c.timestamp, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trade_count)
        for c in direct]
    for a, b in zip(via_minutes, direct, strict=True):
        assert a.vwap == b.vwap


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * 86400), prices, volumes), min_size=1,
                max_size=80))
def test_weekly_resampling_is_monday_aligned_and_exact(rows) -> None:
    trades = [trade(i, s, str(p), str(v)) for i, (s, p, v) in enumerate(sorted(rows))]
    weeks = resample(candles_from_trades(trades, 60), 10080)
    assert all(c.timestamp.weekday() == 0 and c.timestamp.hour == 0 for c in weeks)
    assert sum(c.volume for c in weeks) == sum(t.volume for t in trades)


def test_parse_ohlc_drops_running_bar_dedups_and_orders() -> None:
    now = datetime.fromtimestamp(1688671300, UTC)
    result = {
        "XXBTZUSD": [
            [1688671140, "30306.1", "30306.2", "30305.7", "30305.7", "30306.1", "3.39243896", 23],
            [1688671080, "1", "1", "1", "1", "1", "1", 1],
            [1688671140, "30306.1", "30306.2", "30305.7", "30305.7", "30306.1", "3.39243896", 23],
            [1688671200, "30304.5", "30304.5", "30300.0", "30300.0", "30300.0", "4.4", 18],
            [1688671260, "30300.0", "30301.0", "30299.0", "30300.5", "30300.2", "0.1", 2],
        ],
        "last": "1688671200",
    }
    candles, last = parse_ohlc(result, "XBTUSD", 1, now)
    assert last == 1688671200
    assert [int(c.timestamp.timestamp()) for c in candles] == [1688671080, 1688671140,
                                                              1688671200]
    assert candles[1].volume == Decimal("3.39243896")
    assert candles[1].quote_volume == Decimal("30306.1") * Decimal("3.39243896")


def test_parse_ohlc_rejects_a_malformed_result() -> None:
    with pytest.raises(MalformedResponseError):
        parse_ohlc({"last": 1}, "XBTUSD", 1, T0)
    with pytest.raises(MalformedResponseError):
        parse_ohlc({"X": [[1, "a"]], "Y": []}, "XBTUSD", 1, T0)


def test_candles_read_back_from_arrow_keep_tidy_exact_decimals() -> None:
    from krakked.store.arrow import arrow_to_candles, candles_to_arrow

    c = Candle("XBTUSD", T0, 1, Decimal("30306.1"), Decimal("100"), Decimal("0.00000001"),
               Decimal("-0.5"), Decimal("0"), None, 7, Decimal("1.25"), "rest")
    (back,) = arrow_to_candles(candles_to_arrow([c]))
    assert back == c
    row = back.to_dict()
    assert [row[k] for k in ("open", "high", "low", "close", "volume")] == [
        "30306.1", "100", "0.00000001", "-0.5", "0"]
    assert back.quote_volume is None and back.timestamp == T0 and back.timestamp.tzinfo
    assert arrow_to_candles(candles_to_arrow([])) == []


def _column_candles() -> list[Candle]:
    return [
        Candle("XBTUSD", T0 + timedelta(minutes=i), 1, Decimal("30306.1"), Decimal("30310"),
               Decimal("30300.25"), Decimal(i), Decimal("1.5"), None if i % 2 else Decimal(7),
               i, Decimal("30305"), "trades" if i % 2 else "rest")
        for i in range(5)
    ]


def test_candles_built_from_columns_are_ordinary_frozen_candles() -> None:
    import copy
    import dataclasses
    import pickle

    from krakked.market.candles import CANDLE_COLUMNS, candles_from_columns

    want = _column_candles()
    got = candles_from_columns(*([getattr(c, k) for c in want] for k in CANDLE_COLUMNS))
    assert got == want
    assert [type(c) for c in got] == [Candle] * 5
    assert [hash(c) for c in got] == [hash(c) for c in want]
    assert [c.to_dict() for c in got] == [c.to_dict() for c in want]
    assert [repr(c) for c in got] == [repr(c) for c in want]
    assert pickle.loads(pickle.dumps(got)) == want  # noqa: S301 - our own bytes
    assert copy.deepcopy(got) == want
    assert dataclasses.replace(got[1], trade_count=9) == dataclasses.replace(want[1],
                                                                              trade_count=9)
    assert dataclasses.asdict(got[2]) == dataclasses.asdict(want[2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].close = Decimal(1)  # type: ignore[misc]
    for candle in (got[0], want[0]):  # no new attributes either (the same refusal)
        with pytest.raises((AttributeError, TypeError)):
            candle.extra = 1  # type: ignore[attr-defined]
    assert candles_from_columns(*([] for _ in CANDLE_COLUMNS)) == []


def test_candles_from_columns_refuses_columns_of_different_lengths() -> None:
    from krakked.market.candles import CANDLE_COLUMNS, candles_from_columns

    columns = [[getattr(c, k) for c in _column_candles()] for k in CANDLE_COLUMNS]
    columns[5] = columns[5][:4]
    with pytest.raises(UsageError, match="same length"):
        candles_from_columns(*columns)


@pytest.mark.parametrize("enabled", [True, False])
def test_building_candles_leaves_garbage_collection_as_it_was(enabled: bool) -> None:
    import gc

    from krakked.market.candles import CANDLE_COLUMNS, candles_from_columns

    columns = [[getattr(c, k) for c in _column_candles()] for k in CANDLE_COLUMNS]
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        candles_from_columns(*columns)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


EDGE_DECIMALS = ["0", "1E-18", "99999999999999999999.999999999999999999",
                 "-99999999999999999999.999999999999999999", "1E-10", "-1.5E-7", "0.000001",
                 "100", "-0.5", "30306.1", "12345678.123456789012345678", "1E+2"]
"""Values a DECIMAL(38,18) column holds: zero, the smallest step, both extremes, values that
Arrow writes in exponent form (under 1e-6), and integers."""


def _tidy_text(value: Decimal) -> str:
    """The promised text: positional, no trailing zeros, no trailing point."""
    text = format(value, "f")
    return (text.rstrip("0").rstrip(".") or "0") if "." in text else text


@pytest.mark.parametrize("repeat", [1, 3000])  # 3000 x 12 rows: the threaded path
def test_arrow_candles_keep_edge_decimals_exact_tidy_and_nulls(repeat: int) -> None:
    import pyarrow as pa

    from krakked.store.arrow import CANDLE_SCHEMA, arrow_to_candles

    values = [Decimal(v) for v in EDGE_DECIMALS] * repeat
    n = len(values)
    stamps = [datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(9999, 12, 31, 23, 59, tzinfo=UTC), T0 + timedelta(microseconds=1)]
    rows = {
        "symbol": ["XBTUSD", "ETHUSD"] * (n // 2), "timestamp": (stamps * n)[:n],
        "interval_minutes": [1, 60] * (n // 2),
        "open": values, "high": values[::-1], "low": values[1:] + values[:1],
        "close": values[2:] + values[:2], "volume": values[3:] + values[:3],
        "quote_volume": [None if i % 5 == 0 else v for i, v in enumerate(values)],
        "trade_count": [None if i % 7 == 0 else i for i in range(n)],
        "vwap": [None if i % 3 else v for i, v in enumerate(values)],
        "source": [None if i % 11 == 0 else "rest" for i in range(n)],
    }
    got = arrow_to_candles(pa.table(rows, schema=CANDLE_SCHEMA))
    want = [Candle(*(rows[k][i] for k in rows)) for i in range(n)]
    assert got == want
    for g, w in zip(got, want, strict=True):
        assert g.timestamp.utcoffset() == timedelta(0)
        for k in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
            value = getattr(w, k)
            assert g.to_dict()[k] == (None if value is None else _tidy_text(value)), (k, value)
            if value is not None:  # tidy Decimals: no trailing zeros kept
                assert str(getattr(g, k)) == str(Decimal(_tidy_text(value))), (k, value)
        assert (g.trade_count, g.source) == (w.trade_count, w.source)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.decimals(min_value=Decimal("-99999999999999999999.999999999999999999"),
                            max_value=Decimal("99999999999999999999.999999999999999999"),
                            places=18, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=40))
def test_any_stored_decimal_reads_back_exact_and_tidy(values: list[Decimal]) -> None:
    import pyarrow as pa

    from krakked.store.arrow import CANDLE_SCHEMA, arrow_to_candles

    n = len(values)
    rows = {k: [None] * n for k in CANDLE_SCHEMA.names}
    rows |= {"symbol": ["X"] * n, "timestamp": [T0] * n, "interval_minutes": [1] * n}
    for k in ("open", "high", "low", "close", "volume", "vwap"):
        rows[k] = values
    got = arrow_to_candles(pa.table(rows, schema=CANDLE_SCHEMA))
    assert [c.close for c in got] == values
    assert [c.to_dict()["vwap"] for c in got] == [_tidy_text(v) for v in values]


def test_candles_with_the_largest_decimals_convert_to_arrow() -> None:
    from krakked.store.arrow import arrow_to_candles, candles_to_arrow

    top = Decimal("99999999999999999999.999999999999999999")
    bottom = Decimal("-99999999999999999999.999999999999999999")  # (-top would round to 28)
    c = Candle("XBTUSD", T0, 1, top, top, bottom, Decimal("1E-18"), top, top, 1, top, "rest")
    assert arrow_to_candles(candles_to_arrow([c])) == [c]


def test_a_decimal_too_large_for_the_store_is_a_clear_error() -> None:
    from krakked.store.arrow import candles_to_arrow

    c = Candle("XBTUSD", T0, 1, Decimal("1E+20"), Decimal(1), Decimal(1), Decimal(1),
               Decimal(1))
    with pytest.raises(UsageError, match=r"open.*DECIMAL\(38,18\)"):
        candles_to_arrow([c])


def test_a_candle_is_built_from_a_database_row_as_the_original_api_did() -> None:
    row = {"symbol": "XBTUSD", "timestamp": datetime(2024, 1, 1, tzinfo=UTC),
           "interval_minutes": 1, "open": Decimal("1"), "high": Decimal("2"),
           "low": Decimal("0.5"), "close": Decimal("1.5"), "volume": Decimal("3"),
           "trade_count": 4, "vwap": Decimal("1.2"), "extra": "ignored"}
    candle = Candle.from_row(row)
    assert (candle.close, candle.trade_count, candle.quote_volume) == (Decimal("1.5"), 4, None)
    values = [row[k] for k in ("symbol", "timestamp", "interval_minutes", "open", "high", "low",
                               "close", "volume")]
    assert Candle.from_row(values) == Candle(*values)
