"""The simulator's account histories through krakked's real clients: Spot ledgers, trades,
orders, balances and funding; Futures executions, position history, account log, accounts,
open positions and tickers — paging, filters, consistency, and Kraken's error mapping."""

from __future__ import annotations

import base64
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.errors import AuthError, InvalidRequestError, KrakenError
from krakked.kraken.futures import FuturesClient
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import FuturesLimiter, SpotCounterLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.sim.config import SPAN_DAYS
from krakked.sim.futures_book import FuturesBook
from krakked.sim.spot_book import SpotBook
from tests.fakes import FakeClock

NOW = datetime(2026, 11, 22, tzinfo=UTC)
NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


@pytest.fixture
def sim(clock: SimClock) -> Simulator:
    return Simulator(SimConfig(rate_limits=False, public_rate=0, clock=clock.now))


def _spot_client(sim: Simulator, tmp_path: Path, key: str | None = None) -> SpotClient:
    spec = sim.config.account("spot")
    fake = FakeClock()
    return SpotClient(
        KeyPair.create("spot", key or spec.api_key, spec.api_secret, "sim"),
        settings=load_settings({"KRAKKED_HOME": str(tmp_path)}),
        transport=sim.transport(),
        limiter=SpotCounterLimiter("pro", clock=fake, sleep=fake.sleep),
        sleep=fake.sleep, retry=NO_RETRY,
    )


def _futures_client(sim: Simulator, tmp_path: Path, key: str | None = None,
                    version: str | None = None, credentials: bool = True) -> FuturesClient:
    spec = sim.config.account("futures")
    fake = FakeClock()
    creds = KeyPair.create("futures", key or spec.api_key, spec.api_secret, "sim")
    return FuturesClient(
        creds if credentials else None,
        settings=load_settings({"KRAKKED_HOME": str(tmp_path)}),
        transport=sim.transport(),
        limiter=FuturesLimiter(clock=fake, sleep=fake.sleep),
        sleep=fake.sleep, retry=NO_RETRY, history_version=version,
    )


@pytest.fixture
def spot(sim: Simulator, tmp_path: Path) -> Iterator[SpotClient]:
    with _spot_client(sim, tmp_path) as client:
        yield client


@pytest.fixture
def fut(sim: Simulator, tmp_path: Path) -> Iterator[FuturesClient]:
    with _futures_client(sim, tmp_path) as client:
        yield client


def _spot_book(sim: Simulator) -> SpotBook:
    book = sim.book(sim.config.account("spot"))
    assert isinstance(book, SpotBook)
    return book


def _futures_book(sim: Simulator) -> FuturesBook:
    book = sim.book(sim.config.account("futures"))
    assert isinstance(book, FuturesBook)
    return book


def _page_all(call: Any, key: str, **params: Any) -> tuple[list[tuple[str, dict]], int]:
    """Naive Kraken paging: ofs += 50 until ofs >= count; rows in the order received."""
    rows: list[tuple[str, dict]] = []
    ofs = 0
    while True:
        result = call(ofs=ofs, **params)
        rows.extend(result[key].items())
        ofs += 50
        if ofs >= result["count"]:
            return rows, result["count"]


# --- Spot -------------------------------------------------------------------------------------


def test_spot_ledgers_and_trades_page_to_count_with_every_id_once(spot: SpotClient,
                                                                   sim: Simulator) -> None:
    book = _spot_book(sim)
    rows, count = _page_all(spot.get_ledgers, "ledger")
    ids = [i for i, _ in rows]
    assert len(ids) == count == len(set(ids)) == len(book.visible_ledger())
    assert len(book.visible_ledger()) > 500  # ~300 trades x 2 legs + funding, nearly all visible
    times = [Decimal(r["time"]) for _, r in rows]
    assert times == sorted(times, reverse=True)  # newest first

    trades, count = _page_all(spot.get_trades_history, "trades")
    txids = [t for t, _ in trades]
    assert len(txids) == count == len(set(txids)) == len(book.visible_trades())
    assert 280 <= count <= 300
    first_txid, first = trades[0]
    parts = first_txid.split("-")
    assert [len(p) for p in parts] == [6, 5, 6] and first_txid[0] == "T"
    assert first_txid.upper() == first_txid
    assert first["ordertxid"][0] == "O" and first["postxid"][0] == "T"
    assert first["pair"] in {"XXBTZUSD", "XETHZUSD", "SOLUSD"}
    assert isinstance(first["trade_id"], int) and isinstance(first["maker"], bool)
    for _, trade in trades:
        if trade["pair"] == "XXBTZUSD" and trade["ordertype"] == "market":
            assert len(trade["price"].split(".")[1]) == 5  # "30010.00000"
            assert len(trade["vol"].split(".")[1]) == 8
            price = sim.market.price_at("XXBTZUSD", float(trade["time"]))
            assert Decimal(trade["price"]) == price  # market orders at the tape level
            break


