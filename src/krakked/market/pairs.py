"""Pair metadata from Kraken's ``AssetPairs``, the USD spot universe, and symbol resolution.

Pure: functions take the parsed ``AssetPairs`` / ``Ticker`` / ``Assets`` results (as
``SpotClient`` returns them) and return values; fetching is injected (``Universe``).

Names: the canonical pair name is Kraken's ``altname`` (``XBTUSD``, ``XBTUSDT``). A
``PairResolver`` accepts every spelling users meet — altname, pair id (``XXBTZUSD``), v1 wsname
(``XBT/USD``), WS v2 name (``BTC/USD``), slashless v2 (``BTCUSD``), any case, ``-``/``_``/space
as separators — for every pair of ``AssetPairs`` (any quote). Without ``AssetPairs`` the
built-in offline tables (``PAIR_MAP``, ``REVERSE_PAIR_MAP``, ``CSV_SYMBOL_MAP``) answer instead.
"""

from __future__ import annotations

import difflib
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from krakked.config import RegionProfile, UniverseSettings
from krakked.errors import MalformedResponseError, StoreError, UnknownPairError, UsageError

__all__ = [
    "ASSET_ID_CODES",
    "CSV_SYMBOL_MAP",
    "DEFAULT_SYMBOLS",
    "LEGACY_PAIR_IDS",
    "PAIR_MAP",
    "REVERSE_PAIR_MAP",
    "USD_STABLECOINS",
    "V2_ASSET_CODES",
    "PairMetadata",
    "PairResolver",
    "Universe",
    "apply_region",
    "build_universe",
    "estimate_24h_volume_usd",
    "parse_asset_pairs",
    "resolve_offline",
    "to_internal_symbol",
    "to_v2_symbol",
]

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

USD_STABLECOINS: frozenset[str] = frozenset({"USDT", "USDC", "DAI", "PYUSD", "USDG", "USDQ"})
"""Assets valued at 1 USD when no ``<asset>USD`` ticker is available (liquidity floor only)."""

PAIR_MAP: dict[str, str] = {
    # the original system's entries, unchanged
    "XRP/USDT": "XRPUSDT",
    "BTC/USDT": "XBTUSDT",
    "XRP/BTC": "XRPXBT",
    "ETH/USDT": "ETHUSDT",
    "SOL/USDT": "SOLUSDT",
    "ETH/BTC": "ETHXBT",
    "LTC/USDT": "LTCUSDT",
    "DOT/USDT": "DOTUSDT",
    "ADA/USDT": "ADAUSDT",
    "LINK/USDT": "LINKUSDT",
    # the major USD (and EUR) spot pairs
    "BTC/USD": "XBTUSD",
    "ETH/USD": "ETHUSD",
    "XRP/USD": "XRPUSD",
    "SOL/USD": "SOLUSD",
    "DOGE/USD": "XDGUSD",
    "ADA/USD": "ADAUSD",
    "DOT/USD": "DOTUSD",
    "LINK/USD": "LINKUSD",
    "LTC/USD": "LTCUSD",
    "BCH/USD": "BCHUSD",
    "AVAX/USD": "AVAXUSD",
    "ATOM/USD": "ATOMUSD",
    "UNI/USD": "UNIUSD",
    "XLM/USD": "XLMUSD",
    "ETC/USD": "ETCUSD",
    "XMR/USD": "XMRUSD",
    "ZEC/USD": "ZECUSD",
    "ALGO/USD": "ALGOUSD",
    "AAVE/USD": "AAVEUSD",
    "FIL/USD": "FILUSD",
    "NEAR/USD": "NEARUSD",
    "POL/USD": "POLUSD",
    "SHIB/USD": "SHIBUSD",
    "PEPE/USD": "PEPEUSD",
    "TRX/USD": "TRXUSD",
    "USDT/USD": "USDTUSD",
    "USDC/USD": "USDCUSD",
    "DAI/USD": "DAIUSD",
    "BTC/EUR": "XBTEUR",
    "ETH/EUR": "ETHEUR",
}
"""Internal symbol (the original system's, = WS v2 name) -> Kraken pair altname (canonical).

The first ten entries are the original system's table; the rest extend it with the major USD
pairs. Used offline, when ``AssetPairs`` cannot be fetched."""

