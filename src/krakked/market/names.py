"""Pair names: every spelling users meet resolved to the canonical one (Kraken's ``altname``).

A ``PairResolver`` accepts the altname (``XBTUSD``), the pair id (``XXBTZUSD``), the v1 wsname
(``XBT/USD``), the WS v2 name (``BTC/USD``), the slashless v2 (``BTCUSD``), any case, and
``-``/``_``/space as separators, for every pair of ``AssetPairs`` (any quote). Without
``AssetPairs`` the built-in offline tables (``PAIR_MAP``, ``REVERSE_PAIR_MAP``,
``CSV_SYMBOL_MAP``) answer instead. Pure.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping

from krakked.errors import UnknownPairError
from krakked.market.metadata import PairMetadata, _v1, _v2

__all__ = [
    "CSV_SYMBOL_MAP",
    "DEFAULT_SYMBOLS",
    "LEGACY_PAIR_IDS",
    "PAIR_MAP",
    "REVERSE_PAIR_MAP",
    "PairResolver",
    "resolve_offline",
]

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



