"""OHLC sync: Kraken's closed candles into the market store, incrementally, idempotently.

Kraken's ``OHLC`` serves at most the latest **720 bars per interval** — whatever ``since`` says —
and its last row is the running, uncommitted bar. So a backfill here is one call per pair and
timeframe: it stores the closed bars Kraken still serves (never the running one) and Kraken's
``last`` cursor in ``data_sync_status`` in the same transaction, and the next run asks only for
what is new. Deeper history comes from trades and Kraken's CSV files (other commands).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from krakked.errors import MalformedResponseError, UsageError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import (
    API_INTERVALS,
    Candle,
    bucket_start,
    closed_only,
    interval_minutes,
    timeframe_name,
)
from krakked.store.base import Coverage, MarketStore, SyncUpdate

__all__ = ["KRAKEN_OHLC_LIMIT", "OhlcSyncResult", "backfill_ohlc", "parse_ohlc"]

log = logging.getLogger("krakked.sync.ohlc")

KRAKEN_OHLC_LIMIT = 720
"""Kraken's OHLC endpoint serves at most this many of the most recent bars per interval."""


@dataclass(frozen=True)
class OhlcSyncResult:
    """What one (pair, timeframe) sync did."""

    symbol: str
    timeframe: str
    fetched: int  # closed bars Kraken returned
    stored: int  # rows inserted or replaced
    first: datetime | None
    last: datetime | None
    cursor: int | None  # Kraken's ``last``, stored for the next run
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "timeframe": self.timeframe, "fetched": self.fetched,
            "stored": self.stored,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "cursor": self.cursor, "notes": list(self.notes),
        }


def parse_ohlc(result: Mapping[str, Any], symbol: str, minutes: int,
               now: datetime) -> tuple[list[Candle], int | None]:
    """Kraken's OHLC ``result`` -> closed candles (oldest first, deduplicated) and ``last``.

    The pair key is "the key that is not ``last``"; the final row (the running bar) is dropped,
    and so is any bar whose interval has not ended by ``now``.
    """
    keys = [k for k in result if k != "last"]
    if len(keys) != 1 or not isinstance(result[keys[0]], list):
        raise MalformedResponseError(f"OHLC result has no single pair key: {sorted(result)}",
                                     endpoint="spot:OHLC")
    rows = result[keys[0]][:-1]  # the last row is always the running bar
    by_time: dict[int, Candle] = {}
    for row in rows:
        try:
            ts = int(row[0])
            volume = Decimal(str(row[6]))
            vwap = Decimal(str(row[5]))
            candle = Candle(
                symbol=symbol,
                timestamp=datetime.fromtimestamp(ts, UTC),
                interval_minutes=minutes,
                open=Decimal(str(row[1])), high=Decimal(str(row[2])),
                low=Decimal(str(row[3])), close=Decimal(str(row[4])),
                volume=volume,
                quote_volume=vwap * volume,  # Kraken sends vwap, not quote volume
                trade_count=int(row[7]),
                vwap=vwap if volume else None,
                source="rest",
            )
        except (IndexError, ValueError, ArithmeticError):
            raise MalformedResponseError(f"OHLC row for {symbol} is not "
                                         "[time, o, h, l, c, vwap, volume, count]",
                                         endpoint="spot:OHLC") from None
        by_time[ts] = candle
    candles = list(closed_only((by_time[t] for t in sorted(by_time)), now))
    last = result.get("last")
    return candles, int(last) if last is not None else None


def served_range(candles: list[Candle], symbol: str, minutes: int,
                 cursor: int | None) -> list[Coverage]:
    """The range one OHLC answer vouches for: every interval from its first closed bar to the
    end of its last one (Kraken sometimes leaves out intervals without trades; the ones inside
    that range had none). When asked from ``cursor`` and the answer cannot have been cut by the
    720-bar limit, the range starts right after the cursor's bar."""
    if not candles:
        return []
    start, end = candles[0].timestamp, candles[-1].close_time
    if cursor is not None:
        after = bucket_start(datetime.fromtimestamp(cursor, UTC), minutes) + timedelta(
            minutes=minutes)
        if after < start and (end - after) / timedelta(minutes=minutes) < KRAKEN_OHLC_LIMIT:
            start = after
    return [Coverage(symbol, minutes, start, end)]


def backfill_ohlc(
    client: SpotClient,
    store: MarketStore,
    symbol: str,
    timeframe: str | int,
    *,
    rest_symbol: str | None = None,
    since: datetime | int | None = None,
    full: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> OhlcSyncResult:
    """Fetch ``symbol``'s closed ``timeframe`` candles Kraken still serves and store them.

    Resumes from the stored cursor unless ``full`` (re-fetch all 720) or ``since`` is given.
    ``rest_symbol`` is what Kraken is asked for (default: ``symbol``, the altname).
    """
    minutes = interval_minutes(timeframe)
    tf = timeframe_name(minutes)
    if minutes not in API_INTERVALS:
        raise UsageError(
            f"{tf} candles are not served by Kraken's OHLC API; they are derived from stored "
            "finer candles (e.g. 1h) when you read them, or imported from Kraken's CSV files"
        )
    data_type = f"candles_{tf}"
    cursor: int | None = None
    if since is not None:
        cursor = int(since.timestamp()) if isinstance(since, datetime) else int(since)
        if cursor > now().timestamp():
            raise UsageError(f"since {since} is in the future")
    elif not full:
        for row in store.read_sync_status(symbol):
            if row.get("data_type") == data_type and row.get("last_kraken_since") is not None:
                cursor = int(row["last_kraken_since"])
    result = client.get_ohlc(rest_symbol or symbol, interval=minutes, since=cursor)
    candles, last = parse_ohlc(result, symbol, minutes, now())
    notes: list[str] = []
    if cursor is None or since is not None:  # a first or explicit backfill, not an increment
        notes.append(
            f"Kraken serves only the latest {KRAKEN_OHLC_LIMIT} {tf} bars; older history comes "
            "from trades or Kraken's CSV files"
        )
    stored = store.upsert_candles(
        candles, sync=[SyncUpdate(symbol, data_type, last_kraken_since=last)],
        coverage=served_range(candles, symbol, minutes, cursor),
    )
    if not candles and last is not None and cursor is None:
        log.info("%s %s: Kraken returned no closed bars", symbol, tf)
    return OhlcSyncResult(
        symbol=symbol, timeframe=tf, fetched=len(candles), stored=stored,
        first=candles[0].timestamp if candles else None,
        last=candles[-1].timestamp if candles else None,
        cursor=last, notes=tuple(notes),
    )

