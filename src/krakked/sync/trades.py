"""Trades backfill: Kraken's time and sales (REST ``Trades``) into the market store, pages of up
to 1000 trades, resumable at any moment.

Kraken pages ``Trades`` by a nanosecond cursor: ask with ``since``, get the trades strictly after
it (oldest first) and ``last``, the cursor to ask with next. Pages are written in store calls
that each carry the trades, the cursor after them (``data_sync_status``, data type ``trades``)
and the time range they vouch for (``TradeCoverage``) — one transaction — so the store holds
pages and their cursor together or neither: a run killed at any moment loses nothing and the
next run continues from the stored cursor, storing each trade once (Kraken's per-pair trade id
is the key). Rows are kept exact: price and volume as the decimal strings Kraken sends, the time
(a JSON number with more digits than a float holds, decoded as ``Decimal`` by ``SpotClient``)
rounded half-even to the microsecond.

Pacing is the client's: ``SpotClient``'s public limiter paces Trades per IP and per pair, so no
sleep is added here except the poll interval when following real time (``auto_stop=False``).
Pages are fetched ahead in a worker thread while earlier ones are written, and every page
already fetched goes into the next write: a write costs about the same for one page or eight,
so a store slower than Kraken's pace does not slow the backfill below it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import pyarrow as pa

from krakked.errors import MalformedResponseError, UsageError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import epoch_us, from_epoch_us
from krakked.store.arrow import TRADE_SCHEMA, TS
from krakked.store.base import MarketStore, SyncUpdate, TradeCoverage
from krakked.times import parse_utc

__all__ = [
    "DEFAULT_POLL_SECONDS",
    "PAGE_SIZE",
    "StopReason",
    "TradesBackfillResult",
    "TradesPage",
    "TradesProgress",
    "backfill_trades",
    "get_resume_point",
    "parse_trades",
    "since_cursor",
]

log = logging.getLogger("krakked.sync.trades")

PAGE_SIZE = 1000
"""Kraken's ``Trades`` returns at most this many trades per call (its default ``count``)."""

DEFAULT_POLL_SECONDS = 60.0
"""How often a backfill that follows real time (``auto_stop=False``) asks for new trades."""

_SECONDS_BELOW = 10**11
"""An integer ``since`` below this is Unix seconds; from here on it is Kraken's ns cursor."""

_SIDES = {"b": "buy", "s": "sell"}
_ORDER_TYPES = {"m": "market", "l": "limit"}
_US = Decimal(1_000_000)

StopReason = Literal["realtime", "until", "max_pages", "interrupted"]


# -- one page ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradesPage:
    """One ``Trades`` answer, parsed: ``table`` (``TRADE_SCHEMA``, source ``rest``, oldest first),
    Kraken's ``last`` cursor (ns; None if absent) and the first and last trade's time (epoch µs;
    None when the page is empty)."""

    table: pa.Table
    last: int | None
    first_us: int | None
    last_us: int | None

    @property
    def rows(self) -> int:
        return self.table.num_rows


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float):  # a client that decoded JSON numbers as floats
        return Decimal(repr(value))
    raise TypeError(f"{value!r} is not a number")


def _microseconds(seconds: Decimal) -> int:
    """Unix seconds (exact ``Decimal``) -> epoch µs, rounded half-even."""
    return int((seconds * _US).to_integral_value(rounding=ROUND_HALF_EVEN))


