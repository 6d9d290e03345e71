"""Persisting the live stream: the original system's buffered ``DatabaseWriter`` and its
``WebSocketDBIntegration`` (names and signatures kept), over krakked's market store.

The writer buffers ``TradeRecord`` / ``CandleRecord`` rows and writes them through
``open_store(db_url)`` in a worker thread, so the event loop never waits on the store (a DuckDB
store stays readable by other processes: it holds the file only per operation). Past
``MAX_*_BUFFER_SIZE`` buffered rows the oldest are dropped and counted (``overflow_count``):
memory stays bounded, and dropped trades are a hole in the id sequence that nothing vouches for
(``krakked gaps`` finds it). A failed flush keeps its rows for the next one (``error_count``).
A trade flush whose Kraken ids continue the last stored id records the range it vouches for
(``TradeCoverage``: from the last stored trade's time to its own last trade's), so the store
builds 1m candles from the trades; the first trade after a start or a hole vouches for nothing
before it. ``WebSocketDBIntegration`` turns WS v2 ``trade``/``ohlc`` objects into rows: trades
deduplicated by ``trade_id``, holes filled over REST (``stream_holes.HoleFiller``), only closed
candles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from krakked.errors import StoreError, UsageError
from krakked.market.candles import Candle, epoch_us, from_epoch_us, timeframe_name
from krakked.market.names import resolve_offline
from krakked.store.arrow import TRADE_SCHEMA
from krakked.store.base import MarketStore, SyncUpdate, TradeCoverage, redact_url, sync_target
from krakked.store.open import open_store
from krakked.sync.trades import _decimal

__all__ = [
    "CandleRecord",
    "DatabaseWriter",
    "TradeRecord",
    "WebSocketDBIntegration",
    "integrate_db_writer",
]

if TYPE_CHECKING:
    from krakked.sync.stream_holes import HoleFiller

log = logging.getLogger("krakked.sync.stream_writer")


# -- rows ------------------------------------------------------------------------------------


@dataclass
class TradeRecord:
    """The original writer's mutable trade buffer row; krakked adds Kraken's ``trade_id`` (the
    key that deduplicates and chains trades; a record without one is stored like a row of
    Kraken's CSV files, vouching for nothing), ``order_type``, ``misc`` and ``source``."""

    symbol: str
    timestamp: datetime
    price: Decimal
    volume: Decimal
    side: str
    trade_id: int | None = field(default=None, kw_only=True)
    order_type: str | None = field(default=None, kw_only=True)
    misc: str = field(default="", kw_only=True)
    source: str = field(default="ws", kw_only=True)

    def to_tuple(self) -> tuple[Any, ...]:
        """The original insert tuple: (symbol, timestamp, price, volume, side)."""
        return (self.symbol, self.timestamp, self.price, self.volume, self.side)


@dataclass
class CandleRecord:
    """The original writer's mutable candle buffer row (``timestamp``: open time) + ``source``."""

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
    source: str = field(default="ws", kw_only=True)

    def to_tuple(self) -> tuple[Any, ...]:
        """The original insert tuple (the original fields, in order)."""
        return (self.symbol, self.timestamp, self.interval_minutes, self.open, self.high,
                self.low, self.close, self.volume, self.trade_count, self.vwap)

    def to_candle(self) -> Candle:
        return Candle(self.symbol, self.timestamp, self.interval_minutes, self.open, self.high,
                      self.low, self.close, self.volume, None, self.trade_count, self.vwap,
                      self.source)


# -- the trade-id chain (what a flush vouches for) ----------------------------------------------


@dataclass
class _Chain:
    """A symbol's newest stored Kraken id, its time (epoch µs), and ``linked``: every trade of
    that µs up to that id is stored (the next range may start at that µs itself)."""

    last_id: int | None = None
    last_us: int | None = None
    linked: bool = False


def _chain_from_store(store: MarketStore, symbol: str) -> _Chain:
    """The chain a symbol's stored trades leave: their newest id, linked when the recorded
    trade coverage reaches that trade's time (everything up to it is stored)."""
    summary = store.trades_summary(symbol)
    if not summary or summary.get("last_id") is None or summary.get("last_api_time") is None:
        return _Chain()
    last_us = epoch_us(summary["last_api_time"])
    linked = any(a <= last_us <= b for a, b in store.read_trade_coverage(symbol))
    return _Chain(int(summary["last_id"]), last_us, linked)


def _coverage(symbol: str, chain: _Chain, rows: list[TradeRecord]
              ) -> tuple[list[TradeCoverage], _Chain]:
    """The ranges ``rows`` (one symbol's, by id) vouch for after ``chain``, and the chain after
    them: a run of consecutive ids holds every trade after its first trade's µs (from the
    chain's µs itself when it continues a linked chain) up to its last trade's µs, excluded."""
    out: list[TradeCoverage] = []
    start: int | None = None
    prev_id, prev_us = chain.last_id, chain.last_us
    if prev_id is not None and prev_us is not None:
        start = prev_us if chain.linked else prev_us + 1
    for rec in rows:
        assert rec.trade_id is not None
        us = epoch_us(rec.timestamp)
        if prev_id is None or rec.trade_id != prev_id + 1:
            if start is not None and prev_us is not None and prev_us > start:
                out.append(TradeCoverage(symbol, from_epoch_us(start), from_epoch_us(prev_us)))
            start = us + 1  # a trade after a hole vouches for nothing before it
        prev_id, prev_us = rec.trade_id, us
    if start is not None and prev_us is not None and prev_us > start:
        out.append(TradeCoverage(symbol, from_epoch_us(start), from_epoch_us(prev_us)))
    linked = start is not None and prev_us is not None and start <= prev_us
    return out, _Chain(prev_id, prev_us, linked)


def _trades_table(rows: list[TradeRecord]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": r.trade_id, "symbol": r.symbol, "timestamp": r.timestamp, "price": r.price,
          "volume": r.volume, "side": r.side, "order_type": r.order_type, "misc": r.misc,
          "source": r.source} for r in rows], schema=TRADE_SCHEMA)


