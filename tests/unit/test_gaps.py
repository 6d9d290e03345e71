"""The pure side of gaps: ``DataGap`` (the original's names), spans like ``--min-gap 2m``, the
holes between coverage ranges, and which gaps Kraken's 1m OHLC still reaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from krakked.errors import UsageError
from krakked.market.gaps import (
    DataGap,
    coverage_holes,
    fill_method,
    format_span,
    merge_spans,
    ohlc_reaches,
    parse_span,
)

T = datetime(2026, 3, 2, 10, tzinfo=UTC)
M = 60_000_000  # a minute in µs


def gap(start: datetime, end: datetime, data_type: str = "candles_1m") -> DataGap:
    return DataGap("XBTUSD", data_type, start, end)


def test_data_gap_keeps_the_original_fields_and_properties() -> None:
    g = DataGap("XBTUSD", "candles_1m", T, T + timedelta(hours=11, minutes=59))
    assert g.duration == timedelta(hours=11, minutes=59)
    assert (g.is_small, g.candles_needed, round(g.hours, 4)) == (True, 719, 11.9833)
    big = DataGap("XBTUSD", "trades", T, T + timedelta(hours=12),
                  timedelta(hours=12))  # the original took duration in the constructor
    assert (big.is_small, big.candles_needed, big.hours) == (False, 720, 12.0)
    assert big == DataGap("XBTUSD", "trades", T, T + timedelta(hours=12))


@pytest.mark.parametrize(("start", "end", "duration", "fragment"), [
    (T, T - timedelta(seconds=1), None, "ends before it starts"),
    (T, T + timedelta(hours=1), timedelta(hours=2), "is not end_time - start_time"),
    (T.replace(tzinfo=None), T, None, "aware UTC datetime"),
])
def test_an_impossible_gap_is_a_usage_error(start: datetime, end: datetime,
                                            duration: timedelta | None, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        DataGap("XBTUSD", "trades", start, end, duration)


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", timedelta(seconds=90)), ("2m", timedelta(minutes=2)), ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)), ("1w", timedelta(weeks=1)), (" 1.5H ", timedelta(minutes=90)),
    (2, timedelta(minutes=2)), (timedelta(seconds=5), timedelta(seconds=5)),
])
def test_spans_read_like_timeframes(text: object, expected: timedelta) -> None:
    assert parse_span(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["2x", "", "m", "2 minutes", "0m", "-1m", 0, True, None])
def test_a_span_that_is_not_one_names_the_flag(bad: object) -> None:
    with pytest.raises(UsageError, match="--min-gap"):
        parse_span(bad, "--min-gap")  # type: ignore[arg-type]


def test_spans_print_short() -> None:
    assert [format_span(timedelta(seconds=s)) for s in (0.5, 42, 90, 3600, 52_200, 183_600)] \
        == ["0.5s", "42s", "1m 30s", "1h", "14h 30m", "2d 3h"]


def test_holes_lie_between_ranges_and_after_the_last_never_before_the_first() -> None:
    ranges = [(0, 10 * M), (12 * M, 20 * M), (25 * M, 30 * M)]
    assert coverage_holes(ranges) == [(10 * M, 12 * M), (20 * M, 25 * M)]
    assert coverage_holes(ranges, 40 * M) == [(10 * M, 12 * M), (20 * M, 25 * M),
                                             (30 * M, 40 * M)]
    # longer than min_gap only: 2 minutes is not longer than 2 minutes
    assert coverage_holes(ranges, 40 * M, 2 * M) == [(20 * M, 25 * M), (30 * M, 40 * M)]
    assert coverage_holes([], 40 * M) == []
    assert coverage_holes(ranges, 30 * M) == [(10 * M, 12 * M), (20 * M, 25 * M)]


def test_ohlc_reaches_its_latest_720_bars_only() -> None:
    now = T + timedelta(seconds=30)  # the running bar opens at T
    oldest = T - timedelta(minutes=719)
    assert ohlc_reaches(oldest, T, now)
    assert not ohlc_reaches(oldest - timedelta(minutes=1), oldest + timedelta(minutes=5), now)
    assert not ohlc_reaches(T - timedelta(minutes=5), T + timedelta(minutes=1), now)  # running
    assert fill_method(gap(T - timedelta(hours=2), T), now) == "ohlc"
    assert fill_method(gap(T - timedelta(hours=2), T, "trades"), now) == "trades"
    assert fill_method(gap(T - timedelta(days=2), T - timedelta(days=2) + timedelta(minutes=5)),
                       now) == "trades"


def test_overlapping_spans_merge_with_their_details() -> None:
    assert merge_spans([(5, 9, "b"), (0, 5, "a"), (20, 30, "c"), (25, 26, "c")]) == [
        (0, 9, "a; b"), (20, 30, "c")]