def parse_trades(result: Mapping[str, Any], symbol: str) -> TradesPage:
    """Kraken's ``Trades`` ``result`` -> a ``TradesPage`` of ``symbol``'s trades, exactly.

    Rows ``[price, volume, time, side b/s, type m/l, misc, id]`` (extra elements ignored) become
    price/volume ``decimal128`` from their decimal strings, time rounded half-even to the
    microsecond (UTC), side ``buy``/``sell``, order type ``market``/``limit`` (an unknown letter is
    kept as Kraken sent it), misc, Kraken's trade id. The pair key is "the key that is not
    ``last``". Anything else is a ``MalformedResponseError`` naming the pair.
    """
    keys = [k for k in result if k != "last"]
    if len(keys) != 1 or not isinstance(result[keys[0]], list):
        raise MalformedResponseError(
            f"Trades result for {symbol} has no single pair key: {sorted(result)}",
            endpoint="spot:Trades")
    rows = result[keys[0]]
    ids: list[int] = []
    stamps: list[int] = []
    prices: list[Decimal] = []
    volumes: list[Decimal] = []
    sides: list[str] = []
    types: list[str] = []
    miscs: list[str] = []
    for row in rows:
        try:
            price, volume = _decimal(row[0]), _decimal(row[1])
            us = _microseconds(_decimal(row[2]))
            side = _SIDES[row[3]]
            kind = str(row[4])
            misc = "" if row[5] is None else str(row[5])
            trade_id = row[6]
            if isinstance(trade_id, bool) or not isinstance(trade_id, int | str | Decimal):
                raise TypeError(trade_id)
            trade_id = int(trade_id)
            if not (price.is_finite() and volume.is_finite()):
                raise ValueError(row)
        except (IndexError, KeyError, TypeError, ValueError, ArithmeticError):
            raise MalformedResponseError(
                f"Trades row for {symbol} is not [price, volume, time, side b/s, type, misc, "
                f"id]: {str(row)[:120]}", endpoint="spot:Trades") from None
        ids.append(trade_id)
        stamps.append(us)
        prices.append(price)
        volumes.append(volume)
        sides.append(side)
        types.append(_ORDER_TYPES.get(kind, kind))
        miscs.append(misc)
    try:
        table = pa.table({
            "id": pa.array(ids, pa.int64()),
            "symbol": pa.array([symbol] * len(ids), pa.string()),
            "timestamp": pa.array(stamps, pa.int64()).cast(TS),
            "price": pa.array(prices, TRADE_SCHEMA.field("price").type),
            "volume": pa.array(volumes, TRADE_SCHEMA.field("volume").type),
            "side": pa.array(sides, pa.string()),
            "order_type": pa.array(types, pa.string()),
            "misc": pa.array(miscs, pa.string()),
            "source": pa.array(["rest"] * len(ids), pa.string()),
        }, schema=TRADE_SCHEMA)
    except (pa.ArrowInvalid, OverflowError):
        raise MalformedResponseError(
            f"a Trades price or volume of {symbol} does not fit DECIMAL(38,18), or an id "
            "int64", endpoint="spot:Trades") from None
    last = result.get("last")
    try:
        cursor = None if last in (None, "") else int(last)
    except (TypeError, ValueError):
        raise MalformedResponseError(f"Trades cursor 'last' of {symbol} is not an integer: "
                                     f"{last!r}", endpoint="spot:Trades") from None
    return TradesPage(table, cursor, stamps[0] if stamps else None,
                      stamps[-1] if stamps else None)


# -- where to start --------------------------------------------------------------------------


def since_cursor(since: datetime | int | str) -> int:
    """A start point -> the ns cursor to ask Kraken with, so that trades AT ``since`` are
    fetched: a datetime (or ISO string) or Unix seconds (an int below 10**11) ``t`` -> ``t`` in
    ns minus 1; a larger int is Kraken's ns cursor itself (trades strictly after it)."""
    if isinstance(since, bool):
        raise UsageError(f"since: cannot read {since!r} as a time")
    if isinstance(since, int):
        if since < 0:
            raise UsageError(f"since must not be negative, got {since}")
        return since * 1_000_000_000 - 1 if since < _SECONDS_BELOW else since
    moment = parse_utc(since, "since")
    assert moment is not None
    return epoch_us(moment) * 1000 - 1


def _stored_cursor(store: MarketStore, symbol: str) -> int | None:
    """The ``last_kraken_since`` a previous API backfill of ``symbol`` stored, if any."""
    for row in store.read_sync_status(symbol):
        if row.get("data_type") == "trades" and row.get("last_kraken_since") is not None:
            return int(row["last_kraken_since"])
    return None


