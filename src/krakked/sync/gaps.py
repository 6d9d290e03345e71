"""Gaps: find the holes in a pair's stored history and fill them from Kraken.

**Detection** reads only what the store records (no scan of its tables in Python): the holes
between the recorded 1m candle coverage ranges, and from the last one to the last closed minute
(``candles_1m``); the holes between the recorded trade coverage ranges, and the holes in
Kraken's trade-id sequence among stored API trades that no CSV trade stands in for
(``trades``). A minute without trades inside a covered range is not a gap: coverage says it was
quiet.

**Filling**, one pair at a time (pairs in parallel, ``max_concurrent`` threads; the client's
rate limiter is shared and thread-safe): a 1m candle gap is first built from stored trades
where the trade coverage holds it (no network); then, if Kraken's 1m OHLC (its latest 720 bars)
still serves it whole, from OHLC, storing only the bars inside the gap and the part of it the
answer vouches for; what is left, and every trade gap, from Kraken's ``Trades``, paged from just
before the gap's start until past its end, each page written with the range it vouches for
(``TradeCoverage``) and its 1m candles built. Every gap is tried once per run: one Kraken
cannot fill is reported with its reason, never retried in a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import KrakkedError, MalformedResponseError, UnknownPairError, UsageError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import bucket_ceil_us, bucket_floor_us, epoch_us, from_epoch_us
from krakked.market.gaps import (
    DEFAULT_MIN_GAP,
    DataGap,
    coverage_holes,
    fill_method,
    format_span,
    merge_spans,
    ohlc_reaches,
)
from krakked.store.base import Coverage, MarketStore, SyncUpdate, TradeCoverage
from krakked.sync.ohlc import parse_ohlc, served_range
from krakked.sync.trades import PAGE_SIZE, parse_trades

__all__ = [
    "GapFillReport",
    "GapProgress",
    "GapScan",
    "PairFill",
    "TradesFill",
    "detect_gaps",
    "fill_gap_ohlc",
    "fill_gap_trades",
    "fill_gaps",
    "fill_pair",
    "has_history",
    "scan_gaps",
]

log = logging.getLogger("krakked.sync.gaps")

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _us(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


def _iso(us: int) -> str:
    return from_epoch_us(us).isoformat()


# -- detection -----------------------------------------------------------------------------


def _trade_spans(store: MarketStore, symbol: str, min_gap_us: int,
                 window: tuple[int, int] | None = None) -> list[tuple[int, int, str]]:
    """``symbol``'s trade gaps as merged ``(from, until, detail)`` epoch-µs spans: holes between
    trade coverage ranges longer than ``min_gap_us``, and holes in Kraken's trade-id sequence
    (``[after_time, before_time]``) that span no such coverage hole (its trades are the missing
    ones) and have no CSV trade between them (CSV rows carry no id; where they stand in, the
    ids are not missing). ``window`` limits the id-hole search."""
    holes = coverage_holes(store.read_trade_coverage(symbol), None, min_gap_us)
    spans = [(a, b, "no trade coverage") for a, b in holes]
    start = from_epoch_us(window[0]) if window else None
    end = from_epoch_us(window[1]) if window else None
    for hole in store.trade_id_holes(symbol, start, end):
        a, b = epoch_us(hole["after_time"]), epoch_us(hole["before_time"]) + 1
        if any(x < b and a < y for x, y in holes):
            continue  # the ids missing are those of a coverage hole it spans: reported as such
        if b - a > 2 and store.read_trades(symbol, from_epoch_us(a + 1), from_epoch_us(b - 1),
                                           limit=1).num_rows:
            continue  # CSV trades between the two API trades
        first, last = hole["after_id"] + 1, hole["before_id"] - 1
        ids = f"trade id {first}" if first == last else f"trade ids {first}..{last}"
        spans.append((a, b, f"{ids} missing ({hole['missing']})"))
    return merge_spans(spans)


def _candle_spans(store: MarketStore, symbol: str, min_gap_us: int, now: datetime
                  ) -> list[tuple[int, int, str]]:
    """``symbol``'s 1m candle gaps: holes between the 1m coverage ranges and from the last one
    to the last closed minute at ``now``, longer than ``min_gap_us``."""
    ranges = store.read_coverage(symbol).get(1, [])
    last_closed = bucket_floor_us(epoch_us(now), 1)
    holes = coverage_holes(ranges, last_closed, min_gap_us)
    tail = ranges[-1][1] if ranges else None
    return [(a, b, "nothing stored after the last covered minute" if a == tail
             else "no 1m candle coverage") for a, b in holes]


def detect_gaps(store: MarketStore, symbol: str, *, min_gap: timedelta = DEFAULT_MIN_GAP,
                now: datetime | None = None) -> list[DataGap]:
    """``symbol``'s gaps in stored 1m candles and trades, oldest first (candles before trades
    at the same start). A candle gap runs between recorded coverage ranges or from the last one
    to the last minute closed at ``now`` (default: the clock); gaps of ``min_gap`` or less are
    left out, except holes in Kraken's trade-id sequence, which are always gaps."""
    now = now or _utcnow()
    min_us = _us(min_gap)
    gaps = [DataGap(symbol, "candles_1m", from_epoch_us(a), from_epoch_us(b), detail=d)
            for a, b, d in _candle_spans(store, symbol, min_us, now)]
    gaps += [DataGap(symbol, "trades", from_epoch_us(a), from_epoch_us(b), detail=d)
             for a, b, d in _trade_spans(store, symbol, min_us)]
    return sorted(gaps, key=lambda g: (g.start_time, g.data_type))