def test_spot_balances_equal_ledger_sums_and_last_balance(spot: SpotClient) -> None:
    rows, _ = _page_all(spot.get_ledgers, "ledger")
    sums: dict[str, Decimal] = defaultdict(Decimal)
    last: dict[str, Decimal] = {}
    for _, entry in reversed(rows):  # oldest first
        sums[entry["asset"]] += Decimal(entry["amount"]) - Decimal(entry["fee"])
        assert Decimal(entry["balance"]) == sums[entry["asset"]]
        assert Decimal(entry["balance"]) >= 0
        last[entry["asset"]] = Decimal(entry["balance"])
    balance = spot.get_balance()
    assert {"ZUSD", "XXBT"} <= set(balance)
    assert {a: Decimal(v) for a, v in balance.items()} == dict(sums) == last
    assert balance["ZUSD"].count(".") == 1 and len(balance["ZUSD"].split(".")[1]) == 4
    ex = spot.get_balance_ex()
    assert set(ex) == set(balance)
    assert ex["ZUSD"] == {"balance": balance["ZUSD"], "hold_trade": "0.0000"}
    kinds = Counter(entry["type"] for _, entry in rows)
    assert kinds["deposit"] == 2 and kinds["withdrawal"] == 1 and kinds["staking"] == 1


def test_spot_each_trade_has_two_ledger_legs(spot: SpotClient, sim: Simulator) -> None:
    ledger = dict(_page_all(spot.get_ledgers, "ledger")[0])
    trades = dict(_page_all(spot.get_trades_history, "trades", ledgers=True)[0])
    by_refid: dict[str, list[dict]] = defaultdict(list)
    for entry in ledger.values():
        by_refid[entry["refid"]].append(entry)
    pairs = {p.id: p for p in sim.market.pairs()}
    for txid, trade in trades.items():
        legs = by_refid[txid]
        assert len(legs) == 2 and all(leg["type"] == "trade" for leg in legs)
        assert sorted(trade["ledgers"]) == sorted(i for i, e in ledger.items()
                                                  if e["refid"] == txid)
        pair = pairs[trade["pair"]]
        base = next(leg for leg in legs if leg["asset"] == pair.base)
        quote = next(leg for leg in legs if leg["asset"] == pair.quote)
        sign = 1 if trade["type"] == "buy" else -1
        assert Decimal(base["amount"]) == sign * Decimal(trade["vol"])
        assert Decimal(base["fee"]) == 0
        assert Decimal(quote["amount"]) == -sign * Decimal(trade["cost"])
        assert Decimal(quote["fee"]) == Decimal(trade["fee"])
        assert base["time"] == quote["time"] == trade["time"]
    trade_refids = {r for r, legs in by_refid.items() if legs[0]["type"] == "trade"}
    assert trade_refids == set(trades)


