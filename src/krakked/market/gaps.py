"""Gaps in stored history: the ``DataGap`` type, spans such as ``--min-gap 2m``, and the holes
between recorded coverage ranges. Pure: no network, no database.

A gap is a range the store cannot vouch for: no recorded coverage says its 1-minute candles
(``candles_1m``) or its trades (``trades``) are all there. Minutes without trades inside a
covered range are not gaps — Kraken's OHLC and CSV files leave quiet minutes out, and the
coverage says they were quiet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from krakked.errors import UsageError

__all__ = [
    "DATA_TYPES",
    "DEFAULT_MIN_GAP",
    "OHLC_REACH_MINUTES",
    "SMALL_GAP",
    "DataGap",
    "coverage_holes",
    "fill_method",
    "format_span",
    "merge_spans",
    "ohlc_reaches",
    "parse_span",
]

SMALL_GAP = timedelta(hours=12)
"""Below this a 1m candle gap is "small": Kraken's 1m OHLC (720 bars) can still serve it."""

DEFAULT_MIN_GAP = timedelta(minutes=2)
"""The original gap filler's ``min_gap_minutes=2``: shorter holes are not reported."""

OHLC_REACH_MINUTES = 720
"""Kraken's 1m ``OHLC`` serves the latest 720 bars: the running one and the 719 before it."""

DATA_TYPES = ("candles_1m", "trades")
"""What a gap can be a gap in."""


@dataclass(frozen=True)
class DataGap:
    """A range of ``symbol``'s history the store cannot vouch for (the original's type).

    ``data_type`` is ``candles_1m`` (no recorded 1m candle coverage) or ``trades`` (no recorded
    trade coverage, or a hole in Kraken's trade-id sequence); ``[start_time, end_time)``,
    aware UTC. ``duration`` is ``end_time - start_time`` (computed when not given, as the
    original's constructor took it); ``detail`` says what is missing, in words.
    """

    symbol: str
    data_type: str
    start_time: datetime
    end_time: datetime
    duration: timedelta = None  # type: ignore[assignment]  # filled in by __post_init__
    detail: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("start_time", "end_time"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise UsageError(f"DataGap {name} must be an aware UTC datetime, got {value!r}")
        span = self.end_time - self.start_time
        if span < timedelta(0):
            raise UsageError(f"gap of {self.symbol} ends before it starts: "
                             f"{self.start_time.isoformat()} .. {self.end_time.isoformat()}")
        if self.duration is None:
            object.__setattr__(self, "duration", span)
        elif self.duration != span:
            raise UsageError(f"gap of {self.symbol}: duration {self.duration} is not end_time - "
                             f"start_time ({span})")

    @property
    def is_small(self) -> bool:
        """Under 12 hours: short enough for Kraken's 1m OHLC (720 bars), if recent enough."""
        return self.duration < SMALL_GAP

    @property
    def candles_needed(self) -> int:
        """Estimated 1-minute candles to fill it (whole minutes it spans)."""
        return int(self.duration.total_seconds() // 60)

    @property
    def hours(self) -> float:
        """The duration in hours."""
        return self.duration.total_seconds() / 3600

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times ISO 8601, the duration in seconds and as text (``14h 30m``)."""
        return {
            "symbol": self.symbol, "data_type": self.data_type,
            "start_time": self.start_time.isoformat(), "end_time": self.end_time.isoformat(),
            "duration": format_span(self.duration),
            "duration_seconds": self.duration.total_seconds(),
            "hours": round(self.hours, 6), "is_small": self.is_small,
            "candles_needed": self.candles_needed, "detail": self.detail,
        }


_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_span(value: str | int | float | timedelta, name: str = "min_gap") -> timedelta:
    """``"90s"``, ``"2m"``, ``"1h"``, ``"1d"``, ``"1w"`` (or a ``timedelta``, or a number of
    minutes) -> a positive ``timedelta``; anything else is a ``UsageError`` naming ``name``."""
    if isinstance(value, timedelta):
        span = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        span = timedelta(minutes=value)
    elif isinstance(value, str) and (match := _SPAN.match(value.lower())):
        span = timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    else:
        raise UsageError(f"{name}: {value!r} is not a span such as 90s, 2m, 1h or 1d")
    if span <= timedelta(0):
        raise UsageError(f"{name} must be positive, got {value!r}")
    return span


def format_span(span: timedelta) -> str:
    """A span as short text: ``2d 3h``, ``14h 30m``, ``1m 30s``, ``42s``, ``0.5s`` (whole
    seconds from a minute on)."""
    seconds = span.total_seconds()
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    return " ".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m"),
                                                 (secs, "s")) if n)


def coverage_holes(ranges: Sequence[tuple[int, int]], until_us: int | None = None,
                   min_gap_us: int = 0) -> list[tuple[int, int]]:
    """The holes between merged, ordered ``[from, until)`` ranges (epoch µs), and from the end
    of the last one to ``until_us`` when given — those longer than ``min_gap_us``. Nothing
    before the first range is a hole (history starts where it starts)."""
    holes: list[tuple[int, int]] = []
    for (_, end), (start, _) in pairwise(ranges):
        if start - end > min_gap_us:
            holes.append((end, start))
    if ranges and until_us is not None and until_us - ranges[-1][1] > min_gap_us:
        holes.append((ranges[-1][1], until_us))
    return holes


def ohlc_reaches(start: datetime, end: datetime, now: datetime) -> bool:
    """Can Kraken's 1m OHLC, asked at ``now``, still serve every minute of ``[start, end)``?
    Under 12 hours long and starting no earlier than the oldest of the 720 bars it serves."""
    minute = now.replace(second=0, microsecond=0)
    oldest = minute - timedelta(minutes=OHLC_REACH_MINUTES - 1)
    return end - start < SMALL_GAP and start >= oldest and end <= minute


def fill_method(gap: DataGap, now: datetime) -> str:
    """How ``gap`` is filled at ``now``: ``ohlc`` for a 1m candle gap Kraken's 1m OHLC still
    serves whole (``ohlc_reaches``), else ``trades`` (Kraken's complete time and sales)."""
    if gap.data_type == "candles_1m" and ohlc_reaches(gap.start_time, gap.end_time, now):
        return "ohlc"
    return "trades"


def merge_spans(spans: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping or touching ``(from, until, detail)`` spans merged, details joined."""
    out: list[tuple[int, int, str]] = []
    for a, b, detail in sorted(spans):
        if out and a <= out[-1][1]:
            pa, pb, pd = out[-1]
            joined = pd if not detail or detail in pd else f"{pd}; {detail}" if pd else detail
            out[-1] = (pa, max(pb, b), joined)
        else:
            out.append((a, b, detail))
    return out