def has_history(store: MarketStore, symbol: str) -> bool:
    """Does the store hold anything of ``symbol`` a gap could be a hole in (1m candle coverage,
    trade coverage or trades)?"""
    return bool(store.read_coverage(symbol).get(1) or store.read_trade_coverage(symbol)
                or store.trades_summary(symbol))


@dataclass(frozen=True)
class GapScan:
    """What ``scan_gaps`` found: the ``gaps`` of ``symbols`` at ``now`` (longer than
    ``min_gap``), and the symbols with nothing stored (``empty``: no history, so no gaps)."""

    symbols: list[str]
    gaps: list[DataGap]
    empty: list[str]
    now: datetime
    min_gap: timedelta

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, each gap with ``fill`` (``ohlc`` or ``trades``: how it would be filled
        now)."""
        return {
            "gaps": [{**g.to_dict(), "fill": fill_method(g, self.now)} for g in self.gaps],
            "symbols": self.symbols, "empty": self.empty, "now": self.now.isoformat(),
            "min_gap": format_span(self.min_gap),
        }


def scan_gaps(store: MarketStore, symbols: Sequence[str], *,
              min_gap: timedelta = DEFAULT_MIN_GAP, now: datetime | None = None) -> GapScan:
    """``detect_gaps`` for each of ``symbols`` (canonical) at one ``now``."""
    now = now or _utcnow()
    gaps: list[DataGap] = []
    empty: list[str] = []
    with store.session():
        for symbol in symbols:
            found = detect_gaps(store, symbol, min_gap=min_gap, now=now)
            if not found and not has_history(store, symbol):
                empty.append(symbol)
            gaps += found
    return GapScan(list(symbols), gaps, empty, now, min_gap)


# -- Kraken's Trades over a range --------------------------------------------------------------

def _parse_trades_page(result: Mapping[str, Any], symbol: str
                       ) -> tuple[pa.Table, list[int], int | None]:
    """Kraken's ``Trades`` result -> (``TRADE_SCHEMA`` table, the rows' epoch µs, ``last``),
    read by ``krakked.sync.trades.parse_trades``."""
    page = parse_trades(result, symbol)
    return page.table, pc.cast(page.table["timestamp"], pa.int64()).to_pylist(), page.last


@dataclass(frozen=True)
class TradesFill:
    """What paging Kraken's ``Trades`` over ``[start, end)`` did: ``pages`` asked, trades
    ``fetched`` inside the range and ``inserted`` (new to the store), the first trade Kraken
    has at or after ``end`` (``next_trade``; None: none yet) and how far the recorded coverage
    now reaches (``covered_until``; None: nothing recorded)."""

    pages: int
    fetched: int
    inserted: int
    next_trade: datetime | None
    covered_until: datetime | None


TradesProgress = Callable[[int, int], None]
"""Called after every page with (pages, trades fetched in the range so far)."""


def fetch_trades_range(client: SpotClient, store: MarketStore, symbol: str, start: datetime,
                       end: datetime, *, rest_symbol: str | None = None,
                       build_candles: bool = True, progress: TradesProgress | None = None
                       ) -> TradesFill:
    """Store every trade of ``symbol`` with ``start <= time < end`` from Kraken's ``Trades``.

    Pages from a cursor a microsecond before ``start`` until a page reaches ``end`` (or Kraken
    has no more: real time); each page is one write — its trades before ``end``, the range it
    vouches for (from ``start``, or where the previous page ended, to its last trade, or to
    ``end`` once a trade at or after ``end`` shows there are no more inside) and the 1m candles
    that range completes. Kraken's stored backfill cursor is left as it is.

    Unlike ``sync.trades.backfill_trades`` (the resumable tail), it knows where Kraken's
    next trade after the range lies (a range without trades is recorded as quiet) and never
    moves the stored backfill cursor.
    """
    rest = rest_symbol or symbol
    start_us, end_us = epoch_us(start), epoch_us(end)
    cursor = start_us * 1000 - 1000  # a µs early: a trade whose time rounds up to start is kept
    covered = start_us
    pages = fetched = inserted = 0
    next_us: int | None = None
    while True:
        table, stamps, last = _parse_trades_page(
            client.get_trades(rest, since=str(cursor) if cursor >= 10**11 else "0"), symbol)
        pages += 1
        if not stamps:
            break  # nothing after the cursor yet
        if last is None or last <= cursor:
            raise MalformedResponseError(
                f"Trades of {symbol} returned trades but a cursor 'last' ({last}) that does not "
                f"advance past since ({cursor})", endpoint="spot:Trades")
        ts = pc.cast(table["timestamp"], pa.int64())
        beyond = [t for t in stamps if t >= end_us]
        if beyond:
            table = table.filter(pc.less(ts, end_us))
            upto, next_us = end_us, min(beyond)
        else:
            upto = min(stamps[-1], last // 1000)
        fetched += sum(1 for t in stamps if start_us <= t < end_us)
        coverage = ([TradeCoverage(symbol, from_epoch_us(covered), from_epoch_us(upto))]
                    if upto > covered else [])
        inserted += store.upsert_trades(table, sync=[SyncUpdate(symbol, "trades")],
                                        coverage=coverage, build_candles=build_candles)
        covered = max(covered, upto)
        cursor = last
        if progress is not None:
            progress(pages, fetched)
        if beyond or len(stamps) < PAGE_SIZE:
            break
    return TradesFill(pages, fetched, inserted,
                      from_epoch_us(next_us) if next_us is not None else None,
                      from_epoch_us(covered) if covered > start_us else None)


# -- filling one gap ---------------------------------------------------------------------------


def fill_gap_ohlc(client: SpotClient, store: MarketStore, gap: DataGap, *,
                  rest_symbol: str | None = None, now: Now = _utcnow) -> int:
    """Fill a 1m candle gap from Kraken's 1m OHLC: store the closed bars inside the gap and
    record as covered the part of it the answer spans (bars Kraken left out there had no
    trades). Returns the candles stored. Kraken serves only its latest 720 bars: an older part
    of the gap stays open (``fill_gap_trades`` fills it)."""
    if gap.data_type != "candles_1m":
        raise UsageError(f"only 1m candle gaps are filled from OHLC, not {gap.data_type} gaps")
    start_us, end_us = epoch_us(gap.start_time), epoch_us(gap.end_time)
    since = start_us // 1_000_000 - 60  # bars opening after it: the gap's first minute on
    result = client.get_ohlc(rest_symbol or gap.symbol, 1, since=since)
    candles, _ = parse_ohlc(result, gap.symbol, 1, now())
    inside = [c for c in candles if start_us <= epoch_us(c.timestamp) < end_us]
    coverage = []
    for served in served_range(candles, gap.symbol, 1, since):
        a, b = max(epoch_us(served.start), start_us), min(epoch_us(served.end), end_us)
        if b > a:
            coverage.append(Coverage(gap.symbol, 1, from_epoch_us(a), from_epoch_us(b)))
    if not inside and not coverage:
        return 0
    return store.upsert_candles(inside, sync=[SyncUpdate(gap.symbol, "candles_1m")],
                                coverage=coverage)


def fill_gap_trades(client: SpotClient, store: MarketStore, gap: DataGap, *,
                    rest_symbol: str | None = None, build_candles: bool = True,
                    progress: TradesProgress | None = None) -> TradesFill:
    """Fill a gap (trades, or 1m candles built from them) from Kraken's ``Trades`` over exactly
    ``[start_time, end_time)`` (``fetch_trades_range``)."""
    return fetch_trades_range(client, store, gap.symbol, gap.start_time, gap.end_time,
                              rest_symbol=rest_symbol, build_candles=build_candles,
                              progress=progress)


# -- one pair ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapProgress:
    """Where a pair's filling stands: the ``gap`` being filled, Kraken ``pages`` and trades
    fetched for it so far; ``outcome`` (``filled``, ``quiet``, ``open``, ``error``) once it is
    done."""

    symbol: str
    gap: DataGap
    pages: int = 0
    trades: int = 0
    outcome: str | None = None


ProgressCallback = Callable[[GapProgress], None]


@dataclass
class PairFill:
    """What filling one pair's gaps did. ``filled``: gaps now stored; ``unfillable``: gaps that
    could not be filled with data, each with its reason and whether it is still ``open`` (a
    range Kraken has no trades for is recorded as quiet: closed, not reported again);
    ``errors``: Kraken or store errors (the pair's remaining gaps were then not tried);
    ``remaining``: the gaps still detected afterwards."""

    symbol: str
    detected: list[DataGap] = field(default_factory=list)
    filled: list[DataGap] = field(default_factory=list)
    unfillable: list[tuple[DataGap, str, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    remaining: list[DataGap] = field(default_factory=list)
    candles_inserted: int = 0
    trades_processed: int = 0
    trades_inserted: int = 0
    ohlc_calls: int = 0
    trades_pages: int = 0
    codes: list[int] = field(default_factory=list)  # exit codes of the errors' classes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary of the pair."""
        return {
            "symbol": self.symbol, "gaps_detected": len(self.detected),
            "gaps_filled": len(self.filled), "unfillable": len(self.unfillable),
            "remaining": len(self.remaining), "candles_inserted": self.candles_inserted,
            "trades_processed": self.trades_processed, "trades_inserted": self.trades_inserted,
            "ohlc_calls": self.ohlc_calls, "trades_pages": self.trades_pages,
            "errors": list(self.errors),
        }


def _open_spans(gap: DataGap, spans: Sequence[tuple[int, int, str]]
                ) -> list[tuple[int, int, str]]:
    """The parts of ``spans`` inside ``gap``."""
    a0, b0 = epoch_us(gap.start_time), epoch_us(gap.end_time)
    return [(max(a, a0), min(b, b0), d) for a, b, d in spans if min(b, b0) > max(a, a0)]


class _PairFiller:
    """Fills one pair's gaps, sequentially (see ``fill_pair``)."""

    def __init__(self, client: SpotClient, store: MarketStore, symbol: str, rest: str,
                 min_gap: timedelta, now: Now, seen: datetime | None,
                 progress: ProgressCallback | None) -> None:
        self.client, self.store, self.symbol, self.rest = client, store, symbol, rest
        self.min_us = _us(min_gap)
        self.now = now
        self.seen = seen or now()  # when the gaps were detected: the candle tail ends there
        self.progress = progress
        self.out = PairFill(symbol)

    def open_parts(self, gap: DataGap) -> list[tuple[int, int, str]]:
        """What of ``gap`` detection would still report."""
        if gap.data_type == "candles_1m":
            return _open_spans(gap, _candle_spans(self.store, self.symbol, self.min_us,
                                                  self.seen))
        window = (epoch_us(gap.start_time), epoch_us(gap.end_time) + 1)
        return _open_spans(gap, _trade_spans(self.store, self.symbol, self.min_us, window))

    def candles_in(self, a: int, b: int) -> int:
        return self.store.read_stored_candles(
            self.symbol, 1, from_epoch_us(bucket_floor_us(a, 1)),
            from_epoch_us(bucket_ceil_us(b, 1))).num_rows

    def trades(self, gap: DataGap, a: int, b: int) -> TradesFill:
        def report(pages: int, fetched: int) -> None:
            self.emit(GapProgress(self.symbol, gap, pages, fetched))

        before = self.candles_in(a, b)
        fill = fetch_trades_range(self.client, self.store, self.symbol, from_epoch_us(a),
                                  from_epoch_us(b), rest_symbol=self.rest, progress=report)
        self.out.candles_inserted += max(0, self.candles_in(a, b) - before)
        self.out.trades_processed += fill.fetched
        self.out.trades_inserted += fill.inserted
        self.out.trades_pages += fill.pages
        return fill

    def emit(self, event: GapProgress) -> None:
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception as exc:  # a progress display must not break the data
                log.debug("progress display failed: %s", exc)

    def ohlc(self, gap: DataGap, parts: list[tuple[int, int, str]]) -> int:
        """Fill from OHLC the ``parts`` of a candle gap it still serves; candles stored."""
        stored = 0
        for a, b, _ in parts:
            start, end = from_epoch_us(a), from_epoch_us(b)
            if ohlc_reaches(start, end, self.now()):
                self.out.ohlc_calls += 1
                stored += fill_gap_ohlc(self.client, self.store,
                                        DataGap(gap.symbol, gap.data_type, start, end),
                                        rest_symbol=self.rest, now=self.now)
        return stored

    def fill(self, gap: DataGap) -> tuple[str, str | None]:
        """Fill ``gap``: (``filled`` | ``quiet`` | ``open``, the reason when not filled).

        A candle gap: from stored trades where the trade coverage holds it, then from OHLC if
        it still serves the gap whole, then from Trades, then from OHLC again for what is left
        that it serves (the minutes after Kraken's latest trade). A trade gap: from Trades."""
        parts = self.open_parts(gap)
        if not parts:
            return "filled", None  # an earlier gap's fill closed it
        stored = 0
        fills: list[TradesFill] = []
        candles = gap.data_type == "candles_1m"
        if candles:
            stored += self.store.build_candles_from_trades(self.symbol, gap.start_time,
                                                           gap.end_time)
            parts = self.open_parts(gap)
            if not parts:  # the stored trades held it (their coverage, a quiet stretch or not)
                self.out.candles_inserted += stored
                return "filled", None
            if ohlc_reaches(gap.start_time, gap.end_time, self.now()):
                stored += self.ohlc(gap, [(epoch_us(gap.start_time), epoch_us(gap.end_time),
                                           "")])
                parts = self.open_parts(gap)
        for a, b, _ in parts:
            fills.append(self.trades(gap, a, b))
        if fills:
            parts = self.open_parts(gap)
        if candles and parts:
            tried = self.out.ohlc_calls
            stored += self.ohlc(gap, parts)
            if self.out.ohlc_calls > tried:
                parts = self.open_parts(gap)
        self.out.candles_inserted += stored
        if parts:
            return "open", self.why_open(parts, fills)
        if stored or sum(f.fetched for f in fills):
            return "filled", None
        after = next((f.next_trade for f in fills if f.next_trade), None)
        return "quiet", ("Kraken has no trades in it" + (
            f" (its next trade is at {after.isoformat()})" if after else "")
            + ": recorded as quiet, not reported again")

    def why_open(self, parts: list[tuple[int, int, str]], fills: list[TradesFill]) -> str:
        """Why ``parts`` of a gap are still open after ``fills``."""
        skipped = [d for _, _, d in parts if "trade id" in d]
        if skipped:
            return (f"{'; '.join(skipped)}: Kraken's Trades has no trades with those ids (its "
                    "sequence skips them)")
        reached = max((f.covered_until for f in fills if f.covered_until), default=None)
        if reached is not None:
            return (f"Kraken's trades end at {reached.isoformat()}: nothing after it yet "
                    f"({format_span(from_epoch_us(parts[-1][1]) - reached)} still open)")
        return (f"Kraken returned no trades from {_iso(parts[0][0])} on (none yet, or the pair "
                "no longer trades)")

    def run(self, gaps: Sequence[DataGap]) -> PairFill:
        out = self.out
        out.detected = list(gaps)
        now = self.now()
        # OHLC first (its 720-bar window moves on while large gaps are paged), then trades
        # (their pages also build the 1m candles of the minutes they complete), then the rest.
        order = sorted(gaps, key=lambda g: (fill_method(g, now) != "ohlc",
                                            g.data_type != "trades", g.start_time))
        stop: str | None = None
        for gap in order:
            if stop is not None:
                out.unfillable.append((gap, stop, True))
                self.emit(GapProgress(self.symbol, gap, outcome="open"))
                continue
            self.emit(GapProgress(self.symbol, gap))
            try:
                outcome, reason = self.fill(gap)
            except UnknownPairError as exc:
                stop = f"Kraken does not know the pair {self.rest} ({exc})"
                outcome, reason = "open", stop
                out.codes.append(exc.exit_code)
            except KrakkedError as exc:
                line = (f"{self.symbol} {gap.data_type} gap {gap.start_time.isoformat()} .. "
                        f"{gap.end_time.isoformat()}: {exc}")
                out.errors.append(line)
                out.codes.append(exc.exit_code)
                log.warning("%s", line)
                stop = "not tried: the pair stopped at an error (see errors)"
                outcome, reason = "error", str(exc)
            if outcome == "filled":
                out.filled.append(gap)
            elif outcome in ("quiet", "open"):
                out.unfillable.append((gap, reason or "", outcome == "open"))
            self.emit(GapProgress(self.symbol, gap, outcome=outcome))
        out.remaining = detect_gaps(self.store, self.symbol, min_gap=timedelta(
            microseconds=self.min_us), now=self.seen)
        return out


def fill_pair(client: SpotClient, store: MarketStore, symbol: str, *,
              rest_symbol: str | None = None, gaps: Sequence[DataGap] | None = None,
              min_gap: timedelta = DEFAULT_MIN_GAP, now: Now = _utcnow,
              seen: datetime | None = None, progress: ProgressCallback | None = None
              ) -> PairFill:
    """Detect (unless ``gaps`` are given) and fill ``symbol``'s gaps, one after the other, each
    tried once: small recent 1m candle gaps from OHLC first, then trade gaps, then the other
    candle gaps (see the module's docstring). An unknown pair at Kraken leaves every gap open
    with that reason; any other Kraken or store error is recorded and stops the pair (its
    remaining gaps are reported not tried). ``seen`` is when ``gaps`` were detected (default:
    now): the candle tail is checked up to its last closed minute, so minutes that close while
    the pair is filled are not counted as left open."""
    filler = _PairFiller(client, store, symbol, rest_symbol or symbol, min_gap, now, seen,
                         progress)
    if gaps is None:
        gaps = detect_gaps(store, symbol, min_gap=min_gap, now=filler.seen)
    return filler.run(gaps)


@dataclass(frozen=True)
class GapFillReport:
    """What ``fill_gaps`` did, per pair; ``to_dict`` is the original gap filler's summary."""

    pairs: list[PairFill]
    empty: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> list[DataGap]:
        """Gaps still detected after the run."""
        return [g for p in self.pairs for g in p.remaining]

    def to_dict(self) -> dict[str, Any]:
        """``{gaps_detected, gaps_filled, candles_inserted, trades_processed, errors}`` (the
        original's keys) plus ``trades_inserted``, ``unfillable`` (each gap with its ``reason``
        and whether it is still ``open``), ``remaining`` (gaps still detected), ``empty``
        (pairs with nothing stored) and ``pairs`` (the same per pair)."""
        return {
            "gaps_detected": sum(len(p.detected) for p in self.pairs),
            "gaps_filled": sum(len(p.filled) for p in self.pairs),
            "candles_inserted": sum(p.candles_inserted for p in self.pairs),
            "trades_processed": sum(p.trades_processed for p in self.pairs),
            "errors": [e for p in self.pairs for e in p.errors],
            "trades_inserted": sum(p.trades_inserted for p in self.pairs),
            "unfillable": [{**g.to_dict(), "reason": why, "open": still}
                           for p in self.pairs for g, why, still in p.unfillable],
            "remaining": [g.to_dict() for g in self.remaining],
            "empty": list(self.empty),
            "pairs": [p.to_dict() for p in self.pairs],
        }


def fill_gaps(client: SpotClient, store: MarketStore, targets: Sequence[tuple[str, str]], *,
              gaps: Mapping[str, Sequence[DataGap]] | None = None, max_concurrent: int = 3,
              min_gap: timedelta = DEFAULT_MIN_GAP, now: Now = _utcnow,
              seen: datetime | None = None, progress: ProgressCallback | None = None
              ) -> GapFillReport:
    """``fill_pair`` for each ``(symbol, rest_symbol)`` of ``targets``, at most
    ``max_concurrent`` pairs at a time (threads; each pair's gaps one after the other), with
    the ``gaps`` already detected per symbol (at ``seen``) when given."""
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) \
            or max_concurrent < 1:
        raise UsageError(f"max_concurrent must be a whole number >= 1, got {max_concurrent!r}")
    if not targets:
        return GapFillReport([])

    def one(target: tuple[str, str]) -> PairFill:
        symbol, rest = target
        return fill_pair(client, store, symbol, rest_symbol=rest,
                         gaps=None if gaps is None else list(gaps.get(symbol, ())),
                         min_gap=min_gap, now=now, seen=seen, progress=progress)

    workers = min(max_concurrent, len(targets))
    if workers == 1:
        return GapFillReport([one(t) for t in targets])
    with ThreadPoolExecutor(workers, thread_name_prefix="krakked-gaps") as pool:
        return GapFillReport(list(pool.map(one, targets)))
