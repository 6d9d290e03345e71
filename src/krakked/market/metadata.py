"""Pair metadata from Kraken's ``AssetPairs``: the ``PairMetadata`` value, the asset-code
tables, and parsing. Pure: functions take results as ``SpotClient`` returns them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from krakked.errors import MalformedResponseError, StoreError

__all__ = ["ASSET_ID_CODES", "V2_ASSET_CODES", "PairMetadata", "parse_asset_pairs"]

log = logging.getLogger("krakked.market.pairs")

# --- Kraken knowledge, as data ---------------------------------------------------------------

V2_ASSET_CODES: dict[str, str] = {"XBT": "BTC", "XDG": "DOGE"}
"""Kraken's legacy (v1 / altname) asset code -> the ISO-style code WS v2 uses."""

_V1_ASSET_CODES: dict[str, str] = {v: k for k, v in V2_ASSET_CODES.items()}

ASSET_ID_CODES: dict[str, str] = {
    "XXBT": "XBT", "XETH": "ETH", "XXRP": "XRP", "XLTC": "LTC", "XXLM": "XLM", "XZEC": "ZEC",
    "XETC": "ETC", "XXMR": "XMR", "XXDG": "XDG", "XREP": "REP", "XMLN": "MLN", "XICN": "ICN",
    "ZUSD": "USD", "ZEUR": "EUR", "ZGBP": "GBP", "ZJPY": "JPY", "ZCAD": "CAD", "ZAUD": "AUD",
}
"""Kraken's legacy X/Z-prefixed asset ids -> asset code (``Assets`` altname)."""

# --- parsing helpers ---------------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    """A Kraken number (string, Decimal, int or float) as an exact Decimal; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedResponseError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise MalformedResponseError(f"not a number: {value!r}") from None


