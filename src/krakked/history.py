"""The original historical-data system's API, names and signatures kept, over krakked's store.

``HistoricalDataProvider`` keeps its async methods (they run the store's sync calls in a worker
thread) and ``INTERVAL_VIEWS``; symbols may be given the original way (``'XRP/USDT'``) or as any
Kraken alias. Types and maps are re-exported from where they live in krakked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from krakked.market.candles import Candle, HistoricalCandle, HistoricalTrade, interval_minutes
from krakked.market.gaps import DataGap
from krakked.market.pairs import CSV_SYMBOL_MAP, DEFAULT_SYMBOLS, PAIR_MAP, REVERSE_PAIR_MAP
from krakked.market_data import Market
from krakked.store.base import ROLLUPS
from krakked.sync.csv_import import import_file
from krakked.sync.csv_sources import OHLCVT_INTERVALS
from krakked.sync.stream_writer import (
    CandleRecord,
    DatabaseWriter,
    TradeRecord,
    WebSocketDBIntegration,
    integrate_db_writer,
)

__all__ = [
    "CSV_SYMBOL_MAP",
    "DEFAULT_SYMBOLS",
    "PAIR_MAP",
    "REVERSE_PAIR_MAP",
    "BulkCSVImporter",
    "Candle",
    "CandleRecord",
    "DataGap",
    "DatabaseWriter",
    "GapFiller",
    "HistoricalCandle",
    "HistoricalDataProvider",
    "HistoricalTrade",
    "KrakenTradesBackfill",
    "TradeRecord",
    "WebSocketDBIntegration",
    "integrate_db_writer",
    "run_gap_filler",
]


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


# -- BulkCSVImporter --------------------------------------------------------------------------


log = logging.getLogger("krakked.history")


class BulkCSVImporter:
    """Import Kraken's downloadable CSV files (the original bulk importer's API): OHLCVT files
    ``<PAIR>_<interval>.csv`` as candles and, beyond the original, time-and-sales files
    ``<PAIR>.csv`` as trades, from files, directories or zip archives read in place.

    ``db_url`` is any krakked store URL (None: the configured store). ``batch_size`` is the
    rows per write transaction (the original default 10000; much larger batches import big
    files much faster, see ``krakked import-csv --batch-size``). Pair names resolve offline,
    through the stored pairs snapshot, else the built-in ``CSV_SYMBOL_MAP`` tables, as the
    original did; the CLI ``krakked import-csv`` also asks Kraken.
    """

    CSV_COLUMNS: ClassVar[list[str]] = ["timestamp", "open", "high", "low", "close", "volume",
                                        "trades"]
    INTERVAL_MAP: ClassVar[dict[str, int]] = {str(m): m for m in OHLCVT_INTERVALS}

    def __init__(self, db_url: str | None = None, batch_size: int = 10000) -> None:
        self.db_url = db_url
        self.batch_size = batch_size
        self._market: Market | None = None

    async def connect(self) -> None:
        """Open the store for writing (created if missing)."""
        if self._market is None:
            self._market = await asyncio.to_thread(Market, self.db_url, offline=True)

    async def close(self) -> None:
        if self._market is not None:
            await asyncio.to_thread(self._market.close)
            self._market = None

    async def __aenter__(self) -> BulkCSVImporter:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def import_csv_file(self, filepath: Path | str, symbol: str,
                              interval_minutes: int | None) -> int:
        """Import one OHLCVT file as ``symbol``'s ``interval_minutes`` candles (None: a
        time-and-sales file as its trades), whatever the file's name; a zip archive's members
        named for that pair and interval. Returns the rows stored (new or replaced: 0 when
        re-imported). A bad row raises ``ImportFormatError`` (file and line) with nothing of
        that file stored."""
        await self.connect()
        market = self._market
        assert market is not None

        def run() -> int:
            results = import_file(market.store, filepath, market.resolve(symbol),
                                  interval_minutes, resolve=market.resolve,
                                  batch_size=self.batch_size)
            for result in results:
                if result.error is not None:
                    raise result.error
            return sum(r.rows_stored for r in results)

        return await asyncio.to_thread(run)

    async def import_directory(self, directory: Path | str, only_1m: bool = True
                               ) -> dict[str, dict[int | str, int]]:
        """Import every Kraken CSV file under ``directory`` (recursively; zip archives
        included): OHLCVT files of 1 minute only unless ``only_1m`` is False, time-and-sales
        files always. Returns ``{symbol: {interval_minutes: rows stored}}`` (trades under
        ``"trades"``). Files of pairs no name table knows are skipped (logged). A file with a
        bad row stores nothing; the others are imported, then the first such file's
        ``ImportFormatError`` is raised."""
        await self.connect()
        market = self._market
        assert market is not None
        result = await asyncio.to_thread(market.import_csv, directory=directory,
                                         all_intervals=not only_1m,
                                         batch_size=self.batch_size)
        for skipped in result.skipped.values():
            log.info("skipped %d file(s): %s (e.g. %s)", skipped.count, skipped.reason,
                     ", ".join(skipped.examples))
        result.raise_for_errors()
        counts: dict[str, dict[int | str, int]] = {}
        for f in result.files:
            key: int | str = f.interval_minutes if f.interval_minutes else "trades"
            per = counts.setdefault(f.symbol, {})
            per[key] = per.get(key, 0) + f.rows_stored
        return counts
def _paced_market(db_url: str | None, rate_limit_delay: float, max_retries: int) -> Market:
    """A Market whose Kraken calls are paced one every ``rate_limit_delay`` seconds (0:
    krakked's configured pacing) and tried up to ``max_retries`` times (the original tools'
    two knobs)."""
    from krakked.config import load_settings
    from krakked.kraken.http import RetryPolicy
    from krakked.kraken.limits import PublicLimiter
    from krakked.kraken.spot import SpotClient

    settings = load_settings()
    pacer = PublicLimiter(1.0 / rate_limit_delay, 1) if rate_limit_delay > 0 else None
    client = SpotClient(settings=settings, public_limiter=pacer,
                        retry=RetryPolicy(max_attempts=max(1, max_retries)))
    try:
        return Market(db_url, settings=settings, client=client)
    except BaseException:
        client.close()
        raise


async def _close_market(market: Market | None) -> None:
    """Close ``market``'s store and client (in a worker thread)."""
    if market is None:
        return

    def shut() -> None:
        market.close()
        market.client.close()

    await asyncio.to_thread(shut)


