"""The live stream: Kraken's WS v2 into the live cache (and, given a writer, into the store).

``LiveMarket`` owns one ``KrakenWS`` connection, a ``LiveCache`` keyed by canonical pair names,
book resyncs (one resubscribe per desync, rate-limited by the client) and, when persisting, a
``WebSocketDBIntegration`` fed in frame order by one consumer task so trades are deduplicated
and holes in a pair's trade ids are filled over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from krakked.errors import KrakkedError, UsageError
from krakked.kraken.ws import KrakenWS, WSEvent
from krakked.market.book import BOOK_DEPTHS
from krakked.market.candles import interval_minutes
from krakked.market.live import DEFAULT_STALE_TOLERANCE, BookView, LiveCache, LiveCandle
from krakked.market.metadata import PairMetadata

__all__ = ["CHANNELS", "WS_INTERVALS", "LiveMarket"]

log = logging.getLogger("krakked.sync.stream")

CHANNELS = ("ticker", "trade", "ohlc", "book")
WS_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
"""The ohlc intervals (minutes) Kraken's WS v2 serves."""
CANDLE_FLUSH_SECONDS = 1.0
REST_CHECK_SECONDS = 30.0


class LiveMarket:
    """Live ticker, trades, running candles and L2 books of ``pairs`` from Kraken's WS v2.

    ``await start()`` connects and subscribes (``channels`` of ``CHANNELS``; ``intervals`` in
    minutes or timeframe names for ohlc; ``book_depth`` one of 10, 25, 100, 500, 1000);
    ``await stop()`` closes, writes the last closed candles and flushes the writer. Reads
    (``get_latest_price`` …) raise ``DataStaleError`` when the value is older than
    ``stale_tolerance`` seconds and ``NoDataError`` before it arrived. With ``integration`` (a
    ``WebSocketDBIntegration``), trades and closed candles are persisted as they stream.
    """

    def __init__(self, pairs: Sequence[PairMetadata], *, ws_url: str,
                 channels: Sequence[str] = ("ticker",), intervals: Sequence[int | str] = (1,),
                 book_depth: int = 10, stale_tolerance: float = DEFAULT_STALE_TOLERANCE,
                 resolve: Callable[[str], str] | None = None, integration: Any = None,
                 own_writer: bool = False,
                 rest_check: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 ws_options: dict[str, Any] | None = None) -> None:
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise UsageError(f"unknown channel(s) {', '.join(unknown)}: use {', '.join(CHANNELS)}")
        if book_depth not in BOOK_DEPTHS:
            raise UsageError(f"book depth {book_depth} is not one of "
                             f"{', '.join(map(str, BOOK_DEPTHS))}")
        self.intervals = tuple(dict.fromkeys(interval_minutes(i) for i in intervals))
        bad = [i for i in self.intervals if i not in WS_INTERVALS]
        if bad:
            raise UsageError(f"Kraken's WS serves no {bad[0]}-minute candles "
                             f"(1m 5m 15m 30m 1h 4h 1d 1w 15d)")
        if not pairs:
            raise UsageError("no pairs to stream")
        self.pairs = {p.canonical: p for p in pairs}
        self.channels = tuple(dict.fromkeys(channels))
        self.book_depth = book_depth
        self._resolve = resolve
        self._by_ws = {p.ws_symbol: p.canonical for p in pairs}
        self.cache = LiveCache(
            self._by_ws, decimals={p.ws_symbol: (p.price_decimals, p.volume_decimals)
                                   for p in pairs},
            stale_tolerance=stale_tolerance, book_depth=book_depth, clock=clock, wall=wall,
            liveness=self._last_frame_at)
        self._clock = clock
        self.integration = integration
        self._own_writer = own_writer and integration is not None
        self._rest_check = rest_check
        self.rest_reachable: bool | None = None
        self.ws = KrakenWS(ws_url, on_frame=self._on_frame, on_event=self._on_event,
                           clock=clock, **(ws_options or {}))
        self._queue: asyncio.Queue[tuple[str, str, Any] | None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._resyncing: set[str] = set()
        self._resync_at: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, list[Callable[[dict[str, Any]], Any]]] = {}
        self.book_resubscribes = 0
        self.rejected: dict[str, str] = {}
        self.persist_errors = 0
        self._started = False

    # -- lifecycle --
    async def start(self) -> None:
        """Connect, subscribe every channel for every pair, start the background tasks."""
        if self._started:
            return
        self._started = True
        if self._own_writer:
            await self.integration.db_writer.start()
        if self.integration is not None or self._handlers:
            self._queue = asyncio.Queue()
            self._tasks.append(asyncio.create_task(self._persist(), name="krakked-persist"))
        if self.integration is not None:
            self._tasks.append(asyncio.create_task(self._close_candles(),
                                                   name="krakked-candles"))
        if self._rest_check is not None:
            self._tasks.append(asyncio.create_task(self._check_rest(), name="krakked-rest"))
        try:
            await self.ws.start()
            await self._subscribe_all()
        except BaseException:
            await self.stop()
            raise

    async def _subscribe_all(self) -> None:
        symbols = list(self._by_ws)
        for channel in self.channels:
            if channel == "ohlc":
                for interval in self.intervals:
                    self._note(await self.ws.subscribe("ohlc", symbols, interval=interval))
            elif channel == "book":
                self._note(await self.ws.subscribe("book", symbols, depth=self.book_depth))
            elif channel == "trade":
                self._note(await self.ws.subscribe("trade", symbols, snapshot=True))
            else:
                self._note(await self.ws.subscribe(channel, symbols))

    def _note(self, result: Any) -> None:
        for symbol, error in result.rejected.items():
            self.rejected[self._by_ws.get(symbol, symbol)] = error

    async def stop(self) -> None:
        """Close the connection; persist the last closed candles and everything buffered."""
        await self.ws.stop()
        self.cache.on_disconnected()
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.put(None)
            persist = self._tasks[0]
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(persist, timeout=60)
        tasks = self._tasks + list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.integration is not None:
            try:
                await self.integration.flush_current_candles()
            finally:
                if self._own_writer:
                    await self.integration.db_writer.stop()
        self._started = False

    async def __aenter__(self) -> LiveMarket:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- frames and events --
    def _on_frame(self, frame: dict[str, Any]) -> None:
        cache = self.cache
        cache.apply(frame)
        if cache.needs_resync:
            now = self._clock()
            for symbol in cache.needs_resync - self._resyncing:
                # once per desync; again only if no new snapshot came within the client's
                # resync interval (a resubscribe it skipped, or one that got no snapshot)
                if now - self._resync_at.get(symbol, -1e18) >= self.ws.resync_interval:
                    self._resync_at[symbol] = now
                    self._resyncing.add(symbol)
                    task = asyncio.get_running_loop().create_task(self._resync(symbol))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
        queue = self._queue
        if queue is None:
            return
        channel = frame.get("channel")
        if channel in self._handlers:
            queue.put_nowait(("frame", channel, frame))
        if self.integration is not None and (channel == "trade" or channel == "ohlc"):
            for item in frame.get("data") or ():
                pair = self._by_ws.get(item.get("symbol"))
                if pair is not None:
                    queue.put_nowait((channel, pair, item))

    def add_handler(self, channel: str, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call the coroutine function ``callback`` with every decoded ``channel`` frame (v2
        symbols, exact Decimals), in order, off the reader (``integrate_db_writer`` uses this).
        Register before ``start()``."""
        if channel not in CHANNELS:
            raise UsageError(f"unknown channel {channel!r}: use {', '.join(CHANNELS)}")
        self._handlers.setdefault(channel, []).append(callback)

    def _on_event(self, event: WSEvent) -> None:
        if event.kind == "connected":
            self.cache.on_connected()
        elif event.kind == "disconnected":
            self.cache.on_disconnected()
        elif event.kind == "rejected":
            for symbol in event.symbols:
                self.rejected[self._by_ws.get(symbol, symbol)] = event.detail

    def _last_frame_at(self) -> float | None:
        age = self.ws.stats().get("last_frame_age")
        return None if age is None else self._clock() - age

    async def _resync(self, symbol: str) -> None:
        try:
            log.warning("book %s out of sync (checksum or crossed): resubscribing", symbol)
            self.book_resubscribes += 1
            await self.ws.resubscribe("book", symbol)
        except KrakkedError as exc:
            log.warning("book %s: resubscribe failed: %s", symbol, exc)
        finally:
            self._resyncing.discard(symbol)

    async def _persist(self) -> None:
        queue = self._queue
        assert queue is not None
        integration = self.integration
        while True:
            item = await queue.get()
            if item is None:
                return
            channel, pair, data = item
            try:
                if channel == "frame":
                    for callback in self._handlers[pair]:
                        await callback(data)
                elif channel == "trade":
                    await integration.on_trade(pair, data)
                else:
                    await integration.on_ohlc(pair, data, int(data["interval"]))
            except Exception as exc:  # one bad frame or handler must not end the stream
                self.persist_errors += 1
                log.error("handling %s %s failed: %s: %s", channel, pair, type(exc).__name__,
                          exc)

    async def _close_candles(self) -> None:
        while True:
            await asyncio.sleep(CANDLE_FLUSH_SECONDS)
            try:
                await self.integration.flush_current_candles()
            except KrakkedError as exc:
                self.persist_errors += 1
                log.error("writing closed candles failed: %s", exc)

    async def _check_rest(self) -> None:
        assert self._rest_check is not None
        while True:
            try:
                await asyncio.to_thread(self._rest_check)
                self.rest_reachable = True
            except KrakkedError:
                self.rest_reachable = False
            await asyncio.sleep(REST_CHECK_SECONDS)

    # -- reads --
    def _pair(self, pair: str) -> str:
        if pair in self.pairs:
            return pair
        canonical = self._resolve(pair) if self._resolve else self._by_ws.get(pair, pair)
        if canonical not in self.pairs:
            raise UsageError(f"{pair} is not streamed here (streaming "
                             f"{', '.join(sorted(self.pairs))})")
        return canonical

    def get_latest_price(self, pair: str) -> Decimal:
        """The last trade price (the trade feed when subscribed, else the ticker's ``last``)."""
        return self.cache.latest_price(self._pair(pair))

    def get_best_bid_ask(self, pair: str) -> tuple[Decimal, Decimal]:
        """(best bid, best ask): the ticker's, else the book's."""
        return self.cache.best_bid_ask(self._pair(pair))

    def get_live_ohlc(self, pair: str, tf: str | int = "1m") -> LiveCandle:
        """The running candle of ``pair`` at timeframe ``tf`` (``closed`` once its end passed)."""
        return self.cache.live_ohlc(self._pair(pair), interval_minutes(tf))

    def get_book(self, pair: str, depth: int | None = None) -> BookView:
        """``pair``'s L2 book, best first, ``depth`` levels per side (all subscribed when None)."""
        return self.cache.book(self._pair(pair), depth)

    def get_data_status(self) -> dict[str, Any]:
        """REST reachable, WS connected, pairs with a fresh ticker, per-pair staleness, checksum
        failures, reconnects, rejected subscriptions and the writer's stats."""
        ws = self.ws.stats()
        cache = self.cache
        writer = None
        if self.integration is not None:
            writer = self.integration.db_writer.get_stats()
        return {
            "rest_reachable": self.rest_reachable,
            "ws_connected": bool(ws.get("connected")),
            "system": ws.get("system"),
            "pairs": len(self.pairs),
            "pairs_with_fresh_ticker": cache.fresh_tickers(),
            "stale_tolerance_seconds": cache.stale_tolerance,
            "per_pair": cache.pair_status(),
            "checksum_failures": dict(cache.checksum_failures),
            "crossed_books": dict(cache.crossed_books),
            "book_resubscribes": self.book_resubscribes,
            "reconnects": ws.get("reconnects", 0),
            "malformed_frames": ws.get("malformed", 0) + cache.malformed,
            "rejected": dict(self.rejected),
            "persist_errors": self.persist_errors,
            "writer": writer,
        }
