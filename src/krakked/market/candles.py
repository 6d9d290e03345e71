"""Trades and candles: the types, the timeframe table, trades -> candles, resampling, and the
closed-candle rule. Pure: no network, no database.

Aggregation is exact (``Decimal``): open = first, close = last, high = max, low = min, volume,
quote volume and trade count summed, vwap = quote volume / volume. Buckets are aligned to UTC
boundaries; weeks start on Monday 00:00 UTC, like Kraken's weekly candles.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import repeat
from typing import Any, Literal

from krakked.errors import UsageError

__all__ = [
    "API_INTERVALS",
    "TIMEFRAMES",
    "Candle",
    "HistoricalCandle",
    "HistoricalTrade",
    "SourceSegment",
    "bucket_ceil_us",
    "bucket_floor_us",
    "bucket_start",
    "candles_from_columns",
    "candles_from_trades",
    "closed_only",
    "epoch_us",
    "from_epoch_us",
    "interval_minutes",
    "merge_ranges",
    "plan_sources",
    "resample",
    "timeframe_name",
]

TIMEFRAMES: dict[str, int] = {
    "1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "12h": 720,
    "1d": 1440, "1w": 10080, "15d": 21600,
}
"""Timeframe name -> minutes. ``12h`` exists in Kraken's CSV files but not in its OHLC API."""

API_INTERVALS = frozenset({1, 5, 15, 30, 60, 240, 1440, 10080, 21600})
"""Intervals Kraken's REST ``OHLC`` endpoint serves (720 = 12h is not one of them)."""

_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # the first Monday after the epoch
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def interval_minutes(timeframe: str | int) -> int:
    """``"4h"`` -> 240; an int that is a known interval passes through; else a clear error."""
    if isinstance(timeframe, int) and not isinstance(timeframe, bool):
        if timeframe in TIMEFRAMES.values():
            return timeframe
    elif isinstance(timeframe, str):
        key = timeframe.strip().lower()
        if key in TIMEFRAMES:
            return TIMEFRAMES[key]
        if key.isdigit() and int(key) in TIMEFRAMES.values():
            return int(key)
    raise UsageError(
        f"unsupported timeframe {timeframe!r}; use one of {' '.join(TIMEFRAMES)}"
    )


def timeframe_name(minutes: int) -> str:
    """240 -> ``"4h"``."""
    for name, value in TIMEFRAMES.items():
        if value == minutes:
            return name
    raise UsageError(f"unsupported interval {minutes} minutes")


