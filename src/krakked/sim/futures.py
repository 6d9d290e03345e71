"""Futures REST of the simulator: ``/derivatives/api/v3`` endpoints and the history API
(``/api/history/v2|v3``), rendered from a ``FuturesBook`` as Kraken documents them
(https://docs.kraken.com/api/docs/guides/futures-rest,
https://docs.kraken.com/api/docs/futures-api/history/get-execution-events,
https://docs.kraken.com/api/docs/futures-api/history/account-log).

``DERIVATIVES`` handlers return payload keys only (the core adds ``result``/``serverTime``);
``HISTORY`` handlers return the whole body. Bad parameters raise
``FuturesError("invalidArgument", 400)``. Paging rules chosen (Kraken's exact semantics are
UNCONFIRMED where marked):

* Times are Unix milliseconds; ``since`` is inclusive and ``before`` exclusive (the window is
  ``since <= timestamp < before``, UNCONFIRMED). Only rows at or before the clock are served.
* ``executions`` / ``positions``: ``sort`` asc|desc (default desc), ``count`` 1.. (default and
  ceiling ``config.history_page_max``; larger values are clamped), ``tradeable`` filter. When more
  matching rows remain, the body carries ``continuationToken`` (opaque base64 naming the endpoint,
  sort and the last row's place); pass it back as ``continuation_token`` with the same ``sort`` and
  filters. A token of another endpoint or sort, or garbage, is ``invalidArgument`` (HTTP 400).
  The token marks a place in a fixed history, so rows sharing a millisecond are never split or
  repeated across pages.
* ``account-log``: no continuation token. ``since``/``before`` as above, ``from``/``to`` entry ids
  (inclusive; ids are dense, 1-based and increase with time), ``info`` filter (comma list),
  ``sort`` (default desc), ``count`` (default 500, 1..100000). Several rows share a timestamp
  (each execution books a cash leg and a position leg at the same ``date``), so a client paging
  backwards with ``before=<earliest timestamp of the page>`` misses the rest of that millisecond
  unless it handles equal timestamps (e.g. ``before=earliest+1`` and dedupe by ``id``, or page by
  ``to=<smallest id>-1``).
* v2 executions use the lowercase event key ``execution`` (python-kraken-sdk's example,
  UNCONFIRMED); v3 uses ``Execution``. ``positions`` exists in v3 only (v2 answers 404).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from krakked.sim.futures_book import (
    ACTION_INFO,
    CONTRACTS,
    EXEC_CASH,
    EXEC_POSITION,
    FUNDING,
    SCALE,
    Contract,
    FuturesBook,
    PriceSource,
    fmt_scaled,
    iso_ms,
)
from krakked.sim.protocol import FuturesError, SimContext

__all__ = ["ACCOUNT_LOG_MAX", "DERIVATIVES", "HISTORY", "account_log_cost"]

ACCOUNT_LOG_DEFAULT = 500
ACCOUNT_LOG_MAX = 100_000

_INVERSE_XBT = Contract("PI_XBTUSD", "XBT:USD", ("XXBTZUSD", "XBTUSD"), 1.0, SCALE // 2, SCALE,
                        "in_xbtusd")


def _invalid() -> FuturesError:
    return FuturesError("invalidArgument", 400)


def _iso(seconds: float) -> str:
    return iso_ms(int(seconds * 1000))


# --- parameters -------------------------------------------------------------------------------


def _int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _invalid() from None
    if not value.is_finite() or value != value.to_integral_value():
        raise _invalid()
    return int(value)


def _sort(query: Mapping[str, str]) -> str:
    sort = (query.get("sort") or "desc").strip().lower()
    if sort not in ("asc", "desc"):
        raise _invalid()
    return sort


def _count(query: Mapping[str, str], default: int, ceiling: int) -> int:
    count = _int(query, "count")
    if count is None:
        return default
    if count < 1:
        raise _invalid()
    return min(count, ceiling)


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise _invalid()


def _contract_index(book: FuturesBook, query: Mapping[str, str]) -> int | None:
    """The ``tradeable`` filter as a contract index; -1 matches nothing (unknown symbol)."""
    raw = query.get("tradeable", "").strip().upper()
    if not raw:
        return None
    return next((i for i, c in enumerate(book.contracts) if c.symbol == raw), -1)


def _token(book: FuturesBook, name: str, sort: str, index: int) -> str:
    sig = hashlib.sha256(f"{book.seed_text}|{name}|{sort}|{index}".encode()).hexdigest()[:16]
    return base64.b64encode(f"{name}|{sort}|{index}|{sig}".encode()).decode()


def _untoken(book: FuturesBook, name: str, sort: str, token: str) -> int:
    """The row place a continuation token stands for; ``invalidArgument`` unless it is one of
    ours for this endpoint and sort."""
    try:
        text = base64.b64decode(token.strip(), validate=True).decode()
        t_name, t_sort, raw_index, _sig = text.split("|")
        index = int(raw_index)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise _invalid() from None
    if (t_name, t_sort) != (name, sort) or _token(book, name, sort, index) != token.strip():
        raise _invalid()
    return index


def _select(lo: int, hi: int, sort: str, count: int, keep: Callable[[int], bool] | None
            ) -> tuple[list[int], bool]:
    """Up to ``count`` row places in [lo, hi) in ``sort`` order passing ``keep``, and whether
    another matching row follows."""
    if keep is None:
        if hi - lo <= count:
            picked = list(range(lo, hi))
            return (picked if sort == "asc" else picked[::-1]), False
        if sort == "asc":
            return list(range(lo, lo + count)), True
        return list(range(hi - 1, hi - 1 - count, -1)), True
    out: list[int] = []
    places = range(lo, hi) if sort == "asc" else range(hi - 1, lo - 1, -1)
    for i in places:
        if keep(i):
            if len(out) == count:
                return out, True
            out.append(i)
    return out, False


def _window(ts: Any, query: Mapping[str, str], now_ms: int) -> tuple[int, int]:
    """[lo, hi) of the rows (sorted by ``ts``) with since <= ts < before and ts <= now."""
    since, before = _int(query, "since"), _int(query, "before")
    lo = 0 if since is None else bisect.bisect_left(ts, since)
    hi = bisect.bisect_right(ts, now_ms)
    if before is not None:
        hi = min(hi, bisect.bisect_left(ts, before))
    return lo, hi


def _tokened(book: FuturesBook, name: str, query: Mapping[str, str], sort: str, lo: int,
             hi: int) -> tuple[int, int]:
    token = query.get("continuation_token", "").strip()
    if not token:
        return lo, hi
    place = _untoken(book, name, sort, token)
    return (max(lo, place + 1), hi) if sort == "asc" else (lo, min(hi, place))


# --- history: executions ----------------------------------------------------------------------


def execution_element(book: FuturesBook, i: int, version: str = "v3") -> dict[str, Any]:
    """Execution ``i`` as a history element (our side = the order with our ``accountUid``)."""
    ts = book.x_ts[i]
    contract = book.contracts[book.x_contract[i]]
    qty, price = book.x_qty[i], book.x_price[i]
    buy = book.x_dir[i] > 0
    maker = bool(book.x_maker[i])
    order = book.x_order[i]
    filled = book.x_filled[i]
    ours = {
        "uid": book.uid("order", order), "accountUid": book.account_uid,
        "tradeable": contract.symbol, "direction": "Buy" if buy else "Sell",
        "quantity": fmt_scaled(book.o_qty[order]), "filled": fmt_scaled(filled),
        "limitPrice": fmt_scaled(book.o_limit[order]),
        "orderType": "Limit" if maker else "IoC", "clientId": "", "reduceOnly": False,
        "timestamp": book.o_ts[order], "lastUpdateTimestamp": ts, "spotData": None,
    }
    theirs = {
        "uid": book.uid("counter-order", i), "accountUid": book.counterparty(i),
        "tradeable": contract.symbol, "direction": "Sell" if buy else "Buy",
        "quantity": fmt_scaled(qty), "filled": fmt_scaled(qty), "limitPrice": fmt_scaled(price),
        "orderType": "IoC" if maker else "Limit", "clientId": "", "reduceOnly": False,
        "timestamp": ts - (5 if maker else 60_000 + i % 3_000_000), "lastUpdateTimestamp": ts,
        "spotData": None,
    }
    our_data = {"fee": fmt_scaled(book.x_fee[i]), "positionSize": fmt_scaled(book.x_new_pos[i]),
                "feeCalculationInfo": []}
    their_data = {"fee": None, "positionSize": None, "feeCalculationInfo": []}
    execution = {
        "uid": book.uid("exec", i),
        "timestamp": ts,
        "quantity": fmt_scaled(qty),
        "price": fmt_scaled(price),
        "markPrice": fmt_scaled(book.x_mark[i]),
        "limitFilled": filled == book.o_qty[order] if maker else True,
        "usdValue": fmt_scaled(qty * price // SCALE),
        "makerOrder": ours if maker else theirs,
        "takerOrder": theirs if maker else ours,
        "makerOrderData": our_data if maker else their_data,
        "takerOrderData": their_data if maker else our_data,
    }
    key = "execution" if version == "v2" else "Execution"
    return {"uid": book.uid("element", i), "timestamp": ts,
            "event": {key: {"execution": execution, "takerReducedQuantity": ""}}}


def executions(sim: SimContext, book: FuturesBook, query: dict[str, str], version: str
               ) -> dict[str, Any]:
    """History ``executions``: ``{"accountUid", "len", "serverTime", "elements": [...],
    "continuationToken"?}``; elements carry ``uid`` (the element's), ``timestamp`` (ms) and
    ``event.Execution.execution`` whose ``uid`` the account log's ``execution`` field names.
    Default count and ceiling: ``config.history_page_max``."""
    sort = _sort(query)
    ceiling = sim.config.history_page_max
    count = _count(query, ceiling, ceiling)
    now_ms = book.now_ms()
    lo, hi = _window(book.x_ts, query, now_ms)
    lo, hi = _tokened(book, "executions", query, sort, lo, hi)
    ci = _contract_index(book, query)
    keep = None if ci is None else (lambda i: book.x_contract[i] == ci)
    places, more = _select(lo, hi, sort, count, keep)
    elements = [execution_element(book, i, version) for i in places]
    out: dict[str, Any] = {"accountUid": book.account_uid, "len": len(elements),
                           "serverTime": iso_ms(now_ms), "elements": elements}
    if more:
        out["continuationToken"] = _token(book, "executions", sort, places[-1])
    return out


# --- history: positions -----------------------------------------------------------------------

_CHANGE_FLAGS = {"opened": "open", "closed": "close", "increased": "increase",
                 "decreased": "decrease", "reversed": "reverse", "no_change": "noChange"}
_REASON_FLAGS = {"trades": "trade", "funding_realization": "fundingRealisation",
                 "settlement": "settlement"}


def _position_change(old: int, new: int) -> str:
    if old == new:
        return "noChange"
    if old == 0:
        return "open"
    if new == 0:
        return "close"
    if (old > 0) != (new > 0):
        return "reverse"
    return "increase" if abs(new) > abs(old) else "decrease"


def _opt(n: int) -> str | None:
    return fmt_scaled(n) if n else None


def _position_kind(book: FuturesBook, p: int) -> tuple[int, str, str]:
    """(contract index, positionChange, updateReason) of position update ``p``."""
    code = book.pos_code[p]
    index, kind = code >> 2, code & 3
    if kind == FUNDING:
        return book.f_contract[index], "noChange", "fundingRealisation"
    return (book.x_contract[index],
            _position_change(book.x_old_pos[index], book.x_new_pos[index]), "trade")


def _position_update(book: FuturesBook, p: int) -> tuple[int, dict[str, Any]]:
    code = book.pos_code[p]
    index, kind = code >> 2, code & 3
    ts = book.pos_ts[p]
    if kind == FUNDING:
        ci = book.f_contract[index]
        pos = book.f_pos[index]
        return ci, {
            "accountUid": book.account_uid, "tradeable": book.contracts[ci].symbol,
            "oldPosition": fmt_scaled(pos), "newPosition": fmt_scaled(pos),
            "oldAverageEntryPrice": _opt(book.f_avg[index]),
            "newAverageEntryPrice": _opt(book.f_avg[index]),
            "positionChange": "noChange", "updateReason": "fundingRealisation",
            "realizedPnL": "0", "realizedFunding": fmt_scaled(book.f_amount[index]),
            "fee": "0", "feeCurrency": "USD", "executionUid": None, "executionPrice": None,
            "executionSize": None, "fillTime": None, "timestamp": ts,
        }
    ci = book.x_contract[index]
    old, new = book.x_old_pos[index], book.x_new_pos[index]
    return ci, {
        "accountUid": book.account_uid, "tradeable": book.contracts[ci].symbol,
        "oldPosition": fmt_scaled(old), "newPosition": fmt_scaled(new),
        "oldAverageEntryPrice": _opt(book.x_old_avg[index]),
        "newAverageEntryPrice": _opt(book.x_new_avg[index]),
        "positionChange": _position_change(old, new), "updateReason": "trade",
        "realizedPnL": fmt_scaled(book.x_pnl[index]), "realizedFunding": "0",
        "fee": fmt_scaled(book.x_fee[index]), "feeCurrency": "USD",
        "executionUid": book.uid("exec", index), "executionPrice": fmt_scaled(book.x_price[index]),
        "executionSize": fmt_scaled(book.x_qty[index]), "fillTime": ts, "timestamp": ts,
    }


def position_element(book: FuturesBook, p: int) -> dict[str, Any]:
    """Position update ``p`` as a history element: ``{"uid", "timestamp",
    "event": {"PositionUpdate": {...}}}`` (sizes signed, short < 0; decimals as strings)."""
    _, update = _position_update(book, p)
    return {"uid": book.uid("position", p), "timestamp": book.pos_ts[p],
            "event": {"PositionUpdate": update}}


def positions(sim: SimContext, book: FuturesBook, query: dict[str, str], version: str
              ) -> dict[str, Any]:
    """History ``positions`` (v3): one ``PositionUpdate`` per execution (updateReason
    ``trade``) and per daily funding realisation of an open position (``fundingRealisation``,
    positionChange ``noChange``). Filters ``tradeable``; ``opened``/``closed``/``increased``/
    ``decreased``/``reversed``/``no_change`` and ``trades``/``funding_realization``/
    ``settlement`` keep only the kinds set true (none set = all; UNCONFIRMED)."""
    sort = _sort(query)
    ceiling = sim.config.history_page_max
    count = _count(query, ceiling, ceiling)
    now_ms = book.now_ms()
    lo, hi = _window(book.pos_ts, query, now_ms)
    lo, hi = _tokened(book, "positions", query, sort, lo, hi)
    ci = _contract_index(book, query)
    changes = {v for k, v in _CHANGE_FLAGS.items() if _flag(query, k)}
    reasons = {v for k, v in _REASON_FLAGS.items() if _flag(query, k)}
    keep: Callable[[int], bool] | None = None
    if ci is not None or changes or reasons:
        def keep(p: int) -> bool:
            contract, change, reason = _position_kind(book, p)
            return ((ci is None or contract == ci) and (not changes or change in changes)
                    and (not reasons or reason in reasons))
    places, more = _select(lo, hi, sort, count, keep)
    elements = [position_element(book, p) for p in places]
    out: dict[str, Any] = {"accountUid": book.account_uid, "len": len(elements),
                           "serverTime": iso_ms(now_ms), "elements": elements}
    if more:
        out["continuationToken"] = _token(book, "positions", sort, places[-1])
    return out


# --- history: account log ---------------------------------------------------------------------


def _float(n: int) -> float:
    return n / SCALE


def log_row(book: FuturesBook, r: int) -> dict[str, Any]:
    """Account-log row ``r`` (0-based; its ``id`` is ``r + 1``). Numbers are JSON doubles."""
    code = book.log_code[r]
    index, kind = code >> 2, code & 3
    row: dict[str, Any] = {
        "id": r + 1, "date": iso_ms(book.log_ts[r]), "booking_uid": book.uid("booking", r),
        "info": ACTION_INFO[kind], "asset": "usd", "margin_account": "flex", "contract": None,
        "execution": None, "fee": None, "funding_rate": None, "mark_price": None,
        "trade_price": None, "old_balance": 0.0, "new_balance": 0.0,
        "old_average_entry_price": None, "new_average_entry_price": None, "realized_pnl": None,
        "realized_funding": None, "collateral": "USD", "conversion_spread_percentage": None,
        "liquidation_fee": None,
    }
    if kind in (EXEC_CASH, EXEC_POSITION):
        contract = book.contracts[book.x_contract[index]]
        row.update(contract=contract.symbol, execution=book.uid("exec", index),
                   mark_price=_float(book.x_mark[index]),
                   trade_price=_float(book.x_price[index]))
        if kind == EXEC_CASH:
            row.update(fee=_float(book.x_fee[index]), realized_pnl=_float(book.x_pnl[index]),
                       old_balance=_float(book.x_cash_old[index]),
                       new_balance=_float(book.x_cash_new[index]))
        else:
            row.update(asset=contract.symbol.lower(), collateral=None,
                       old_balance=_float(book.x_old_pos[index]),
                       new_balance=_float(book.x_new_pos[index]),
                       old_average_entry_price=_float(book.x_old_avg[index]) or None,
                       new_average_entry_price=_float(book.x_new_avg[index]) or None)
    elif kind == FUNDING:
        row.update(contract=book.contracts[book.f_contract[index]].symbol,
                   funding_rate=book.f_rate[index], mark_price=_float(book.f_mark[index]),
                   realized_funding=_float(book.f_amount[index]),
                   old_balance=_float(book.f_cash_old[index]),
                   new_balance=_float(book.f_cash_new[index]))
    else:
        row.update(old_balance=_float(book.t_cash_old[index]),
                   new_balance=_float(book.t_cash_new[index]))
    return row


def account_log(sim: SimContext, book: FuturesBook, query: dict[str, str], version: str
                ) -> dict[str, Any]:
    """History ``account-log``: ``{"accountUid", "logs": [...]}``, no continuation token.
    See the module docstring for the window (``since`` inclusive, ``before`` exclusive,
    ``from``/``to`` inclusive ids) and the shared-timestamp caveat."""
    sort = _sort(query)
    count = _count(query, ACCOUNT_LOG_DEFAULT, ACCOUNT_LOG_MAX)
    now_ms = book.now_ms()
    lo, hi = _window(book.log_ts, query, now_ms)
    first, last = _int(query, "from"), _int(query, "to")
    if first is not None:
        lo = max(lo, first - 1)
    if last is not None:
        hi = min(hi, last)
    infos = {part.strip().lower() for part in query.get("info", "").split(",") if part.strip()}
    keep: Callable[[int], bool] | None = None
    if infos:
        kinds = {kind for kind, text in ACTION_INFO.items() if text in infos}

        def keep(r: int) -> bool:
            return book.log_code[r] & 3 in kinds
    places, _ = _select(max(lo, 0), hi, sort, count, keep)
    return {"accountUid": book.account_uid, "logs": [log_row(book, r) for r in places]}


def account_log_cost(query: Mapping[str, str]) -> float:
    """History tokens of an account-log call by ``count`` (default 500 -> 3), as
    https://docs.kraken.com/api/docs/guides/futures-rate-limits prices it."""
    try:
        count = int(query.get("count") or ACCOUNT_LOG_DEFAULT)
    except ValueError:
        count = ACCOUNT_LOG_DEFAULT
    for limit, cost in ((25, 1), (50, 2), (1000, 3), (5000, 6)):
        if count <= limit:
            return float(cost)
    return 10.0


# --- /derivatives/api/v3 ----------------------------------------------------------------------


def _rng(sim: SimContext, *parts: object) -> random.Random:
    return random.Random("|".join(map(str, ("krakked-sim-tickers", sim.config.seed, *parts))))


def _tick_places(contract: Contract) -> int:
    places, tick = 0, contract.tick
    while tick % SCALE and places < 8:
        tick *= 10
        places += 1
    return places


def _last_friday(year: int, month: int) -> datetime:
    nxt = datetime(year + month // 12, month % 12 + 1, 1, 8, tzinfo=UTC)
    day = nxt - timedelta(days=1)
    while day.weekday() != 4:
        day -= timedelta(days=1)
    return day


def _month_expiry(now: float) -> datetime:
    today = datetime.fromtimestamp(now, UTC)
    expiry = _last_friday(today.year, today.month)
    if expiry <= today:
        month = today.month % 12 + 1
        expiry = _last_friday(today.year + (today.month == 12), month)
    return expiry


def _market_ticker(sim: SimContext, prices: PriceSource, contract: Contract, now: float, *,
                   tag: str = "perpetual", symbol: str | None = None, basis: float = 0.0
                   ) -> dict[str, Any]:
    symbol = symbol or contract.symbol
    rng = _rng(sim, symbol, int(now // 3600))
    places = _tick_places(contract)
    index = prices.exact(contract, now)
    mark = index * (1 + basis + rng.uniform(-0.0002, 0.0002))
    day_ago = prices.exact(contract, now - 86_400)
    samples = [prices.exact(contract, now - k * 3600) for k in range(25)]
    half_spread = max(contract.tick / SCALE, mark * 0.00005)
    last = mark * (1 + rng.uniform(-0.0003, 0.0003))
    vol24h = round(rng.uniform(2_000_000, 60_000_000) / index, 4)
    ticker: dict[str, Any] = {
        "tag": tag, "pair": contract.pair, "symbol": symbol,
        "markPrice": round(mark, places + 1),
        "bid": round(mark - half_spread, places), "bidSize": round(rng.uniform(0.1, 20), 4),
        "ask": round(mark + half_spread, places), "askSize": round(rng.uniform(0.1, 20), 4),
        "vol24h": vol24h, "volumeQuote": round(vol24h * index, 2),
        "openInterest": round(rng.uniform(500_000, 20_000_000) / index, 4),
        "open24h": round(day_ago, places), "high24h": round(max(samples) * 1.001, places),
        "low24h": round(min(samples) * 0.999, places), "indexPrice": round(index, 2),
        "last": round(last, places), "lastTime": _iso(now - rng.uniform(0.1, 30)),
        "lastSize": round(rng.uniform(0.001, 2), 4), "suspended": False,
    }
    if tag == "perpetual":
        rate = rng.gauss(1e-5, 3e-5)
        ticker["fundingRate"] = rate * index
        ticker["fundingRatePrediction"] = (rate + rng.gauss(0, 5e-6)) * index
    ticker["postOnly"] = False
    ticker["change24h"] = (last - day_ago) / day_ago * 100 if day_ago else 0.0
    return ticker


def tickers(sim: SimContext, book: FuturesBook | None, query: dict[str, str]) -> dict[str, Any]:
    """Public ``tickers``: the perpetuals (PI_XBTUSD, PF_XBTUSD, PF_ETHUSD, PF_SOLUSD), a month
    future (``FI_XBTUSD_<yymmdd>``, last Friday of the month) and index tickers (``in_*``, only
    symbol/last/lastTime). Prices follow the Spot market at the clock; numbers are JSON
    numbers."""
    now = sim.now()
    prices = PriceSource(sim.market)
    out = [_market_ticker(sim, prices, _INVERSE_XBT, now)]
    out += [_market_ticker(sim, prices, c, now) for c in CONTRACTS]
    expiry = _month_expiry(now)
    days = max(0.0, (expiry.timestamp() - now) / 86_400)
    out.append(_market_ticker(sim, prices, _INVERSE_XBT, now, tag="month",
                              symbol=f"FI_XBTUSD_{expiry:%y%m%d}", basis=days * 0.0002))
    for contract in CONTRACTS[:2]:
        out.append({"symbol": contract.index, "last": round(prices.exact(contract, now), 1),
                    "lastTime": _iso(int(now))})
    return {"tickers": out}


def instruments(sim: SimContext, book: FuturesBook | None, query: dict[str, str]
                ) -> dict[str, Any]:
    """Public ``instruments``: contract specifications of the simulated contracts."""
    margin = [{"contracts": 0, "initialMargin": 0.02, "maintenanceMargin": 0.01},
              {"contracts": 500_000, "initialMargin": 0.04, "maintenanceMargin": 0.02}]
    out: list[dict[str, Any]] = []
    for contract in (_INVERSE_XBT, *CONTRACTS):
        flex = contract.symbol.startswith("PF_")
        precision = 0
        step = contract.step
        while step % SCALE and precision < 8:
            step *= 10
            precision += 1
        item: dict[str, Any] = {
            "symbol": contract.symbol,
            "type": "flexible_futures" if flex else "futures_inverse",
            "tradeable": True,
            "tickSize": contract.tick / SCALE,
            "contractSize": 1,
            "impactMidSize": 1,
            "maxPositionSize": 1_000_000,
            "openingDate": "2022-01-01T00:00:00.000Z",
            "marginLevels": margin,
            "fundingRateCoefficient": 8,
            "maxRelativeFundingRate": 0.001,
            "contractValueTradePrecision": precision if flex else 0,
            "postOnly": False,
            "feeScheduleUid": "5b755fea-c5b0-4307-a66e-b392cd5bd931",
            "retailMarginLevels": margin,
            "category": "Layer 1",
            "tags": [],
        }
        if not flex:
            item["underlying"] = "rr_xbtusd"
        out.append(item)
    return {"instruments": out}


def accounts(sim: SimContext, book: FuturesBook, query: dict[str, str]) -> dict[str, Any]:
    """``accounts``: ``{"accounts": {"cash": {...}, "flex": {...}}}`` — the flex (multi-
    collateral) account's USD is the account log's last cash balance; its PnL values the open
    positions at the market's current prices."""
    now = sim.now()
    cash = _float(book.cash_at())
    pnl = 0.0
    initial = 0.0
    for ci, size, avg, _ in book.position_at():
        mark = book.index_price(book.contracts[ci], now)
        pnl += (mark - avg / SCALE) * size / SCALE
        initial += abs(size) / SCALE * mark * 0.02
    equity = cash + pnl
    flex = {
        "type": "multiCollateralMarginAccount",
        "currencies": {"USD": {"quantity": cash, "value": cash, "collateral": cash,
                               "available": cash - initial}},
        "initialMargin": initial, "initialMarginWithOrders": initial,
        "maintenanceMargin": initial / 2, "balanceValue": cash, "portfolioValue": equity,
        "collateralValue": cash, "pnl": pnl, "unrealizedFunding": 0.0, "totalUnrealized": pnl,
        "totalUnrealizedAsMargin": pnl, "availableMargin": equity - initial,
        "marginEquity": equity,
    }
    return {"accounts": {"cash": {"type": "cashAccount", "balances": {"usd": 0.0, "xbt": 0.0}},
                         "flex": flex}}


def openpositions(sim: SimContext, book: FuturesBook, query: dict[str, str]) -> dict[str, Any]:
    """``openpositions``: one entry per contract whose position (after the last visible
    execution) is not flat: side, symbol, price (average entry), size (unsigned), fillTime."""
    out = []
    for ci, size, avg, last_ms in book.position_at():
        out.append({
            "side": "long" if size > 0 else "short", "symbol": book.contracts[ci].symbol,
            "price": avg / SCALE, "fillTime": iso_ms(last_ms), "size": abs(size) / SCALE,
            "unrealizedFunding": 0.0, "pnlCurrency": "USD", "maxFixedLeverage": 50.0,
        })
    return {"openPositions": out}


def fills(sim: SimContext, book: FuturesBook, query: dict[str, str]) -> dict[str, Any]:
    """``fills``: the last 100 fills (newest first), or the 100 before ``lastFillTime``
    (ISO 8601, exclusive)."""
    now_ms = book.now_ms()
    hi = bisect.bisect_right(book.x_ts, now_ms)
    raw = query.get("lastFillTime", "").strip()
    if raw:
        try:
            stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise FuturesError("invalidArgument") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        hi = min(hi, bisect.bisect_left(book.x_ts, int(stamp.timestamp() * 1000)))
    out = []
    for i in range(hi - 1, max(-1, hi - 101), -1):
        out.append({
            "fill_id": book.uid("exec", i), "symbol": book.contracts[book.x_contract[i]].symbol,
            "side": "buy" if book.x_dir[i] > 0 else "sell", "order_id": book.uid(
                "order", book.x_order[i]), "size": book.x_qty[i] / SCALE,
            "price": book.x_price[i] / SCALE, "fillTime": iso_ms(book.x_ts[i]),
            "fillType": "maker" if book.x_maker[i] else "taker",
        })
    return {"fills": out}


DerivativesHandler = Callable[[SimContext, Any, dict[str, str]], dict[str, Any]]
HistoryHandler = Callable[[SimContext, FuturesBook, dict[str, str], str], dict[str, Any]]

DERIVATIVES: dict[str, tuple[DerivativesHandler, bool, float]] = {
    "tickers": (tickers, False, 0.0),
    "instruments": (instruments, False, 0.0),
    "accounts": (accounts, True, 2.0),
    "openpositions": (openpositions, True, 2.0),
    "fills": (fills, True, 2.0),
}
"""``/derivatives/api/v3/<name>`` -> (handler, private, cost units)."""


def _one(query: Mapping[str, str]) -> float:
    return 1.0


HISTORY: dict[str, tuple[HistoryHandler, set[str], Callable[[Mapping[str, str]], float]]] = {
    "executions": (executions, {"v2", "v3"}, _one),
    "account-log": (account_log, {"v2", "v3"}, account_log_cost),
    "positions": (positions, {"v3"}, _one),
}
"""``/api/history/<version>/<name>`` -> (handler, versions served, tokens of a call)."""