def test_spot_closed_orders_match_their_trades(spot: SpotClient) -> None:
    orders = dict(_page_all(spot.get_closed_orders, "closed", trades=True)[0])
    trades = dict(_page_all(spot.get_trades_history, "trades")[0])
    statuses = Counter(o["status"] for o in orders.values())
    assert statuses["closed"] > 0 and statuses["canceled"] > 0
    fills = Counter(len(o.get("trades", [])) for o in orders.values())
    assert fills[2] > 0 and fills[1] > 0
    seen: set[str] = set()
    for txid, order in orders.items():
        assert txid[0] == "O" and [len(p) for p in txid.split("-")] == [6, 5, 6]
        assert isinstance(order["opentm"], Decimal) and order["closetm"] >= order["opentm"]
        assert {"pair", "type", "ordertype", "price", "order"} <= set(order["descr"])
        mine = order.get("trades", [])
        if order["status"] == "canceled":
            assert not mine and Decimal(order["vol_exec"]) == 0
            continue
        assert Decimal(order["vol_exec"]) == sum(Decimal(trades[t]["vol"]) for t in mine)
        assert Decimal(order["vol_exec"]) == Decimal(order["vol"])
        assert Decimal(order["cost"]) == sum(Decimal(trades[t]["cost"]) for t in mine)
        assert Decimal(order["fee"]) == sum(Decimal(trades[t]["fee"]) for t in mine)
        assert all(trades[t]["ordertxid"] == txid for t in mine)
        seen.update(mine)
    assert seen == set(trades)
    some = list(orders)[:3]
    queried = spot.query_orders(some, trades=True)
    assert set(queried) == set(some)
    assert queried[some[0]]["vol_exec"] == orders[some[0]]["vol_exec"]


def test_spot_start_end_filters(spot: SpotClient) -> None:
    all_trades = dict(_page_all(spot.get_trades_history, "trades")[0])
    ordered = sorted(all_trades.items(), key=lambda kv: Decimal(kv[1]["time"]))
    lo_txid, lo = ordered[100]
    hi_txid, hi = ordered[180]
    by_time, count = _page_all(spot.get_trades_history, "trades", start=lo["time"],
                               end=hi["time"])
    expected = [t for t, r in ordered if Decimal(lo["time"]) < Decimal(r["time"])
                <= Decimal(hi["time"])]
    assert count == len(expected) == 80
    assert {t for t, _ in by_time} == set(expected)
    by_id, count = _page_all(spot.get_trades_history, "trades", start=lo_txid, end=hi_txid)
    assert {t for t, _ in by_id} == set(expected)
    assert lo_txid not in dict(by_id) and hi_txid in dict(by_id)

    ledger, count = _page_all(spot.get_ledgers, "ledger", asset="XBT", type="trade")
    assert count > 0 and all(e["asset"] == "XXBT" and e["type"] == "trade" for _, e in ledger)
    deposits = spot.get_ledgers(type="deposit")
    assert deposits["count"] == 2
    quiet = spot.get_ledgers(without_count=True)
    assert "count" not in quiet and len(quiet["ledger"]) == 50

    for bad in ({"ofs": -1}, {"type": "bogus"}, {"start": "LNOPE-NOPE-NOPE"}):
        with pytest.raises(InvalidRequestError):
            spot.get_ledgers(**bad)


def test_spot_new_trade_between_pages_shifts_offsets(spot: SpotClient,
                                                     sim: Simulator) -> None:
    book = _spot_book(sim)
    before = {t.txid for t in book.visible_trades()}
    first = spot.get_trades_history(ofs=0)
    added = book.add_trade()
    rows = list(first["trades"].items())
    ofs = 50
    while True:
        page = spot.get_trades_history(ofs=ofs)
        rows.extend(page["trades"].items())
        ofs += 50
        if ofs >= page["count"]:
            break
    assert page["count"] == first["count"] + 1
    ids = [t for t, _ in rows]
    duplicates = [t for t, n in Counter(ids).items() if n > 1]
    assert len(duplicates) == 1  # the row at the page boundary came twice
    assert added.txid not in ids
    assert set(ids) == before  # dedupe by txid: every trade that existed, once
    newest = spot.get_trades_history()
    assert next(iter(newest["trades"])) == added.txid
    legs = spot.query_ledgers(list(added.ledgers))
    assert {leg["refid"] for leg in legs.values()} == {added.txid}
    balance = spot.get_balance()
    ledger = spot.get_ledgers(asset="XBT")["ledger"]
    assert balance["XXBT"] == next(iter(ledger.values()))["balance"]


