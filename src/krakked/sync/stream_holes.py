"""Filling a hole in a pair's live trade ids over Kraken's REST ``Trades``, so the stored
trades are Kraken's tape (used by ``stream_writer.WebSocketDBIntegration``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from krakked.errors import UsageError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import epoch_us
from krakked.sync.stream_writer import TradeRecord
from krakked.sync.trades import PAGE_SIZE, parse_trades

__all__ = ["HoleFiller"]


class HoleFiller:
    """Fetches the trades missing from a hole in a pair's trade-id sequence over Kraken's REST
    ``Trades``: ``client`` is a ``SpotClient`` (its public limiter paces every call),
    ``rest_name`` maps a canonical symbol to the name ``Trades`` takes (its altname), and
    at most ``max_pages`` pages are asked per hole."""

    def __init__(self, client: SpotClient, rest_name: Callable[[str], str], *,
                 max_pages: int = 20) -> None:
        if max_pages < 1:
            raise UsageError(f"max_pages must be >= 1, got {max_pages}")
        self.client, self.rest_name, self.max_pages = client, rest_name, max_pages

    def fetch(self, symbol: str, after_id: int, after_time: datetime,
              before_id: int) -> list[TradeRecord]:
        """Kraken's trades of ``symbol`` with ``after_id < id < before_id``, in id order
        (source ``rest``): pages from just before ``after_time`` (the time of trade
        ``after_id``) until the hole is closed, Kraken has no more, or ``max_pages``.
        Blocking: call it in a worker thread (``fill``)."""
        rest = self.rest_name(symbol)
        cursor = epoch_us(after_time) * 1000 - 1000  # a µs early: its own trades come again
        found: dict[int, TradeRecord] = {}
        for _ in range(self.max_pages):
            page = parse_trades(self.client.get_trades(
                rest, since=str(cursor) if cursor >= 10**11 else "0"), symbol)
            for row in page.table.to_pylist():
                if after_id < row["id"] < before_id:
                    found[row["id"]] = TradeRecord(
                        symbol, row["timestamp"], row["price"], row["volume"], row["side"],
                        trade_id=row["id"], order_type=row["order_type"], misc=row["misc"],
                        source="rest")
            ids = page.table["id"].to_pylist()
            if (ids and max(ids) >= before_id - 1) or page.rows < PAGE_SIZE \
                    or page.last is None or page.last <= cursor:
                break
            cursor = page.last
        return [found[i] for i in sorted(found)]

    async def fill(self, symbol: str, after_id: int, after_time: datetime,
                   before_id: int) -> list[TradeRecord]:
        """``fetch`` in a worker thread."""
        return await asyncio.to_thread(self.fetch, symbol, after_id, after_time, before_id)
