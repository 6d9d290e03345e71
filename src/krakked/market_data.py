"""``Market``: the one front door to market data — universe, pair metadata, the store, sync jobs.

It is the original design's "Market Data & Pair Universe" API in one object: ``get_universe``,
``get_pair_metadata``, ``backfill_ohlc``, ``get_ohlc``, ``get_ohlc_since``, ``refresh``,
``get_data_status`` (the live calls join it with the live stream). Every command and
``krakked.history`` reach market data through it, so a pair name resolves the same way
everywhere: live ``AssetPairs`` when fetched, else the store's ``pairs`` snapshot, else the
built-in offline tables (``market.pairs.Universe.resolve``, the one function that does it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from krakked.config import Settings, load_settings
from krakked.errors import KrakenError, NoDataError, StoreError, UnknownPairError, UsageError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import Candle, from_epoch_us
from krakked.market.gaps import DataGap
from krakked.market.pairs import PairMetadata, Universe, snapshot_cannot_apply
from krakked.store import MarketStore, open_store
from krakked.store.arrow import PAIR_SCHEMA
from krakked.sync.csv_import import DEFAULT_BATCH_SIZE, ImportResult, import_csv
from krakked.sync.csv_import import ProgressCallback as ImportProgressCallback
from krakked.sync.gaps import (
    GapFillReport,
    GapScan,
    ProgressCallback,
    TradesFill,
    fill_gap_ohlc,
    fill_gap_trades,
    fill_gaps,
    scan_gaps,
)
from krakked.sync.ohlc import OhlcSyncResult, backfill_ohlc
from krakked.sync.stream import LiveMarket
from krakked.sync.stream_holes import HoleFiller
from krakked.sync.stream_writer import DatabaseWriter, WebSocketDBIntegration
from krakked.sync.trades import TradesBackfillResult, TradesProgress, backfill_trades
from krakked.sync.verify import VerifyResult, verify_candles

__all__ = ["Market"]

log = logging.getLogger("krakked.market_data")


class Market:
    """Market data for the region's universe, stored in one market store.

    ``Market()`` uses the default store (a DuckDB file in the user data directory) and
    api.kraken.com; pass ``store=`` (a URL or a ``MarketStore``), ``client=`` or ``transport=``
    (e.g. ``Simulator().transport()``) to change either. ``read_only=True`` opens a store URL
    for reading (it must exist; nothing is created).

    The universe and pair metadata are fetched on first use. When ``AssetPairs`` cannot be
    fetched, the last ``pairs`` snapshot in the store is served instead, marked stale
    (``universe_is_stale``, ``universe_updated_at``, and a warning in the log); without one,
    the universe and metadata calls raise Kraken's error (never an empty universe), while
    names still resolve through the built-in offline tables. ``offline=True`` never asks
    Kraken: names and metadata come from the stored snapshot, else the offline tables.
    """

    def __init__(
        self,
        store: str | MarketStore | None = None,
        *,
        settings: Settings | None = None,
        client: SpotClient | None = None,
        transport: httpx.BaseTransport | None = None,
        offline: bool = False,
        read_only: bool = False,
    ) -> None:
        self.settings = settings or load_settings()
        self._own_store = not isinstance(store, MarketStore)
        self.store = store if isinstance(store, MarketStore) else open_store(
            store, settings=self.settings, read_only=read_only)
        self._own_client = client is None
        self.client = client or SpotClient(settings=self.settings, transport=transport)
        self.offline = offline
        self.universe = Universe(self.client.get_asset_pairs, region=self.settings.region,
                                 settings=self.settings.universe,
                                 fetch_tickers=self.client.get_ticker)
        self._loaded = False
        self._pairs_error: KrakenError | None = None
        self.store.set_resolver(self.resolve)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store and client this Market opened (not ones it was given)."""
        if self._own_store:
            self.store.close()
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Market:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- universe ------------------------------------------------------------------------------

    def refresh(self) -> list[str]:
        """Re-fetch AssetPairs (and Ticker when a liquidity floor is set), re-apply the region
        and ``[universe]`` rules, store the snapshot, and return the universe."""
        now = datetime.now(UTC)
        universe = self.universe.refresh(updated_at=now)
        self._loaded, self._pairs_error = True, None
        rows = [p.to_row(now) for p in self.universe.all_pairs.values()]
        import pyarrow as pa

        self.store.write_pairs(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
        return [p.canonical for p in universe]

    def _ensure_pairs(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not self.offline:
            try:
                self.refresh()
                return
            except KrakenError as exc:
                self._pairs_error = exc
        self._load_snapshot()

    def _load_snapshot(self) -> None:
        """AssetPairs is not at hand: serve the stored snapshot (stale) if there is one."""
        pairs, taken = self._stored_snapshot()
        exc = self._pairs_error
        why = f"AssetPairs unavailable ({exc})" if exc else "offline"
        if not pairs:
            log.info("%s and no stored pairs snapshot: names resolve through the offline "
                     "tables only", why)
            return
        when = taken.isoformat() if taken else "at an unknown time"
        if self.universe.load_snapshot(pairs, taken) is None:
            log.warning("%s; the stored pairs snapshot (taken %s) cannot apply %s, so no "
                        "universe is served (pair metadata is, stale)", why, when,
                        " or ".join(snapshot_cannot_apply(self.settings.universe)))
        elif exc is not None:
            log.warning("%s; serving the stored pairs snapshot taken %s (stale)", why, when)

    def _stored_snapshot(self) -> tuple[dict[str, PairMetadata], datetime | None]:
        """The store's ``pairs`` snapshot and when it was taken."""
        try:
            rows = self.store.read_pairs().to_pylist()
        except StoreError as exc:
            log.warning("the stored pairs snapshot could not be read (%s)", exc)
            return {}, None
        pairs: dict[str, PairMetadata] = {}
        for row in rows:
            try:
                meta = PairMetadata.from_row(row)
            except (StoreError, TypeError) as exc:
                log.warning("pairs snapshot: row %r unreadable (%s); skipped",
                            row.get("canonical"), exc)
                continue
            pairs.setdefault(meta.canonical, meta)
        stamps = [r["updated_at"] for r in rows if r.get("updated_at") is not None]
        return pairs, max(stamps, default=None)

    def _require_universe(self) -> list[PairMetadata]:
        self._ensure_pairs()
        if not self.universe.available:
            if self._pairs_error is not None:
                raise self._pairs_error
            raise NoDataError("no universe: offline, and the store holds no usable pairs "
                              "snapshot (run `krakked universe` once with Kraken reachable)")
        return list(self.universe.pairs)

    @property
    def universe_updated_at(self) -> datetime | None:
        """When the pair metadata in use was fetched from Kraken (the snapshot's ``updated_at``
        when stale); None before the universe is loaded or when none could be."""
        return self.universe.updated_at

    @property
    def universe_is_stale(self) -> bool:
        """True when the universe and metadata come from the stored snapshot because
        ``AssetPairs`` could not be fetched."""
        return self.universe.stale

    def get_universe(self) -> list[str]:
        """Canonical names (Kraken altnames) of the universe, sorted. Raises Kraken's error
        when ``AssetPairs`` cannot be fetched and no stored snapshot can stand in."""
        return [p.canonical for p in self._require_universe()]

    def get_universe_metadata(self) -> list[PairMetadata]:
        """``PairMetadata`` of every universe pair (same failure rule as ``get_universe``)."""
        return self._require_universe()

    def resolve(self, pair: str) -> str:
        """Any alias (``BTC/USD``, ``XXBTZUSD``, ``XBT/USD``…) -> canonical (``XBTUSD``)."""
        self._ensure_pairs()
        return self.universe.resolve(pair)

    def get_pair_metadata(self, pair: str) -> PairMetadata:
        """Metadata of any Kraken pair (not only the universe's); ``UnknownPairError`` for a
        name that names no pair; Kraken's error when no metadata could be fetched or stored."""
        canonical = self.resolve(pair)
        known = self.universe.all_pairs
        if canonical not in known:
            if not known and self._pairs_error is not None:
                raise self._pairs_error
            raise UnknownPairError(pair)
        return known[canonical]

    # -- OHLC ----------------------------------------------------------------------------------

    def backfill_ohlc(self, pair: str, timeframe: str | int, since: datetime | int | None = None,
                      *, full: bool = False) -> OhlcSyncResult:
        """Store the closed candles Kraken still serves (its latest 720) and resume from there
        next time."""
        return backfill_ohlc(self.client, self.store, self.resolve(pair), timeframe,
                             rest_symbol=self.rest_name(pair), since=since, full=full)

    def get_ohlc(self, pair: str, timeframe: str | int, lookback: int | None = None
                 ) -> list[Candle]:
        """The last ``lookback`` closed candles from the store, oldest first."""
        return self.store.get_ohlc(self.resolve(pair), timeframe, lookback)

    def get_ohlc_since(self, pair: str, timeframe: str | int,
                       since_ts: datetime | int | str) -> list[Candle]:
        """Closed candles with open time >= ``since_ts`` from the store."""
        return self.store.get_ohlc_since(self.resolve(pair), timeframe, since_ts)

    def get_candles(self, pair: str, timeframe: str | int, start: Any = None, end: Any = None,
                    limit: int | None = None, as_: Any = "candles") -> Any:
        """``MarketStore.get_candles`` with any pair alias."""
        return self.store.get_candles(self.resolve(pair), timeframe, start, end, limit, as_)

    def verify(self, pair: str, timeframe: str | int = "1m") -> VerifyResult:
        """Compare ``pair``'s candles built from stored trades with Kraken's OHLC over the
        buckets both know (``sync.verify.verify_candles``)."""
        return verify_candles(self.client, self.store, self.resolve(pair), timeframe,
                              rest_symbol=self.rest_name(pair))

    # -- health --------------------------------------------------------------------------------

    def get_data_status(self) -> dict[str, Any]:
        """REST reachable? universe size, store health and what it holds."""
        try:
            self.client.get_system_status()
            rest: dict[str, Any] = {"reachable": True, "error": None}
        except KrakenError as exc:
            rest = {"reachable": False, "error": str(exc)}
        return {
            "rest": rest,
            "universe_size": len(self.universe.pairs),
            "store": self.store.health_check(),
            "symbols": self.store.get_symbols(),
        }

    # -- CSV import --------------------------------------------------------------------------

    def import_csv(
        self,
        paths: str | Path | Sequence[str | Path] = (),
        pairs: Sequence[str] | None = None,
        all_intervals: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        skip_bad: bool = False,
        build_candles: bool = True,
        progress: ImportProgressCallback | None = None,
        *,
        directory: str | Path | None = None,
    ) -> ImportResult:
        """Import Kraken's CSV files (time and sales -> trades, OHLCVT -> candles) from
        ``paths`` and ``directory``: files, directories (searched recursively) or zip
        archives (read in place). Pairs come from the file names through this Market's
        resolver; ``pairs`` (any aliases) keeps only those; OHLCVT files other than 1-minute
        ones only with ``all_intervals``. A file with a bad row stores nothing and is reported
        in ``ImportResult.failed`` (``skip_bad`` skips and counts bad rows instead); the other
        files go on. See ``krakked.sync.csv_import`` for batches and coverage."""
        given = [paths] if isinstance(paths, str | Path) else list(paths)
        return import_csv(self.store, given, directory, resolve=self.resolve, pairs=pairs,
                          all_intervals=all_intervals, batch_size=batch_size,
                          skip_bad=skip_bad, build_candles=build_candles, progress=progress)

    # -- gaps ----------------------------------------------------------------------------------

    def _gap_symbols(self, pairs: Sequence[str] | None) -> list[str]:
        """Canonical names of ``pairs`` (default: the original gap filler's ``DEFAULT_SYMBOLS``),
        each once, first seen first; ``UnknownPairError`` for a name that names no pair."""
        from krakked.market.pairs import DEFAULT_SYMBOLS

        names = list(DEFAULT_SYMBOLS) if pairs is None else list(pairs)
        if not names:
            raise UsageError("give at least one pair, e.g. XBTUSD")
        return list(dict.fromkeys(self.resolve(name) for name in names))

    def detect_gaps(self, pairs: Sequence[str] | None = None,
                    min_gap: str | int | timedelta = "2m", *,
                    now: datetime | None = None) -> GapScan:
        """The gaps in stored 1m candles and trades of ``pairs`` (default ``DEFAULT_SYMBOLS``:
        XRP/USDT, BTC/USDT, XRP/BTC) longer than ``min_gap`` (``90s``, ``2m``, ``1h``, ``1d``, a
        ``timedelta`` or minutes), the candle tail up to the last minute closed at ``now``
        (default: the clock). ``GapScan.gaps`` lists them; ``GapScan.empty`` names the pairs
        with nothing stored. Reads the store only: Kraken is not asked."""
        from krakked.market.gaps import parse_span

        span = parse_span(min_gap, "min_gap")
        return scan_gaps(self.store, self._gap_symbols(pairs), min_gap=span,
                         now=now or datetime.now(UTC))

    def fill_gaps(self, pairs: Sequence[str] | None = None,
                  min_gap: str | int | timedelta = "2m", *, max_concurrent: int = 3,
                  now: Callable[[], datetime] | None = None,
                  progress: ProgressCallback | None = None,
                  scan: GapScan | None = None) -> GapFillReport:
        """Detect (or take ``scan``'s) gaps of ``pairs`` and fill them from Kraken: small recent
        1m candle gaps from OHLC, the rest from Trades (``krakked.sync.gaps``), at most
        ``max_concurrent`` pairs at a time; ``progress`` hears of every gap and page. Each gap
        is tried once; what could not be filled is in the report with its reason
        (``GapFillReport.to_dict()`` has the original gap filler's keys)."""
        clock = now or (lambda: datetime.now(UTC))
        if scan is None:
            scan = self.detect_gaps(pairs, min_gap, now=clock())
        by_symbol: dict[str, list[Any]] = {}
        for gap in scan.gaps:
            by_symbol.setdefault(gap.symbol, []).append(gap)
        self._ensure_pairs()
        targets = [(symbol, self.rest_name(symbol)) for symbol in scan.symbols
                   if symbol not in scan.empty]
        report = fill_gaps(self.client, self.store, targets, gaps=by_symbol,
                           max_concurrent=max_concurrent, min_gap=scan.min_gap, now=clock,
                           seen=scan.now, progress=progress)
        return GapFillReport(report.pairs, list(scan.empty))

    def fill_gap_ohlc(self, gap: DataGap, *, now: Callable[[], datetime] | None = None) -> int:
        """Fill one 1m candle gap from Kraken's 1m OHLC (the part it still serves); returns the
        candles stored (``krakked.sync.gaps.fill_gap_ohlc``)."""
        self._ensure_pairs()
        return fill_gap_ohlc(self.client, self.store, gap, rest_symbol=self.rest_name(gap.symbol),
                             now=now or (lambda: datetime.now(UTC)))

    def fill_gap_trades(self, gap: DataGap) -> TradesFill:
        """Fill one gap (trades, or 1m candles built from them) from Kraken's Trades over
        exactly its range (``krakked.sync.gaps.fill_gap_trades``)."""
        self._ensure_pairs()
        return fill_gap_trades(self.client, self.store, gap,
                               rest_symbol=self.rest_name(gap.symbol))
    # -- trades backfill -----------------------------------------------------------------------

    def rest_name(self, pair: str) -> str:
        """The name Kraken's REST calls take for any alias: AssetPairs' ``altname`` when the
        pair's metadata is known, else the canonical name."""
        canonical = self.resolve(pair)
        meta = self.universe.all_pairs.get(canonical)
        return meta.rest_symbol if meta is not None else canonical

    def backfill_trades(
        self,
        pair: str,
        since: datetime | int | str | None = None,
        until: datetime | int | str | None = None,
        *,
        resume: bool = False,
        auto_stop: bool = True,
        build_candles: bool = True,
        progress: Callable[[TradesProgress], None] | None = None,
        max_pages: int | None = None,
        stop: threading.Event | None = None,
        poll_seconds: float | None = None,
    ) -> TradesBackfillResult:
        """Page ``pair``'s trades from Kraken into the store (``sync.trades.backfill_trades``:
        resumable, pages committed with their cursor, stops at real time unless
        ``auto_stop=False``)."""
        canonical, rest = self.resolve(pair), self.rest_name(pair)
        extra = {} if poll_seconds is None else {"poll_seconds": poll_seconds}
        return backfill_trades(self.client, self.store, canonical, rest_symbol=rest,
                               since=since, until=until, resume=resume, auto_stop=auto_stop,
                               build_candles=build_candles, progress=progress,
                               max_pages=max_pages, stop=stop, **extra)

    def build_candles_from_trades(self, pair: str, start: datetime | int | str | None = None,
                                  end: datetime | int | str | None = None) -> int:
        """(Re)build ``pair``'s 1m candles from its stored trades, for every minute in
        ``[start, end)`` wholly inside the recorded trade coverage; returns candles written."""
        from krakked.times import parse_utc

        s, e = parse_utc(start, "start"), parse_utc(end, "end")
        if s is not None and e is not None and e <= s:
            raise UsageError(f"end {e.isoformat()} is not after start {s.isoformat()}")
        symbol = self.resolve(pair)
        if s is None or e is None:  # an open end: the minutes of the stored trades
            summary = self.store.trades_summary(symbol)
            if not summary:
                return 0
            s = s or summary["first"].replace(second=0, microsecond=0)
            e = e or summary["last"].replace(second=0, microsecond=0) + timedelta(minutes=1)
            if e <= s:
                return 0
        return self.store.build_candles_from_trades(symbol, s, e)

    # -- one command to a complete history -----------------------------------------------------

    def complete_history(
        self,
        pair: str,
        csv: str | Path | Sequence[str | Path] = (),
        *,
        since: datetime | int | str | None = None,
        min_gap: str | int | timedelta = "2m",
        import_progress: Any = None,
        trades_progress: Callable[[TradesProgress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """A pair's complete history in one call: import Kraken's CSV files (``csv``: files,
        directories or zips; only this pair's members), backfill the API tail from where the
        stored trades end (inside the CSV's last second, so the seam holds each trade once),
        build 1m candles on the way, then detect and fill gaps. Returns the coverage report:
        first and last trade, rows, the trade coverage, the gaps left with their reasons, and
        each phase's result and seconds (``timings``); JSON-ready (times ISO 8601)."""
        import time

        symbol = self.resolve(pair)
        timings: dict[str, float] = {}
        report: dict[str, Any] = {"symbol": symbol}
        paths = [csv] if isinstance(csv, str | Path) else list(csv)
        if paths:
            t0 = time.perf_counter()
            imported = self.import_csv(paths, [symbol], progress=import_progress)
            timings["import_seconds"] = round(time.perf_counter() - t0, 3)
            imported.raise_for_errors()
            report["import"] = [s for s in imported.series() if s["symbol"] == symbol]
            if not any(s["rows_stored"] or s["rows_read"] for s in report["import"]):
                raise NoDataError(f"{', '.join(map(str, paths))} holds no time-and-sales or "
                                  f"OHLCVT file of {symbol}")
        stored = self.store.trades_summary(symbol) is not None
        t0 = time.perf_counter()
        tail = self.backfill_trades(symbol, since=since, resume=since is None and stored,
                                    progress=trades_progress, stop=stop)
        timings["api_tail_seconds"] = round(time.perf_counter() - t0, 3)
        report["api_tail"] = tail.to_dict()
        t0 = time.perf_counter()
        fill = self.fill_gaps([symbol], min_gap)
        timings["gaps_seconds"] = round(time.perf_counter() - t0, 3)
        filled = fill.to_dict()
        report["gaps"] = {k: filled[k] for k in (
            "gaps_detected", "gaps_filled", "candles_inserted", "trades_processed", "errors")}
        summary = self.store.trades_summary(symbol) or {}
        open_gaps = {(u["start_time"], u["end_time"]): u["reason"]
                     for u in filled["unfillable"] if u.get("open")}
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        report.update({
            "first_trade": iso(summary.get("first")), "last_trade": iso(summary.get("last")),
            "rows": summary.get("rows", 0),
            "trade_coverage": [{"from": iso(from_epoch_us(a)), "until": iso(from_epoch_us(b))}
                               for a, b in self.store.read_trade_coverage(symbol)],
            "gaps_left": [{**g, "reason": open_gaps.get((g["start_time"], g["end_time"]),
                                                        "still detected after filling")}
                          for g in filled["remaining"]],
            "timings": timings,
        })
        return report

    # -- live stream -----------------------------------------------------------------------------

    def live(self, pairs: Sequence[str] | None = None, *, channels: Sequence[str] = ("ticker",),
             tf: Sequence[str | int] | str | int = ("1m",), book_depth: int = 10,
             persist: bool = False, ws_url: str | None = None,
             ws_options: dict[str, Any] | None = None,
             wall: Callable[[], float] | None = None) -> LiveMarket:
        """A ``LiveMarket`` (not started: ``await live.start()`` or ``async with``) streaming
        ``pairs`` (any aliases; the whole universe when None) from Kraken's WS v2 at the
        configured ``ws_url``. ``persist``: trades (each once, trade-id holes filled over REST)
        and closed candles go into this Market's store as they stream. ``wall`` (Unix seconds;
        default the system clock) decides when a candle has closed."""
        wall = wall or time.time
        names = list(dict.fromkeys(self.resolve(p) for p in pairs)) if pairs else \
            self.get_universe()
        metas = [self.get_pair_metadata(name) for name in names]
        integration = None
        if persist:
            writer = DatabaseWriter(self.store)
            integration = WebSocketDBIntegration(
                writer, fill_holes=HoleFiller(self.client, self.rest_name),
                now=lambda: datetime.fromtimestamp(wall(), UTC))
        return LiveMarket(
            metas, ws_url=ws_url or self.settings.kraken.ws_url, channels=channels,
            intervals=[tf] if isinstance(tf, str | int) else tf, book_depth=book_depth,
            stale_tolerance=self.settings.stale_tolerance_seconds, resolve=self.resolve,
            integration=integration, own_writer=persist,
            rest_check=self.client.get_system_status, ws_options=ws_options, wall=wall)