def _int(value: Any, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise MalformedResponseError("missing integer")
        return default
    number = _dec(value)
    if number is None or number != number.to_integral_value():
        raise MalformedResponseError(f"not an integer: {value!r}")
    return int(number)


def _levels(value: Any) -> tuple[int, ...]:
    if not value:
        return ()
    return tuple(_int(v) for v in value)


def _asset_code(asset_id: str, assets: Mapping[str, Any] | None) -> str:
    """Asset id (``XXBT``, ``ZUSD``, ``SOL``) -> asset code (``XBT``, ``USD``, ``SOL``)."""
    if assets is not None:
        row = assets.get(asset_id)
        if isinstance(row, Mapping) and row.get("altname"):
            return str(row["altname"]).upper()
    return ASSET_ID_CODES.get(asset_id, asset_id)


def _v2(code: str) -> str:
    return V2_ASSET_CODES.get(code, code)


def _v1(code: str) -> str:
    """Any spelling of an asset (``BTC``, ``XXBT``, ``XBT``) -> Kraken's asset code (``XBT``)."""
    code = code.strip().upper()
    code = ASSET_ID_CODES.get(code, code)
    return _V1_ASSET_CODES.get(code, code)


# --- PairMetadata ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairMetadata:
    """One Kraken spot pair, as ``AssetPairs`` describes it.

    ``base``/``quote`` are Kraken's asset codes as in the altname and wsname (``XBT``, ``USD``,
    ``XDG``); ``base_id``/``quote_id`` are the ``AssetPairs`` asset ids (``XXBT``, ``ZUSD``).
    ``ws_symbol`` is the WS v2 name (``BTC/USD``, ``DOGE/USD``; v2 rejects v1 names), ``wsname``
    Kraken's v1 name (``XBT/USD``). ``lot_size`` is the smallest volume increment,
    ``lot_multiplier`` × 10^-``volume_decimals``; ``tick_size`` the smallest price increment.
    Numbers are exact Decimals; ``ordermin``/``costmin`` are None when Kraken omits them.

    On Kraken a spot pair that also offers margin carries ``leverage_buy``/``leverage_sell``
    (``margin``); there are no margin-only pairs. ``margin_available`` says whether that
    leverage may be used in the account's region (``apply_region``): false wherever the region
    does not support margin, and false until a region is applied.
    """

    canonical: str
    base: str
    quote: str
    base_id: str
    quote_id: str
    rest_symbol: str
    ws_symbol: str
    wsname: str
    raw_name: str
    price_decimals: int
    volume_decimals: int
    cost_decimals: int
    lot_size: Decimal
    ordermin: Decimal | None
    costmin: Decimal | None
    tick_size: Decimal
    status: str = "online"
    leverage_buy: tuple[int, ...] = ()
    leverage_sell: tuple[int, ...] = ()
    aclass_base: str = "currency"
    margin_available: bool = False

    @property
    def margin(self) -> bool:
        """True when Kraken offers leverage on this pair (non-empty leverage_buy/sell)."""
        return bool(self.leverage_buy or self.leverage_sell)

    @property
    def internal_symbol(self) -> str:
        """The original system's name for this pair (``BTC/USDT``) — the WS v2 name."""
        return self.ws_symbol

    @classmethod
    def from_asset_pair(
        cls, raw_name: str, row: Mapping[str, Any], assets: Mapping[str, Any] | None = None
    ) -> PairMetadata:
        """Metadata for one ``AssetPairs`` entry; ``MalformedResponseError`` if it lacks altname
        or has malformed numbers. Missing ``status`` reads as ``online``, missing ``lot_multiplier``
        as 1, missing ``tick_size`` as 10^-pair_decimals."""
        altname = str(row.get("altname") or "").strip().upper()
        if not altname:
            raise MalformedResponseError(f"{raw_name}: no altname", endpoint="spot:AssetPairs")
        base_id = str(row.get("base") or "").strip().upper()
        quote_id = str(row.get("quote") or "").strip().upper()
        wsname = str(row.get("wsname") or "").strip().upper()
        parts = wsname.split("/")
        if len(parts) == 2 and all(parts):
            base, quote = parts
        else:
            base, quote = _asset_code(base_id, assets), _asset_code(quote_id, assets)
            if not (base and quote and altname == base + quote):
                base, quote = _split_altname(altname, base, quote)
            wsname = f"{base}/{quote}" if base and quote else ""
        price_decimals = _int(row.get("pair_decimals"))
        volume_decimals = _int(row.get("lot_decimals"))
        cost_decimals = _int(row.get("cost_decimals"), price_decimals)
        multiplier = _dec(row.get("lot_multiplier")) or Decimal(1)
        tick = _dec(row.get("tick_size")) or Decimal(1).scaleb(-price_decimals)
        return cls(
            canonical=altname,
            base=base,
            quote=quote,
            base_id=base_id or base,
            quote_id=quote_id or quote,
            rest_symbol=altname,
            ws_symbol=f"{_v2(base)}/{_v2(quote)}" if base and quote else altname,
            wsname=wsname,
            raw_name=str(raw_name),
            price_decimals=price_decimals,
            volume_decimals=volume_decimals,
            cost_decimals=cost_decimals,
            lot_size=multiplier * Decimal(1).scaleb(-volume_decimals),
            ordermin=_dec(row.get("ordermin")),
            costmin=_dec(row.get("costmin")),
            tick_size=tick,
            status=str(row.get("status") or "online"),
            leverage_buy=_levels(row.get("leverage_buy")),
            leverage_sell=_levels(row.get("leverage_sell")),
            aclass_base=str(row.get("aclass_base") or "currency"),
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PairMetadata:
        """Metadata rebuilt from a ``pairs`` table row (``to_row``'s columns), e.g. the stored
        snapshot when ``AssetPairs`` cannot be fetched. Decimals lose the store's trailing zeros
        (``0.100000000000000000`` -> ``0.1``). The table keeps no leverage, asset ids or cost
        decimals: leverage reads as none, ids as the asset codes, cost decimals as the price
        decimals. ``StoreError`` for a row without ``canonical`` or with malformed numbers."""
        try:
            return cls._from_row(row)
        except MalformedResponseError as exc:
            raise StoreError(f"pairs row {row.get('canonical')!r}: {exc}") from None

    @classmethod
    def _from_row(cls, row: Mapping[str, Any]) -> PairMetadata:
        canonical = str(row.get("canonical") or "").strip().upper()
        if not canonical:
            raise StoreError("pairs row without canonical")
        base = str(row.get("base") or "")
        quote = str(row.get("quote") or "")
        price_decimals = _int(row.get("price_decimals"))
        volume_decimals = _int(row.get("volume_decimals"))

        def tidy(value: Any) -> Decimal | None:
            number = _dec(value)
            return None if number is None else Decimal(format(number.normalize(), "f"))

        lot_size = tidy(row.get("lot_size"))
        tick_size = tidy(row.get("tick_size"))
        return cls(
            canonical=canonical,
            base=base,
            quote=quote,
            base_id=base,
            quote_id=quote,
            rest_symbol=str(row.get("rest_symbol") or canonical),
            ws_symbol=str(row.get("ws_symbol") or canonical),
            wsname=str(row.get("wsname") or ""),
            raw_name=str(row.get("raw_name") or canonical),
            price_decimals=price_decimals,
            volume_decimals=volume_decimals,
            cost_decimals=price_decimals,
            lot_size=lot_size if lot_size is not None else Decimal(1).scaleb(-volume_decimals),
            ordermin=tidy(row.get("ordermin")),
            costmin=tidy(row.get("costmin")),
            tick_size=tick_size if tick_size is not None else Decimal(1).scaleb(-price_decimals),
            status=str(row.get("status") or "online"),
        )

    def to_row(self, updated_at: datetime | None = None) -> dict[str, Any]:
        """A ``pairs`` table row: exactly the columns of ``krakked.store.base.PAIR_SCHEMA``."""
        return {
            "canonical": self.canonical,
            "base": self.base,
            "quote": self.quote,
            "rest_symbol": self.rest_symbol,
            "ws_symbol": self.ws_symbol,
            "wsname": self.wsname,
            "raw_name": self.raw_name,
            "price_decimals": self.price_decimals,
            "volume_decimals": self.volume_decimals,
            "lot_size": self.lot_size,
            "ordermin": self.ordermin,
            "costmin": self.costmin,
            "tick_size": self.tick_size,
            "status": self.status,
            "updated_at": updated_at,
        }


def _split_altname(altname: str, base: str, quote: str) -> tuple[str, str]:
    """Best-effort base/quote of an altname when the wsname is missing."""
    for q in (quote, *sorted(ASSET_ID_CODES.values(), key=len, reverse=True), "USDT", "USDC"):
        if q and altname.endswith(q) and len(altname) > len(q):
            return altname[: -len(q)], q
    return base, quote


def parse_asset_pairs(
    result: Mapping[str, Any], assets: Mapping[str, Any] | None = None
) -> dict[str, PairMetadata]:
    """Every usable pair of an ``AssetPairs`` result, keyed by canonical name (altname).

    Tolerant of Kraken's variations (missing ``status``/``lot_multiplier``/position limits,
    numbers as strings or Decimals). An entry that cannot be read is skipped with a warning;
    when two entries share an altname the first wins. ``assets`` (an ``Assets`` result) only
    helps name base and quote when an entry has no ``wsname``.
    """
    out: dict[str, PairMetadata] = {}
    for raw_name, row in result.items():
        if not isinstance(row, Mapping):
            log.warning("AssetPairs: entry %r is not an object; skipped", raw_name)
            continue
        try:
            meta = PairMetadata.from_asset_pair(str(raw_name), row, assets)
        except (MalformedResponseError, TypeError) as exc:
            log.warning("AssetPairs: entry %r unreadable (%s); skipped", raw_name, exc)
            continue
        if meta.canonical in out:
            log.debug("AssetPairs: %s and %s share altname %s; kept the first",
                      out[meta.canonical].raw_name, raw_name, meta.canonical)
            continue
        out[meta.canonical] = meta
    return out


