"""The L2 book: Kraken's checksum vectors, update order, truncation, crossed books."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from krakked.market.book import OrderBook, book_checksum, level_digits

decode = msgspec.json.Decoder(float_hook=Decimal).decode

# Vector A: Kraken's v2 book guide, BTC/USD snapshot (prices at 1 decimal, qty at 8).
A_BIDS = [("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
          ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
          ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
          ("45276.6", "0.15445238")]
A_ASKS = [("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
          ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
          ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
          ("45299.5", "0.18772827")]
A_STRING = (
    "45285210000045286415457195345286615457110945289615456091145290215890660452918154553491452947"
    "445474945296135380000452975994554245299518772827452835100000004528341545820154528211000000045"
    "281010000000452803154592586452790799000045277633101034527753000000045277315460273745276615445238"
)
# Vector B: the docs book page, MATIC/USD, as the wire prints it (0.566 for 0.5660).
B_BIDS = [(0.5666, 4831.75496356), (0.5665, 6658.22734739), (0.5664, 18724.91513344),
          (0.5663, 11563.92544914), (0.5662, 14006.65365711), (0.5661, 17454.85679807),
          (0.566, 18097.1547), (0.5659, 33644.89175666), (0.5658, 148.3464),
          (0.5657, 606.70854372)]
B_ASKS = [(0.5668, 4410.79769741), (0.5669, 4655.40412487), (0.567, 49844.89424998),
          (0.5671, 24306.41678), (0.5672, 29783.25223475), (0.5673, 57234.71239278),
          (0.5674, 45065.04744), (0.5675, 5912.76380354), (0.5676, 42514.92434778),
          (0.5677, 36304.0847022)]


def _levels(pairs: list[tuple[object, object]]) -> str:
    return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in pairs)


def _frame(kind: str, bids: list, asks: list, checksum: int, symbol: str = "BTC/USD") -> dict:
    text = (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}",'
            f'"bids":[{_levels(bids)}],"asks":[{_levels(asks)}],"checksum":{checksum}}}]}}')
    return decode(text.encode())["data"][0]


def test_vector_a_string_and_checksum_from_wire_decimals() -> None:
    data = _frame("snapshot", A_BIDS, A_ASKS, 3310070434)
    book = OrderBook("BTC/USD", 10)
    assert book.apply(data["bids"], data["asks"], snapshot=True, checksum=data["checksum"])
    asks = [level_digits(Decimal(p), Decimal(q)) for p, q in A_ASKS]
    bids = [level_digits(Decimal(p), Decimal(q)) for p, q in A_BIDS]
    assert "".join(asks + bids) == A_STRING
    assert book_checksum(asks, bids) == 3310070434 == book.checksum()


def test_float_parsing_would_break_vector_a() -> None:
    """The pitfall: a float parser drops trailing zeros (0.1 for 0.10000000)."""
    book = OrderBook("BTC/USD", 10)
    floats = [{"price": float(p), "qty": float(q)} for p, q in A_BIDS]
    afloats = [{"price": float(p), "qty": float(q)} for p, q in A_ASKS]
    assert not book.apply(floats, afloats, snapshot=True, checksum=3310070434)
    fixed = OrderBook("BTC/USD", 10, price_decimals=1, qty_decimals=8)
    assert fixed.apply(floats, afloats, snapshot=True, checksum=3310070434)


def test_vector_b_needs_the_pairs_decimals_then_the_update_checksum() -> None:
    snap = _frame("snapshot", B_BIDS, B_ASKS, 2439117997, "MATIC/USD")
    wire_only = OrderBook("MATIC/USD", 10)
    assert not wire_only.apply(snap["bids"], snap["asks"], snapshot=True,
                               checksum=snap["checksum"])
    book = OrderBook("MATIC/USD", 10, price_decimals=4, qty_decimals=8)
    assert book.apply(snap["bids"], snap["asks"], snapshot=True, checksum=snap["checksum"])
    assert level_digits(Decimal("0.566"), Decimal("18097.1547"), 4, 8) == "56601809715470000"
    upd = _frame("update", [(0.5657, 1098.3947558)], [], 2114181697, "MATIC/USD")
    assert book.apply(upd["bids"], upd["asks"], checksum=upd["checksum"])
    assert book.bids()[-1] == (Decimal("0.5657"), Decimal("1098.3947558"))


def test_updates_apply_in_order_and_zero_deletes() -> None:
    book = OrderBook("X/Y", 10)
    book.apply([{"price": Decimal("10"), "qty": Decimal("1")}],
               [{"price": Decimal("11"), "qty": Decimal("1")}], snapshot=True)
    book.apply([{"price": Decimal("9"), "qty": Decimal("2")},
                {"price": Decimal("9"), "qty": Decimal("0")},
                {"price": Decimal("10"), "qty": Decimal("3")}], [])
    assert book.bids() == [(Decimal("10"), Decimal("3"))]
    book.apply([{"price": Decimal("8"), "qty": Decimal("0")}], [])  # deleting an absent level
    assert len(book) == 2


def test_truncation_keeps_a_stale_level_from_reentering_the_top() -> None:
    book = OrderBook("X/Y", 10)
    bids = [{"price": Decimal(100 - i), "qty": Decimal(1)} for i in range(10)]
    book.apply(bids, [{"price": Decimal(200), "qty": Decimal(1)}], snapshot=True)
    # a better bid pushes the 10th (91) out of range; Kraken sends no delete for it
    book.apply([{"price": Decimal("100.5"), "qty": Decimal(1)}], [])
    assert len(book.bids()) == 10 and book.bids()[-1][0] == Decimal(92)
    # the best bid goes: 91 must not come back as the 10th level
    book.apply([{"price": Decimal("100.5"), "qty": Decimal(0)}], [])
    assert [p for p, _ in book.bids()] == [Decimal(100 - i) for i in range(9)]


def test_crossed_book_is_flagged() -> None:
    book = OrderBook("X/Y", 10)
    book.apply([{"price": Decimal(10), "qty": Decimal(1)}],
               [{"price": Decimal(11), "qty": Decimal(1)}], snapshot=True)
    assert not book.crossed
    book.apply([{"price": Decimal(11), "qty": Decimal(1)}], [])
    assert book.crossed


@pytest.mark.parametrize("depth", [10, 25])
def test_snapshot_replaces_the_book(depth: int) -> None:
    book = OrderBook("X/Y", depth)
    book.apply([{"price": Decimal(1), "qty": Decimal(1)}], [], snapshot=True)
    book.apply([{"price": Decimal(2), "qty": Decimal(1)}], [], snapshot=True)
    assert book.bids() == [(Decimal(2), Decimal(1))] and book.best_ask() is None
