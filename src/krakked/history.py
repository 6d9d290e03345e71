"""The original historical-data system's API, names and signatures kept, over krakked's store.

``HistoricalDataProvider`` keeps its async methods (they run the store's sync calls in a worker
thread) and ``INTERVAL_VIEWS``; symbols may be given the original way (``'XRP/USDT'``) or as any
Kraken alias. Types and maps are re-exported from where they live in krakked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from krakked.market.candles import Candle, HistoricalCandle, HistoricalTrade, interval_minutes
from krakked.market.pairs import CSV_SYMBOL_MAP, DEFAULT_SYMBOLS, PAIR_MAP, REVERSE_PAIR_MAP
from krakked.market_data import Market
from krakked.store.base import ROLLUPS

__all__ = [
    "CSV_SYMBOL_MAP",
    "DEFAULT_SYMBOLS",
    "PAIR_MAP",
    "REVERSE_PAIR_MAP",
    "Candle",
    "CandleRecord",
    "DataGap",
    "HistoricalCandle",
    "HistoricalDataProvider",
    "HistoricalTrade",
    "TradeRecord",
]


@dataclass(frozen=True)
class DataGap:
    """A gap in stored data (``data_type``: ``trades`` or ``candles_1m``…)."""

    symbol: str
    data_type: str
    start_time: datetime
    end_time: datetime

    @property
    def duration(self) -> timedelta:
        return self.end_time - self.start_time

    @property
    def is_small(self) -> bool:
        """Under 12 hours: Kraken's 1m OHLC (720 bars) can still fill it."""
        return self.duration < timedelta(hours=12)

    @property
    def candles_needed(self) -> int:
        """Estimated 1-minute candles to fill it."""
        return int(self.duration.total_seconds() // 60)

    @property
    def hours(self) -> float:
        return self.duration.total_seconds() / 3600


@dataclass
class TradeRecord:
    """The original writer's mutable trade buffer row."""

    symbol: str
    timestamp: datetime
    price: Decimal
    volume: Decimal
    side: str

    def to_tuple(self) -> tuple[Any, ...]:
        return (self.symbol, self.timestamp, self.price, self.volume, self.side)


@dataclass
class CandleRecord:
    """The original writer's mutable candle buffer row."""

    symbol: str
    timestamp: datetime
    interval_minutes: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int
    vwap: Decimal | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return (self.symbol, self.timestamp, self.interval_minutes, self.open, self.high,
                self.low, self.close, self.volume, self.trade_count, self.vwap)


class HistoricalDataProvider:
    """Query stored history for backtests and warm-up (the original async API).

    ``db_url`` is any krakked store URL (``duckdb:///…``, ``parquet:///…``,
    ``postgresql://…``); ``None`` means krakked's configured store.
    """

    INTERVAL_VIEWS: ClassVar[dict[int, str]] = {1: "candles", **ROLLUPS}

    def __init__(self, db_url: str | None = None, pool_min_size: int = 2,
                 pool_max_size: int = 10) -> None:
        self.db_url = db_url
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self._market: Market | None = None

    async def connect(self) -> None:
        """Open the store for reading, through the front door (names resolve as everywhere:
        the stored pairs snapshot, else the offline tables; Kraken is never asked)."""
        if self._market is None:
            self._market = await asyncio.to_thread(Market, self.db_url, offline=True,
                                                   read_only=True)

    async def close(self) -> None:
        if self._market is not None:
            await asyncio.to_thread(self._market.close)
            self._market = None

    async def __aenter__(self) -> HistoricalDataProvider:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        await self.connect()
        assert self._market is not None
        return await asyncio.to_thread(getattr(self._market.store, name), *args, **kwargs)

    async def get_candles(self, symbol: str, interval_minutes: int, start: datetime,
                          end: datetime, limit: int | None = None) -> list[Candle]:
        return await self._call("get_candles", symbol, interval_minutes, start, end, limit)

    async def get_latest_candles(self, symbol: str, interval_minutes: int,
                                 count: int) -> list[Candle]:
        return await self._call("get_latest_candles", symbol, interval_minutes, count)

    async def replay_candles(self, symbol: str, interval_minutes: int, start: datetime,
                             end: datetime, speed: float = 1.0) -> AsyncIterator[Candle]:
        """Yield candles in order; ``speed`` 1.0 = real time, 0 = as fast as possible."""
        candles = await self.get_candles(symbol, interval_minutes, start, end)
        previous: Candle | None = None
        for candle in candles:
            if speed and previous is not None:
                await asyncio.sleep((candle.timestamp - previous.timestamp).total_seconds()
                                    / speed)
            previous = candle
            yield candle

    async def get_warmup_data(self, symbol: str, interval_minutes: int,
                              warmup_periods: int) -> list[Candle]:
        return await self._call("get_warmup_data", symbol, interval_minutes, warmup_periods)

    async def get_data_range(self, symbol: str) -> dict[str, Any]:
        return await self._call("get_data_range", symbol)

    async def get_multi_timeframe_candles(self, symbol: str, end_time: datetime,
                                          intervals: list[int] | None = None,
                                          lookback_candles: int = 100
                                          ) -> dict[int, list[Candle]]:
        return await self._call("get_multi_timeframe_candles", symbol, end_time,
                                [interval_minutes(i) for i in intervals] if intervals else None,
                                lookback_candles)

    async def get_symbols(self) -> list[str]:
        return await self._call("get_symbols")

    async def get_sync_status(self, symbol: str) -> dict[str, Any] | None:
        """``{"symbol": ..., "<data_type>": row, ...}`` (one row per data type), or None."""
        rows = await self._call("get_sync_status", symbol)
        if not rows:
            return None
        return {"symbol": rows[0]["symbol"], **{r["data_type"]: r for r in rows}}

    async def health_check(self) -> dict[str, Any]:
        return await self._call("health_check")
