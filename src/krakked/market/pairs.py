"""The USD spot universe: which of Kraken's pairs a user trades, and the ``Universe`` that keeps
it current. (Pair metadata lives in ``market.metadata``, names in ``market.names``; both are
re-exported here, where the original module had them.)

Pure: functions take the parsed ``AssetPairs`` / ``Ticker`` / ``Assets`` results (as
``SpotClient`` returns them) and return values; fetching is injected (``Universe``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from krakked.config import RegionProfile, UniverseSettings
from krakked.errors import MalformedResponseError, UsageError
from krakked.market.metadata import (
    ASSET_ID_CODES,
    V2_ASSET_CODES,
    PairMetadata,
    _dec,
    _v1,
    parse_asset_pairs,
)
from krakked.market.names import (
    CSV_SYMBOL_MAP,
    DEFAULT_SYMBOLS,
    LEGACY_PAIR_IDS,
    PAIR_MAP,
    REVERSE_PAIR_MAP,
    PairResolver,
    _offline_resolver,
    resolve_offline,
)

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
    "snapshot_cannot_apply",
]

log = logging.getLogger("krakked.market.pairs")

USD_STABLECOINS: frozenset[str] = frozenset({"USDT", "USDC", "DAI", "PYUSD", "USDG", "USDQ"})
"""Assets valued at 1 USD when no ``<asset>USD`` ticker is available (liquidity floor only)."""

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
    available: bool = False  # a universe can be served (False: offline tables only, or a
    # stored snapshot that cannot apply the rules)
    updated_at: datetime | None = None
    stale: bool = False


def snapshot_cannot_apply(settings: UniverseSettings) -> list[str]:
    """The ``[universe]`` rules a stored ``pairs`` snapshot cannot apply: it keeps no leverage
    and no volumes."""
    missing = []
    if settings.exclude_leveraged_pairs:
        missing.append("universe.exclude_leveraged_pairs (the snapshot keeps no leverage)")
    if settings.min_24h_volume_usd:
        missing.append("universe.min_24h_volume_usd (it needs Kraken's Ticker)")
    return missing


class Universe:
    """The current universe and the one way names resolve.

    ``refresh()`` rebuilds it from fresh Kraken data (fetching is injected:
    ``fetch_asset_pairs()`` returns an ``AssetPairs`` result, ``fetch_tickers()`` a ``Ticker``
    result — needed only with a liquidity floor —, ``fetch_assets()`` an ``Assets`` result,
    optional); ``load_snapshot()`` installs a stored ``pairs`` snapshot instead, marked stale.
    Names resolve through what is loaded: live ``AssetPairs`` when fetched, else the stored
    snapshot, else the built-in offline tables (before either). A failed refresh raises and
    keeps the previous state. Reads are thread-safe (state swaps atomically).
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

    def refresh(self, *, updated_at: datetime | None = None) -> list[PairMetadata]:
        """Re-fetch ``AssetPairs`` (and ``Ticker`` when a floor is set), re-apply every rule,
        and return the new universe (fetched at ``updated_at``)."""
        if self._fetch_asset_pairs is None:
            raise UsageError("Universe has no fetch_asset_pairs; use load()")
        with self._lock:
            asset_pairs = self._fetch_asset_pairs()
            assets = self._fetch_assets() if self._fetch_assets is not None else None
            floor = self.settings.min_24h_volume_usd
            tickers = None
            if floor and self._fetch_tickers is not None:
                tickers = self._fetch_tickers()
            return self.load(asset_pairs, tickers, assets, updated_at=updated_at)

    def load(
        self,
        asset_pairs: Mapping[str, Any],
        tickers: Mapping[str, Any] | None = None,
        assets: Mapping[str, Any] | None = None,
        *,
        updated_at: datetime | None = None,
    ) -> list[PairMetadata]:
        """Replace the universe with one built from already-fetched results (fetched at
        ``updated_at``)."""
        all_pairs = apply_region(parse_asset_pairs(asset_pairs, assets), self.region)
        chosen = build_universe(all_pairs, self.region, self.settings, tickers)
        self._state = _Snapshot(all_pairs, tuple(chosen), PairResolver(all_pairs),
                                frozenset(m.canonical for m in chosen), True, updated_at)
        return chosen

    def load_snapshot(self, pairs: Mapping[str, PairMetadata],
                      updated_at: datetime | None) -> list[PairMetadata] | None:
        """Install a stored ``pairs`` snapshot (taken at ``updated_at``), marked stale: its
        pairs resolve names and give metadata; the universe is built from it unless a rule
        needs what a snapshot does not keep (``snapshot_cannot_apply``) — then None, and no
        universe is served."""
        all_pairs = apply_region(pairs, self.region)
        chosen = None if snapshot_cannot_apply(self.settings) else build_universe(
            all_pairs, self.region, self.settings)
        self._state = _Snapshot(all_pairs, tuple(chosen or ()), PairResolver(all_pairs),
                                frozenset(m.canonical for m in chosen or ()),
                                chosen is not None, updated_at, stale=True)
        return chosen

    @property
    def available(self) -> bool:
        """Whether a universe can be served (loaded from Kraken, or from a usable snapshot)."""
        return self._state.available

    @property
    def stale(self) -> bool:
        """True when what is loaded is a stored snapshot, not fresh ``AssetPairs``."""
        return self._state.stale

    @property
    def updated_at(self) -> datetime | None:
        """When the pair metadata in use was fetched from Kraken (None if unknown)."""
        return self._state.updated_at

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
