"""Reconciliation: our candles built from stored trades against Kraken's own OHLC.

Kraken's ``OHLC`` serves its latest 720 bars of an interval; over the buckets of that window
that our recorded trade coverage spans whole, the candles aggregated from our trades (in the
store's engine, ``MarketStore.read_trade_candles``) must equal Kraken's: open, high, low, close,
volume and trade count exactly, vwap to the decimals Kraken sends (Kraken rounds it). A bucket
Kraken shows without volume (an interval without trades, repeating the previous close) must
have no trades of ours; a bucket with trades on one side only is a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from krakked.errors import NoDataError, UsageError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import (
    API_INTERVALS,
    Candle,
    epoch_us,
    from_epoch_us,
    interval_minutes,
    timeframe_name,
)
from krakked.store.arrow import arrow_to_candles
from krakked.store.base import MarketStore, minutes_to_build
from krakked.sync.ohlc import parse_ohlc

__all__ = ["Mismatch", "VerifyResult", "verify_candles"]

FIELDS = ("open", "high", "low", "close", "volume", "trade_count", "vwap")


@dataclass(frozen=True)
class Mismatch:
    """One field of one candle where ours and Kraken's differ (None: no candle on that side)."""

    timestamp: datetime
    field: str
    ours: Any
    kraken: Any

    def to_dict(self) -> dict[str, Any]:
        def text(v: Any) -> Any:
            return None if v is None else str(v) if isinstance(v, Decimal) else v

        return {"timestamp": self.timestamp.isoformat(), "field": self.field,
                "ours": text(self.ours), "kraken": text(self.kraken)}


@dataclass(frozen=True)
class VerifyResult:
    """What one verification compared and found."""

    symbol: str
    timeframe: str
    kraken_from: datetime
    kraken_until: datetime
    compared: int  # buckets compared (inside both Kraken's window and our trade coverage)
    mismatches: tuple[Mismatch, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "timeframe": self.timeframe,
                "kraken_from": self.kraken_from.isoformat(),
                "kraken_until": self.kraken_until.isoformat(), "compared": self.compared,
                "ok": self.ok, "mismatches": [m.to_dict() for m in self.mismatches],
                "notes": list(self.notes)}


def _same_vwap(ours: Decimal | None, kraken: Decimal | None) -> bool:
    if ours is None or kraken is None:
        return ours is None and kraken is None
    exp = kraken.as_tuple().exponent
    if not isinstance(exp, int):
        return False
    return ours.quantize(Decimal(1).scaleb(exp), rounding=ROUND_HALF_EVEN) == kraken


def _compare(ts: datetime, ours: Candle | None, kraken: Candle | None) -> list[Mismatch]:
    if kraken is not None and not kraken.volume:
        kraken = None  # Kraken's filler for an interval without trades
    if ours is None or kraken is None:
        if ours is None and kraken is None:
            return []
        return [Mismatch(ts, "candle", "present" if ours else None,
                         "present" if kraken else None)]
    out = []
    for name in FIELDS:
        a, b = getattr(ours, name), getattr(kraken, name)
        same = _same_vwap(a, b) if name == "vwap" else a == b
        if not same:
            out.append(Mismatch(ts, name, a, b))
    return out


def verify_candles(client: SpotClient, store: MarketStore, symbol: str,
                   timeframe: str | int = "1m", *, rest_symbol: str | None = None,
                   now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> VerifyResult:
    """Compare ``symbol``'s candles built from stored trades with Kraken's OHLC of
    ``timeframe`` over every bucket both know (module docstring). ``NoDataError`` when Kraken
    serves nothing or no stored trades cover any bucket of its window (nothing compared is
    not a success)."""
    minutes = interval_minutes(timeframe)
    tf = timeframe_name(minutes)
    if minutes not in API_INTERVALS:
        raise UsageError(f"Kraken's OHLC does not serve {tf} candles: verify one of "
                         + ", ".join(timeframe_name(m) for m in sorted(API_INTERVALS)))
    kraken, _ = parse_ohlc(client.get_ohlc(rest_symbol or symbol, interval=minutes),
                           symbol, minutes, now())
    if not kraken:
        raise NoDataError(f"Kraken's OHLC serves no closed {tf} candles of {symbol}")
    lo, hi = epoch_us(kraken[0].timestamp), epoch_us(kraken[-1].close_time)
    spans = minutes_to_build(store.read_trade_coverage(symbol), (lo, hi), minutes)
    if not spans:
        raise NoDataError(
            f"no stored trades of {symbol} cover a whole {tf} bucket of the window Kraken's "
            f"OHLC serves ({from_epoch_us(lo).isoformat()} .. {from_epoch_us(hi).isoformat()}):"
            f" run `krakked trades backfill {symbol} --since {from_epoch_us(lo).date()}` first")
    by_time = {epoch_us(c.timestamp): c for c in kraken}
    mismatches: list[Mismatch] = []
    compared = 0
    width = minutes * 60_000_000
    for a, b in spans:
        ours = {epoch_us(c.timestamp): c for c in arrow_to_candles(
            store.read_trade_candles(symbol, minutes, from_epoch_us(a), from_epoch_us(b)))}
        for t in range(a, b, width):
            compared += 1
            mismatches += _compare(from_epoch_us(t), ours.get(t), by_time.get(t))
    notes = []
    if spans[0][0] > lo or spans[-1][1] < hi:
        notes.append(f"compared {compared} of the {len(kraken)} buckets Kraken serves: the "
                     "rest are outside the stored trade coverage")
    return VerifyResult(symbol, tf, from_epoch_us(lo), from_epoch_us(hi), compared,
                        tuple(mismatches), tuple(notes))