# -- gaps (GapFiller, run_gap_filler) ------------------------------------------------------------


class GapFiller:
    """Detect and fill gaps in stored 1m candles and trades (the original async API).

    ``db_url`` is any krakked store URL (``None``: krakked's configured store); ``symbols``
    default to ``DEFAULT_SYMBOLS`` (``XRP/USDT``, ``BTC/USDT``, ``XRP/BTC``; any Kraken alias
    works). Kraken calls are paced to one every ``rate_limit_delay`` seconds (0: krakked's
    configured public pacing) and tried up to ``max_retries`` times. Every method runs the
    blocking work in a worker thread, over ``Market.detect_gaps`` / ``Market.fill_gaps``
    (``krakked.sync.gaps``).
    """

    def __init__(self, db_url: str | None = None, symbols: list[str] | None = None,
                 rate_limit_delay: float = 1.1, max_retries: int = 3) -> None:
        self.db_url = db_url
        self.symbols = list(symbols) if symbols is not None else list(DEFAULT_SYMBOLS)
        self.rate_limit_delay = rate_limit_delay
        self.max_retries = max_retries
        self._market: Market | None = None

    def _open(self) -> Market:
        return _paced_market(self.db_url, self.rate_limit_delay, self.max_retries)

    async def start(self) -> None:
        """Open the store and the Kraken client."""
        if self._market is None:
            self._market = await asyncio.to_thread(self._open)

    async def stop(self) -> None:
        """Close the store and the client."""
        market, self._market = self._market, None
        await _close_market(market)

    async def __aenter__(self) -> GapFiller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        await self.start()
        assert self._market is not None
        return await asyncio.to_thread(getattr(self._market, name), *args, **kwargs)

    async def detect_gaps(self, min_gap_minutes: int = 2) -> list[DataGap]:
        """The gaps of ``symbols`` longer than ``min_gap_minutes``, oldest first (pairs with
        nothing stored have none)."""
        scan = await self._run("detect_gaps", self.symbols, timedelta(minutes=min_gap_minutes))
        return list(scan.gaps)

    async def fill_gap_ohlc(self, gap: DataGap) -> int:
        """Fill a 1m candle gap from Kraken's 1m OHLC (its latest 720 bars); candles stored."""
        return int(await self._run("fill_gap_ohlc", gap))

    async def fill_gap_trades(self, gap: DataGap) -> int:
        """Fill a gap from Kraken's Trades over its range; trades Kraken returned in it."""
        fill = await self._run("fill_gap_trades", gap)
        return int(fill.fetched)

    async def update_sync_status(self, symbol: str, newest_time: datetime) -> None:
        """Refresh ``symbol``'s ``candles_1m`` row of ``data_sync_status`` (newest, oldest,
        total, last sync) from the candles stored. A status row describes what is stored, so
        its ``newest_timestamp`` is the newest stored candle, never ``newest_time`` as given
        (kept for the original signature)."""
        from krakked.store.base import SyncUpdate

        await self.start()
        assert self._market is not None
        market = self._market

        def refresh() -> None:
            market.store.upsert_candles([], sync=[SyncUpdate(market.resolve(symbol),
                                                             "candles_1m")])

        await asyncio.to_thread(refresh)

    async def refresh_continuous_aggregates(self) -> None:
        """Rebuild the derived timeframes where the store materializes them (PostgreSQL's
        rollup tables; they are also kept current with every write)."""
        await self.start()
        assert self._market is not None
        await asyncio.to_thread(self._market.store.refresh_continuous_aggregates)

    async def fill_all_gaps(self, max_concurrent: int = 3) -> dict[str, Any]:
        """Detect and fill every gap of ``symbols``, ``max_concurrent`` pairs at a time:
        ``{gaps_detected, gaps_filled, candles_inserted, trades_processed, errors}`` plus
        ``unfillable`` (with reasons), ``remaining``, ``trades_inserted``, ``empty`` and
        ``pairs`` (``GapFillReport.to_dict``)."""
        report = await self._run("fill_gaps", self.symbols, max_concurrent=max_concurrent)
        return dict(report.to_dict())


