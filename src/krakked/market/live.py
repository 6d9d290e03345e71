"""The live cache: latest ticker, last trade, running candle per timeframe and L2 book per pair,
kept from decoded WS v2 frames, each with the moment it was last known to be current.

Staleness: a cached value is as fresh as the last frame received on a connection that has stayed
up since the value was written (Kraken sends nothing for a pair where nothing happens; heartbeats
and other frames prove the connection, hence the value, is still current). After a drop the value
ages from the drop. Older than the tolerance -> ``DataStaleError``; never received ->
``NoDataError``. Pure: frames in, values out; the clocks are injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from krakked.errors import DataStaleError, NoDataError
from krakked.market.book import OrderBook

__all__ = ["BookView", "LiveCache", "LiveCandle", "Ticker", "parse_ws_time"]

DEFAULT_STALE_TOLERANCE = 60.0


def parse_ws_time(text: str) -> datetime:
    """An RFC3339 UTC time of a WS v2 frame (``Z``, up to 9 fractional digits) as an aware
    datetime, truncated to the microsecond."""
    head, _, frac = text.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(head).replace(tzinfo=UTC)
    if frac:
        moment += timedelta(microseconds=int(frac[:6].ljust(6, "0")))
    return moment


@dataclass(frozen=True, slots=True)
class Ticker:
    """Level 1 of one pair (Kraken's ``ticker`` object; 24 h figures from Kraken)."""

    pair: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    last: Decimal
    volume: Decimal
    vwap: Decimal
    low: Decimal
    high: Decimal
    change: Decimal
    change_pct: Decimal
    timestamp: datetime | None
    age_seconds: float


@dataclass(frozen=True, slots=True)
class LiveCandle:
    """The newest candle of one pair and timeframe; ``closed`` once the clock passed its end
    (Kraken marks no candle closed, and a minute without trades sends nothing)."""

    pair: str
    interval_minutes: int
    timestamp: datetime  # open time (Kraken's interval_begin)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal
    trade_count: int
    closed: bool
    age_seconds: float


@dataclass(frozen=True, slots=True)
class BookView:
    """A copy of one pair's book: (price, qty) best first on each side."""

    pair: str
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    checksum: int
    age_seconds: float


class _Entry:
    __slots__ = ("data", "session", "stamp")

    def __init__(self, data: Any, stamp: float, session: int) -> None:
        self.data = data
        self.stamp = stamp
        self.session = session


class LiveCache:
    """Live values per canonical pair from WS v2 frames (``apply``), read with staleness checks.

    ``names`` maps v2 symbols (``BTC/USD``) to canonical names (``XBTUSD``); ``decimals`` maps v2
    symbols to (price decimals, lot decimals) for book checksums. ``clock`` is monotonic seconds
    (ages), ``wall`` Unix seconds (whether a candle's end has passed); ``liveness`` gives the
    time (on ``clock``) of the connection's last frame of any kind, else ``touch()`` is called.
    """

    def __init__(self, names: Mapping[str, str], *,
                 decimals: Mapping[str, tuple[int, int]] | None = None,
                 stale_tolerance: float = DEFAULT_STALE_TOLERANCE, book_depth: int = 10,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 liveness: Callable[[], float | None] | None = None) -> None:
        self.names = dict(names)
        self.decimals = dict(decimals or {})
        self.stale_tolerance = stale_tolerance
        self.book_depth = book_depth
        self.clock = clock
        self.wall = wall
        self.liveness = liveness  # the connection's last frame (heartbeats too), on ``clock``
        self.connected = False
        self.session = 0
        self._last_frame = 0.0
        self.tickers: dict[str, _Entry] = {}
        self.trades: dict[str, _Entry] = {}
        self.candles: dict[tuple[str, int], _Entry] = {}
        self.books: dict[str, _Entry] = {}
        self.checksum_failures: dict[str, int] = {}
        self.crossed_books: dict[str, int] = {}
        self.malformed = 0
        self.needs_resync: set[str] = set()  # v2 symbols whose book must be resubscribed
        self._handlers = {"ticker": self._ticker, "trade": self._trade, "ohlc": self._ohlc,
                          "book": self._book}

    # -- connection --
    def on_connected(self) -> None:
        """A new connection is up: values written before it age from the drop until refreshed."""
        self.session += 1
        self.connected = True
        self._last_frame = self.clock()

    def on_disconnected(self) -> None:
        self.connected = False

    def touch(self) -> None:
        """Any frame arrived (heartbeat included): the connection is alive."""
        self._last_frame = self.clock()

    # -- frames --
    def apply(self, frame: Mapping[str, Any]) -> None:
        """Apply one decoded data frame; frames of other channels only prove liveness. A frame
        that does not have the documented shape is counted in ``malformed`` and skipped."""
        now = self.clock()
        self._last_frame = now
        handler = self._handlers.get(frame.get("channel"))  # type: ignore[arg-type]
        if handler is None:
            return
        try:
            handler(frame, now)
        except (KeyError, TypeError, ValueError, IndexError, ArithmeticError):
            self.malformed += 1

    def _pair(self, symbol: str) -> str:
        return self.names.get(symbol) or symbol

    def _ticker(self, frame: Mapping[str, Any], now: float) -> None:
        session = self.session
        for item in frame["data"]:
            self.tickers[self._pair(item["symbol"])] = _Entry(item, now, session)

    def _trade(self, frame: Mapping[str, Any], now: float) -> None:
        session = self.session
        for item in frame["data"]:
            pair = self._pair(item["symbol"])
            prev = self.trades.get(pair)
            if prev is None or item["trade_id"] >= prev.data["trade_id"]:
                self.trades[pair] = _Entry(item, now, session)
            else:  # an older trade (a snapshot overlap): still proof of a live feed
                prev.stamp, prev.session = now, session

    def _ohlc(self, frame: Mapping[str, Any], now: float) -> None:
        session = self.session
        for item in frame["data"]:
            key = (self._pair(item["symbol"]), int(item["interval"]))
            prev = self.candles.get(key)
            if prev is None or item["interval_begin"] >= prev.data["interval_begin"]:
                self.candles[key] = _Entry(item, now, session)
            else:
                prev.stamp, prev.session = now, session

    def _book(self, frame: Mapping[str, Any], now: float) -> None:
        snapshot = frame.get("type") == "snapshot"
        for item in frame["data"]:
            symbol = item["symbol"]
            pair = self._pair(symbol)
            entry = self.books.get(pair)
            if entry is None or snapshot:
                pd, qd = self.decimals.get(symbol, (None, None))
                book = OrderBook(symbol, self.book_depth, price_decimals=pd, qty_decimals=qd)
                entry = self.books[pair] = _Entry(book, now, self.session)
                self.needs_resync.discard(symbol)
            elif symbol in self.needs_resync:
                continue  # out of sync: ignore updates until the new snapshot
            book = entry.data
            ok = book.apply(item.get("bids", ()), item.get("asks", ()), snapshot=snapshot,
                            checksum=item.get("checksum"))
            entry.stamp, entry.session = now, self.session
            if not ok or book.crossed:
                counts = self.checksum_failures if not ok else self.crossed_books
                counts[pair] = counts.get(pair, 0) + 1
                self.needs_resync.add(symbol)

    # -- reads --
    def _age(self, entry: _Entry, now: float) -> float:
        if self.connected and entry.session == self.session:
            last = self._last_frame
            if self.liveness is not None:
                last = max(last, self.liveness() or last)
            return max(0.0, now - max(entry.stamp, last))
        return max(0.0, now - entry.stamp)

    def _fresh(self, table: Mapping[Any, _Entry], key: Any, pair: str, what: str
               ) -> tuple[_Entry, float]:
        entry = table.get(key)
        if entry is None:
            raise NoDataError(f"no live {what} for {pair} yet (is it subscribed?)")
        now = self.clock()
        age = self._age(entry, now)
        if age > self.stale_tolerance:
            raise DataStaleError(f"live {what} for {pair} is {age:.1f} s old "
                                 f"(tolerance {self.stale_tolerance:g} s)")
        if what == "book" and entry.data.symbol in self.needs_resync:
            raise DataStaleError(f"live book for {pair} failed its checksum and is being "
                                 "resubscribed")
        return entry, age

    def ticker(self, pair: str) -> Ticker:
        """``pair``'s ticker, fresh, or ``DataStaleError`` / ``NoDataError``."""
        entry, age = self._fresh(self.tickers, pair, pair, "ticker")
        d = entry.data
        ts = d.get("timestamp")
        return Ticker(pair, d["bid"], d["bid_qty"], d["ask"], d["ask_qty"], d["last"],
                      d["volume"], d["vwap"], d["low"], d["high"], d["change"], d["change_pct"],
                      parse_ws_time(ts) if ts else None, age)

    def latest_price(self, pair: str) -> Decimal:
        """The last trade price: from the trade feed when subscribed, else the ticker's ``last``."""
        if pair in self.trades:
            entry, _ = self._fresh(self.trades, pair, pair, "trade")
            return entry.data["price"]
        return self.ticker(pair).last

    def best_bid_ask(self, pair: str) -> tuple[Decimal, Decimal]:
        """(best bid, best ask) from the ticker, else from the book."""
        if pair in self.tickers or pair not in self.books:
            t = self.ticker(pair)
            return t.bid, t.ask
        entry, _ = self._fresh(self.books, pair, pair, "book")
        bid, ask = entry.data.best_bid(), entry.data.best_ask()
        if bid is None or ask is None:
            raise NoDataError(f"the live book for {pair} has an empty side")
        return bid, ask

    def live_ohlc(self, pair: str, interval: int) -> LiveCandle:
        """The newest candle of ``pair`` at ``interval`` minutes (the running one, or the last
        one with ``closed`` set once the clock passed its end)."""
        entry, age = self._fresh(self.candles, (pair, interval), pair, f"{interval}m candle")
        d = entry.data
        begin = parse_ws_time(d["interval_begin"])
        end = begin.timestamp() + interval * 60
        return LiveCandle(pair, interval, begin, d["open"], d["high"], d["low"], d["close"],
                          d["volume"], d["vwap"], int(d["trades"]), self.wall() >= end, age)

    def book(self, pair: str, depth: int | None = None) -> BookView:
        """A copy of ``pair``'s book (``depth`` levels per side, all when None)."""
        entry, age = self._fresh(self.books, pair, pair, "book")
        book: OrderBook = entry.data
        return BookView(pair, book.bids(depth), book.asks(depth), book.checksum(), age)

    def pair_status(self) -> dict[str, dict[str, Any]]:
        """Per pair: age in seconds of each cached value and whether it is stale."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        for name, table in (("ticker", self.tickers), ("trade", self.trades),
                            ("book", self.books)):
            for pair, entry in table.items():
                age = self._age(entry, now)
                out.setdefault(pair, {})[name] = {"age_seconds": round(age, 3),
                                                  "stale": age > self.stale_tolerance}
        for (pair, interval), entry in self.candles.items():
            age = self._age(entry, now)
            out.setdefault(pair, {})[f"ohlc_{interval}"] = {
                "age_seconds": round(age, 3), "stale": age > self.stale_tolerance}
        return out

    def fresh_tickers(self) -> int:
        """How many pairs have a ticker within the tolerance."""
        now = self.clock()
        return sum(1 for e in self.tickers.values() if self._age(e, now) <= self.stale_tolerance)