REVERSE_PAIR_MAP: dict[str, str] = {v: k for k, v in PAIR_MAP.items()}
"""Kraken pair altname -> internal symbol (the inverse of ``PAIR_MAP``)."""

CSV_SYMBOL_MAP: dict[str, str] = {
    **{alt: internal for internal, alt in PAIR_MAP.items()},
    **{internal.replace("/", ""): internal for internal in PAIR_MAP},
}
"""CSV file-name stem variants -> internal symbol: Kraken's own file names are altnames
(``XBTUSDT``, ``XRPXBT``, ``XDGUSD``); other tools write the v2 codes (``BTCUSDT``, ``XRPBTC``,
``DOGEUSD``). Every value is a ``PAIR_MAP`` key."""

DEFAULT_SYMBOLS: list[str] = ["XRP/USDT", "BTC/USDT", "XRP/BTC"]
"""The original system's default symbols for gap filling and monitoring (internal names)."""

LEGACY_PAIR_IDS: dict[str, str] = {
    "XBTUSD": "XXBTZUSD", "ETHUSD": "XETHZUSD", "XRPUSD": "XXRPZUSD", "LTCUSD": "XLTCZUSD",
    "XLMUSD": "XXLMZUSD", "ETCUSD": "XETCZUSD", "XMRUSD": "XXMRZUSD", "ZECUSD": "XZECZUSD",
    "USDTUSD": "USDTZUSD", "XRPXBT": "XXRPXXBT", "ETHXBT": "XETHXXBT", "XBTEUR": "XXBTZEUR",
    "ETHEUR": "XETHZEUR",
}
"""Altname -> ``AssetPairs`` pair id, for the ``PAIR_MAP`` pairs whose id differs (offline)."""


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


# --- resolution --------------------------------------------------------------------------------

_SEPARATORS = str.maketrans({"-": "/", "_": "/", " ": "/", ":": "/"})


def _norm(name: str) -> str:
    return str(name).strip().upper().translate(_SEPARATORS)


def _spellings(meta: PairMetadata) -> tuple[list[str], list[str], list[str]]:
    """(ids, slashed, slashless) spellings of one pair, in decreasing priority."""
    ids = [meta.canonical, meta.raw_name]
    bases = dict.fromkeys([meta.base, _v2(meta.base), meta.base_id])
    quotes = dict.fromkeys([meta.quote, _v2(meta.quote), meta.quote_id])
    slashed = [meta.wsname, meta.ws_symbol] + [f"{b}/{q}" for b in bases for q in quotes]
    slashless = [f"{b}{q}" for b in bases for q in quotes]
    return ids, slashed, slashless


class PairResolver:
    """Resolves any spelling of a pair to its canonical name (Kraken's altname).

    Built from ``parse_asset_pairs`` output, it knows every pair of ``AssetPairs`` (any quote).
    Built from an empty mapping, it falls back to the offline tables (``PAIR_MAP``,
    ``CSV_SYMBOL_MAP``, ``LEGACY_PAIR_IDS``). Immutable after construction; thread-safe.
    """

    def __init__(
        self, pairs: Mapping[str, PairMetadata] | Iterable[PairMetadata] = (),
        *, aliases: Mapping[str, str] | None = None,
    ) -> None:
        metas = list(pairs.values()) if isinstance(pairs, Mapping) else list(pairs)
        self._meta: dict[str, PairMetadata] = {m.canonical: m for m in metas}
        index: dict[str, str] = {}
        if self._meta:
            tiers: tuple[list[tuple[str, str]], ...] = ([], [], [])
            for canonical in sorted(self._meta):
                for tier, names in zip(tiers, _spellings(self._meta[canonical]), strict=True):
                    tier.extend((n, canonical) for n in names if n)
            for tier in tiers:
                for name, canonical in tier:
                    index.setdefault(_norm(name), canonical)
        else:
            index.update(_offline_aliases())
        for name, canonical in (aliases or {}).items():
            index.setdefault(_norm(name), canonical)
        self._index = index
        self.offline = not self._meta

    @property
    def canonicals(self) -> frozenset[str]:
        """Every canonical name this resolver can return."""
        return frozenset(self._index.values())

    def get(self, name: str) -> str | None:
        """The canonical name for ``name``, or None when nothing matches."""
        key = _norm(name)
        found = self._index.get(key)
        if found is None and "/" in key:
            found = self._index.get(key.replace("/", ""))
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def resolve(self, name: str) -> str:
        """The canonical name of ``name``; ``UnknownPairError`` with up to 3 close canonical
        names if it names no known pair."""
        found = self.get(name)
        if found is None:
            raise UnknownPairError(str(name), self.close_matches(name))
        return found

    def close_matches(self, name: str, n: int = 3) -> tuple[str, ...]:
        """Up to ``n`` canonical names whose spellings are nearest to ``name``."""
        hits = difflib.get_close_matches(_norm(name), list(self._index), n=n * 4, cutoff=0.6)
        return tuple(dict.fromkeys(self._index[h] for h in hits))[:n]

    def metadata(self, name: str) -> PairMetadata:
        """The ``PairMetadata`` of ``name``; ``UnknownPairError`` if unknown, or if it is known
        only from the offline tables (which carry no metadata)."""
        canonical = self.resolve(name)
        meta = self._meta.get(canonical)
        if meta is None:
            raise UnknownPairError(str(name), (canonical,))
        return meta

    def v2_symbol(self, name: str) -> str:
        """The WS v2 name (``BTC/USD``) of any spelling of a pair."""
        canonical = self.resolve(name)
        meta = self._meta.get(canonical)
        return meta.ws_symbol if meta is not None else REVERSE_PAIR_MAP[canonical]


