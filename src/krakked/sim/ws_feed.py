"""What the simulator's WS v2 channels show of its market: frames built from ``SimMarket``.

Every frame comes from the same tapes REST serves, so a trade on the ``trade`` channel has the
id, price, volume and time of the REST ``Trades`` row, the running ``ohlc`` candle equals the REST
``OHLC`` bar with that open time, and a ``book`` is REST ``Depth`` at that moment. Prices are
written at the pair's ``pair_decimals`` and quantities at its ``lot_decimals``, as JSON numbers in
fixed notation (``45285.2``, ``0.00100000``; never ``1E-8``), so a client decoding with Decimal
reproduces Kraken's book checksum from the wire text.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from krakked.market.book import OrderBook
from krakked.sim.market import SimMarket
from krakked.sim.pairs import SimPair

__all__ = ["BookFeed", "num", "ohlc_objects", "rfc3339", "ticker_object", "trade_objects"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encoder = msgspec.json.Encoder()


def encode(frame: dict[str, Any]) -> str:
    """A frame as JSON text (``num`` values are written verbatim)."""
    return _encoder.encode(frame).decode()


def num(value: str | Decimal | int, places: int) -> msgspec.Raw:
    """``value`` as a JSON number with exactly ``places`` decimals, fixed notation."""
    return msgspec.Raw(format(Decimal(value), f".{places}f").encode())


def rfc3339(us: int, digits: int = 6) -> str:
    """Unix microseconds as RFC3339 UTC with ``digits`` (6 or 9) fractional digits."""
    stamp = _EPOCH + timedelta(microseconds=us)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + ("000" if digits == 9 else "") + "Z"


def trade_objects(pair: SimPair, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """v2 ``trade`` objects for REST ``Trades`` rows (same id, price, volume, time)."""
    pd, ld = pair.pair_decimals, pair.lot_decimals
    return [
        {"symbol": pair.v2name, "side": "buy" if row[3] == "b" else "sell",
         "price": num(row[0], pd), "qty": num(row[1], ld),
         "ord_type": "market" if row[4] == "m" else "limit", "trade_id": row[6],
         "timestamp": rfc3339(int(row[7]) // 1000)}
        for row in rows
    ]


def ticker_object(market: SimMarket, pair: SimPair) -> dict[str, Any]:
    """The v2 ``ticker`` object now: REST ``Ticker``'s best bid/ask, last and 24 h values."""
    t = market.ticker(pair.id)
    pd, ld = pair.pair_decimals, pair.lot_decimals
    last, opened = Decimal(t["c"][0]), Decimal(t["o"])
    change = last - opened
    pct = (change / opened * 100).quantize(Decimal("0.01")) if opened else Decimal(0)
    row = market.last_trade(pair.id)
    stamp = rfc3339(int(row[7]) // 1000) if row else rfc3339(round(market.config.clock() * 1e6))
    return {"symbol": pair.v2name,
            "bid": num(t["b"][0], pd), "bid_qty": num(t["b"][2], ld),
            "ask": num(t["a"][0], pd), "ask_qty": num(t["a"][2], ld),
            "last": num(last, pd), "volume": num(t["v"][1], ld),
            "vwap": num(Decimal(t["p"][1]).quantize(Decimal(1).scaleb(-pd)), pd),
            "low": num(t["l"][1], pd), "high": num(t["h"][1], pd),
            "change": num(change, pd), "change_pct": num(pct, 2), "timestamp": stamp}


def ohlc_objects(market: SimMarket, pair: SimPair, interval: int,
                 times_us: list[int] | None = None, last: int = 2) -> list[dict[str, Any]]:
    """v2 ``ohlc`` candles (REST ``OHLC`` bars): those holding one of ``times_us`` (trade
    times), or else the ``last`` most recent bars that had trades."""
    rows, _ = market.ohlc(pair.id, interval)
    width = interval * 60
    if times_us is None:
        chosen = [r for r in rows if r[7]][-last:]
    else:
        starts = [r[0] for r in rows]
        picked: dict[int, list[Any]] = {}
        for us in times_us:
            k = bisect_right(starts, us // 1_000_000) - 1
            if k >= 0 and rows[k][0] + width > us // 1_000_000:
                picked[rows[k][0]] = rows[k]
        chosen = [picked[t] for t in sorted(picked)]
    pd, ld = pair.pair_decimals, pair.lot_decimals
    return [
        {"symbol": pair.v2name, "open": num(r[1], pd), "high": num(r[2], pd),
         "low": num(r[3], pd), "close": num(r[4], pd), "trades": r[7], "volume": num(r[6], ld),
         "vwap": num(r[5], pd), "interval_begin": rfc3339(r[0] * 1_000_000, 9),
         "interval": interval, "timestamp": rfc3339((r[0] + width) * 1_000_000)}
        for r in chosen
    ]


Levels = dict[Decimal, Decimal]


class BookFeed:
    """One subscription's book: the levels last sent and a mirror ``OrderBook`` for checksums.

    ``snapshot()`` and ``update()`` return the v2 book object to send; ``update`` holds only the
    levels that changed since the last call (``qty`` 0 deletes), in Kraken's order."""

    def __init__(self, market: SimMarket, pair: SimPair, depth: int) -> None:
        self.market, self.pair, self.depth = market, pair, depth
        self.mirror = OrderBook(pair.v2name, depth, price_decimals=pair.pair_decimals,
                                qty_decimals=pair.lot_decimals)
        self._asks: Levels = {}
        self._bids: Levels = {}

    def _now_levels(self) -> tuple[Levels, Levels]:
        book = self.market.depth(self.pair.id, min(self.depth, 500))
        return ({Decimal(p): Decimal(q) for p, q, _ in book["asks"]},
                {Decimal(p): Decimal(q) for p, q, _ in book["bids"]})

    def _object(self, asks: list[tuple[Decimal, Decimal]], bids: list[tuple[Decimal, Decimal]],
                stamp_us: int) -> dict[str, Any]:
        pd, ld = self.pair.pair_decimals, self.pair.lot_decimals
        return {"symbol": self.pair.v2name,
                "bids": [{"price": num(p, pd), "qty": num(q, ld)} for p, q in bids],
                "asks": [{"price": num(p, pd), "qty": num(q, ld)} for p, q in asks],
                "checksum": self.mirror.checksum(), "timestamp": rfc3339(stamp_us)}

    def _apply(self, asks: list[tuple[Decimal, Decimal]], bids: list[tuple[Decimal, Decimal]],
               snapshot: bool) -> None:
        self.mirror.apply([{"price": p, "qty": q} for p, q in bids],
                          [{"price": p, "qty": q} for p, q in asks], snapshot=snapshot)

    def snapshot(self, stamp_us: int) -> dict[str, Any]:
        """The whole book now (asks lowest first, bids highest first)."""
        self._asks, self._bids = self._now_levels()
        asks = sorted(self._asks.items())
        bids = sorted(self._bids.items(), reverse=True)
        self._apply(asks, bids, snapshot=True)
        return self._object(asks, bids, stamp_us)

    def update(self, stamp_us: int) -> dict[str, Any] | None:
        """The changes since the last frame (None when nothing changed)."""
        asks, bids = self._now_levels()
        changes: list[list[tuple[Decimal, Decimal]]] = []
        for old, new, reverse in ((self._asks, asks, False), (self._bids, bids, True)):
            side = [(p, Decimal(0)) for p in old if p not in new]
            side += [(p, q) for p, q in new.items() if old.get(p) != q]
            changes.append(sorted(side, reverse=reverse))
        self._asks, self._bids = asks, bids
        if not changes[0] and not changes[1]:
            return None
        self._apply(changes[0], changes[1], snapshot=False)
        return self._object(changes[0], changes[1], stamp_us)
