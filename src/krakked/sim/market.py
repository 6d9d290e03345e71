"""The simulator's market: its pairs and assets (``pairs``) and what Kraken's Spot market-data
endpoints show of the deterministic trade tapes (``tape``): Trades, OHLC, Ticker, Depth and Spread.

Only trades at or before the clock's "now" are served, so the market grows with wall time.
Choices where Kraken's documentation leaves the behaviour open (UNCONFIRMED; Kraken documents
the endpoints at https://docs.kraken.com/api/docs/rest-api/get-recent-trades and
https://docs.kraken.com/api/docs/rest-api/get-ohlc-data):

* Trades ``since``: a value below ``10**11`` is Unix seconds and *inclusive* (trades at or after
  it); anything larger is Kraken's nanosecond cursor and *exclusive* (trades strictly after it).
  Every trade has a distinct nanosecond stamp (see ``tape``), so ``since=last`` never skips nor
  repeats a trade. Without ``since`` the most recent ``count`` trades are returned.
* OHLC ``since``: bars whose open time is strictly after it (the running bar is always present);
  ``last`` is the open time of the last committed bar. Empty intervals carry the previous close
  (vwap = close) with volume 0 and count 0. Weekly bars open Monday 00:00 UTC; 15-day bars open at
  multiples of 15 days since the epoch.
* Prices on Trades, Ticker, Depth and Spread of the legacy X/Z pairs carry at least 5 decimals
  (``"30243.40000"`` for XBTUSD, as recorded responses do); OHLC uses ``pair_decimals``.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from operator import mul
from typing import Any

from krakked.sim.config import SimConfig
from krakked.sim.pairs import ASSETS, PAIRS, SimAsset, SimPair
from krakked.sim.tape import DAY_S, DAY_US, LRU, DayTape, Tapes

__all__ = ["OHLC_INTERVALS", "SimMarket", "parse_since_ns"]

OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
_MONDAY = 4 * DAY_S  # 1970-01-05 was the first Monday after the epoch

Agg = tuple[int, int, int, int, int, int, int]  # open, high, low, close, volume, sum(p*v), count


# --- helpers ----------------------------------------------------------------------------------


def _fmt(units: int, decimals: int, out: int | None = None) -> str:
    """``units`` * 10**-decimals as a decimal string with ``out`` (>= decimals) decimals."""
    if decimals == 0:
        text = str(units)
        return text if not out else f"{text}.{'0' * out}"
    q, r = divmod(units, 10 ** decimals)
    text = f"{q}.{r:0{decimals}d}"
    if out is not None and out > decimals:
        text += "0" * (out - decimals)
    return text


def _div_round(a: int, b: int) -> int:
    """a / b rounded half up (b > 0)."""
    return (2 * a + b) // (2 * b)


def _merge(a: Agg, b: Agg) -> Agg:
    return (a[0], max(a[1], b[1]), min(a[2], b[2]), b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6])


def parse_since_ns(value: str | int | float | Decimal) -> int:
    """Trades ``since`` as a nanosecond cursor: trades strictly after the returned value are due.

    Below ``10**11`` the value is Unix seconds (fractions allowed) and inclusive; otherwise it
    is Kraken's nanosecond cursor. Raises ``ValueError`` if it is not a non-negative number.
    """
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"since {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"since {value!r} is not a non-negative number")
    if number < 10 ** 11:
        return int(number * 10 ** 9) - 1
    return int(number)


# --- the market -------------------------------------------------------------------------------


class SimMarket:
    """Pairs, assets and per-pair trade tapes for ``config.seed``, served up to ``config.clock()``.

    Construction is instant; tapes are generated on first use and a bounded amount is cached.
    All methods are thread-safe. Pair arguments named ``pair_id`` also accept an altname or
    wsname; unknown names raise ``KeyError``.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.tapes = Tapes(config)
        self._origin_us = self.tapes.origin_us
        self._origin_day = self.tapes.origin_day
        self._pairs = PAIRS
        self._asset_names: dict[str, SimAsset] = {}
        for a in ASSETS:
            self._asset_names[a.id] = a
            self._asset_names.setdefault(a.altname, a)
        self._names: dict[str, SimPair] = {}
        for p in PAIRS:
            for name in (p.id, p.altname, p.wsname, p.v2name, p.v2name.replace("/", "")):
                self._names.setdefault(name.upper(), p)
        self._lock = threading.RLock()
        self._aggs = LRU(400_000)  # bucket aggregates of complete days
        self._summary: dict[tuple[str, int], Agg] = {}  # daily aggregates of complete days

    # -- tables --------------------------------------------------------------------------------

    def pairs(self) -> tuple[SimPair, ...]:
        """Every pair, in table order."""
        return self._pairs

    def assets(self) -> tuple[SimAsset, ...]:
        """Every asset, in table order."""
        return ASSETS

    def pair(self, name: str) -> SimPair:
        """The pair named by its id, altname or wsname (or v2 name); ``KeyError`` if unknown."""
        found = self._names.get(str(name).strip().upper())
        if found is None:
            raise KeyError(name)
        return found

    def asset(self, name: str) -> SimAsset:
        """The asset named by its id or altname; ``KeyError`` if unknown."""
        found = self._asset_names.get(str(name).strip().upper())
        if found is None:
            raise KeyError(name)
        return found

    def asset_pairs_result(self, pair: str | None = None, info: str | None = None
                           ) -> dict[str, Any]:
        """``AssetPairs`` result for a comma list of pair names (None = all).

        ``KeyError`` for an unknown pair, ``ValueError`` for an unknown ``info``.
        """
        info = info or "info"
        if info not in ("info", "leverage", "fees", "margin"):
            raise ValueError(f"info {info!r}")
        chosen = self._pairs if not pair else [self.pair(n) for n in _split(pair)]
        return {p.id: p.row(info) for p in chosen}

    def assets_result(self, asset: str | None = None) -> dict[str, Any]:
        """``Assets`` result for a comma list of asset ids or altnames (None = all);
        ``KeyError`` for an unknown asset."""
        chosen = ASSETS if not asset else [self.asset(n) for n in _split(asset)]
        return {a.id: a.row() for a in chosen}

    def price_at(self, pair_id: str, t: float) -> Decimal:
        """The tape's price level at Unix time ``t`` (no per-trade noise), rounded to the pair's
        ``pair_decimals``; trades near ``t`` scatter a few basis points around it."""
        return self.tapes.price_at(self.pair(pair_id), t)

    # -- Trades --------------------------------------------------------------------------------

    def _row(self, p: SimPair, tape: DayTape, i: int) -> list[Any]:
        return [
            _fmt(tape.px[i], p.pair_decimals, p.price_decimals),
            _fmt(tape.vol[i], p.lot_decimals),
            tape.us[i] / 1_000_000,
            chr(tape.side[i]),
            chr(tape.kind[i]),
            "",
            tape.first_id + i,
            str(tape.ns[i]),
        ]

    def trades_since(self, pair_id: str, since_ns: int | None, count: int = 1000
                     ) -> tuple[list[list[Any]], str]:
        """Up to ``count`` trades strictly after the nanosecond cursor ``since_ns`` (oldest first,
        none after now) and the cursor to pass next time: the last trade's ns stamp, else
        ``since_ns`` (or now in ns when ``since_ns`` is None). ``since_ns`` None = the most
        recent ``count`` trades."""
        p = self.pair(pair_id)
        count = max(0, min(int(count), 1000))
        with self._lock:
            now_us = self.tapes.now_us()
            if since_ns is None:
                rows = self._latest(p, count, now_us)
                return rows, (rows[-1][7] if rows else str(now_us * 1000))
            rows: list[list[Any]] = []
            first = max(self._origin_day, since_ns // (DAY_US * 1000))
            for d in range(first, now_us // DAY_US + 1):
                if len(rows) >= count:
                    break
                tape, hi = self.tapes.visible(p, d, now_us)
                lo = bisect_right(tape.ns, since_ns, 0, hi) if d == first else 0
                for i in range(lo, min(hi, lo + count - len(rows))):
                    rows.append(self._row(p, tape, i))
            return rows, (rows[-1][7] if rows else str(since_ns))

    def _latest(self, p: SimPair, count: int, now_us: int) -> list[list[Any]]:
        chunks: list[list[list[Any]]] = []
        need = count
        for d in reversed(self.tapes.days(now_us)):
            if need <= 0:
                break
            tape, hi = self.tapes.visible(p, d, now_us)
            lo = max(0, hi - need)
            chunks.append([self._row(p, tape, i) for i in range(lo, hi)])
            need -= hi - lo
        return [row for chunk in reversed(chunks) for row in chunk]

    def _last_trade(self, p: SimPair, now_us: int) -> tuple[DayTape, int] | None:
        for d in reversed(self.tapes.days(now_us)):
            tape, hi = self.tapes.visible(p, d, now_us)
            if hi:
                return tape, hi - 1
        return None

    def last_trade(self, pair_id: str) -> list[Any] | None:
        """The most recent trade at or before now, as a Trades row (None before the origin)."""
        p = self.pair(pair_id)
        with self._lock:
            found = self._last_trade(p, self.tapes.now_us())
            return None if found is None else self._row(p, *found)

    # -- aggregates ----------------------------------------------------------------------------

    @staticmethod
    def _agg(tape: DayTape, i: int, j: int) -> Agg:
        prices = tape.px[i:j]
        vols = tape.vol[i:j]
        return (prices[0], max(prices), min(prices), prices[-1], sum(vols),
                sum(map(mul, prices, vols)), j - i)

    def _buckets(self, tape: DayTape, hi: int, gran_s: int) -> list[tuple[int, Agg]]:
        out: list[tuple[int, Agg]] = []
        g = gran_s * 1_000_000
        us = tape.us
        i = 0
        while i < hi:
            key = us[i] // g
            j = bisect_left(us, (key + 1) * g, i, hi)
            out.append((key * gran_s, self._agg(tape, i, j)))
            i = j
        return out

    def _day_summary(self, p: SimPair, d: int, now_us: int) -> Agg | None:
        if (d + 1) * DAY_US <= now_us:
            hit = self._summary.get((p.id, d))
            if hit is None:
                tape = self.tapes.day(p, d)
                hit = self._summary[(p.id, d)] = self._agg(tape, 0, len(tape.us))
            return hit
        tape, hi = self.tapes.visible(p, d, now_us)
        return self._agg(tape, 0, hi) if hi else None

    def _day_buckets(self, p: SimPair, d: int, gran_s: int, now_us: int
                     ) -> list[tuple[int, Agg]]:
        if gran_s == DAY_S:
            agg = self._day_summary(p, d, now_us)
            return [] if agg is None else [(d * DAY_S, agg)]
        if (d + 1) * DAY_US <= now_us:
            key = (p.id, d, gran_s)
            hit = self._aggs.get(key)
            if hit is None:
                tape = self.tapes.day(p, d)
                hit = self._buckets(tape, len(tape.us), gran_s)
                self._aggs.put(key, hit, len(hit) + 1)
            return hit
        tape, hi = self.tapes.visible(p, d, now_us)
        return self._buckets(tape, hi, gran_s)

    def _last_price_before(self, p: SimPair, t_us: int, now_us: int) -> int | None:
        """Price of the last trade strictly before ``t_us`` (None if there is none)."""
        d = min(t_us, now_us + 1) // DAY_US
        if d >= self._origin_day:
            tape, hi = self.tapes.visible(p, d, now_us)
            i = bisect_left(tape.us, t_us, 0, hi)
            if i:
                return tape.px[i - 1]
        for e in range(d - 1, self._origin_day - 1, -1):
            agg = self._day_summary(p, e, now_us)
            if agg is not None:
                return agg[3]
        return None

    # -- OHLC ----------------------------------------------------------------------------------

    def ohlc(self, pair_id: str, interval_minutes: int = 1, since: int | None = None
             ) -> tuple[list[list[Any]], int]:
        """At most 720 most recent bars ``[time, o, h, l, c, vwap, volume, count]`` of
        ``interval_minutes`` ending with the running bar (always present), only bars opening
        after ``since``; and ``last``, the open time of the last committed bar.
        ``ValueError`` for an interval Kraken does not serve."""
        p = self.pair(pair_id)
        if interval_minutes not in OHLC_INTERVALS:
            raise ValueError(f"interval {interval_minutes!r}")
        width = interval_minutes * 60
        offset = _MONDAY if interval_minutes == 10080 else 0

        def bucket(t: int) -> int:
            return (t - offset) // width * width + offset

        with self._lock:
            now_us = self.tapes.now_us()
            running = bucket(now_us // 1_000_000)
            last = running - width
            if now_us < self._origin_us:
                return [], last
            start = max(bucket(self._origin_us // 1_000_000), running - 719 * width)
            gran = width if width <= 4 * 3600 else DAY_S
            bars: dict[int, Agg] = {}
            for d in range(max(self._origin_day, start // DAY_S), now_us // DAY_US + 1):
                for t, agg in self._day_buckets(p, d, gran, now_us):
                    if t < start:
                        continue
                    b = bucket(t)
                    prev = bars.get(b)
                    bars[b] = agg if prev is None else _merge(prev, agg)
            close = self._last_price_before(p, start * 1_000_000, now_us)
            pd, ld = p.pair_decimals, p.lot_decimals
            rows: list[list[Any]] = []
            for t in range(start, running + width, width):
                agg = bars.get(t)
                if agg is not None:
                    o, h, lo, c, v, pv, n = agg
                    close = c
                    if since is None or t > since or t == running:
                        rows.append([t, _fmt(o, pd), _fmt(h, pd), _fmt(lo, pd), _fmt(c, pd),
                                     _fmt(_div_round(pv, v), pd), _fmt(v, ld), n])
                elif close is not None and (since is None or t > since or t == running):
                    text = _fmt(close, pd)
                    rows.append([t, text, text, text, text, text, _fmt(0, ld), 0])
            return rows, last

    # -- Ticker, Depth, Spread -----------------------------------------------------------------

    def _quote(self, p: SimPair, tape: DayTape, i: int) -> tuple[int, int]:
        """(bid, ask) in price units right after trade ``i``: a taker buy lifted the ask at the
        trade price, a taker sell hit the bid."""
        price = tape.px[i]
        width = 1 + (tape.first_id + i + self.seed) * 2654435761 % 3
        if tape.side[i] == 98:
            return max(1, price - width), price
        return price, price + width

    def ticker(self, pair_id: str) -> dict[str, Any]:
        """The pair's ``Ticker`` entry derived from the tape (``a``/``b`` = Depth's best)."""
        p = self.pair(pair_id)
        with self._lock:
            now_us = self.tapes.now_us()
            found = self._last_trade(p, now_us)
            pd, ld, out = p.pair_decimals, p.lot_decimals, p.price_decimals

            def price(units: int) -> str:
                return _fmt(units, pd, out)

            if found is None:
                zero = price(0)
                return {"a": [zero, "0", "0.000"], "b": [zero, "0", "0.000"], "c": [zero, "0"],
                        "v": ["0", "0"], "p": [zero, zero], "t": [0, 0], "l": [zero, zero],
                        "h": [zero, zero], "o": zero}
            tape, i = found
            last = tape.px[i]
            today = now_us // DAY_US
            aggs: list[Agg | None] = [None, None]
            t_tape, t_hi = self.tapes.visible(p, today, now_us)
            if t_hi:
                aggs[0] = self._agg(t_tape, 0, t_hi)
            day_ago = now_us - DAY_US
            if today - 1 >= self._origin_day:
                y_tape, y_hi = self.tapes.visible(p, today - 1, now_us)
                lo = bisect_right(y_tape.us, day_ago, 0, y_hi)
                if lo < y_hi:
                    aggs[1] = self._agg(y_tape, lo, y_hi)
            if aggs[0] is not None:
                aggs[1] = aggs[0] if aggs[1] is None else _merge(aggs[1], aggs[0])

            def vwap(agg: Agg | None) -> str:
                if agg is None:
                    return price(last)
                return _fmt(_div_round(agg[5] * 10 ** (out - pd), agg[4]), out)

            asks, bids = self._book(p, tape, i, 1)
            return {
                "a": self._top(asks[0]), "b": self._top(bids[0]),
                "c": [price(last), _fmt(tape.vol[i], ld)],
                "v": [_fmt(a[4] if a else 0, ld) for a in aggs],
                "p": [vwap(a) for a in aggs],
                "t": [a[6] if a else 0 for a in aggs],
                "l": [price(a[2] if a else last) for a in aggs],
                "h": [price(a[1] if a else last) for a in aggs],
                "o": price(aggs[0][0] if aggs[0] else last),
            }

    @staticmethod
    def _top(level: list[Any]) -> list[str]:
        volume = Decimal(level[1])
        whole = max(1, int(volume.to_integral_value()))
        return [level[0], str(whole), f"{volume:.3f}"]

    def _book(self, p: SimPair, tape: DayTape, i: int, count: int
              ) -> tuple[list[list[Any]], list[list[Any]]]:
        bid, ask = self._quote(p, tape, i)
        pd, out = p.pair_decimals, p.price_decimals
        vdec = 3 if p.legacy else max(3, p.lot_decimals)
        base_usd = self.tapes.curve(p.base)(tape.us[i] / 1_000_000)
        stamp = tape.us[i] // 1_000_000
        origin = self._origin_us // 1_000_000
        trade_id = tape.first_id + i
        sides: list[list[list[Any]]] = []
        for name, first, sign in (("asks", ask, 1), ("bids", bid, -1)):
            rng = random.Random(self.tapes.digest("book", p.id, trade_id, name))
            levels: list[list[Any]] = []
            level = first
            for n in range(count):
                if level <= 0:
                    break
                notional = 10 ** (2.0 + 2.5 * rng.random() ** 2)
                thousandths = max(1, int(notional / base_usd * 1000))
                age = 0 if n == 0 else rng.randrange(3600)
                levels.append([_fmt(level, pd, out), _fmt(thousandths, 3, vdec),
                               max(origin, stamp - age)])
                level += sign * (1 + int(rng.random() ** 3 * 3))
            sides.append(levels)
        return sides[0], sides[1]

    def depth(self, pair_id: str, count: int = 100) -> dict[str, Any]:
        """``{"asks": [...], "bids": [...]}`` with up to ``count`` (1..500) levels each side,
        asks ascending from the best ask, bids descending from the best bid."""
        p = self.pair(pair_id)
        count = max(1, min(int(count), 500))
        with self._lock:
            found = self._last_trade(p, self.tapes.now_us())
            if found is None:
                return {"asks": [], "bids": []}
            asks, bids = self._book(p, *found, count)
            return {"asks": asks, "bids": bids}

    def spread(self, pair_id: str, since: int | None = None) -> tuple[list[list[Any]], int]:
        """About the last 200 top-of-book changes ``[time, bid, ask]`` (one per trade, oldest
        first, only rows after ``since``) and ``last``, the time of the last row."""
        p = self.pair(pair_id)
        with self._lock:
            now_us = self.tapes.now_us()
            picked: list[tuple[DayTape, int]] = []
            for d in reversed(self.tapes.days(now_us)):
                tape, hi = self.tapes.visible(p, d, now_us)
                for i in range(hi - 1, -1, -1):
                    picked.append((tape, i))
                    if len(picked) >= 200:
                        break
                if len(picked) >= 200:
                    break
            pd, out = p.pair_decimals, p.price_decimals
            rows: list[list[Any]] = []
            for tape, i in reversed(picked):
                t = tape.us[i] // 1_000_000
                if since is not None and t <= since:
                    continue
                bid, ask = self._quote(p, tape, i)
                rows.append([t, _fmt(bid, pd, out), _fmt(ask, pd, out)])
            if not rows:
                return rows, (since if since is not None else now_us // 1_000_000)
            return rows, rows[-1][0]

    def warm(self, pair_ids: Iterable[str]) -> None:
        """Generate and cache the daily aggregates of ``pair_ids`` (for demos and benchmarks)."""
        for pid in pair_ids:
            self.ohlc(pid, 1440)


def _split(names: str) -> list[str]:
    return [n.strip() for n in str(names).split(",") if n.strip()]
