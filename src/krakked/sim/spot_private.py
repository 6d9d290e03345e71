"""Spot private account endpoints of the simulator, rendered from a ``SpotBook`` as Kraken
documents its account data (https://docs.kraken.com/api/docs/rest-api/get-trade-history,
https://docs.kraken.com/api/docs/rest-api/get-ledgers and their sibling pages).

Each handler takes ``(sim, book, params)`` and returns Kraken's ``result``; bad parameters raise
``SpotError("EGeneral:Invalid arguments:<name>")``. Only entries at or before the simulator's
clock are visible. Paging follows Kraken: 50 rows per call, newest first, ``ofs`` offset,
``count`` = all rows matching the filters (``without_count=true`` leaves it out); ``start`` is
exclusive and ``end`` inclusive, each a Unix time or an id of the listed kind. With an id the
bound is that row's place in the history (rows strictly after / up to and including it), except
ClosedOrders, where an order txid stands for that order's ``opentm`` (as Kraken documents).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from krakked.sim.protocol import SimContext, SpotError
from krakked.sim.spot_book import (
    FundingEntry,
    LedgerEntry,
    SpotBook,
    SpotOrder,
    SpotTrade,
    asset_decimals,
    asset_id,
)

__all__ = ["HANDLERS", "PAGE_SIZE"]

PAGE_SIZE = 50
"""Rows per TradesHistory / Ledgers / ClosedOrders call (Kraken's fixed page size)."""

LEDGER_TYPES = frozenset({
    "all", "none", "trade", "deposit", "withdrawal", "transfer", "margin", "adjustment",
    "rollover", "spend", "receive", "settled", "credit", "staking", "reward", "dividend", "sale",
    "conversion", "nfttrade", "nftcreatorfee", "nftrebate", "nft_rebate", "custodytransfer",
})
TRADE_TYPES = frozenset({"all", "any position", "closed position", "closing position",
                         "no position"})

T = TypeVar("T")
Key = tuple[float, float]

_INF = float("inf")


# --- parameters -------------------------------------------------------------------------------


def _invalid(name: str) -> SpotError:
    return SpotError(f"EGeneral:Invalid arguments:{name}")


def _flag(params: Mapping[str, str], name: str) -> bool:
    """A Kraken boolean parameter (``true``/``1``); anything else but empty is invalid."""
    value = params.get(name, "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise _invalid(name)


def _ofs(params: Mapping[str, str]) -> int:
    raw = params.get("ofs", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise _invalid("ofs") from None
    if value < 0:
        raise _invalid("ofs")
    return value


def _number(raw: str) -> float | None:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return float(value) if value.is_finite() else None


def _list(params: Mapping[str, str], name: str) -> list[str]:
    return [part.strip() for part in params.get(name, "").split(",") if part.strip()]


def _bounds(params: Mapping[str, str], by_id: Callable[[str], Key | None]
            ) -> tuple[Key, Key]:
    """(exclusive lower, inclusive upper) (time, seq) keys from ``start``/``end``: a Unix time
    bounds by time, an id by that row's place."""
    lower: Key = (-_INF, _INF)
    upper: Key = (_INF, _INF)
    for name in ("start", "end"):
        raw = params.get(name, "").strip()
        if not raw:
            continue
        number = _number(raw)
        if number is not None:
            key: Key = (number, _INF)
        else:
            found = by_id(raw)
            if found is None:
                raise _invalid(name)
            key = found
        if name == "start":
            lower = key
        else:
            upper = key
    return lower, upper


def _page(rows: list[T], params: Mapping[str, str]) -> tuple[list[T], int]:
    """The ``ofs`` page (50 rows) of ``rows`` (oldest first), newest first, and the count."""
    ofs = _ofs(params)
    newest_first = rows[::-1]
    return newest_first[ofs: ofs + PAGE_SIZE], len(rows)


def _with_count(result: dict[str, Any], count: int, params: Mapping[str, str]
                ) -> dict[str, Any]:
    if not _flag(params, "without_count"):
        result["count"] = count
    return result


# --- rendering --------------------------------------------------------------------------------


def _money(value: Decimal, places: int) -> str:
    return f"{value:.{places}f}"


def trade_row(trade: SpotTrade, *, ledgers: bool = False) -> dict[str, Any]:
    """One TradesHistory / QueryTrades entry."""
    pair = trade.pair
    row: dict[str, Any] = {
        "ordertxid": trade.ordertxid,
        "postxid": trade.postxid,
        "pair": pair.id,
        "time": trade.time,
        "type": trade.type,
        "ordertype": trade.ordertype,
        "price": _money(trade.price, pair.price_places),
        "cost": _money(trade.cost, pair.cost_decimals),
        "fee": _money(trade.fee, pair.cost_decimals),
        "vol": _money(trade.vol, pair.lot_decimals),
        "margin": _money(Decimal(0), pair.cost_decimals),
        "leverage": "0",
        "misc": "",
        "trade_id": trade.trade_id,
        "maker": trade.maker,
    }
    if ledgers:
        row["ledgers"] = list(trade.ledgers)
    return row


def order_row(order: SpotOrder, *, trades: bool = False) -> dict[str, Any]:
    """One ClosedOrders / QueryOrders entry."""
    pair = order.pair
    places = pair.price_places
    if order.limit_price is not None:
        limit = _money(order.limit_price, pair.pair_decimals)
        text = f"{order.type} {_money(order.vol, pair.lot_decimals)} {pair.altname} @ limit {limit}"
    else:
        limit = "0"
        text = f"{order.type} {_money(order.vol, pair.lot_decimals)} {pair.altname} @ market"
    avg = (order.cost / order.vol_exec).quantize(Decimal(1).scaleb(-pair.pair_decimals)) if (
        order.vol_exec) else Decimal(0)
    row: dict[str, Any] = {
        "refid": None,
        "userref": order.userref,
        "status": order.status,
        "reason": order.reason,
        "opentm": order.opentm,
        "closetm": order.closetm,
        "starttm": 0,
        "expiretm": 0,
        "descr": {"pair": pair.altname, "type": order.type, "ordertype": order.ordertype,
                  "price": limit, "price2": "0", "leverage": "none", "order": text,
                  "close": ""},
        "vol": _money(order.vol, pair.lot_decimals),
        "vol_exec": _money(order.vol_exec, pair.lot_decimals),
        "cost": _money(order.cost, pair.cost_decimals),
        "fee": _money(order.fee, pair.cost_decimals),
        "price": _money(avg, places),
        "stopprice": _money(Decimal(0), places),
        "limitprice": _money(Decimal(0), places),
        "misc": "",
        "oflags": "fciq",
    }
    if trades and order.trades:
        row["trades"] = list(order.trades)
    return row


def ledger_row(entry: LedgerEntry) -> dict[str, Any]:
    """One Ledgers / QueryLedgers entry (amount signed, ``balance`` after the entry)."""
    places = asset_decimals(entry.asset)
    return {
        "refid": entry.refid,
        "time": entry.time,
        "type": entry.type,
        "subtype": entry.subtype,
        "aclass": entry.aclass,
        "asset": entry.asset,
        "amount": _money(entry.amount, places),
        "fee": _money(entry.fee, places),
        "balance": _money(entry.balance, places),
    }


def funding_row(entry: FundingEntry) -> dict[str, Any]:
    """One DepositStatus / WithdrawStatus entry (amount unsigned, time whole seconds)."""
    places = asset_decimals(entry.asset)
    row: dict[str, Any] = {
        "method": entry.method,
        "aclass": entry.aclass,
        "asset": entry.asset,
        "refid": entry.refid,
        "txid": entry.txid,
        "info": entry.info,
        "amount": _money(entry.amount, places),
        "fee": _money(entry.fee, places),
        "time": int(entry.time),
        "status": entry.status,
    }
    if entry.kind == "withdrawal":
        row["key"] = entry.key
    return row


# --- handlers ---------------------------------------------------------------------------------


def balance(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, str]:
    """``Balance``: asset -> balance string (the last visible ledger ``balance`` per asset)."""
    return {asset: _money(value, asset_decimals(asset))
            for asset, value in sorted(book.balances().items())}


def balance_ex(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``BalanceEx``: asset -> ``{"balance", "hold_trade"}`` (no open orders, so hold is 0)."""
    out: dict[str, Any] = {}
    for asset, value in sorted(book.balances().items()):
        places = asset_decimals(asset)
        out[asset] = {"balance": _money(value, places), "hold_trade": _money(Decimal(0), places)}
    return out


def trade_balance(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, str]:
    """``TradeBalance`` in USD: equivalent balance of all assets at the market's current prices
    (no margin positions, so trade balance = equivalent balance and margin fields are 0)."""
    total = Decimal(0)
    now = sim.now()
    for asset, value in book.balances().items():
        if not value:
            continue
        if asset in ("ZUSD", "USD"):
            total += value
            continue
        base = asset.split(".", 1)[0]
        for name in (f"{asset_id(base)}ZUSD", f"{base}USD", f"{asset_id(base)[1:]}USD"):
            try:
                total += value * sim.market.price_at(name, now)
                break
            except KeyError:
                continue
    eb = _money(total, 4)
    zero = "0.0000"
    return {"eb": eb, "tb": eb, "m": zero, "n": zero, "c": zero, "v": zero, "e": eb, "mf": eb,
            "uv": zero}


def open_orders(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``OpenOrders``: the simulated account keeps no resting orders -> ``{"open": {}}``."""
    return {"open": {}}


def trades_history(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``TradesHistory``: ``{"trades": {txid: trade}, "count": n}``; 50 per call, newest first.

    ``type`` all/no position list every trade (the account has no margin positions; the
    position types list none); ``ledgers=true`` adds each trade's two ledger ids.
    """
    kind = params.get("type", "all") or "all"
    if kind not in TRADE_TYPES:
        raise _invalid("type")
    want_ledgers = _flag(params, "ledgers")
    _flag(params, "trades")
    rows = book.visible_trades()

    def by_id(txid: str) -> Key | None:
        trade = book.trade_by_id.get(txid)
        return None if trade is None else (trade.time, trade.seq)

    lower, upper = _bounds(params, by_id)
    rows = [t for t in rows if lower < (t.time, t.seq) <= upper]
    if kind not in ("all", "no position"):
        rows = []
    page, count = _page(rows, params)
    return _with_count({"trades": {t.txid: trade_row(t, ledgers=want_ledgers) for t in page}},
                       count, params)


def ledgers(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``Ledgers``: ``{"ledger": {id: entry}, "count": n}``; 50 per call, newest first.

    Filters: ``asset`` (comma list of ids or altnames, default all), ``aclass`` (currency),
    ``type`` (default all).
    """
    kind = (params.get("type") or "all").strip().lower()
    if kind not in LEDGER_TYPES:
        raise _invalid("type")
    assets = {asset_id(a) for a in _list(params, "asset") if a.lower() != "all"}
    aclass = params.get("aclass", "").strip()

    def by_id(ident: str) -> Key | None:
        entry = book.ledger_by_id.get(ident)
        return None if entry is None else (entry.time, entry.seq)

    lower, upper = _bounds(params, by_id)
    rows = [
        e for e in book.visible_ledger()
        if lower < (e.time, e.seq) <= upper
        and (not assets or e.asset in assets)
        and (kind == "all" or e.type == kind)
        and (not aclass or e.aclass == aclass)
    ]
    page, count = _page(rows, params)
    return _with_count({"ledger": {e.id: ledger_row(e) for e in page}}, count, params)


def closed_orders(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``ClosedOrders``: ``{"closed": {txid: order}, "count": n}``; 50 per call, newest close
    first. ``closetime`` open|close|both (default both: the order's open or close time lies in
    (start, end]); ``start``/``end`` given as an order txid mean that order's ``opentm``;
    ``trades=true`` adds the order's trade ids; ``userref`` filters."""
    closetime = params.get("closetime", "both") or "both"
    if closetime not in ("open", "close", "both"):
        raise _invalid("closetime")
    want_trades = _flag(params, "trades")
    userref = params.get("userref", "").strip()
    if userref and not userref.lstrip("-").isdigit():
        raise _invalid("userref")
    cl_ord_id = params.get("cl_ord_id", "").strip()
    limits = []
    for name, default in (("start", -_INF), ("end", _INF)):
        raw = params.get(name, "").strip()
        if not raw:
            limits.append(default)
            continue
        number = _number(raw)
        if number is None:
            order = book.order_by_id.get(raw)
            if order is None:
                raise _invalid(name)
            number = order.opentm
        limits.append(number)
    start, end = limits

    def inside(t: float) -> bool:
        return start < t <= end

    rows = [
        o for o in book.visible_orders()
        if (closetime == "open" and inside(o.opentm))
        or (closetime == "close" and inside(o.closetm))
        or (closetime == "both" and (inside(o.opentm) or inside(o.closetm)))
    ]
    if userref:
        rows = [o for o in rows if o.userref == int(userref)]
    if cl_ord_id:
        rows = []
    page, count = _page(rows, params)
    return _with_count({"closed": {o.txid: order_row(o, trades=want_trades) for o in page}},
                       count, params)


def _lookup(book_map: Mapping[str, T], ids: Iterable[str], visible: Callable[[T], bool],
            name: str, limit: int) -> list[T]:
    wanted = list(ids)
    if not wanted or len(wanted) > limit:
        raise _invalid(name)
    found = []
    for ident in wanted:
        item = book_map.get(ident)
        if item is None or not visible(item):
            raise _invalid(name)
        found.append(item)
    return found


def query_orders(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``QueryOrders``: txid -> order for up to 50 comma-separated txids (``trades=true`` adds
    trade ids). An unknown (or not yet closed) txid -> ``EGeneral:Invalid arguments:txid``
    (Kraken's exact error for it is UNCONFIRMED)."""
    want_trades = _flag(params, "trades")
    now = sim.now()
    found = _lookup(book.order_by_id, _list(params, "txid"), lambda o: o.closetm <= now,
                    "txid", 50)
    return {o.txid: order_row(o, trades=want_trades) for o in found}


def query_trades(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``QueryTrades``: txid -> trade for up to 20 comma-separated trade txids."""
    _flag(params, "trades")
    now = sim.now()
    found = _lookup(book.trade_by_id, _list(params, "txid"), lambda t: t.time <= now,
                    "txid", 20)
    return {t.txid: trade_row(t) for t in found}


def query_ledgers(sim: SimContext, book: SpotBook, params: dict[str, str]) -> dict[str, Any]:
    """``QueryLedgers``: ledger id -> entry for up to 20 comma-separated ids."""
    _flag(params, "trades")
    now = sim.now()
    found = _lookup(book.ledger_by_id, _list(params, "id"), lambda e: e.time <= now, "id", 20)
    return {e.id: ledger_row(e) for e in found}


def _funding(sim: SimContext, entries: list[FundingEntry], params: dict[str, str], key: str
             ) -> Any:
    """Deposits or withdrawals at or before now, newest first, filtered by ``asset``,
    ``aclass``, ``method``, ``start``/``end`` (Unix seconds, exclusive/inclusive). With
    ``cursor`` (``true`` or a cursor from a previous page) the answer is
    ``{key: [...], "next_cursor": str | null}`` pages of ``limit`` (default 25) — the paged shape
    is UNCONFIRMED."""
    now = sim.now()
    assets = {asset_id(a) for a in _list(params, "asset")}
    method = params.get("method", "").strip()
    aclass = params.get("aclass", "").strip()
    start, end = -_INF, _INF
    for name in ("start", "end"):
        raw = params.get(name, "").strip()
        if raw:
            number = _number(raw)
            if number is None:
                raise _invalid(name)
            start, end = (number, end) if name == "start" else (start, number)
    rows = [
        e for e in reversed(entries)
        if e.time <= now and start < e.time <= end
        and (not assets or e.asset in assets)
        and (not method or e.method == method)
        and (not aclass or e.aclass == aclass)
    ]
    cursor = params.get("cursor", "").strip()
    if not cursor or cursor.lower() == "false":
        return [funding_row(e) for e in rows]
    raw_limit = params.get("limit", "").strip() or "25"
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise _invalid("limit")
    limit = int(raw_limit)
    offset = 0
    if cursor.lower() != "true":
        try:
            offset = int(base64.b64decode(cursor, validate=True).decode())
        except ValueError:
            raise _invalid("cursor") from None
    page = rows[offset: offset + limit]
    more = offset + limit < len(rows)
    next_cursor = base64.b64encode(str(offset + limit).encode()).decode() if more else None
    return {key: [funding_row(e) for e in page], "next_cursor": next_cursor}


def deposit_status(sim: SimContext, book: SpotBook, params: dict[str, str]) -> Any:
    """``DepositStatus``: a list of deposits (each with a matching ``deposit`` ledger entry
    whose refid is the deposit's refid), newest first; see ``_funding`` for filters/paging."""
    return _funding(sim, book.deposits, params, "deposit")


def withdraw_status(sim: SimContext, book: SpotBook, params: dict[str, str]) -> Any:
    """``WithdrawStatus``: a list of withdrawals (amount unsigned; the ledger entry carries
    ``-amount`` and the fee), newest first; see ``_funding`` for filters/paging."""
    return _funding(sim, book.withdrawals, params, "withdraw")


Handler = Callable[[SimContext, SpotBook, dict[str, str]], Any]

HANDLERS: dict[str, Handler] = {
    "Balance": balance,
    "BalanceEx": balance_ex,
    "TradeBalance": trade_balance,
    "OpenOrders": open_orders,
    "TradesHistory": trades_history,
    "Ledgers": ledgers,
    "ClosedOrders": closed_orders,
    "QueryOrders": query_orders,
    "QueryLedgers": query_ledgers,
    "QueryTrades": query_trades,
    "DepositStatus": deposit_status,
    "WithdrawStatus": withdraw_status,
}
"""Spot private method name -> handler ``(sim, book, params) -> result``."""
