"""krakked.sim's market through krakked's real SpotClient: the pair universe, the deterministic
trade tape and everything derived from it (Trades, OHLC, Ticker, Depth, Spread)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from krakked.config import load_settings
from krakked.errors import InvalidRequestError, UnknownPairError
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
QUIET = "KSMUSD"  # ~20 trades a day: the whole tape pages quickly

PAIR_KEYS = {"altname", "wsname", "aclass_base", "base", "aclass_quote", "quote", "lot",
             "cost_decimals", "pair_decimals", "lot_decimals", "lot_multiplier", "leverage_buy",
             "leverage_sell", "fees", "fees_maker", "fee_volume_currency", "margin_call",
             "margin_stop", "ordermin", "costmin", "tick_size", "status"}
POSITION_KEYS = {"long_position_limit", "short_position_limit"}


class Kraken:
    """A simulator, its clock and a SpotClient talking to it in-process."""

    def __init__(self, tmp_path: Path, seed: int = 7) -> None:
        self.clock = SimClock(NOW)
        self.sim = Simulator(SimConfig(seed=seed, clock=self.clock.now,
                                       monotonic=self.clock.monotonic, public_rate=0))
        self.client = SpotClient(
            None, settings=load_settings({"KRAKKED_HOME": str(tmp_path)}),
            transport=self.sim.transport(), public_limiter=PublicLimiter(1000, 1000))

    def trades_window(self, pair: str, start: int, end: int) -> list[list[Any]]:
        """Every trade with start <= time < end, through Trades paging."""
        out: list[list[Any]] = []
        since: int | str = start
        while True:
            result = self.client.get_trades(pair, since=since)
            rows = next(v for k, v in result.items() if k != "last")
            out.extend(r for r in rows if r[2] < end)
            if not rows or rows[-1][2] >= end:
                return out
            since = result["last"]


@pytest.fixture
def kraken(tmp_path: Path) -> Iterator[Kraken]:
    k = Kraken(tmp_path)
    yield k
    k.client.close()


def _rows(result: dict[str, Any]) -> list[Any]:
    return next(v for k, v in result.items() if k != "last")


def _aggregate(trades: list[list[Any]]) -> dict[str, Any]:
    prices = [Decimal(t[0]) for t in trades]
    return {"open": prices[0], "high": max(prices), "low": min(prices), "close": prices[-1],
            "volume": sum((Decimal(t[1]) for t in trades), Decimal(0)), "count": len(trades)}


def _bar(row: list[Any]) -> dict[str, Any]:
    return {"open": Decimal(row[1]), "high": Decimal(row[2]), "low": Decimal(row[3]),
            "close": Decimal(row[4]), "volume": Decimal(row[6]), "count": row[7]}


# --- the universe -----------------------------------------------------------------------------


def test_at_least_30_online_usd_pairs_without_leverage_plus_margin_and_offline_pairs(
        kraken: Kraken) -> None:
    pairs = kraken.client.get_asset_pairs()
    plain_usd = [k for k, v in pairs.items()
                 if v["quote"] == "ZUSD" and v["status"] == "online" and not v["leverage_buy"]]
    assert len(plain_usd) >= 30
    margin = [k for k, v in pairs.items() if v["leverage_buy"] and v["leverage_sell"]]
    assert {"XXBTZUSD", "XETHZUSD"} <= set(margin)
    assert any(v["status"] != "online" for v in pairs.values())


@pytest.mark.parametrize(("pid", "altname", "wsname", "base", "quote"), [
    ("XXBTZUSD", "XBTUSD", "XBT/USD", "XXBT", "ZUSD"),
    ("XETHZUSD", "ETHUSD", "ETH/USD", "XETH", "ZUSD"),
    ("XXRPZUSD", "XRPUSD", "XRP/USD", "XXRP", "ZUSD"),
    ("XLTCZUSD", "LTCUSD", "LTC/USD", "XLTC", "ZUSD"),
    ("XXLMZUSD", "XLMUSD", "XLM/USD", "XXLM", "ZUSD"),
    ("XZECZUSD", "ZECUSD", "ZEC/USD", "XZEC", "ZUSD"),
    ("XDGUSD", "XDGUSD", "XDG/USD", "XXDG", "ZUSD"),
    ("SOLUSD", "SOLUSD", "SOL/USD", "SOL", "ZUSD"),
    ("DOTUSD", "DOTUSD", "DOT/USD", "DOT", "ZUSD"),
    ("USDTZUSD", "USDTUSD", "USDT/USD", "USDT", "ZUSD"),
    ("XBTUSDT", "XBTUSDT", "XBT/USDT", "XXBT", "USDT"),
    ("XRPUSDT", "XRPUSDT", "XRP/USDT", "XXRP", "USDT"),
    ("XXRPXXBT", "XRPXBT", "XRP/XBT", "XXRP", "XXBT"),
    ("XETHXXBT", "ETHXBT", "ETH/XBT", "XETH", "XXBT"),
    ("XXBTZEUR", "XBTEUR", "XBT/EUR", "XXBT", "ZEUR"),
])
def test_awkward_pairs_answer_under_kraken_ids_whichever_name_is_asked(
        kraken: Kraken, pid: str, altname: str, wsname: str, base: str, quote: str) -> None:
    for name in (pid, altname, wsname):
        row = kraken.client.get_asset_pairs(name)
        assert list(row) == [pid]
        assert (row[pid]["altname"], row[pid]["wsname"]) == (altname, wsname)
        assert (row[pid]["base"], row[pid]["quote"]) == (base, quote)
    assert list(kraken.client.get_ohlc(altname)) == [pid, "last"]
    assert list(kraken.client.get_trades(wsname, count=1)) == [pid, "last"]


def test_asset_pairs_rows_carry_every_documented_key(kraken: Kraken) -> None:
    pairs = kraken.client.get_asset_pairs()
    for pid, row in pairs.items():
        assert set(row) >= PAIR_KEYS, pid
        if row["leverage_buy"]:
            assert set(row) >= POSITION_KEYS, pid
        else:
            assert row["leverage_sell"] == [], pid
            # absent on non-margin pairs, as in Kraken's AssetPairs answers
            # (https://docs.kraken.com/api/docs/rest-api/get-tradable-asset-pairs)
            assert not POSITION_KEYS & set(row), pid
        assert Decimal(row["tick_size"]) == Decimal(1).scaleb(-row["pair_decimals"])
        assert Decimal(row["ordermin"]) > 0 and Decimal(row["costmin"]) > 0
        assert row["fees"][0][0] == 0 and row["fees_maker"][0][0] == 0
    xbt = pairs["XXBTZUSD"]
    assert (xbt["pair_decimals"], xbt["lot_decimals"], xbt["leverage_buy"]) == (1, 8, [2, 3, 4, 5])
    assert kraken.client.get_asset_pairs("XBTUSD,ETHXBT", info="leverage") == {
        "XXBTZUSD": {"leverage_buy": [2, 3, 4, 5], "leverage_sell": [2, 3, 4, 5]},
        "XETHXXBT": {"leverage_buy": [2, 3, 4, 5], "leverage_sell": [2, 3, 4, 5]},
    }
    assert set(kraken.client.get_asset_pairs("SOLUSD", info="fees")["SOLUSD"]) == {
        "fees", "fees_maker", "fee_volume_currency"}
    assert kraken.client.get_asset_pairs("SOLUSD", info="margin")["SOLUSD"] == {
        "margin_call": 80, "margin_stop": 40}
    with pytest.raises(InvalidRequestError):
        kraken.client.get_asset_pairs("SOLUSD", info="bogus")


def test_tick_sizes_are_plain_decimal_strings_as_kraken_sends_them(kraken: Kraken) -> None:
    pairs = kraken.client.get_asset_pairs()
    assert pairs["PEPEUSD"]["tick_size"] == "0.0000000001"
    assert pairs["XDGUSD"]["tick_size"] == "0.0000001"
    assert not [pid for pid, row in pairs.items() if "E" in row["tick_size"]]


def test_assets_lists_kraken_asset_ids_with_altnames_and_decimals(kraken: Kraken) -> None:
    assets = kraken.client.get_assets()
    assert assets["XXBT"] == {"aclass": "currency", "altname": "XBT", "decimals": 10,
                              "display_decimals": 5, "collateral_value": 1, "status": "enabled"}
    assert assets["ZUSD"]["altname"] == "USD" and assets["ZUSD"]["decimals"] == 4
    assert {"XETH", "USDT", "SOL", "XXDG", "ZEUR"} <= set(assets)
    pairs = kraken.client.get_asset_pairs()
    assert {p["base"] for p in pairs.values()} | {p["quote"] for p in pairs.values()} <= set(assets)
    assert list(kraken.client.get_assets("XBT,ETH")) == ["XXBT", "XETH"]


def test_time_and_system_status_follow_the_simulator_clock(kraken: Kraken) -> None:
    assert kraken.client.get_server_time() == {
        "unixtime": int(NOW.timestamp()), "rfc1123": "Sun, 22 Nov 26 12:00:00 +0000"}
    assert kraken.client.get_system_status() == {"status": "online",
                                                 "timestamp": "2026-11-22T12:00:00Z"}


def test_unknown_pair_raises_unknown_pair_error(kraken: Kraken) -> None:
    for call in (lambda: kraken.client.get_trades("NOPEUSD"),
                 lambda: kraken.client.get_ohlc("NOPEUSD"),
                 lambda: kraken.client.get_ticker("XBTUSD,NOPEUSD"),
                 lambda: kraken.client.get_depth("NOPEUSD"),
                 lambda: kraken.client.get_asset_pairs("NOPEUSD")):
        with pytest.raises(UnknownPairError):
            call()


# --- the tape ---------------------------------------------------------------------------------


def test_same_seed_gives_the_same_market_and_another_seed_does_not(tmp_path: Path) -> None:
    a, b, c = Kraken(tmp_path), Kraken(tmp_path), Kraken(tmp_path, seed=8)
    try:
        trades = [k.client.get_trades("XBTUSD", since=1_780_000_000) for k in (a, b, c)]
        ohlc = [k.client.get_ohlc("ETHUSD", interval=60) for k in (a, b, c)]
    finally:
        for k in (a, b, c):
            k.client.close()
    assert trades[0] == trades[1] and ohlc[0] == ohlc[1]
    assert trades[0] != trades[2] and ohlc[0] != ohlc[2]


def test_paging_the_whole_tape_returns_dense_ids_once_in_order_across_shared_timestamps(
        kraken: Kraken) -> None:
    rows: list[list[Any]] = []
    pages: list[int] = []  # index of each page's first row
    since: int | str = 0
    while True:
        result = kraken.client.get_trades(QUIET, since=since, count=50)
        page = _rows(result)
        if not page:
            assert result["last"] == since
            break
        pages.append(len(rows))
        rows.extend(page)
        since = result["last"]
        assert since == page[-1][7]
    ids = [r[6] for r in rows]
    assert ids == list(range(1, len(ids) + 1))
    assert len(ids) > 3000
    assert ids[-1] == _rows(kraken.client.get_trades(QUIET))[-1][6]  # the newest trade
    stamps = [int(r[7]) for r in rows]
    assert stamps == sorted(set(stamps))  # distinct ns cursors
    times = [r[2] for r in rows]
    assert times[0] == Decimal(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()))
    assert all(t <= Decimal(int(NOW.timestamp())) for t in times)
    shared = [i for i in range(1, len(rows)) if times[i] == times[i - 1]]
    assert len(shared) > len(rows) * 0.02
    assert any(i in shared for i in pages[1:])  # a page boundary inside a shared timestamp


def test_trade_rows_have_kraken_s_eight_elements(kraken: Kraken) -> None:
    rows = _rows(kraken.client.get_trades("XBTUSD", count=200))
    assert len(rows) == 200
    for price, volume, time, side, kind, misc, trade_id, ns in rows:
        assert len(price.split(".")[1]) == 5 and Decimal(price) > 0  # "30243.40000"
        assert len(volume.split(".")[1]) == 8 and Decimal(volume) > 0
        assert isinstance(time, Decimal) and -time.as_tuple().exponent <= 6
        assert side in ("b", "s") and kind in ("m", "l") and misc == ""
        assert isinstance(trade_id, int) and isinstance(ns, str)
        assert Decimal(ns) // 1000 == time * 1_000_000
    sol = _rows(kraken.client.get_trades("SOLUSD", count=5))
    assert all(len(r[0].split(".")[1]) == 2 for r in sol)  # newer pairs: pair_decimals


def test_the_tape_grows_with_the_clock_and_never_shows_the_future(kraken: Kraken) -> None:
    now = Decimal(int(NOW.timestamp()))
    first = kraken.client.get_trades("XBTUSD")
    rows = _rows(first)
    assert len(rows) == 1000 and all(r[2] <= now for r in rows)
    assert [r[6] for r in rows] == list(range(rows[0][6], rows[0][6] + 1000))
    assert _rows(kraken.client.get_trades("XBTUSD", since=first["last"])) == []
    kraken.clock.advance(3600)
    later = _rows(kraken.client.get_trades("XBTUSD", since=first["last"]))
    assert later, "an hour of XBTUSD without a trade"
    assert [r[6] for r in later] == list(range(rows[-1][6] + 1, rows[-1][6] + 1 + len(later)))
    assert all(now < r[2] <= now + 3600 for r in later)
    assert _rows(kraken.client.get_trades("XBTUSD"))[-1] == later[-1]


# --- OHLC -------------------------------------------------------------------------------------


def test_ohlc_serves_720_bars_ending_with_the_running_bar(kraken: Kraken) -> None:
    now = int(NOW.timestamp())
    result = kraken.client.get_ohlc("XBTUSD", interval=1)
    rows = result["XXBTZUSD"]
    assert len(rows) == 720
    assert [r[0] for r in rows] == list(range(now - 719 * 60, now + 60, 60))
    assert rows[-1][0] == now // 60 * 60  # the running bar
    assert result["last"] == rows[-2][0]
    for row in rows:
        assert len(row) == 8 and isinstance(row[0], int) and isinstance(row[7], int)
        assert len(row[1].split(".")[1]) == 1 and len(row[6].split(".")[1]) == 8
    hourly = kraken.client.get_ohlc("XBTUSD", interval=60)["XXBTZUSD"]
    assert len(hourly) == 720 and hourly[-1][0] == now // 3600 * 3600


def test_ohlc_since_returns_newer_committed_bars_plus_the_running_one(kraken: Kraken) -> None:
    first = kraken.client.get_ohlc("XBTUSD", interval=5)
    assert [r[0] for r in kraken.client.get_ohlc("XBTUSD", 5, since=first["last"])["XXBTZUSD"]
            ] == [first["XXBTZUSD"][-1][0]]
    back = first["last"] - 5 * 300
    assert kraken.client.get_ohlc("XBTUSD", 5, since=back)["XXBTZUSD"] == first["XXBTZUSD"][-6:]
    kraken.clock.advance(600)
    later = kraken.client.get_ohlc("XBTUSD", 5, since=first["last"])
    assert [r[0] for r in later["XXBTZUSD"]] == [first["XXBTZUSD"][-1][0] + 300 * k
                                                 for k in range(3)]
    assert later["last"] == first["last"] + 600


def test_committed_bars_aggregate_exactly_the_trades_of_their_window(kraken: Kraken) -> None:
    minutes = kraken.client.get_ohlc("XBTUSD", interval=1)["XXBTZUSD"][:-1]
    busy = [r for r in minutes if r[7] > 0][-4:]
    hours = kraken.client.get_ohlc("XBTUSD", interval=60)["XXBTZUSD"][-4:-1]
    for row, width in [*((r, 60) for r in busy), *((r, 3600) for r in hours)]:
        trades = kraken.trades_window("XBTUSD", row[0], row[0] + width)
        assert _bar(row) == _aggregate(trades)
        vwap = sum(Decimal(t[0]) * Decimal(t[1]) for t in trades) / _aggregate(trades)["volume"]
        assert abs(Decimal(row[5]) - vwap) <= Decimal("0.05")
    day = kraken.client.get_ohlc(QUIET, interval=1440)["KSMUSD"][-2]
    assert _bar(day) == _aggregate(kraken.trades_window(QUIET, day[0], day[0] + 86400))


def test_empty_intervals_carry_the_previous_close_with_zero_volume(kraken: Kraken) -> None:
    rows = kraken.client.get_ohlc(QUIET, interval=1)["KSMUSD"]
    empty = [i for i in range(1, len(rows)) if rows[i][7] == 0]
    assert len(empty) > 600 and any(rows[i][7] for i in range(len(rows)))
    for i in empty:
        close = rows[i - 1][4]
        assert rows[i][1:6] == [close] * 5
        assert rows[i][6] == "0.00000000"


def test_long_interval_bars_align_like_kraken_s(kraken: Kraken) -> None:
    daily = kraken.client.get_ohlc(QUIET, interval=1440)["KSMUSD"]
    assert all(r[0] % 86400 == 0 for r in daily)
    assert daily[0][0] == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    weekly = kraken.client.get_ohlc(QUIET, interval=10080)["KSMUSD"]
    assert all(datetime.fromtimestamp(r[0], UTC).weekday() == 0 for r in weekly)
    assert all(r[0] % 86400 == 0 for r in weekly)
    halves = kraken.client.get_ohlc(QUIET, interval=21600)["KSMUSD"]
    assert all(r[0] % (21600 * 60) == 0 for r in halves)
    total = sum(Decimal(r[6]) for r in daily)
    assert total == sum(Decimal(r[6]) for r in weekly) == sum(Decimal(r[6]) for r in halves)
    assert sum(r[7] for r in daily) == _rows(kraken.client.get_trades(QUIET, count=1))[-1][6]


def test_ohlc_rejects_an_interval_kraken_does_not_serve(kraken: Kraken) -> None:
    with pytest.raises(InvalidRequestError):
        kraken.client.get_ohlc("XBTUSD", interval=2)


# --- Ticker, Depth, Spread --------------------------------------------------------------------


def test_ticker_agrees_with_the_tape_and_depth_with_the_ticker(kraken: Kraken) -> None:
    ticker = kraken.client.get_ticker("XBTUSD")["XXBTZUSD"]
    last = _rows(kraken.client.get_trades("XBTUSD", count=1))[-1]
    assert ticker["c"] == [last[0], last[1]]
    midnight = int(NOW.timestamp()) // 86400 * 86400
    hours = [_bar(r) for r in kraken.client.get_ohlc("XBTUSD", interval=60)["XXBTZUSD"]
             if r[0] >= midnight and r[7]]  # today's hourly bars, the running one included
    assert Decimal(ticker["o"]) == hours[0]["open"]
    assert Decimal(ticker["v"][0]) == sum(h["volume"] for h in hours)
    assert ticker["t"][0] == sum(h["count"] for h in hours)
    assert Decimal(ticker["h"][0]) == max(h["high"] for h in hours)
    assert Decimal(ticker["l"][0]) == min(h["low"] for h in hours)
    assert ticker["t"][1] >= ticker["t"][0] and isinstance(ticker["t"][1], int)
    assert Decimal(ticker["v"][1]) >= Decimal(ticker["v"][0])
    assert Decimal(ticker["l"][1]) <= Decimal(ticker["p"][1]) <= Decimal(ticker["h"][1])

    book = kraken.client.get_depth("XBTUSD", count=10)["XXBTZUSD"]
    asks, bids = book["asks"], book["bids"]
    assert len(asks) == len(bids) == 10
    assert Decimal(asks[0][0]) > Decimal(bids[0][0])
    assert [Decimal(a[0]) for a in asks] == sorted({Decimal(a[0]) for a in asks})
    assert [Decimal(b[0]) for b in bids] == sorted({Decimal(b[0]) for b in bids}, reverse=True)
    assert ticker["a"][0] == asks[0][0] and ticker["b"][0] == bids[0][0]
    assert Decimal(ticker["a"][2]) == Decimal(asks[0][1])
    assert all(isinstance(level[2], int) for level in asks + bids)
    assert Decimal(bids[0][0]) <= Decimal(last[0]) <= Decimal(asks[0][0])
    assert kraken.client.get_depth("XBTUSD")["XXBTZUSD"]["asks"][:10] == asks  # default 100
    assert len(kraken.client.get_depth("XBTUSD")["XXBTZUSD"]["asks"]) == 100


def test_ticker_without_pair_lists_every_pair_and_with_a_list_those(kraken: Kraken) -> None:
    every = kraken.client.get_ticker()
    assert set(every) == set(kraken.client.get_asset_pairs())
    some = kraken.client.get_ticker(["XBTUSD", "ETH/USD", "XRPXBT"])
    assert list(some) == ["XXBTZUSD", "XETHZUSD", "XXRPXXBT"]
    assert some["XXBTZUSD"] == every["XXBTZUSD"]
    for entry in every.values():
        assert set(entry) == {"a", "b", "c", "v", "p", "t", "l", "h", "o"}


def test_spread_lists_recent_bid_ask_rows_ending_at_the_book(kraken: Kraken) -> None:
    result = kraken.client.get_spread("XBTUSD")
    rows = result["XXBTZUSD"]
    assert 0 < len(rows) <= 200
    assert result["last"] == rows[-1][0]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    for t, bid, ask in rows:
        assert isinstance(t, int) and t <= int(NOW.timestamp())
        assert Decimal(bid) < Decimal(ask)
    book = kraken.client.get_depth("XBTUSD", count=1)["XXBTZUSD"]
    assert [rows[-1][1], rows[-1][2]] == [book["bids"][0][0], book["asks"][0][0]]
    newer = kraken.client.get_spread("XBTUSD", since=rows[-10][0])
    assert newer["XXBTZUSD"] == [r for r in rows if r[0] > rows[-10][0]]
