"""The live cache: per-channel frames, staleness on a controllable clock, book resync marks."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from krakked.errors import DataStaleError, NoDataError
from krakked.market.live import LiveCache, parse_ws_time

decode = msgspec.json.Decoder(float_hook=Decimal).decode

TICKER = (b'{"channel":"ticker","type":"snapshot","data":[{"symbol":"BTC/USD","bid":45283.5,'
          b'"bid_qty":0.10000000,"ask":45285.2,"ask_qty":0.00100000,"last":45284.1,'
          b'"volume":1234.56789012,"vwap":45000.0,"low":44000.0,"high":46000.0,"change":120.5,'
          b'"change_pct":0.27,"timestamp":"2026-12-08T10:00:00.123456Z"}]}')
TRADE = (b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
         b'"price":45284.1,"qty":0.00500000,"ord_type":"market","trade_id":101,'
         b'"timestamp":"2026-12-08T10:00:01.000001Z"}]}')


def _ohlc(begin: str, close: str, trades: int = 3) -> bytes:
    return (b'{"channel":"ohlc","type":"update","timestamp":"2026-12-08T10:00:30.524394914Z",'
            b'"data":[{"symbol":"BTC/USD","open":45000.0,"high":45300.0,"low":44900.0,'
            b'"close":' + close.encode() + b',"trades":' + str(trades).encode()
            + b',"volume":1.50000000,"vwap":45100.0,"interval_begin":"' + begin.encode()
            + b'","interval":1,"timestamp":"2026-12-08T10:01:00.000000Z"}]}')


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.wall = datetime(2026, 12, 8, 10, 0, 30, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s
        self.wall += s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> LiveCache:
    c = LiveCache({"BTC/USD": "XBTUSD"}, decimals={"BTC/USD": (1, 8)}, stale_tolerance=60,
                  clock=clock, wall=lambda: clock.wall)
    c.on_connected()
    return c


def test_ticker_values_are_exact_and_keyed_by_canonical_name(cache: LiveCache) -> None:
    cache.apply(decode(TICKER))
    t = cache.ticker("XBTUSD")
    assert (t.bid, t.ask, t.bid_qty) == (Decimal("45283.5"), Decimal("45285.2"),
                                         Decimal("0.10000000"))
    assert cache.best_bid_ask("XBTUSD") == (Decimal("45283.5"), Decimal("45285.2"))
    assert t.timestamp == datetime(2026, 12, 8, 10, 0, 0, 123456, tzinfo=UTC)


def test_latest_price_is_the_last_trade_price(cache: LiveCache) -> None:
    cache.apply(decode(TICKER))
    assert cache.latest_price("XBTUSD") == Decimal("45284.1")  # ticker's last
    cache.apply(decode(TRADE.replace(b"45284.1", b"45290.0")))
    assert cache.latest_price("XBTUSD") == Decimal("45290.0")
    # an older trade (a post-reconnect snapshot overlap) does not move it back
    cache.apply(decode(TRADE.replace(b"45284.1", b"1.0").replace(b"101", b"99")))
    assert cache.latest_price("XBTUSD") == Decimal("45290.0")


def test_nothing_received_is_no_data(cache: LiveCache) -> None:
    with pytest.raises(NoDataError, match="XBTUSD"):
        cache.latest_price("XBTUSD")
    with pytest.raises(NoDataError):
        cache.live_ohlc("XBTUSD", 1)


def test_quiet_pair_stays_fresh_while_the_connection_proves_alive(cache: LiveCache,
                                                                  clock: Clock) -> None:
    cache.apply(decode(TICKER))
    for _ in range(10):  # 100 s of heartbeats, no ticker update
        clock.advance(10)
        cache.touch()
    assert cache.ticker("XBTUSD").age_seconds == 0


def test_stale_when_no_frame_for_longer_than_the_tolerance(cache: LiveCache, clock: Clock
                                                          ) -> None:
    cache.apply(decode(TICKER))
    clock.advance(60)
    assert cache.ticker("XBTUSD").age_seconds == 60
    clock.advance(0.5)
    with pytest.raises(DataStaleError, match=r"XBTUSD.*60\.5 s old"):
        cache.ticker("XBTUSD")
    with pytest.raises(DataStaleError):
        cache.best_bid_ask("XBTUSD")


def test_after_a_drop_values_age_from_the_drop_until_refreshed(cache: LiveCache,
                                                               clock: Clock) -> None:
    cache.apply(decode(TICKER))
    clock.advance(30)
    cache.touch()
    cache.on_disconnected()
    clock.advance(31)
    with pytest.raises(DataStaleError):  # 61 s since the ticker was written
        cache.ticker("XBTUSD")
    cache.on_connected()  # reconnected, but the ticker is from the old connection
    clock.advance(1)
    cache.touch()
    with pytest.raises(DataStaleError):
        cache.ticker("XBTUSD")
    cache.apply(decode(TICKER))
    assert cache.ticker("XBTUSD").age_seconds == 0


def test_running_candle_keyed_on_interval_begin_and_closed_by_the_clock(
        cache: LiveCache, clock: Clock) -> None:
    cache.apply(decode(_ohlc("2026-12-08T10:00:00.000000000Z", "45100.0")))
    c = cache.live_ohlc("XBTUSD", 1)
    assert c.timestamp == datetime(2026, 12, 8, 10, 0, tzinfo=UTC) and not c.closed
    assert c.close == Decimal("45100.0") and c.trade_count == 3
    # an update of the same candle replaces it; an older one never does
    cache.apply(decode(_ohlc("2026-12-08T10:00:00.000000000Z", "45200.0", 4)))
    cache.apply(decode(_ohlc("2026-12-08T09:59:00.000000000Z", "1.0")))
    assert cache.live_ohlc("XBTUSD", 1).close == Decimal("45200.0")
    clock.advance(30)  # the wall clock passes 10:01: the candle is closed
    assert cache.live_ohlc("XBTUSD", 1).closed


def _book(kind: str, bids: str, asks: str, checksum: int) -> bytes:
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"BTC/USD","bids":[{bids}],'
            f'"asks":[{asks}],"checksum":{checksum}}}]}}').encode()


def test_book_checksum_failure_marks_resync_and_is_never_served(cache: LiveCache) -> None:
    from krakked.market.book import OrderBook

    ref = OrderBook("BTC/USD", 10, price_decimals=1, qty_decimals=8)
    bid = {"price": Decimal("100.0"), "qty": Decimal("1.00000000")}
    ask = {"price": Decimal("101.0"), "qty": Decimal("2.00000000")}
    ref.apply([bid], [ask], snapshot=True)
    cache.apply(decode(_book("snapshot", '{"price":100.0,"qty":1.00000000}',
                             '{"price":101.0,"qty":2.00000000}', ref.checksum())))
    assert cache.book("XBTUSD").bids == [(Decimal("100.0"), Decimal("1.00000000"))]
    cache.apply(decode(_book("update", '{"price":99.0,"qty":1.0}', "", 12345)))
    assert cache.checksum_failures == {"XBTUSD": 1} and "BTC/USD" in cache.needs_resync
    with pytest.raises(DataStaleError, match="checksum"):
        cache.book("XBTUSD")
    cache.apply(decode(_book("snapshot", '{"price":100.0,"qty":1.00000000}',
                             '{"price":101.0,"qty":2.00000000}', ref.checksum())))
    assert not cache.needs_resync and cache.book("XBTUSD", 1).asks[0][0] == Decimal("101.0")


def test_crossed_book_is_resynced(cache: LiveCache) -> None:
    from krakked.market.book import OrderBook

    ref = OrderBook("BTC/USD", 10, price_decimals=1, qty_decimals=8)
    ref.apply([{"price": Decimal("102.0"), "qty": Decimal(1)}],
              [{"price": Decimal("101.0"), "qty": Decimal(1)}], snapshot=True)
    cache.apply(decode(_book("snapshot", '{"price":102.0,"qty":1.00000000}',
                             '{"price":101.0,"qty":1.00000000}', ref.checksum())))
    assert cache.crossed_books == {"XBTUSD": 1} and "BTC/USD" in cache.needs_resync


def test_malformed_frame_is_counted_and_skipped(cache: LiveCache) -> None:
    cache.apply({"channel": "ticker", "type": "update", "data": [{"bid": 1}]})
    cache.apply({"channel": "trade", "data": "nonsense"})
    assert cache.malformed == 2
    cache.apply(decode(TICKER))
    assert cache.fresh_tickers() == 1


def test_parse_ws_time_takes_nine_digits() -> None:
    assert parse_ws_time("2023-10-04T16:25:00.123456789Z") == datetime(
        2023, 10, 4, 16, 25, 0, 123456, tzinfo=UTC)
    assert parse_ws_time("2023-10-04T16:25:00Z").second == 0