@functools.cache
def _offline_aliases() -> dict[str, str]:
    index: dict[str, str] = {}
    for alt in PAIR_MAP.values():
        index.setdefault(_norm(alt), alt)
    for alt, raw in LEGACY_PAIR_IDS.items():
        index.setdefault(_norm(raw), alt)
    for internal, alt in PAIR_MAP.items():
        base, quote = internal.split("/")
        index.setdefault(_norm(internal), alt)
        index.setdefault(_norm(f"{_v1(base)}/{_v1(quote)}"), alt)
    for stem, internal in CSV_SYMBOL_MAP.items():
        index.setdefault(_norm(stem), PAIR_MAP[internal])
    return index


@functools.cache
def _offline_resolver() -> PairResolver:
    return PairResolver({})


def resolve_offline(name: str) -> str:
    """Canonical name (altname, e.g. ``XBTUSDT``) of ``name`` from the built-in tables alone;
    ``UnknownPairError`` with close matches for a name they do not know."""
    return _offline_resolver().resolve(name)


def to_v2_symbol(name: str, resolver: PairResolver | None = None) -> str:
    """The WS v2 name (``BTC/USD``, ``DOGE/USD``, ``XRP/BTC``) of any spelling of a pair;
    through ``resolver`` if given, else the offline tables."""
    return (resolver or _offline_resolver()).v2_symbol(name)


def to_internal_symbol(canonical: str, resolver: PairResolver | None = None) -> str:
    """The original system's internal name (``XBTUSDT`` -> ``BTC/USDT``): ``REVERSE_PAIR_MAP``
    for its pairs, else the WS v2 name (the same convention)."""
    found = REVERSE_PAIR_MAP.get(str(canonical).strip().upper())
    return found if found is not None else to_v2_symbol(canonical, resolver)


# --- the universe ------------------------------------------------------------------------------


def _ticker_index(pairs: Mapping[str, PairMetadata], tickers: Mapping[str, Any]
                  ) -> dict[str, Mapping[str, Any]]:
    resolver = PairResolver(pairs)
    out: dict[str, Mapping[str, Any]] = {}
    for key, row in tickers.items():
        canonical = resolver.get(str(key)) if pairs else None
        if canonical is not None and isinstance(row, Mapping):
            out.setdefault(canonical, row)
    return out


def _field(row: Mapping[str, Any], key: str, i: int) -> Decimal | None:
    try:
        value = row[key]
        return _dec(value[i] if isinstance(value, list | tuple) else value)
    except (KeyError, IndexError, TypeError, MalformedResponseError):
        return None