# -- the writer -----------------------------------------------------------------------------------


_STAT_KEYS = ("trades_written", "candles_written", "flush_count", "error_count", "overflow_count",
              "trade_buffer_size", "candle_buffer_size", "holes_filled", "duplicates_skipped")


class DatabaseWriter:
    """Buffered asynchronous writer of live trades and candles (the original API). ``db_url``:
    any krakked store URL (None: the configured store) or an open ``MarketStore`` (used, never
    closed here); ``pool_min_size``/``pool_max_size`` are
    kept for the signature (stores manage their connection); ``build_candles``: trade flushes
    build the 1m candles of the whole minutes they cover."""

    MAX_TRADE_BUFFER_SIZE: ClassVar[int] = 10000
    MAX_CANDLE_BUFFER_SIZE: ClassVar[int] = 1000

    def __init__(self, db_url: str | MarketStore | None = None, trade_buffer_size: int = 100,
                 trade_flush_interval: float = 5.0, candle_flush_interval: float = 1.0,
                 pool_min_size: int = 2, pool_max_size: int = 10, *,
                 build_candles: bool = True) -> None:
        if trade_buffer_size < 1:
            raise UsageError(f"trade_buffer_size must be >= 1, got {trade_buffer_size}")
        for name, value in (("trade_flush_interval", trade_flush_interval),
                            ("candle_flush_interval", candle_flush_interval)):
            if not value > 0:
                raise UsageError(f"{name} must be > 0 seconds, got {value}")
        self.db_url, self.trade_buffer_size, self.build_candles = (db_url, trade_buffer_size,
                                                                   build_candles)
        self.trade_flush_interval, self.candle_flush_interval = (trade_flush_interval,
                                                                 candle_flush_interval)
        self.pool_min_size, self.pool_max_size = pool_min_size, pool_max_size
        self._trades: deque[TradeRecord] = deque()
        self._candles: deque[CandleRecord] = deque()
        self._given = db_url if isinstance(db_url, MarketStore) else None
        self._store: MarketStore | None = self._given
        self._task: asyncio.Task[None] | None = None
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        self._stopping = self._failing = False
        self._chains: dict[str, _Chain] = {}
        self._stats = dict.fromkeys(_STAT_KEYS, 0)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (``StoreError`` naming it if that fails) and start flushing in the
        background. Idempotent."""
        if self._task is not None:
            return
        if self._store is None:
            self._store = await asyncio.to_thread(open_store, self.db_url)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="krakked-db-writer")

    async def stop(self) -> None:
        """Stop the background flushing, flush every buffered row and close the store. If the
        last flush fails the rows are kept and ``StoreError`` says how many were not written
        (the store stays open: ``stop()`` may be called again)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            await task
        if self._trades or self._candles:
            if self._store is None:
                self._store = await asyncio.to_thread(open_store, self.db_url)
            await self._flush_trades()
            await self._flush_candles()
            if self._trades or self._candles:
                raise StoreError(
                    f"the live writer could not store {len(self._trades)} trade(s) and "
                    f"{len(self._candles)} candle(s) in {self._where()}; they are still "
                    "buffered")
        store, self._store = self._store, self._given
        if store is not None and store is not self._given:
            await asyncio.to_thread(store.close)

    async def __aenter__(self) -> DatabaseWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _where(self) -> str:
        url = self._store.url if self._store is not None else self.db_url
        return redact_url(url) if url else "the configured store"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_trades = loop.time() + self.trade_flush_interval
        next_candles = loop.time() + self.candle_flush_interval
        while not self._stopping:
            timeout = max(0.0, min(next_trades, next_candles) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._stopping:
                return
            now = loop.time()
            if now >= next_trades or len(self._trades) >= self.trade_buffer_size:
                await self._flush_trades()
                next_trades = loop.time() + self.trade_flush_interval
            if now >= next_candles:
                await self._flush_candles()
                next_candles = loop.time() + self.candle_flush_interval

    # -- buffering ------------------------------------------------------------------------

    async def write_trade(self, trade: TradeRecord) -> None:
        """Buffer ``trade``; a full buffer (``trade_buffer_size``) is flushed at once in the
        background. Past ``MAX_TRADE_BUFFER_SIZE`` the oldest buffered trade is dropped and
        counted (``overflow_count``)."""
        self._trades.append(trade)
        self._trim(self._trades, self.MAX_TRADE_BUFFER_SIZE)
        if len(self._trades) >= self.trade_buffer_size:
            self._wake.set()

    async def write_candle(self, candle: CandleRecord) -> None:
        """Buffer a closed ``candle`` (flushed every ``candle_flush_interval`` seconds). Past
        ``MAX_CANDLE_BUFFER_SIZE`` the oldest buffered candle is dropped and counted."""
        self._candles.append(candle)
        self._trim(self._candles, self.MAX_CANDLE_BUFFER_SIZE)

    def _trim(self, buffer: deque[Any], cap: int) -> None:
        dropped = 0
        while len(buffer) > cap:
            buffer.popleft()
            dropped += 1
        if dropped:
            if not self._stats["overflow_count"]:
                log.warning("live writer buffer full (%d rows): dropping the oldest rows", cap)
            self._stats["overflow_count"] += dropped

    # -- flushing -------------------------------------------------------------------------

    def _failed(self, what: str, rows: int, exc: BaseException) -> None:
        self._stats["error_count"] += 1
        if not self._failing:
            log.warning("live writer could not store %d %s in %s (kept for the next flush): "
                        "%s: %s", rows, what, self._where(), type(exc).__name__, exc)
        self._failing = True

    async def _flush_trades(self) -> None:
        async with self._lock:
            if not self._trades or self._store is None:
                return
            batch = list(self._trades)
            self._trades.clear()
            try:
                chains = await asyncio.to_thread(self._store_trades, self._store, batch)
            except Exception as exc:  # kept and retried; the stream goes on
                self._trades.extendleft(reversed(batch))
                self._trim(self._trades, self.MAX_TRADE_BUFFER_SIZE)
                self._failed("trades", len(batch), exc)
                return
            self._chains.update(chains)
            self._ok()
            self._stats["trades_written"] += len(batch)
            self._stats["flush_count"] += 1

    def _store_trades(self, store: MarketStore, batch: list[TradeRecord]) -> dict[str, _Chain]:
        """Write ``batch`` with the coverage its id chains vouch for (worker thread)."""
        by_symbol: dict[str, list[TradeRecord]] = {}
        for rec in batch:
            by_symbol.setdefault(rec.symbol, []).append(rec)
        coverage: list[TradeCoverage] = []
        chains: dict[str, _Chain] = {}
        with store.session():
            for symbol, rows in by_symbol.items():
                chain = self._chains.get(symbol)
                if chain is None:
                    chain = _chain_from_store(store, symbol)
                keyed = sorted((r for r in rows if r.trade_id is not None),
                               key=lambda r: r.trade_id or 0)
                keyed = [r for r in keyed if chain.last_id is None or r.trade_id > chain.last_id]
                if keyed:
                    ranges, chain = _coverage(symbol, chain, keyed)
                    coverage += ranges
                chains[symbol] = chain
            store.upsert_trades(_trades_table(batch),
                                sync=[SyncUpdate(s, "trades") for s in by_symbol],
                                coverage=coverage, build_candles=self.build_candles)
        return chains

    async def _flush_candles(self) -> None:
        async with self._lock:
            if not self._candles or self._store is None:
                return
            batch = list(self._candles)
            self._candles.clear()
            store = self._store
            sync = sorted({(c.symbol, c.interval_minutes) for c in batch})

            def write() -> None:
                store.upsert_candles(
                    [c.to_candle() for c in batch],
                    sync=[SyncUpdate(s, f"candles_{timeframe_name(m)}") for s, m in sync])

            try:
                await asyncio.to_thread(write)
            except Exception as exc:  # kept and retried
                self._candles.extendleft(reversed(batch))
                self._trim(self._candles, self.MAX_CANDLE_BUFFER_SIZE)
                self._failed("candles", len(batch), exc)
                return
            self._ok()
            self._stats["candles_written"] += len(batch)
            self._stats["flush_count"] += 1

    def _ok(self) -> None:
        if self._failing:
            log.info("live writer stores again in %s", self._where())
        self._failing = False

    async def flush(self) -> None:
        """Flush both buffers now (the store must be open: after ``start()``)."""
        await self._flush_trades()
        await self._flush_candles()

    # -- status ---------------------------------------------------------------------------

    async def update_sync_status(self, symbol: str, data_type: str,
                                 timestamp: datetime) -> None:
        """Refresh ``symbol``'s ``data_sync_status`` row of ``data_type`` (``trades`` or
        ``candles_<tf>``) from what is stored. A status row describes the store, so its
        newest time is the newest stored row, never ``timestamp`` as given (kept for the
        original signature)."""
        update = SyncUpdate(symbol, data_type)
        kind, _ = sync_target(update)
        if self._store is None:
            raise UsageError("DatabaseWriter.update_sync_status needs start() first")
        store = self._store

        async with self._lock:
            if kind == "trades":
                await asyncio.to_thread(store.upsert_trades, TRADE_SCHEMA.empty_table(),
                                        [update], build_candles=False)
            else:
                await asyncio.to_thread(store.upsert_candles, [], [update])

    async def last_stored_trade(self, symbol: str) -> tuple[int, datetime] | None:
        """The newest Kraken trade id of ``symbol`` stored (or flushed by this writer) and its
        time; None when there is none."""
        chain = self._chains.get(symbol)
        if chain is None and self._store is not None:
            store = self._store
            async with self._lock:
                chain = self._chains.get(symbol)
                if chain is None:
                    chain = await asyncio.to_thread(_chain_from_store, store, symbol)
                    self._chains[symbol] = chain
        if chain is None or chain.last_id is None or chain.last_us is None:
            return None
        return chain.last_id, from_epoch_us(chain.last_us)

    def get_stats(self) -> dict[str, int]:
        """``trades_written, candles_written, flush_count, error_count, overflow_count,
        trade_buffer_size, candle_buffer_size`` (rows buffered now), plus krakked's
        ``holes_filled`` (trades fetched over REST into holes) and ``duplicates_skipped``."""
        stats = dict(self._stats)
        stats.update(trade_buffer_size=len(self._trades), candle_buffer_size=len(self._candles))
        return {k: stats[k] for k in _STAT_KEYS}


# -- Kraken WS v2 objects -----------------------------------------------------------------------


def _parse_time(value: Any, what: str) -> datetime:
    """An RFC3339 string (UTC; more than 6 fraction digits rounded half-even to the µs, as REST
    rows are) or a datetime -> an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)  # 3.11: truncates past 6 digits
    except (TypeError, ValueError):
        raise UsageError(f"{what}: {value!r} is not an RFC3339 time") from None
    fraction = re.search(r"\.(\d{7,})", value)
    if fraction:
        us = (Decimal("0." + fraction.group(1)) * 1_000_000).to_integral_value(ROUND_HALF_EVEN)
        moment = moment.replace(microsecond=0) + timedelta(microseconds=int(us))
    return moment


def _dec(value: Any, what: str) -> Decimal:
    try:
        return _decimal(value)  # a float (a client decoding JSON as floats) via its repr
    except (TypeError, ArithmeticError):
        raise UsageError(f"{what}: {value!r} is not a number") from None


def trade_record(symbol: str, trade: Mapping[str, Any]) -> TradeRecord:
    """A WS v2 trade object (``price, qty, timestamp, side`` + ``trade_id, ord_type``) ->
    ``TradeRecord`` of ``symbol``, exactly; ``UsageError`` naming the field if one is bad."""
    try:
        trade_id = trade.get("trade_id")
        return TradeRecord(
            symbol, _parse_time(trade["timestamp"], f"{symbol} trade timestamp"),
            _dec(trade["price"], f"{symbol} trade price"),
            _dec(trade["qty"], f"{symbol} trade qty"), str(trade["side"]),
            trade_id=None if trade_id is None else int(trade_id),
            order_type=trade.get("ord_type"), misc=str(trade.get("misc") or ""), source="ws")
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{symbol} trade is not a WS v2 trade object ({exc!r}): "
                         f"{dict(trade)}") from None


def candle_record(symbol: str, ohlc: Mapping[str, Any], interval: int) -> CandleRecord:
    """A WS v2 ohlc object -> ``CandleRecord`` keyed on ``interval_begin`` (an object without
    it, the original shape, is keyed on ``timestamp`` as the open time)."""
    try:
        begin = ohlc["interval_begin"] if "interval_begin" in ohlc else ohlc["timestamp"]
        vwap = ohlc.get("vwap")
        return CandleRecord(
            symbol, _parse_time(begin, f"{symbol} ohlc interval_begin"),
            int(ohlc.get("interval", interval)),
            *(_dec(ohlc[k], f"{symbol} ohlc {k}") for k in ("open", "high", "low", "close",
                                                              "volume")),
            int(ohlc.get("trades", 0)),
            None if vwap is None else _dec(vwap, f"{symbol} ohlc vwap"), source="ws")
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{symbol} ohlc is not a WS v2 ohlc object ({exc!r}): "
                         f"{dict(ohlc)}") from None


# -- filling holes over REST -------------------------------------------------------------------


# -- the integration ------------------------------------------------------------------------


@dataclass
class _PairTrades:
    """A symbol's newest id handed to the writer, and the hole fill in flight with the trades
    waiting behind it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    known: bool = False
    last_id: int | None = None
    last_time: datetime | None = None
    filling: asyncio.Task[None] | None = None
    pending: list[TradeRecord] = field(default_factory=list)


class WebSocketDBIntegration:
    """Feeds a ``DatabaseWriter`` from Kraken WS v2 ``trade`` and ``ohlc`` objects (the original
    API; symbols canonical, ``XBTUSD``). Trades are deduplicated by ``trade_id`` per symbol,
    also against the newest stored id (a reconnect's or restart's snapshot is stored once).
    With ``fill_holes``, a trade whose id skips ahead starts a background REST fill of the ids
    in between, and that symbol's later trades wait behind it (they reach the writer in id
    order). Candles are keyed on ``interval_begin`` and written only once closed (see
    ``on_ohlc`` and ``flush_current_candles``); ``now`` is the clock that decides it.
    """

    def __init__(self, db_writer: DatabaseWriter, *, fill_holes: HoleFiller | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db_writer = db_writer
        self.fill_holes = fill_holes
        self.now = now
        self._pairs: dict[str, _PairTrades] = {}
        self._candles: dict[tuple[str, int], CandleRecord] = {}

    # -- trades ---------------------------------------------------------------------------

    async def on_trade(self, symbol: str, trade_data: Mapping[str, Any]) -> None:
        """Store one WS v2 trade object of ``symbol`` (``price, qty, timestamp, side``, and
        ``trade_id, ord_type``) unless its ``trade_id`` is already stored or handed over."""
        rec = trade_record(symbol, trade_data)
        if rec.trade_id is None:
            await self.db_writer.write_trade(rec)
            return
        pair = self._pairs.setdefault(symbol, _PairTrades())
        async with pair.lock:
            if not pair.known:
                stored = await self.db_writer.last_stored_trade(symbol)
                if stored is not None and (pair.last_id is None or stored[0] > pair.last_id):
                    pair.last_id, pair.last_time = stored
                pair.known = True
            if pair.filling is not None:
                pair.pending.append(rec)
                return
            await self._take(symbol, pair, [rec])

    async def _take(self, symbol: str, pair: _PairTrades, records: list[TradeRecord]) -> None:
        """Hand ``records`` (in arrival order) to the writer, skipping ids already taken; at a
        hole (with a filler) start its fill and keep the rest pending behind it."""
        for k, rec in enumerate(records):
            assert rec.trade_id is not None
            if pair.last_id is not None and rec.trade_id <= pair.last_id:
                self.db_writer._stats["duplicates_skipped"] += 1
                continue
            if (self.fill_holes is not None and pair.last_id is not None
                    and pair.last_time is not None and rec.trade_id > pair.last_id + 1):
                pair.pending = list(records[k:])
                pair.filling = asyncio.create_task(
                    self._fill(symbol, pair, pair.last_id, pair.last_time, rec.trade_id),
                    name=f"krakked-hole-{symbol}")
                return
            await self.db_writer.write_trade(rec)
            pair.last_id, pair.last_time = rec.trade_id, rec.timestamp

    async def _fill(self, symbol: str, pair: _PairTrades, after_id: int, after_time: datetime,
                    before_id: int) -> None:
        assert self.fill_holes is not None
        try:
            filled = await self.fill_holes.fill(symbol, after_id, after_time, before_id)
        except Exception as exc:  # the hole stays (krakked gaps finds it); the stream goes on
            log.warning("could not fill trade ids %d..%d of %s over REST: %s: %s",
                        after_id + 1, before_id - 1, symbol, type(exc).__name__, exc)
            filled = []
        async with pair.lock:
            for rec in filled:
                await self.db_writer.write_trade(rec)
                pair.last_id, pair.last_time = rec.trade_id, rec.timestamp
            self.db_writer._stats["holes_filled"] += len(filled)
            if before_id - after_id - 1 > len(filled):
                log.warning("%d trade id(s) of %s between %d and %d not found over REST",
                            before_id - after_id - 1 - len(filled), symbol, after_id, before_id)
            rest, pair.pending, pair.filling = pair.pending, [], None
            if rest:  # the trade after the hole is written even if the hole stays open
                head = rest[0]
                await self.db_writer.write_trade(head)
                pair.last_id, pair.last_time = head.trade_id, head.timestamp
                await self._take(symbol, pair, rest[1:])

    async def wait_for_fills(self) -> None:
        """Wait until every hole fill in flight has handed its trades (and those pending
        behind it) to the writer."""
        while True:
            tasks = [p.filling for p in self._pairs.values() if p.filling is not None]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- candles --------------------------------------------------------------------------

    async def on_ohlc(self, symbol: str, ohlc_data: Mapping[str, Any],
                      interval: int = 1) -> None:
        """Track the running candle of ``symbol`` (keyed on ``interval_begin``; ``interval``
        when the object has none) and write the previous one once a later one begins."""
        rec = candle_record(symbol, ohlc_data, interval)
        key = (symbol, rec.interval_minutes)
        current = self._candles.get(key)
        if current is not None and rec.timestamp < current.timestamp:
            return  # an update of a candle already closed
        if current is not None and rec.timestamp > current.timestamp:
            await self.db_writer.write_candle(current)
        self._candles[key] = rec

    async def flush_current_candles(self) -> None:
        """Write the tracked candles whose interval has ended by ``now()`` (a running candle
        never), and wait for hole fills in flight, so the original shutdown — this, then
        ``db_writer.stop()`` — stores everything that is complete."""
        await self.wait_for_fills()
        moment = self.now()
        for key, rec in list(self._candles.items()):
            if rec.timestamp + timedelta(minutes=rec.interval_minutes) <= moment:
                await self.db_writer.write_candle(rec)
                del self._candles[key]

    # -- whole frames -----------------------------------------------------------------------

    async def on_frame(self, frame: Mapping[str, Any],
                       symbol_name: Callable[[str], str] | None = None) -> None:
        """A whole WS v2 ``trade`` or ``ohlc`` data frame (other channels are ignored); its
        v2 symbols (``BTC/USD``) are translated by ``symbol_name`` (default: krakked's offline
        name tables)."""
        channel = frame.get("channel")
        if channel not in ("trade", "ohlc"):
            return
        symbol_name = symbol_name or resolve_offline
        for item in frame.get("data") or ():
            symbol = symbol_name(item["symbol"])
            if channel == "trade":
                await self.on_trade(symbol, item)
            else:
                await self.on_ohlc(symbol, item, int(item.get("interval", 1)))


def integrate_db_writer(ws_client: Any, db_writer: DatabaseWriter, *,
                        fill_holes: HoleFiller | None = None) -> WebSocketDBIntegration:
    """Attach a ``WebSocketDBIntegration`` to ``ws_client`` and return it: a client with
    ``add_handler(channel, callback)`` gets ``integration.on_frame`` (a coroutine function
    taking a whole v2 frame) for ``trade`` and ``ohlc``; else a client with ``on_trade`` /
    ``on_ohlc`` callback attributes gets ``integration.on_trade`` / ``on_ohlc`` (called with
    canonical symbols). ``UsageError`` for a client with neither."""
    integration = WebSocketDBIntegration(db_writer, fill_holes=fill_holes)
    if callable(getattr(ws_client, "add_handler", None)):
        ws_client.add_handler("trade", integration.on_frame)
        ws_client.add_handler("ohlc", integration.on_frame)
    elif hasattr(ws_client, "on_trade") or hasattr(ws_client, "on_ohlc"):
        ws_client.on_trade = integration.on_trade
        ws_client.on_ohlc = integration.on_ohlc
    else:
        raise UsageError(
            f"integrate_db_writer: {type(ws_client).__name__} has neither add_handler(channel, "
            "callback) nor on_trade/on_ohlc callback attributes")
    return integration