async def run_gap_filler(db_url: str | None = None, symbols: list[str] | None = None
                         ) -> dict[str, Any]:
    """Detect and fill the gaps of ``symbols`` (default ``DEFAULT_SYMBOLS``) in the store at
    ``db_url``; returns ``GapFiller.fill_all_gaps``'s summary."""
    async with GapFiller(db_url, symbols) as filler:
        return await filler.fill_all_gaps()


# -- trades backfill (KrakenTradesBackfill) ------------------------------------------------------


class KrakenTradesBackfill:
    """Fetch complete trade history from Kraken's REST ``Trades`` (the original async API).

    ``db_url`` is any krakked store URL (``None``: krakked's configured store). The Spot host
    comes from krakked's settings (``KRAKKED_SPOT_URL``, default api.kraken.com); ``BASE_URL``
    is kept for code that reads it. Calls are paced to one every ``rate_limit_delay`` seconds
    (0: krakked's configured public pacing) and retried up to ``max_retries`` attempts. Every
    method runs the blocking work in a worker thread; ``backfill_symbol`` is
    ``Market.backfill_trades`` (resumable, pages committed with their cursor).
    """

    BASE_URL: ClassVar[str] = "https://api.kraken.com"
    RATE_LIMIT_DELAY: ClassVar[float] = 1.1

    def __init__(self, db_url: str | None = None, rate_limit_delay: float = 1.1,
                 max_retries: int = 3) -> None:
        self.db_url = db_url
        self.rate_limit_delay = rate_limit_delay
        self.max_retries = max_retries
        self._market: Market | None = None

    def _open(self) -> Market:
        return _paced_market(self.db_url, self.rate_limit_delay, self.max_retries)

    async def connect(self) -> None:
        """Open the store and the Kraken client."""
        if self._market is None:
            self._market = await asyncio.to_thread(self._open)

    async def close(self) -> None:
        """Close the store and the client."""
        market, self._market = self._market, None
        await _close_market(market)

    async def __aenter__(self) -> KrakenTradesBackfill:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _market_ready(self) -> Market:
        await self.connect()
        assert self._market is not None
        return self._market

    async def fetch_trades_page(self, pair: str, since: int = 0) -> tuple[list[list[Any]], int]:
        """One ``Trades`` page after ``since`` (Kraken's ns cursor; 0 = its first trade): Kraken's
        rows as it sent them (prices and volumes decimal strings, time a ``Decimal``) and
        ``last``, the cursor of the next page."""
        from krakked.errors import MalformedResponseError

        market = await self._market_ready()
        rest = await asyncio.to_thread(market.rest_name, pair)
        result = await asyncio.to_thread(market.client.get_trades, rest, since=since)
        keys = [k for k in result if k != "last"]
        if len(keys) != 1 or not isinstance(result[keys[0]], list):
            raise MalformedResponseError(f"Trades result for {pair} has no single pair key",
                                         endpoint="spot:Trades")
        last = result.get("last")
        return list(result[keys[0]]), int(last) if last not in (None, "") else since

    async def fetch_all_trades(self, symbol: str, start_since: int = 0,
                               end_timestamp: datetime | None = None,
                               auto_stop_realtime: bool = True) -> AsyncIterator[list[list[Any]]]:
        """Pages of Kraken's rows from ``start_since`` (stored nowhere): up to ``end_timestamp``
        (rows at or after it are left out, and the walk ends), until real time (a page shorter
        than 1000 rows, or a cursor that no longer advances) — or, without
        ``auto_stop_realtime``, polling every minute for new trades until cancelled."""
        from krakked.market.candles import epoch_us
        from krakked.sync.trades import DEFAULT_POLL_SECONDS, PAGE_SIZE

        end = epoch_us(end_timestamp) if end_timestamp is not None else None
        cursor = start_since
        while True:
            rows, last = await self.fetch_trades_page(symbol, cursor)
            if end is not None:
                kept = [r for r in rows if _row_us(r) < end]
                if len(kept) < len(rows):
                    if kept:
                        yield kept
                    return
            if rows:
                yield rows
            if len(rows) < PAGE_SIZE or last <= cursor:
                if auto_stop_realtime:
                    return
                await asyncio.sleep(DEFAULT_POLL_SECONDS)
            cursor = max(cursor, last)

    async def store_trades(self, symbol: str, trades: list[list[Any]]) -> None:
        """Store Kraken ``Trades`` rows of ``symbol`` (each once; no cursor, no coverage: a
        backfill records those with its pages)."""
        from krakked.sync.trades import parse_trades

        market = await self._market_ready()

        def write() -> None:
            canonical = market.resolve(symbol)
            page = parse_trades({canonical: trades}, canonical)
            market.store.upsert_trades(page.table)

        await asyncio.to_thread(write)

    async def build_candles_from_trades(self, symbol: str, start_time: datetime | None,
                                        end_time: datetime | None) -> None:
        """(Re)build the 1m candles of ``symbol`` from its stored trades in
        ``[start_time, end_time)`` (minutes the trade coverage holds whole)."""
        market = await self._market_ready()
        await asyncio.to_thread(market.build_candles_from_trades, symbol, start_time, end_time)

    async def backfill_symbol(self, symbol: str, since: int = 0,
                              end_timestamp: datetime | None = None, build_candles: bool = True,
                              auto_stop_realtime: bool = True) -> int:
        """Backfill ``symbol`` from ``since`` (Unix seconds or Kraken's ns cursor; 0 = Kraken's
        first trade, or where a previous run's stored history from there ends) up to
        ``end_timestamp`` or real time; returns the trades stored. Cancelling the task stops
        it after the write in flight (committed whole)."""
        import threading

        market = await self._market_ready()
        stop = threading.Event()
        work = asyncio.ensure_future(asyncio.to_thread(
            market.backfill_trades, symbol, since, end_timestamp, build_candles=build_candles,
            auto_stop=auto_stop_realtime, stop=stop))
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([work])
            raise
        return result.stored

    async def get_resume_point(self, symbol: str) -> int:
        """The ns cursor a resumed backfill of ``symbol`` starts from (0: nothing stored)."""
        from krakked.sync.trades import get_resume_point

        market = await self._market_ready()

        def point() -> int:
            return get_resume_point(market.store, market.resolve(symbol)) or 0

        return await asyncio.to_thread(point)


def _row_us(row: list[Any]) -> int:
    """A Kraken ``Trades`` row's time in epoch µs (rounded half-even, as stored)."""
    from decimal import ROUND_HALF_EVEN

    seconds = row[2] if isinstance(row[2], Decimal) else Decimal(str(row[2]))
    return int((seconds * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))