def estimate_24h_volume_usd(
    pairs: Mapping[str, PairMetadata], tickers: Mapping[str, Any]
) -> dict[str, Decimal]:
    """Estimated 24 h traded value in USD per canonical pair: ``v[1]`` (24 h base volume) ×
    ``p[1]`` (24 h VWAP) in the quote currency, converted to USD by the last price (``c[0]``)
    of the quote's USD pair (``XBTUSD`` for XBT-quoted pairs; ``USD<quote>`` inverted if only
    that exists; 1 for USD and, lacking a pair, for ``USD_STABLECOINS``). Pairs without a
    ticker row or a conversion are absent. ``tickers`` may be keyed by any pair spelling.
    """
    by_pair = _ticker_index(pairs, tickers)
    by_assets = {(m.base, m.quote): m.canonical for m in pairs.values()}

    def usd_rate(code: str) -> Decimal | None:
        if code == "USD":
            return Decimal(1)
        direct = by_assets.get((code, "USD"))
        if direct is not None and direct in by_pair:
            last = _field(by_pair[direct], "c", 0)
            if last:
                return last
        inverse = by_assets.get(("USD", code))
        if inverse is not None and inverse in by_pair:
            last = _field(by_pair[inverse], "c", 0)
            if last:
                return 1 / last
        return Decimal(1) if code in USD_STABLECOINS else None

    out: dict[str, Decimal] = {}
    for canonical, row in by_pair.items():
        meta = pairs[canonical]
        volume, vwap = _field(row, "v", 1), _field(row, "p", 1)
        rate = usd_rate(meta.quote)
        if volume is not None and vwap is not None and rate is not None:
            out[canonical] = volume * vwap * rate
    return out


def apply_region(
    pairs: Mapping[str, PairMetadata], region: RegionProfile
) -> dict[str, PairMetadata]:
    """Every pair with ``margin_available`` set for ``region``: true only where the pair offers
    leverage and the region ``supports_margin``. Same keys and order as ``pairs``."""
    out: dict[str, PairMetadata] = {}
    for canonical, meta in pairs.items():
        available = meta.margin and region.supports_margin
        out[canonical] = (meta if meta.margin_available == available
                          else replace(meta, margin_available=available))
    return out


def build_universe(
    pairs: Mapping[str, PairMetadata],
    region: RegionProfile,
    settings: UniverseSettings,
    tickers: Mapping[str, Any] | None = None,
) -> list[PairMetadata]:
    """The spot universe: deduplicated, sorted by canonical name, ``margin_available`` set for
    the region (``apply_region``).

    1. Base set: pairs whose quote is the region's ``default_quote`` (``USD`` / ``ZUSD``), with
       ``status == "online"``. A pair that offers leverage is a spot pair too (Kraken has no
       margin-only pairs): it stays, and where the region does not support margin its leverage
       is simply never used. ``settings.exclude_leveraged_pairs`` drops every pair that offers
       leverage instead, whatever the region.
    2. Liquidity floor (when ``settings.min_24h_volume_usd`` > 0): base pairs whose
       ``estimate_24h_volume_usd`` is below it, or cannot be estimated (no ticker row), are
       dropped. ``tickers`` is then required (``UsageError`` without it).
    3. ``include_pairs`` (any spelling) are added when they exist in ``pairs`` — whatever their
       quote, leverage, status or volume (an explicit wish; a non-online one is logged);
       names that do not exist are ignored with a warning.
    4. ``exclude_pairs`` (any spelling) are removed; a pair in both lists is excluded.
    """
    pairs = apply_region(pairs, region)
    resolver = PairResolver(pairs)
    quote = _v1(region.default_quote)
    quote_id = region.default_quote.strip().upper()
    chosen: dict[str, PairMetadata] = {}
    for canonical in sorted(pairs):
        meta = pairs[canonical]
        if meta.quote != quote and meta.quote_id != quote_id:
            continue
        if meta.status != "online":
            continue
        if meta.margin and settings.exclude_leveraged_pairs:
            continue
        chosen[canonical] = meta

    floor = settings.min_24h_volume_usd
    if floor is not None and floor > 0:
        if tickers is None:
            raise UsageError("universe.min_24h_volume_usd is set: Ticker data is required")
        volumes = estimate_24h_volume_usd(pairs, tickers)
        limit = Decimal(repr(float(floor)))
        for canonical in list(chosen):
            volume = volumes.get(canonical)
            if volume is None or volume < limit:
                log.debug("universe: %s below the 24h volume floor (%s USD < %s)",
                          canonical, volume, limit)
                del chosen[canonical]

    for name in settings.include_pairs:
        canonical = resolver.get(name) if pairs else None
        if canonical is None:
            log.warning("universe.include_pairs: %r is not in AssetPairs; ignored", name)
            continue
        meta = pairs[canonical]
        if meta.status != "online":
            log.info("universe.include_pairs: %s included with status %s", canonical, meta.status)
        chosen[canonical] = meta

    for name in settings.exclude_pairs:
        canonical = resolver.get(name) if pairs else None
        if canonical is None:
            log.warning("universe.exclude_pairs: %r is not in AssetPairs; ignored", name)
            continue
        chosen.pop(canonical, None)

    return [chosen[c] for c in sorted(chosen)]