def test_spot_history_grows_with_the_clock(sim: Simulator, clock: SimClock,
                                           tmp_path: Path) -> None:
    clock.t = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    with _spot_client(sim, tmp_path) as client:
        early = client.get_trades_history()["count"]
        clock.advance(60 * 86_400)
        later = client.get_trades_history()["count"]
        clock.t = NOW.timestamp() + 30 * 86_400
        final = client.get_trades_history()["count"]
    assert 0 < early < later < final
    assert final == len(_spot_book(sim).trades)


def test_spot_funding_matches_ledger(spot: SpotClient) -> None:
    deposits = spot.get_deposit_status()
    withdrawals = spot.get_withdraw_status()
    assert len(deposits) == 2 and len(withdrawals) == 1
    ledger = dict(_page_all(spot.get_ledgers, "ledger")[0])
    by_refid = {e["refid"]: e for e in ledger.values() if e["type"] in ("deposit",
                                                                        "withdrawal")}
    for item in deposits:
        assert set(item) >= {"method", "aclass", "asset", "refid", "txid", "info", "amount",
                             "fee", "time", "status"}
        assert item["status"] == "Success" and isinstance(item["time"], int)
        entry = by_refid[item["refid"]]
        assert entry["type"] == "deposit" and entry["asset"] == item["asset"]
        assert Decimal(entry["amount"]) == Decimal(item["amount"])
    (out,) = withdrawals
    entry = by_refid[out["refid"]]
    assert Decimal(entry["amount"]) == -Decimal(out["amount"])
    assert Decimal(entry["fee"]) == Decimal(out["fee"]) > 0
    paged = spot.get_deposit_status(cursor=True, limit=1)
    assert len(paged["deposit"]) == 1 and paged["next_cursor"]
    rest = spot.get_deposit_status(cursor=paged["next_cursor"], limit=1)
    assert rest["deposit"][0]["refid"] != paged["deposit"][0]["refid"]
    assert rest["next_cursor"] is None


def test_spot_query_endpoints_and_errors(spot: SpotClient, sim: Simulator,
                                         tmp_path: Path) -> None:
    trades = spot.get_trades_history()["trades"]
    some = list(trades)[:2]
    assert spot.private("QueryTrades", {"txid": ",".join(some)}).keys() == set(some)
    with pytest.raises(InvalidRequestError):
        spot.query_orders("OAAAAA-BBBBB-CCCCCC")
    with pytest.raises(InvalidRequestError):
        spot.query_ledgers("LAAAAA-BBBBB-CCCCCC")
    with _spot_client(sim, tmp_path, key="SIMSPOTWRONGKEY") as wrong, pytest.raises(AuthError):
        wrong.get_balance()


# --- Futures ----------------------------------------------------------------------------------


def _executions(fut: FuturesClient, **params: Any) -> tuple[list[dict], int]:
    elements: list[dict] = []
    token = None
    pages = 0
    while True:
        body = fut.get_executions(continuation_token=token, **params)
        assert body["len"] == len(body["elements"])
        elements.extend(body["elements"])
        pages += 1
        token = body.get("continuationToken")
        if not token:
            return elements, pages


