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
    from krakked.store.base import arrow_to_candles, candles_to_arrow

    c = Candle("XBTUSD", T0, 1, Decimal("30306.1"), Decimal("100"), Decimal("0.00000001"),
               Decimal("-0.5"), Decimal("0"), None, 7, Decimal("1.25"), "rest")
    (back,) = arrow_to_candles(candles_to_arrow([c]))
    assert back == c
    row = back.to_dict()
    assert [row[k] for k in ("open", "high", "low", "close", "volume")] == [
        "30306.1", "100", "0.00000001", "-0.5", "0"]
    assert back.quote_volume is None and back.timestamp == T0 and back.timestamp.tzinfo
    assert arrow_to_candles(candles_to_arrow([])) == []
