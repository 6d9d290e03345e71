"""A Kraken L2 order book kept from WS v2 ``book`` frames, verified by Kraken's CRC32 checksum.

Prices and quantities are exact Decimals (decode frames with ``float_hook=Decimal``). The checksum
covers the top 10 levels per side, asks lowest first then bids highest first, each level written
as fixed-point digits with the dot and leading zeros removed. Values are written at the pair's
price and lot decimals when they are known (Kraken's own example only verifies that way: the wire
may print ``0.566`` for ``0.5660``), else at the precision they arrived with.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = ["BOOK_DEPTHS", "CHECKSUM_LEVELS", "OrderBook", "book_checksum", "level_digits"]

BOOK_DEPTHS = (10, 25, 100, 500, 1000)
CHECKSUM_LEVELS = 10


def _digits(value: Decimal, places: int | None) -> str:
    text = format(value, "f" if places is None else f".{places}f")
    return text.replace(".", "").lstrip("0")


def level_digits(price: Decimal, qty: Decimal, price_decimals: int | None = None,
                 qty_decimals: int | None = None) -> str:
    """One level's contribution to the checksum string (``45285.2``, ``0.001`` -> ``452852100000``
    at 1 and 8 decimals)."""
    return _digits(price, price_decimals) + _digits(qty, qty_decimals)


def book_checksum(asks: Iterable[str], bids: Iterable[str]) -> int:
    """Kraken's checksum (unsigned CRC32) of the top-10 level strings: asks, then bids."""
    return zlib.crc32(("".join(asks) + "".join(bids)).encode("ascii"))


class _Side:
    """One side of the book: levels keyed by sort key (price for asks, -price for bids), the
    keys sorted ascending, so the best level is first on both sides."""

    __slots__ = ("_keys", "_levels", "_negate")

    def __init__(self, best_is_highest: bool) -> None:
        self._negate = best_is_highest
        self._keys: list[Decimal] = []
        # sort key -> (price, qty, checksum digits)
        self._levels: dict[Decimal, tuple[Decimal, Decimal, str]] = {}

    def clear(self) -> None:
        self._keys.clear()
        self._levels.clear()

    def set(self, price: Decimal, qty: Decimal, digits: str | None) -> None:
        key = -price if self._negate else price
        levels = self._levels
        if not qty:
            if levels.pop(key, None) is not None:
                del self._keys[bisect_left(self._keys, key)]
            return
        if key not in levels:
            insort(self._keys, key)
        levels[key] = (price, qty, digits or "")

    def truncate(self, depth: int) -> None:
        keys = self._keys
        if len(keys) > depth:
            for key in keys[depth:]:
                del self._levels[key]
            del keys[depth:]

    def digits(self, n: int) -> list[str]:
        levels = self._levels
        return [levels[k][2] for k in self._keys[:n]]

    def levels(self, n: int | None = None) -> list[tuple[Decimal, Decimal]]:
        levels = self._levels
        keys = self._keys if n is None else self._keys[:n]
        return [levels[k][:2] for k in keys]

    def best(self) -> Decimal | None:
        return self._levels[self._keys[0]][0] if self._keys else None

    def __len__(self) -> int:
        return len(self._keys)


class OrderBook:
    """One pair's L2 book at a subscribed depth: snapshot, then updates applied in order.

    ``apply`` applies every change of one frame, truncates each side to ``depth`` (Kraken sends no
    deletes for levels that fall out of range) and returns whether the frame's checksum matched.
    """

    __slots__ = ("_asks", "_bids", "depth", "price_decimals", "qty_decimals", "symbol")

    def __init__(self, symbol: str, depth: int = 10, *, price_decimals: int | None = None,
                 qty_decimals: int | None = None) -> None:
        self.symbol = symbol
        self.depth = depth
        self.price_decimals = price_decimals
        self.qty_decimals = qty_decimals
        self._bids = _Side(best_is_highest=True)
        self._asks = _Side(best_is_highest=False)

    def _apply_side(self, side: _Side, levels: Sequence[Mapping[str, Any]]) -> None:
        pd, qd = self.price_decimals, self.qty_decimals
        for level in levels:
            price, qty = level["price"], level["qty"]
            if not isinstance(price, Decimal):
                price = Decimal(str(price))
            if not isinstance(qty, Decimal):
                qty = Decimal(str(qty))
            side.set(price, qty, level_digits(price, qty, pd, qd) if qty else None)

    def apply(self, bids: Sequence[Mapping[str, Any]], asks: Sequence[Mapping[str, Any]], *,
              snapshot: bool = False, checksum: int | None = None) -> bool:
        """Apply one frame's levels (a snapshot replaces the book); True when ``checksum`` matches
        (or none was given)."""
        if snapshot:
            self._bids.clear()
            self._asks.clear()
        self._apply_side(self._bids, bids)
        self._apply_side(self._asks, asks)
        self._bids.truncate(self.depth)
        self._asks.truncate(self.depth)
        return checksum is None or self.checksum() == checksum

    def checksum(self) -> int:
        """Kraken's checksum of the book as it stands."""
        return book_checksum(self._asks.digits(CHECKSUM_LEVELS), self._bids.digits(CHECKSUM_LEVELS))

    def bids(self, depth: int | None = None) -> list[tuple[Decimal, Decimal]]:
        """(price, qty) best (highest) first."""
        return self._bids.levels(depth)

    def asks(self, depth: int | None = None) -> list[tuple[Decimal, Decimal]]:
        """(price, qty) best (lowest) first."""
        return self._asks.levels(depth)

    def best_bid(self) -> Decimal | None:
        return self._bids.best()

    def best_ask(self) -> Decimal | None:
        return self._asks.best()

    @property
    def crossed(self) -> bool:
        """Best bid at or above best ask: a book that cannot be right, whatever its checksum."""
        bid, ask = self._bids.best(), self._asks.best()
        return bid is not None and ask is not None and bid >= ask

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def __repr__(self) -> str:
        return (f"OrderBook({self.symbol!r}, depth={self.depth}, bids={len(self._bids)}, "
                f"asks={len(self._asks)})")