def test_futures_executions_paging_with_tokens(fut: FuturesClient, sim: Simulator) -> None:
    book = _futures_book(sim)
    visible = sum(1 for ts in book.x_ts if ts <= NOW.timestamp() * 1000)
    assert 480 <= visible <= 500
    desc, pages = _executions(fut, count=37)
    assert pages == -(-visible // 37)
    uids = [e["uid"] for e in desc]
    assert len(uids) == len(set(uids)) == visible
    stamps = [e["timestamp"] for e in desc]
    assert stamps == sorted(stamps, reverse=True)
    asc, _ = _executions(fut, count=50, sort="asc")
    assert [e["uid"] for e in asc] == uids[::-1]
    one = fut.get_executions(count=5)
    assert len(one["elements"]) == 5 and one["continuationToken"]
    everything = fut.get_executions()  # default count = history_page_max (1000)
    assert len(everything["elements"]) == visible and "continuationToken" not in everything
    ex = desc[0]["event"]["Execution"]
    assert set(ex) == {"execution", "takerReducedQuantity"}
    execution = ex["execution"]
    assert {"uid", "timestamp", "quantity", "price", "markPrice", "limitFilled", "usdValue",
            "makerOrder", "takerOrder", "makerOrderData", "takerOrderData"} <= set(execution)
    assert isinstance(execution["price"], str) and isinstance(execution["timestamp"], int)
    sides = [execution[k] for k in ("makerOrder", "takerOrder")]
    mine = [o for o in sides if o["accountUid"] == everything["accountUid"]]
    assert len(mine) == 1
    data = execution["makerOrderData" if sides[0] is mine[0] else "takerOrderData"]
    assert Decimal(data["fee"]) > 0
    xbt = next(e["event"]["Execution"]["execution"] for e in desc
               if e["event"]["Execution"]["execution"]["makerOrder"]["tradeable"] == "PF_XBTUSD")
    mark = sim.market.price_at("XXBTZUSD", xbt["timestamp"] / 1000)
    assert abs(Decimal(xbt["markPrice"]) / mark - 1) < Decimal("0.01")
    shared = Counter(stamps)
    assert max(shared.values()) >= 2  # some orders fill twice in one millisecond


def test_futures_executions_filters_and_versions(sim: Simulator, fut: FuturesClient,
                                                 tmp_path: Path) -> None:
    all_rows, _ = _executions(fut, count=1000)
    mid = all_rows[len(all_rows) // 2]["timestamp"]
    newer = fut.get_executions(since=mid, count=1000)["elements"]
    older = fut.get_executions(before=mid, count=1000)["elements"]
    assert all(e["timestamp"] >= mid for e in newer)  # since inclusive
    assert all(e["timestamp"] < mid for e in older)  # before exclusive
    assert len(newer) + len(older) == len(all_rows)
    xbt, _ = _executions(fut, tradeable="PF_XBTUSD", count=100)
    assert xbt and all(e["event"]["Execution"]["execution"]["takerOrder"]["tradeable"]
                       == "PF_XBTUSD" for e in xbt)
    with _futures_client(sim, tmp_path, version="v2") as v2:
        body = v2.get_executions(count=3)
        assert set(body["elements"][0]["event"]) == {"execution"}
        assert body["elements"][0]["uid"] == all_rows[0]["uid"]
        assert v2.get_account_log(count=2)["logs"]
        with pytest.raises(KrakenError) as failure:  # positions exists in v3 only
            v2.request("/api/history/v2/positions", {})
        assert failure.value.status_code == 404


def test_futures_bad_continuation_tokens(fut: FuturesClient) -> None:
    token = fut.get_executions(count=10)["continuationToken"]
    with pytest.raises(InvalidRequestError):
        fut.get_executions(count=10, continuation_token=token, sort="asc")
    with pytest.raises(InvalidRequestError):
        fut.get_executions(continuation_token="bm90IGEgdG9rZW4=")
    with pytest.raises(InvalidRequestError):
        fut.get_executions(continuation_token="%%% garbage")
    forged = base64.b64encode(b"executions|desc|3|0000000000000000").decode()
    with pytest.raises(InvalidRequestError):
        fut.get_executions(continuation_token=forged)
    with pytest.raises(InvalidRequestError):
        fut.get_position_history(continuation_token=token)
    with pytest.raises(InvalidRequestError):
        fut.get_executions(sort="sideways")


def test_futures_positions_history(fut: FuturesClient, sim: Simulator) -> None:
    book = _futures_book(sim)
    elements: list[dict] = []
    token = None
    while True:
        body = fut.get_position_history(count=200, sort="asc", continuation_token=token)
        elements.extend(body["elements"])
        token = body.get("continuationToken")
        if not token:
            break
    uids = [e["uid"] for e in elements]
    assert len(uids) == len(set(uids))
    updates = [e["event"]["PositionUpdate"] for e in elements]
    trades = [u for u in updates if u["updateReason"] == "trade"]
    assert len(trades) == sum(1 for ts in book.x_ts if ts <= NOW.timestamp() * 1000)
    assert {u["updateReason"] for u in updates} == {"trade", "fundingRealisation"}
    changes = Counter(u["positionChange"] for u in trades)
    assert {"open", "close", "increase", "decrease", "reverse"} <= set(changes)
    last: dict[str, Decimal] = {}
    for u in updates:  # each update starts where the previous one of its contract ended
        assert Decimal(u["oldPosition"]) == last.get(u["tradeable"], Decimal(0))
        last[u["tradeable"]] = Decimal(u["newPosition"])
        assert {"realizedPnL", "realizedFunding", "fee", "feeCurrency", "executionUid",
                "executionPrice", "executionSize", "fillTime", "timestamp",
                "newAverageEntryPrice"} <= set(u)
    executions = {e["event"]["Execution"]["execution"]["uid"]
                  for e in fut.get_executions(count=1000)["elements"]}
    assert {u["executionUid"] for u in trades} == executions
    opened = fut.get_position_history(opened=True, count=1000)["elements"]
    assert opened and all(e["event"]["PositionUpdate"]["positionChange"] == "open"
                          for e in opened)

    positions = fut.get_open_positions()["openPositions"]
    expected = {sym: size for sym, size in last.items() if size}
    assert {p["symbol"]: (Decimal(p["size"]) if p["side"] == "long" else -Decimal(p["size"]))
            for p in positions} == expected
    for p in positions:
        assert {"side", "symbol", "price", "fillTime", "size", "unrealizedFunding"} <= set(p)
        assert p["side"] in ("long", "short") and p["size"] > 0


def test_futures_account_log(fut: FuturesClient, sim: Simulator) -> None:
    logs = fut.get_account_log(count=100_000, sort="asc")["logs"]
    ids = [row["id"] for row in logs]
    assert ids == list(range(1, len(logs) + 1))
    dates = [row["date"] for row in logs]
    assert dates == sorted(dates)
    body = fut.get_executions(count=1000)
    account = body["accountUid"]
    executions = {e["event"]["Execution"]["execution"]["uid"]: e["event"]["Execution"][
        "execution"] for e in body["elements"]}
    legs: dict[str, list[dict]] = defaultdict(list)
    for row in logs:
        assert set(row) >= {"id", "date", "booking_uid", "info", "asset", "margin_account",
                            "contract", "execution", "fee", "funding_rate", "mark_price",
                            "trade_price", "old_balance", "new_balance", "realized_pnl",
                            "realized_funding", "collateral", "conversion_spread_percentage",
                            "liquidation_fee"}
        if row["info"] == "futures trade":
            legs[row["execution"]].append(row)
    assert set(legs) == set(executions)
    for uid, pair in legs.items():
        assert len(pair) == 2 and pair[0]["date"] == pair[1]["date"]
        assert pair[1]["id"] == pair[0]["id"] + 1
        cash = next(r for r in pair if r["asset"] == "usd")
        position = next(r for r in pair if r["asset"] != "usd")
        execution = executions[uid]
        side = "makerOrder" if execution["makerOrder"]["accountUid"] == account else (
            "takerOrder")
        assert execution[side]["accountUid"] == account
        assert position["asset"] == execution[side]["tradeable"].lower()
        assert position["contract"] == cash["contract"] == execution[side]["tradeable"]
        assert cash["fee"] == Decimal(execution[side + "Data"]["fee"])
        assert abs(position["new_balance"] - position["old_balance"]) == Decimal(
            execution["quantity"])
        assert position["trade_price"] == Decimal(execution["price"])
    infos = Counter(row["info"] for row in logs)
    assert infos["transfer"] == 3 and infos["funding rate change"] > 0
    cash_rows = [r for r in logs if r["asset"] == "usd"]
    for prev, row in itertools.pairwise(cash_rows):
        assert row["old_balance"] == prev["new_balance"]
    flex = fut.get_accounts()["accounts"]["flex"]
    assert flex["currencies"]["USD"]["quantity"] == cash_rows[-1]["new_balance"]
    assert {"cash", "flex"} <= set(fut.get_accounts()["accounts"])

    total = len(logs)
    newest = fut.get_account_log()["logs"]  # default: 500, newest first
    assert len(newest) == 500 and newest[0]["id"] == total
    window = fut.get_account_log(from_=10, to=20, sort="asc")["logs"]
    assert [r["id"] for r in window] == list(range(10, 21))
    ts = int(datetime.fromisoformat(logs[300]["date"].replace("Z", "+00:00")).timestamp()
             * 1000)
    since = fut.get_account_log(since=ts, count=100_000, sort="asc")["logs"]
    before = fut.get_account_log(before=ts, count=100_000)["logs"]
    assert since[0]["date"] == logs[300]["date"] and len(since) + len(before) == total
    funding = fut.get_account_log(info="funding rate change", count=100_000)["logs"]
    assert len(funding) == infos["funding rate change"]
    with pytest.raises(InvalidRequestError):
        fut.get_account_log(sort="sideways")
    with pytest.raises(InvalidRequestError):
        fut.get_account_log(since="yesterday")


def _ms(row: dict) -> int:
    return int(datetime.fromisoformat(row["date"].replace("Z", "+00:00")).timestamp() * 1000)


def test_futures_account_log_backward_paging_needs_equal_timestamps(fut: FuturesClient) -> None:
    total = len(fut.get_account_log(count=100_000)["logs"])
    count = 25  # odd page boundaries fall between the two legs of an execution

    def page_back(handle_ties: bool) -> set[int]:
        """Page backwards by ``before``: naively (before = earliest timestamp of the page), or
        re-asking for the earliest millisecond (before = earliest + 1) and deduping by id."""
        seen: set[int] = set()
        before = None
        while True:
            logs = fut.get_account_log(count=count, before=before)["logs"]
            new = {r["id"] for r in logs} - seen
            seen |= new
            if len(logs) < count or not new:
                return seen
            before = min(_ms(r) for r in logs) + (1 if handle_ties else 0)

    naive = page_back(handle_ties=False)
    assert len(naive) < total  # rows sharing the boundary millisecond were skipped
    careful = page_back(handle_ties=True)
    assert careful == set(range(1, total + 1))
    by_ids: set[int] = set()
    to = None
    while True:
        logs = fut.get_account_log(count=count, to=to)["logs"]
        by_ids |= {r["id"] for r in logs}
        if len(logs) < count:
            break
        to = min(r["id"] for r in logs) - 1
    assert by_ids == set(range(1, total + 1))


def test_futures_auth_errors_and_public_tickers(sim: Simulator, tmp_path: Path) -> None:
    with _futures_client(sim, tmp_path, key="SIMFUTWRONG") as wrong:
        with pytest.raises(AuthError):
            wrong.get_executions()
        with pytest.raises(AuthError):
            wrong.get_open_positions()
    with _futures_client(sim, tmp_path, credentials=False) as public:
        body = public.get_tickers()
        assert public.get_instruments()["instruments"]
    tickers = {t["symbol"]: t for t in body["tickers"]}
    assert {"PI_XBTUSD", "PF_XBTUSD", "PF_ETHUSD", "PF_SOLUSD", "in_xbtusd"} <= set(tickers)
    assert set(tickers["in_xbtusd"]) == {"symbol", "last", "lastTime"}
    month = [t for t in tickers.values() if t.get("tag") == "month"]
    assert len(month) == 1 and "fundingRate" not in month[0]
    perp = tickers["PF_XBTUSD"]
    for key in ("symbol", "tag", "pair", "markPrice", "vol24h", "volumeQuote", "openInterest",
                "suspended", "indexPrice", "postOnly", "change24h", "fundingRate"):
        assert key in perp
    spot_price = sim.market.price_at("XXBTZUSD", NOW.timestamp())
    assert abs(perp["markPrice"] / spot_price - 1) < Decimal("0.005")
    assert isinstance(perp["markPrice"], Decimal)  # a JSON number, not a string


def test_futures_large_history_is_fast_and_compact(sim: Simulator) -> None:
    spec = replace(sim.config.account("futures"), history_size=100_000)
    started = time.perf_counter()
    book = FuturesBook(spec, sim.market, sim.config)
    assert time.perf_counter() - started < 15
    assert len(book.x_ts) == 100_000
    assert sum(1 for c in book.log_code if c & 3 in (0, 1)) == 200_000
    assert list(book.x_ts) == sorted(book.x_ts) and list(book.log_ts) == sorted(book.log_ts)
    assert book.x_ts[-1] < sim.config.origin.timestamp() * 1000 + SPAN_DAYS * 86_400_000