@dataclass(frozen=True)
class _Snapshot:
    all_pairs: Mapping[str, PairMetadata]
    pairs: tuple[PairMetadata, ...]
    resolver: PairResolver
    members: frozenset[str] = frozenset()


class Universe:
    """The current universe, rebuilt from fresh Kraken data by ``refresh()``.

    Fetching is injected: ``fetch_asset_pairs()`` returns an ``AssetPairs`` result,
    ``fetch_tickers()`` a ``Ticker`` result (needed only with a liquidity floor),
    ``fetch_assets()`` an ``Assets`` result (optional). Until the first successful refresh the
    universe is empty and names resolve through the offline tables. A failed refresh raises
    and keeps the previous universe. Reads are thread-safe (state swaps atomically).
    """

    def __init__(
        self,
        fetch_asset_pairs: Callable[[], Mapping[str, Any]] | None = None,
        *,
        region: RegionProfile | None = None,
        settings: UniverseSettings | None = None,
        fetch_tickers: Callable[[], Mapping[str, Any]] | None = None,
        fetch_assets: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.region = region or RegionProfile()
        self.settings = settings or UniverseSettings()
        self._fetch_asset_pairs = fetch_asset_pairs
        self._fetch_tickers = fetch_tickers
        self._fetch_assets = fetch_assets
        self._lock = threading.Lock()
        self._state = _Snapshot({}, (), _offline_resolver())

    def refresh(self) -> list[PairMetadata]:
        """Re-fetch ``AssetPairs`` (and ``Ticker`` when a floor is set), re-apply every rule,
        and return the new universe."""
        if self._fetch_asset_pairs is None:
            raise UsageError("Universe has no fetch_asset_pairs; use load()")
        with self._lock:
            asset_pairs = self._fetch_asset_pairs()
            assets = self._fetch_assets() if self._fetch_assets is not None else None
            floor = self.settings.min_24h_volume_usd
            tickers = None
            if floor and self._fetch_tickers is not None:
                tickers = self._fetch_tickers()
            return self.load(asset_pairs, tickers, assets)

    def load(
        self,
        asset_pairs: Mapping[str, Any],
        tickers: Mapping[str, Any] | None = None,
        assets: Mapping[str, Any] | None = None,
    ) -> list[PairMetadata]:
        """Replace the universe with one built from already-fetched results."""
        all_pairs = apply_region(parse_asset_pairs(asset_pairs, assets), self.region)
        chosen = build_universe(all_pairs, self.region, self.settings, tickers)
        self._state = _Snapshot(all_pairs, tuple(chosen), PairResolver(all_pairs),
                                frozenset(m.canonical for m in chosen))
        return chosen

    @property
    def pairs(self) -> tuple[PairMetadata, ...]:
        """The universe, sorted by canonical name."""
        return self._state.pairs

    @property
    def canonicals(self) -> list[str]:
        """Canonical names of the universe, sorted."""
        return [m.canonical for m in self._state.pairs]

    @property
    def all_pairs(self) -> Mapping[str, PairMetadata]:
        """Every pair of the last ``AssetPairs`` (any quote), by canonical name."""
        return self._state.all_pairs

    @property
    def resolver(self) -> PairResolver:
        """Resolves through all of the last ``AssetPairs`` (offline tables before the first)."""
        return self._state.resolver

    def resolve(self, name: str) -> str:
        """Canonical name of any spelling of any Kraken pair (not only the universe's)."""
        return self._state.resolver.resolve(name)

    def metadata(self, name: str) -> PairMetadata:
        """Metadata of any spelling of any Kraken pair."""
        return self._state.resolver.metadata(name)

    def __contains__(self, name: object) -> bool:
        state = self._state
        canonical = state.resolver.get(name) if isinstance(name, str) else None
        return canonical is not None and canonical in state.members

    def __iter__(self) -> Iterator[PairMetadata]:
        return iter(self._state.pairs)

    def __len__(self) -> int:
        return len(self._state.pairs)
