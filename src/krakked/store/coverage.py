"""Coverage: the ranges a writer vouches for, as the store records them.

``Coverage`` (candles of one interval) and ``TradeCoverage`` (trades) are what writers give;
``batch_coverage`` works out what a candle batch vouches for by itself (its runs of consecutive
candles); ``minutes_to_build`` is where 1-minute candles can be built from recorded trade
coverage. Times are epoch microseconds, ranges ``[from, until)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import UsageError
from krakked.market.candles import (
    bucket_ceil_us,
    bucket_floor_us,
    epoch_us,
    interval_minutes,
    merge_ranges,
)
from krakked.store.arrow import TS

__all__ = [
    "Coverage",
    "TradeCoverage",
    "batch_coverage",
    "minutes_to_build",
    "trade_coverage_ranges",
    "whole_minutes",
]


@dataclass(frozen=True)
class Coverage:
    """A range a writer vouches for: every ``interval_minutes`` interval of ``symbol`` opening in
    ``[start, end)`` is either in the batch written with it or had no trades.

    Kraken's OHLC may leave out intervals without trades and its OHLCVT files always do, so a
    writer that fetched or read a whole range says so; the store records it in
    ``candle_coverage`` with the data, and derives a higher timeframe only from buckets such a
    range spans. Without one, a write vouches for the runs of consecutive candles it holds.
    Both ends must be open times of that interval (bucket-aligned).
    """

    symbol: str
    interval_minutes: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class TradeCoverage:
    """A range a trades writer vouches for: every trade of ``symbol`` with ``start <= time <
    end`` is in the batch written with it (or already stored).

    The store records it in ``trade_coverage`` with the trades; 1-minute candles are built
    from trades only for the whole minutes such ranges span (a minute partly known would give
    a wrong candle), and the holes between ranges are the gaps ``krakked gaps`` reports.
    """

    symbol: str
    start: datetime
    end: datetime


def trade_coverage_ranges(coverage: Iterable[TradeCoverage]) -> dict[str, list[tuple[int, int]]]:
    """``TradeCoverage`` -> symbol -> merged ``[from, until)`` epoch-µs ranges."""
    out: dict[str, list[tuple[int, int]]] = {}
    for cov in coverage:
        if cov.end < cov.start:
            raise UsageError(f"trade coverage of {cov.symbol} ends before it starts: "
                             f"{cov.start.isoformat()} .. {cov.end.isoformat()}")
        out.setdefault(cov.symbol, []).append((epoch_us(cov.start), epoch_us(cov.end)))
    return {symbol: merge_ranges(ranges) for symbol, ranges in out.items()}


def whole_minutes(ranges: Sequence[tuple[int, int]], minutes: int = 1
                  ) -> list[tuple[int, int]]:
    """The whole ``minutes`` buckets inside each ``[from, until)`` range (epoch µs), as
    ranges."""
    out = [(bucket_ceil_us(a, minutes), bucket_floor_us(b, minutes)) for a, b in ranges]
    return [(a, b) for a, b in out if b > a]


def minutes_to_build(covered: Sequence[tuple[int, int]], window: tuple[int, int] | None,
                     minutes: int = 1) -> list[tuple[int, int]]:
    """The whole ``minutes`` buckets of the trade coverage ``covered`` inside ``window``
    (epoch µs, widened to whole buckets): where candles can be built from trades."""
    whole = whole_minutes(covered, minutes)
    if window is None:
        return whole
    a0, b0 = bucket_floor_us(window[0], minutes), bucket_ceil_us(window[1], minutes)
    return [(max(a, a0), min(b, b0)) for a, b in whole if min(b, b0) > max(a, a0)]



def batch_coverage(table: pa.Table, explicit: Iterable[Coverage] = ()
                   ) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """What a candle batch (``CANDLE_SCHEMA``) vouches for, per (symbol, interval): the runs of
    consecutive candles it holds plus the ``explicit`` ranges, merged (epoch µs,
    ``[from, until)``). A misaligned explicit range is an ``UsageError``."""
    out: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for cov in explicit:
        minutes = interval_minutes(cov.interval_minutes)
        a, b = epoch_us(cov.start), epoch_us(cov.end)
        if bucket_floor_us(a, minutes) != a or bucket_floor_us(b, minutes) != b or b < a:
            raise UsageError(
                f"coverage of {cov.symbol} {minutes}m must run between {minutes}m open times: "
                f"{cov.start.isoformat()} .. {cov.end.isoformat()}")
        out.setdefault((cov.symbol, minutes), []).append((a, b))
    n = table.num_rows
    if n:
        symbols, minutes_col = table["symbol"], table["interval_minutes"]
        stamps = pc.cast(table["timestamp"].cast(TS), pa.int64()).combine_chunks()
        one_series = (pc.count_distinct(symbols).as_py() == 1
                      and pc.count_distinct(minutes_col).as_py() == 1)
        if not one_series or not pc.all(pc.greater_equal(stamps.slice(1),
                                                          stamps.slice(0, n - 1))).as_py():
            order = pc.sort_indices(table, sort_keys=[("symbol", "ascending"),
                                                      ("interval_minutes", "ascending"),
                                                      ("timestamp", "ascending")])
            symbols, minutes_col = symbols.take(order), minutes_col.take(order)
            stamps = stamps.take(order)
        symbols = symbols.combine_chunks()
        widths = pc.multiply(minutes_col.combine_chunks().cast(pa.int64()), 60_000_000)
        step = pc.subtract(stamps.slice(1), stamps.slice(0, n - 1))
        same = pc.and_(pc.equal(symbols.slice(1), symbols.slice(0, n - 1)),
                       pc.equal(widths.slice(1), widths.slice(0, n - 1)))
        joined = pc.and_(same, pc.or_(pc.equal(step, 0), pc.equal(step, widths.slice(1))))
        ends = [i + 1 for i in pc.indices_nonzero(pc.invert(joined)).to_pylist()] + [n]
        first = 0
        for end in ends:
            key = (symbols[first].as_py(), widths[first].as_py() // 60_000_000)
            out.setdefault(key, []).append(
                (stamps[first].as_py(), stamps[end - 1].as_py() + widths[end - 1].as_py()))
            first = end
    return {key: merge_ranges(ranges) for key, ranges in out.items()}