def _csv_seam(store: MarketStore, symbol: str) -> int | None:
    """When the newest stored trade of ``symbol`` is not an API row (it came from Kraken's CSV
    files), the cursor just before the last second those rows reach: asking from there fetches
    that whole second again from the API, whose rows replace their CSV twins in the store."""
    summary = store.trades_summary(symbol)
    if not summary or summary.get("last") is None:
        return None
    newest, api = summary["last"], summary.get("last_api_time")
    if api is not None and newest <= api:
        return None
    second = epoch_us(newest) // 1_000_000
    return second * 1_000_000_000 - 1


def _resume_target(store: MarketStore, symbol: str) -> tuple[int, bool] | None:
    """Where a resumed backfill of ``symbol`` starts, and whether that cursor is chained (stored
    with the page that reached it, so the trades of its microsecond up to it are stored)."""
    cursor = _stored_cursor(store, symbol)
    seam = _csv_seam(store, symbol)
    if seam is not None and (cursor is None or seam > cursor):
        return seam, False
    if cursor is not None:
        return cursor, True
    return None


def get_resume_point(store: MarketStore, symbol: str) -> int | None:
    """The ns cursor a resumed backfill of ``symbol`` starts from, or None when nothing is
    stored: the cursor the last API backfill stored — unless trades from Kraken's CSV files
    reach later than it, then ``floor(last CSV second) * 10**9 - 1``, so that last second is
    fetched again from the API (its API rows replace their CSV twins: each trade once)."""
    target = _resume_target(store, symbol)
    return None if target is None else target[0]


# -- progress and result ---------------------------------------------------------------------


@dataclass(frozen=True)
class TradesProgress:
    """Where a backfill of ``symbol`` stands after a page: ``pages`` fetched, trades
    ``fetched`` and ``stored`` (new to the store), Kraken's ``cursor``, the time it started from
    (``started``) and the newest trade time reached (``newest``); ``waiting`` while it follows
    real time and polls (``auto_stop=False``)."""

    symbol: str
    pages: int
    fetched: int
    stored: int
    cursor: int | None
    started: datetime | None
    newest: datetime | None
    waiting: bool = False


ProgressCallback = Callable[[TradesProgress], None]


