"""The simulator's Spot public endpoints (``/0/public/<Method>``), shaped as Kraken documents its
Spot market data (https://docs.kraken.com/api/docs/guides/spot-rest-intro and the endpoint pages
under https://docs.kraken.com/api/docs/rest-api/, e.g. ``get-ohlc-data``).

Each handler takes the simulator and the request's parameters and returns Kraken's ``result``;
errors are raised as ``SpotError`` with Kraken's strings. ``pair`` accepts a pair id, altname or
wsname; result keys are always Kraken's pair ids (``XXBTZUSD`` even when ``XBTUSD`` was asked).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from krakked.sim.market import parse_since_ns
from krakked.sim.pairs import SimPair
from krakked.sim.protocol import SimContext, SpotError

__all__ = ["HANDLERS"]

_INVALID = "EGeneral:Invalid arguments"
_UNKNOWN_PAIR = "EQuery:Unknown asset pair"


def _pair(sim: SimContext, params: dict[str, str]) -> SimPair:
    name = (params.get("pair") or "").strip()
    if not name:
        raise SpotError(_INVALID)
    try:
        return sim.market.pair(name)
    except KeyError:
        raise SpotError(_UNKNOWN_PAIR) from None


def _pairs(sim: SimContext, names: str) -> list[SimPair]:
    out: list[SimPair] = []
    for name in names.split(","):
        if not name.strip():
            continue
        try:
            pair = sim.market.pair(name)
        except KeyError:
            raise SpotError(_UNKNOWN_PAIR) from None
        if pair not in out:
            out.append(pair)
    return out


def _int(params: dict[str, str], name: str, default: int | None, low: int | None = None
         ) -> int | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        try:
            value = int(float(raw))
        except ValueError:
            raise SpotError(_INVALID) from None
    if low is not None and value < low:
        raise SpotError(_INVALID)
    return value


def time_(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """``{"unixtime": int, "rfc1123": "Thu, 06 Jul 23 18:50:48 +0000"}``."""
    now = sim.now()
    stamp = datetime.fromtimestamp(now, UTC)
    return {"unixtime": int(now), "rfc1123": stamp.strftime("%a, %d %b %y %H:%M:%S +0000")}


def system_status(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """``{"status": "online", "timestamp": "2023-07-06T18:52:00Z"}``."""
    stamp = datetime.fromtimestamp(int(sim.now()), UTC)
    return {"status": "online", "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}


def assets(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """Asset id -> ``{aclass, altname, decimals, display_decimals, [collateral_value,] status}``."""
    aclass = params.get("aclass") or "currency"
    if aclass not in ("currency", "tokenized_asset"):
        raise SpotError(_INVALID)
    if aclass == "tokenized_asset":
        return {}
    try:
        return sim.market.assets_result(params.get("asset") or None)
    except KeyError:
        raise SpotError("EQuery:Unknown asset") from None


def asset_pairs(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """Pair id -> AssetPairs row (or its ``info=leverage|fees|margin`` part)."""
    info = params.get("info") or "info"
    if info not in ("info", "leverage", "fees", "margin"):
        raise SpotError(_INVALID)
    if (params.get("aclass_base") or "currency") == "tokenized_asset":
        return {}
    names = params.get("pair") or ""
    chosen = _pairs(sim, names) if names.strip() else list(sim.market.pairs())
    return {p.id: p.row(info) for p in chosen}


def ticker(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """Pair id -> ``{a, b, c, v, p, t, l, h, o}``; no ``pair`` = every pair."""
    if (params.get("asset_class") or "") == "tokenized_asset":
        return {}
    names = params.get("pair") or ""
    chosen = _pairs(sim, names) if names.strip() else list(sim.market.pairs())
    return {p.id: sim.market.ticker(p.id) for p in chosen}


def ohlc(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """``{pair_id: [[time, o, h, l, c, vwap, volume, count], ...], "last": int}``."""
    pair = _pair(sim, params)
    interval = _int(params, "interval", 1)
    since = _int(params, "since", None)
    try:
        rows, last = sim.market.ohlc(pair.id, interval or 0, since)
    except ValueError:
        raise SpotError(_INVALID) from None
    return {pair.id: rows, "last": last}


def trades(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """``{pair_id: [[price, volume, time, side, type, misc, id, ns], ...], "last": "<ns>"}``."""
    pair = _pair(sim, params)
    count = min(_int(params, "count", 1000, low=1) or 1000, 1000)
    raw = (params.get("since") or "").strip()
    try:
        since_ns = parse_since_ns(raw) if raw else None
    except ValueError:
        raise SpotError(_INVALID) from None
    rows, last = sim.market.trades_since(pair.id, since_ns, count)
    return {pair.id: rows, "last": last}


def depth(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """``{pair_id: {"asks": [[price, volume, ts]], "bids": [...]}}``, ``count`` 1..500."""
    pair = _pair(sim, params)
    count = min(_int(params, "count", 100, low=1) or 100, 500)
    return {pair.id: sim.market.depth(pair.id, count)}


def spread(sim: SimContext, params: dict[str, str]) -> dict[str, Any]:
    """``{pair_id: [[time, bid, ask], ...], "last": int}`` (about the last 200 entries)."""
    pair = _pair(sim, params)
    since = _int(params, "since", None)
    rows, last = sim.market.spread(pair.id, since)
    return {pair.id: rows, "last": last}


HANDLERS: dict[str, Callable[[SimContext, dict[str, str]], Any]] = {
    "Time": time_,
    "SystemStatus": system_status,
    "Assets": assets,
    "AssetPairs": asset_pairs,
    "Ticker": ticker,
    "OHLC": ohlc,
    "Trades": trades,
    "Depth": depth,
    "Spread": spread,
}