def bucket_start(ts: datetime, minutes: int) -> datetime:
    """The open time of the ``minutes`` bucket holding ``ts`` (UTC; weeks start Monday)."""
    if ts.tzinfo is None:
        raise UsageError(f"timestamp {ts.isoformat()} has no time zone: give UTC times")
    ts = ts.astimezone(UTC)
    if minutes == 10080:
        days = (ts - _MONDAY).days
        return _MONDAY + timedelta(days=(days // 7) * 7)
    seconds = int((ts - _EPOCH).total_seconds() // 60) // minutes * minutes * 60
    return _EPOCH + timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class HistoricalTrade:
    """One trade (time and sales). ``id`` is Kraken's per-pair trade id (None from CSV files)."""

    id: int | None
    symbol: str
    timestamp: datetime
    price: Decimal
    volume: Decimal
    side: Literal["buy", "sell"]
    order_type: str = "market"
    misc: str = ""

    @property
    def value(self) -> Decimal:
        """Trade value in the quote currency."""
        return self.price * self.volume


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV candle (open time ``timestamp``, UTC), exact decimals."""

    symbol: str
    timestamp: datetime
    interval_minutes: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal | None = None
    trade_count: int = 0
    vwap: Decimal | None = None
    source: str = "rest"

    @property
    def typical_price(self) -> Decimal:
        return (self.high + self.low + self.close) / 3

    @property
    def range(self) -> Decimal:
        return self.high - self.low

    @property
    def body_size(self) -> Decimal:
        return abs(self.close - self.open)

    @property
    def is_bullish(self) -> bool:
        return self.close > self.open

    @property
    def upper_wick(self) -> Decimal:
        return self.high - max(self.open, self.close)

    @property
    def lower_wick(self) -> Decimal:
        return min(self.open, self.close) - self.low

    @property
    def close_time(self) -> datetime:
        """When the candle closes (the next candle's open time)."""
        return self.timestamp + timedelta(minutes=self.interval_minutes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values: ISO timestamp, decimal strings (exact, never exponent form), ints."""
        d = asdict(self)
        d["timestamp"] = self.timestamp.isoformat()
        for key in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
            if d[key] is not None:
                d[key] = format(d[key], "f")
        return d

    @classmethod
    def from_row(cls, row: Sequence[Any] | Mapping[str, Any]) -> Candle:
        """The original system's constructor from a database row: a mapping by column name
        (a dict, an asyncpg ``Record``, a psycopg dict row; columns it lacks take their
        defaults) or a sequence in column order."""
        if isinstance(row, Mapping) or hasattr(row, "keys"):
            names = set(row.keys())  # type: ignore[union-attr] # (a Record's `in` looks at values)
            return cls(**{k: row[k] for k in CANDLE_COLUMNS if k in names})  # type: ignore[call-overload]
        return cls(*row)



HistoricalCandle = Candle
"""The original system's name for the full candle type (same class)."""

CANDLE_COLUMNS = ("symbol", "timestamp", "interval_minutes", "open", "high", "low", "close",
                  "volume", "quote_volume", "trade_count", "vwap", "source")
assert tuple(f.name for f in fields(Candle)) == CANDLE_COLUMNS == Candle.__slots__


class _Unfrozen:
    """``Candle``'s slots with plain attribute stores: built here, then made ``Candle``s.

    The frozen dataclass ``__init__`` stores each field through ``object.__setattr__`` (twelve
    calls a candle); these stores are plain slot writes. The instance then takes ``Candle`` as
    its class — allowed because the memory layout is the same (CPython checks it) — and from
    then on it is an ordinary, frozen ``Candle``.
    """

    __slots__ = CANDLE_COLUMNS

    def __init__(self, symbol: str, timestamp: datetime, interval_minutes: int, open: Decimal,
                 high: Decimal, low: Decimal, close: Decimal, volume: Decimal,
                 quote_volume: Decimal | None, trade_count: int, vwap: Decimal | None,
                 source: str) -> None:
        self.symbol = symbol
        self.timestamp = timestamp
        self.interval_minutes = interval_minutes
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.quote_volume = quote_volume
        self.trade_count = trade_count
        self.vwap = vwap
        self.source = source


def _slots_trick_works() -> bool:
    probe = _Unfrozen("X", _EPOCH, 1, *[Decimal(1)] * 5, None, 0, None, "rest")
    try:
        setattr(probe, "__class__", Candle)  # noqa: B010 - what candles_from_columns does
    except TypeError:  # an interpreter that refuses the class change: use the constructor
        return False
    return probe == Candle("X", _EPOCH, 1, *[Decimal(1)] * 5, None, 0, None, "rest")


_SLOTS_TRICK = _slots_trick_works()


def candles_from_columns(
    symbol: Sequence[str], timestamp: Sequence[datetime], interval_minutes: Sequence[int],
    open: Sequence[Decimal], high: Sequence[Decimal], low: Sequence[Decimal],
    close: Sequence[Decimal], volume: Sequence[Decimal], quote_volume: Sequence[Decimal | None],
    trade_count: Sequence[int], vwap: Sequence[Decimal | None], source: Sequence[str],
) -> list[Candle]:
    """``Candle``s from equal-length columns in field order — the same objects the constructor
    makes, built several times faster. The values are taken as they are (the caller gives
    aware UTC datetimes and exact ``Decimal``s), as the constructor does."""
    columns = (symbol, timestamp, interval_minutes, open, high, low, close, volume,
               quote_volume, trade_count, vwap, source)
    if len({len(c) for c in columns}) > 1:
        raise UsageError("candle columns must all have the same length")
    collect = gc.isenabled()
    # Nothing built here is garbage; the collector's passes over a growing heap of new
    # candles would otherwise cost more than building them.
    gc.disable()
    try:
        if not _SLOTS_TRICK:
            return list(map(Candle, *columns))
        out: list[Any] = list(map(_Unfrozen, *columns))
        deque(map(setattr, out, repeat("__class__"), repeat(Candle)), maxlen=0)
        return out
    finally:
        if collect:
            gc.enable()


def candles_from_trades(
    trades: Iterable[HistoricalTrade], minutes: int = 1, *, symbol: str | None = None,
    source: str = "trades",
) -> list[Candle]:
    """Aggregate trades into candles of ``minutes`` (only buckets that had trades), oldest first.

    Trades may come in any order; ties keep their given order for open/close.
    """
    ordered = sorted(trades, key=lambda t: (t.timestamp, t.id if t.id is not None else 0))
    out: list[Candle] = []
    current: list[HistoricalTrade] = []
    start: datetime | None = None
    for trade in ordered:
        b = bucket_start(trade.timestamp, minutes)
        if start is not None and b != start:
            out.append(_from_bucket(current, start, minutes, symbol, source))
            current = []
        start = b
        current.append(trade)
    if current and start is not None:
        out.append(_from_bucket(current, start, minutes, symbol, source))
    return out


def _from_bucket(trades: list[HistoricalTrade], start: datetime, minutes: int,
                 symbol: str | None, source: str) -> Candle:
    volume = sum((t.volume for t in trades), Decimal(0))
    quote = sum((t.price * t.volume for t in trades), Decimal(0))
    return Candle(
        symbol=symbol or trades[0].symbol,
        timestamp=start,
        interval_minutes=minutes,
        open=trades[0].price,
        high=max(t.price for t in trades),
        low=min(t.price for t in trades),
        close=trades[-1].price,
        volume=volume,
        quote_volume=quote,
        trade_count=len(trades),
        vwap=(quote / volume) if volume else None,
        source=source,
    )


def resample(candles: Iterable[Candle], minutes: int) -> list[Candle]:
    """Aggregate finer candles (oldest first) into ``minutes`` buckets, exactly.

    Inputs without volume (Kraken's filler candles for intervals without trades, which repeat the
    previous close) count for the close only; a bucket without any volume is a zero-volume candle
    at the carried close. vwap is volume-weighted from each input's quote volume (or vwap ×
    volume when quote volume is missing).
    """
    out: list[Candle] = []
    group: list[Candle] = []
    start: datetime | None = None
    for c in candles:
        if c.interval_minutes > minutes or minutes % c.interval_minutes:
            raise UsageError(
                f"cannot build {minutes}m candles from {c.interval_minutes}m candles"
            )
        b = bucket_start(c.timestamp, minutes)
        if start is not None and b != start:
            out.append(_merge(group, start, minutes))
            group = []
        start = b
        group.append(c)
    if group and start is not None:
        out.append(_merge(group, start, minutes))
    return out


def _quote(c: Candle) -> Decimal | None:
    if c.quote_volume is not None:
        return c.quote_volume
    if c.vwap is not None:
        return c.vwap * c.volume
    return None


def _merge(group: list[Candle], start: datetime, minutes: int) -> Candle:
    # Kraken answers an interval without trades with a zero-volume candle whose prices carry the
    # previous close: such a candle says nothing about the bucket's open, high or low.
    traded = [c for c in group if c.volume > 0]
    volume = sum((c.volume for c in group), Decimal(0))
    quotes = [_quote(c) for c in traded]
    quote = sum(quotes, Decimal(0)) if all(q is not None for q in quotes) else None  # type: ignore[arg-type]
    close = group[-1].close
    return Candle(
        symbol=group[0].symbol,
        timestamp=start,
        interval_minutes=minutes,
        open=traded[0].open if traded else close,
        high=max(c.high for c in traded) if traded else close,
        low=min(c.low for c in traded) if traded else close,
        close=close,
        volume=volume,
        quote_volume=quote,
        trade_count=sum(c.trade_count for c in group),
        vwap=(quote / volume) if quote is not None and volume else None,
        source=group[0].source if len({c.source for c in group}) == 1 else "trades",
    )


def closed_only(candles: Iterable[Candle], now: datetime) -> Iterator[Candle]:
    """Only candles whose interval has ended by ``now`` (the running candle is never stored)."""
    for c in candles:
        if c.close_time <= now:
            yield c


# -- which stored series serves which bucket ------------------------------------------------------

_US_PER_MINUTE = 60_000_000
_MONDAY_US = 4 * 86_400 * 1_000_000  # 1970-01-05 00:00 UTC


def epoch_us(ts: datetime) -> int:
    """Microseconds since the epoch of an aware (or UTC-naive) datetime, exactly."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> datetime:
    """The aware UTC datetime ``us`` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=us)


def bucket_floor_us(us: int, minutes: int) -> int:
    """The open time (epoch µs) of the ``minutes`` bucket holding ``us`` (weeks start Monday)."""
    width = minutes * _US_PER_MINUTE
    origin = _MONDAY_US if minutes == 10080 else 0
    return us - (us - origin) % width


def bucket_ceil_us(us: int, minutes: int) -> int:
    """The first ``minutes`` bucket open time (epoch µs) at or after ``us``."""
    floor = bucket_floor_us(us, minutes)
    return floor if floor == us else floor + minutes * _US_PER_MINUTE


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """Buckets of one target interval served by one stored series.

    Every ``minutes`` bucket opening in ``[start_us, end_us)`` (epoch µs, bucket-aligned) lies
    wholly inside one recorded coverage range of the ``source_minutes`` series, which began at
    ``covered_from_us``: each of its source intervals is either stored or had no trades.
    ``source_minutes == minutes`` means the series' own candles are read as they are.
    """

    source_minutes: int
    minutes: int
    start_us: int
    end_us: int
    covered_from_us: int

    @property
    def buckets(self) -> int:
        """How many buckets the segment spans."""
        return (self.end_us - self.start_us) // (self.minutes * _US_PER_MINUTE)


def plan_sources(
    minutes: int,
    coverage: Mapping[int, Sequence[tuple[int, int]]],
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[SourceSegment]:
    """Which stored series serves each ``minutes`` bucket opening in ``[start_us, end_us)``.

    ``coverage`` maps a stored interval to its recorded coverage ranges ``[from, until)`` (epoch
    µs; every interval opening inside is stored or had no trades). A bucket is served only by a
    series whose coverage spans the whole bucket; among those, the series of ``minutes`` itself
    (Kraken's own candles) wins, then the coarsest finer series that divides ``minutes``. A
    bucket no series covers appears in no segment: absent, never partial. Segments come back
    in time order, disjoint.
    """
    lo = bucket_ceil_us(start_us, minutes) if start_us is not None else None
    hi = bucket_ceil_us(end_us, minutes) if end_us is not None else None
    candidates = sorted((i for i in coverage if i == minutes or (i < minutes and minutes % i == 0)),
                        key=lambda i: (i != minutes, -i))
    taken: list[tuple[int, int]] = []  # disjoint, sorted ranges already served
    segments: list[SourceSegment] = []
    for source in candidates:
        for covered_from, covered_until in coverage[source]:
            first = bucket_ceil_us(covered_from, minutes)
            stop = bucket_floor_us(covered_until, minutes)  # buckets b with b + width <= until
            if lo is not None:
                first = max(first, lo)
            if hi is not None:
                stop = min(stop, hi)
            for a, b in _subtract((first, stop), taken):
                segments.append(SourceSegment(source, minutes, a, b, covered_from))
                taken = _insert(taken, (a, b))
    return sorted(segments, key=lambda s: s.start_us)


def _subtract(piece: tuple[int, int], taken: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``piece`` minus the (sorted, disjoint) ``taken`` ranges; empty pieces dropped."""
    a, b = piece
    out: list[tuple[int, int]] = []
    for ta, tb in taken:
        if tb <= a or ta >= b:
            continue
        if ta > a:
            out.append((a, ta))
        a = max(a, tb)
        if a >= b:
            break
    if a < b:
        out.append((a, b))
    return out


def _insert(ranges: list[tuple[int, int]], piece: tuple[int, int]) -> list[tuple[int, int]]:
    return sorted([*ranges, piece])


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ``[from, until)`` ranges merged, in order; empty ones dropped."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