@dataclass(frozen=True)
class TradesBackfillResult:
    """What one pair's trades backfill did: ``pages`` fetched, trades ``fetched`` and ``stored``
    (new to the store), the ``first`` and ``last`` trade time fetched, the ``cursor`` stored for
    the next run and why it stopped (``realtime``: caught up with Kraken; ``until``: reached the
    end asked for; ``max_pages``; ``interrupted``: the stop event was set)."""

    symbol: str
    pages: int
    fetched: int
    stored: int
    first: datetime | None
    last: datetime | None
    cursor: int | None
    stopped_because: StopReason
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times ISO 8601, the cursor an int."""
        return {
            "symbol": self.symbol, "pages": self.pages, "fetched": self.fetched,
            "stored": self.stored,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "cursor": self.cursor, "stopped_because": self.stopped_because,
            "notes": list(self.notes),
        }


def _report(callback: ProgressCallback | None, event: TradesProgress) -> None:
    if callback is None:
        return
    try:
        callback(event)
    except Exception as exc:  # a progress display must not break the data
        log.debug("progress display failed: %s", exc)


def _covers(store: MarketStore, symbol: str, start_us: int, end_us: int) -> bool:
    """Does the recorded trade coverage of ``symbol`` hold all of ``[start_us, end_us)``?"""
    if end_us <= start_us:
        return True
    return any(a <= start_us and end_us <= b for a, b in store.read_trade_coverage(symbol))


def _first_us(cursor: int, chained: bool) -> int:
    """The first microsecond a page asked from ``cursor`` vouches for (see ``backfill_trades``:
    a chained cursor's own microsecond, else the next one)."""
    return cursor // 1000 + (0 if chained else 1)


def _until_cursor(until_us: int) -> int:
    """The cursor stored when a run stops at ``until``: a microsecond before it, so a trade a
    fraction of a microsecond before ``until`` (kept, or rounded up to ``until`` and cut) is
    asked for again next time rather than skipped; a repeat is stored once."""
    return until_us * 1000 - 1000


def _ask(cursor: int) -> str:
    """The ``since`` sent for ``cursor``: the cursor itself, or 0 (Kraken's first trade) for a
    cursor before Kraken's ns range (a start at the epoch)."""
    return str(cursor) if cursor >= _SECONDS_BELOW else "0"


# -- the backfill ------------------------------------------------------------------------------


_END = object()
"""Queued by a fetch run when it ends."""


class _FetchRun:
    """A worker thread fetching consecutive pages from ``cursor`` into a bounded queue, until
    a page reaches real time (short, or a cursor that does not advance) or ``until``, the
    ``budget`` of pages is spent, the ``stop`` event is set, or it is halted. An error is
    queued in place of the page it stopped."""

    def __init__(self, pager: _Pager, cursor: int, budget: int | None) -> None:
        self.pager = pager
        self.expect = cursor  # the cursor of the next page ``take`` will hand out
        self.done = False
        self.error: BaseException | None = None
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=pager.depth)
        self.halted = threading.Event()
        self.thread = threading.Thread(target=self._loop, args=(cursor, budget),
                                       name="krakked-trades-fetch", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> None:
        while not self.halted.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _loop(self, cursor: int, budget: int | None) -> None:
        pager = self.pager
        try:
            while (budget is None or budget > 0) and not (
                    self.halted.is_set() or pager.stop.is_set()):
                page = pager.fetch(cursor)
                self._put((cursor, page))
                budget = None if budget is None else budget - 1
                if (page.rows < PAGE_SIZE or page.last is None or page.last <= cursor
                        or (pager.until_us is not None and page.last_us is not None
                            and page.last_us >= pager.until_us)):
                    break
                cursor = page.last
        except BaseException as exc:  # handed to the caller, who raises it
            self._put(exc)
        finally:
            self._put(_END)

    def halt(self, wait: bool) -> None:
        self.halted.set()
        if wait:
            self.thread.join(timeout=60)


class _Pager:
    """Fetches and parses ``Trades`` pages ahead, in a worker thread, while the caller writes
    the ones already fetched (the client's pacer still paces every call): ``take`` hands out
    the pages after a cursor — the first one waited for, then every one already fetched —
    so that when writing is slower than Kraken's pace, several pages go into one write. Pages
    fetched ahead and not taken (a stop, a jump to another cursor) are dropped, never
    written."""

    depth = 8
    """Pages fetched ahead at most; also the most pages one ``take`` hands out."""

    def __init__(self, client: SpotClient, rest_symbol: str, symbol: str,
                 until_us: int | None, stop: threading.Event) -> None:
        self.client, self.rest_symbol, self.symbol = client, rest_symbol, symbol
        self.until_us, self.stop = until_us, stop
        self._run: _FetchRun | None = None

    def fetch(self, cursor: int) -> TradesPage:
        """One page after ``cursor``, parsed."""
        return parse_trades(self.client.get_trades(self.rest_symbol, since=_ask(cursor)),
                            self.symbol)

    def take(self, cursor: int, budget: int | None) -> list[tuple[int, TradesPage]]:
        """The pages after ``cursor``, each with the cursor it was asked with: the first one
        waited for, then those already fetched (at most ``depth``), consecutive (each asked
        with the previous one's ``last``), no more than ``budget`` fetched from here on.
        Empty only when fetching ended without a page (the stop event)."""
        run = self._run
        if run is None or run.done or run.expect != cursor:
            if run is not None:  # a jump: the pages fetched ahead are not wanted
                run.halt(wait=True)
            run = self._run = _FetchRun(self, cursor, budget)
        if run.error is not None:
            error, run.error, run.done = run.error, None, True
            raise error
        pages: list[tuple[int, TradesPage]] = []
        while len(pages) < self.depth:
            try:
                item = run.queue.get() if not pages else run.queue.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                run.done = True
                break
            if isinstance(item, BaseException):
                if not pages:
                    run.done = True
                    raise item
                run.error = item
                break
            pages.append(item)
            if item[1].last is not None:
                run.expect = item[1].last
        return pages

    def close(self, wait: bool) -> None:
        """Stop fetching ahead (``wait``: until the call in flight returns)."""
        if self._run is not None:
            self._run.halt(wait)
            self._run = None


def backfill_trades(
    client: SpotClient,
    store: MarketStore,
    symbol: str,
    *,
    rest_symbol: str | None = None,
    since: datetime | int | str | None = None,
    until: datetime | int | str | None = None,
    resume: bool = False,
    auto_stop: bool = True,
    build_candles: bool = True,
    progress: ProgressCallback | None = None,
    max_pages: int | None = None,
    stop: threading.Event | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> TradesBackfillResult:
    """Page ``symbol``'s trades from Kraken's ``Trades`` into ``store`` and return what was done.

    **Where it starts.** ``resume``: from ``get_resume_point`` (the stored cursor, or inside the
    last second of stored CSV trades), else from ``since`` if given, else from Kraken's first
    trade. Without ``resume``: from ``since`` (a datetime, ISO string, Unix seconds or a ns
    cursor; trades at ``since`` included) — but when the recorded trade coverage already holds
    everything from there to the resume point, from the resume point (so re-running the same
    command continues instead of starting over); with no ``since``, from the resume point, else
    from Kraken's first trade. The same joining happens mid-run: a run that reaches history
    already stored up to the resume point jumps to it.

    **Pages** (``client.get_trades(rest_symbol, since=cursor)``, up to 1000 trades each) are
    fetched one after another, ahead of the writes, and written in ``store.upsert_trades``
    calls — the first page waited for plus every page already fetched (up to 8) per call: their
    trades, the cursor after the last of them (``last_kraken_since`` of data type ``trades``; a
    run filling older history never moves a stored cursor backwards) and their coverage, in one
    transaction; ``build_candles`` lets the store rebuild the 1m candles they complete. Ctrl-C
    or a crash leaves a write fully stored or not at all; pages fetched but not yet written are
    simply fetched again by the next run.

    **Coverage of a page** (the ``TradeCoverage`` it vouches for, ``[start, end)`` in µs): Kraken
    returns every trade with a ns stamp after the cursor ``S`` it was asked with, up to the
    last one it returns (``last``). The range ends at the last trade's microsecond, exclusive:
    more trades may share that microsecond and come on the next page. It starts at the first
    microsecond none of whose trades can be at or before ``S`` — ``S // 1000 + 1`` — when ``S``
    came from the caller (``since``, or the CSV seam); when ``S`` is a cursor a stored page
    returned (this run's previous page, or the stored cursor), that page stored the trades of
    ``S``'s microsecond up to ``S`` and this page has the rest, so it starts at ``S // 1000``.
    Consecutive pages therefore cover an unbroken range, and a minute is built into a candle
    only once all of its trades are stored.

    **When it stops**: ``until`` (trades before it are stored; the page reaching it is cut
    there and the cursor set just before it), ``max_pages``, the ``stop`` event
    (``interrupted``, between writes), or real time — a page shorter than 1000 trades or a
    cursor that no longer advances — unless ``auto_stop=False``: then it asks again every
    ``poll_seconds`` until ``stop`` is set. ``progress`` is called after every write.
    """
    symbol_rest = rest_symbol or symbol
    if max_pages is not None and max_pages < 0:
        raise UsageError(f"max_pages must be >= 0, got {max_pages}")
    if poll_seconds <= 0:
        raise UsageError(f"poll_seconds must be > 0, got {poll_seconds}")
    until_dt = parse_utc(until, "until")
    until_us = epoch_us(until_dt) if until_dt is not None else None
    asked = since_cursor(since) if since is not None else None
    if asked is not None:
        if _first_us(asked, chained=False) > epoch_us(now()):
            raise UsageError(f"since {since} is in the future")
        if until_dt is not None and epoch_us(until_dt) <= _first_us(asked, chained=False):
            raise UsageError(f"until {until_dt.isoformat()} is not after since {since}")
    notes: list[str] = []

    target = _resume_target(store, symbol)
    tail = _stored_cursor(store, symbol)
    if (resume or asked is None) and target is not None:
        cursor, chained = target
    elif asked is not None:
        cursor, chained = asked, False
    else:
        cursor, chained = -1, False
        notes.append(f"nothing stored for {symbol}: started at Kraken's first trade")
    started = from_epoch_us(_first_us(cursor, chained)) if cursor >= 0 else None
    stop = stop or threading.Event()

    pages = fetched = stored = 0
    first_us: int | None = None
    last_us: int | None = None
    reason: StopReason | None = None
    pager = _Pager(client, symbol_rest, symbol, until_us, stop)
    clean = False
    try:
        while reason is None:
            if (target is not None and cursor < target[0]
                    and _covers(store, symbol, _first_us(cursor, chained),
                                _first_us(*target))):
                cursor, chained = target
                notes.append(f"joined the stored history of {symbol} at "
                             f"{from_epoch_us(_first_us(cursor, chained)).isoformat()}")
                continue
            if until_us is not None and cursor >= _until_cursor(until_us):
                reason = "until"
            elif stop.is_set():
                reason = "interrupted"
            elif max_pages is not None and pages >= max_pages:
                reason = "max_pages"
            if reason is not None:
                break
            batch = pager.take(cursor, None if max_pages is None else max_pages - pages)
            tables: list[pa.Table] = []
            coverage: list[TradeCoverage] = []
            start_cursor = cursor
            cut = caught_up = False
            for asked, page in batch:  # consecutive pages: each asked with the previous last
                pages += 1
                fetched += page.rows
                advanced = page.last is not None and page.last > asked
                if page.rows and not advanced:
                    raise MalformedResponseError(
                        f"Trades of {symbol} returned trades but a cursor 'last' "
                        f"({page.last}) that does not advance past since ({asked})",
                        endpoint="spot:Trades")
                table = page.table
                start_us = _first_us(asked, chained)
                next_cursor, end_us = asked, start_us
                if page.last is not None and page.last_us is not None and advanced:
                    next_cursor = page.last
                    end_us = min(page.last_us, page.last // 1000)
                cut = (until_us is not None and page.last_us is not None
                       and page.last_us >= until_us)
                if cut and until_us is not None:
                    stamps = table["timestamp"].cast(pa.int64()).to_pylist()
                    table = table.slice(0, sum(1 for t in stamps if t < until_us))
                    next_cursor, end_us = max(asked, _until_cursor(until_us)), until_us
                if table.num_rows:
                    tables.append(table)
                    stamps_col = table["timestamp"].cast(pa.int64())
                    lo, hi = stamps_col[0].as_py(), stamps_col[-1].as_py()
                    first_us = lo if first_us is None else min(first_us, lo)
                    last_us = hi if last_us is None else max(last_us, hi)
                if end_us > start_us:
                    coverage.append(TradeCoverage(symbol, from_epoch_us(start_us),
                                                  from_epoch_us(end_us)))
                cursor, chained = next_cursor, True
                caught_up = not cut and (page.rows < PAGE_SIZE or not advanced)
                if cut or caught_up:
                    break  # (nothing was fetched after it)
            if tables or cursor != start_cursor:
                kept = cursor if tail is None or cursor >= tail else tail
                stored += store.upsert_trades(
                    pa.concat_tables(tables) if tables else TRADE_SCHEMA.empty_table(),
                    sync=[SyncUpdate(symbol, "trades", last_kraken_since=kept)],
                    coverage=coverage, build_candles=build_candles)
                tail = kept
            if not batch:
                continue
            _report(progress, TradesProgress(
                symbol, pages, fetched, stored, cursor, started,
                from_epoch_us(last_us) if last_us is not None else None,
                waiting=caught_up and not auto_stop))
            if cut:
                reason = "until"
            elif caught_up:
                if auto_stop:
                    reason = "realtime"
                elif stop.wait(poll_seconds):
                    reason = "interrupted"
        clean = True
    finally:
        pager.close(wait=clean)
    log.info("%s trades: %d pages, %d fetched, %d stored, stopped: %s", symbol, pages, fetched,
             stored, reason)
    return TradesBackfillResult(
        symbol=symbol, pages=pages, fetched=fetched, stored=stored,
        first=from_epoch_us(first_us) if first_us is not None else None,
        last=from_epoch_us(last_us) if last_us is not None else None,
        cursor=tail, stopped_because=reason,
        notes=tuple(notes))
