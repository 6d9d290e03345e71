"""``Market``: the market-data API in one object — universe, metadata, OHLC backfill and queries.

It ties the layers together (Spot client, pair universe, store, OHLC sync) the way the original
market-data module's functions did: ``get_universe``, ``get_pair_metadata``, ``backfill_ohlc``,
``get_ohlc``, ``get_ohlc_since``, ``refresh``, ``get_data_status``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx

from krakked.config import Settings, load_settings
from krakked.errors import KrakenError, StoreError, UnknownPairError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import Candle
from krakked.market.pairs import (
    PairMetadata,
    PairResolver,
    apply_region,
    build_universe,
    parse_asset_pairs,
)
from krakked.store import MarketStore, open_store
from krakked.store.arrow import PAIR_SCHEMA
from krakked.sync.ohlc import OhlcSyncResult, backfill_ohlc

__all__ = ["Market"]

log = logging.getLogger("krakked.api")


class Market:
    """Market data for the region's universe, stored in one market store.

    ``Market()`` uses the default store (a DuckDB file in the user data directory) and
    api.kraken.com; pass ``store=`` (a URL or a ``MarketStore``), ``client=`` or ``transport=``
    (e.g. ``Simulator().transport()``) to change either.

    The universe and pair metadata are fetched on first use. When ``AssetPairs`` cannot be
    fetched, the last ``pairs`` snapshot in the store is served instead, marked stale
    (``universe_is_stale``, ``universe_updated_at``, and a warning in the log); without one,
    the universe and metadata calls raise Kraken's error (never an empty universe), while
    names still resolve through the built-in offline tables.
    """

    def __init__(
        self,
        store: str | MarketStore | None = None,
        *,
        settings: Settings | None = None,
        client: SpotClient | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._own_store = not isinstance(store, MarketStore)
        self.store = store if isinstance(store, MarketStore) else open_store(
            store, settings=self.settings)
        self._own_client = client is None
        self.client = client or SpotClient(settings=self.settings, transport=transport)
        self._pairs: dict[str, PairMetadata] | None = None
        self._universe: list[PairMetadata] | None = None
        self._resolver: PairResolver | None = None
        self._pairs_error: KrakenError | None = None
        self._updated_at: datetime | None = None
        self._stale = False

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._own_store:
            self.store.close()
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Market:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- universe ------------------------------------------------------------------------------

    def refresh(self) -> list[str]:
        """Re-fetch AssetPairs (and Ticker when a liquidity floor is set), re-apply the region
        and ``[universe]`` rules, store the snapshot, and return the universe."""
        region = self.settings.region
        pairs = apply_region(parse_asset_pairs(self.client.get_asset_pairs()), region)
        tickers = None
        if self.settings.universe.min_24h_volume_usd:
            tickers = self.client.get_ticker()
        universe = build_universe(pairs, region, self.settings.universe, tickers)
        now = datetime.now(UTC)
        self._install(pairs, universe, now, stale=False, error=None)
        rows = [p.to_row(now) for p in pairs.values()]
        import pyarrow as pa

        self.store.write_pairs(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
        return [p.canonical for p in universe]

    def _install(self, pairs: dict[str, PairMetadata], universe: list[PairMetadata] | None,
                 updated_at: datetime | None, *, stale: bool, error: KrakenError | None) -> None:
        self._pairs, self._universe = pairs, universe
        self._resolver = PairResolver(pairs)  # empty: the offline tables
        self.store.set_resolver(self._resolver.resolve)
        self._updated_at, self._stale, self._pairs_error = updated_at, stale, error

    def _ensure_pairs(self) -> None:
        if self._pairs is None:
            try:
                self.refresh()
            except KrakenError as exc:
                self._fall_back_to_snapshot(exc)

    def _fall_back_to_snapshot(self, exc: KrakenError) -> None:
        """AssetPairs failed with ``exc``: serve the stored snapshot (stale) if it can be."""
        pairs, taken = self._stored_snapshot()
        if not pairs:
            log.info("AssetPairs unavailable (%s) and no stored pairs snapshot: names resolve "
                     "through the offline tables only", exc)
            self._install({}, None, None, stale=False, error=exc)
            return
        when = taken.isoformat() if taken else "at an unknown time"
        missing = self._rules_a_snapshot_cannot_apply()
        if missing:
            log.warning("AssetPairs unavailable (%s); the stored pairs snapshot (taken %s) "
                        "cannot apply %s, so no universe is served (pair metadata is, stale)",
                        exc, when, " or ".join(missing))
            self._install(pairs, None, taken, stale=True, error=exc)
            return
        universe = build_universe(pairs, self.settings.region, self.settings.universe)
        log.warning("AssetPairs unavailable (%s); serving the stored pairs snapshot taken %s "
                    "(stale)", exc, when)
        self._install(pairs, universe, taken, stale=True, error=None)

    def _rules_a_snapshot_cannot_apply(self) -> list[str]:
        """``[universe]`` rules that need data the ``pairs`` table does not keep."""
        rules = self.settings.universe
        missing = []
        if rules.exclude_leveraged_pairs:
            missing.append("universe.exclude_leveraged_pairs (the snapshot keeps no leverage)")
        if rules.min_24h_volume_usd:
            missing.append("universe.min_24h_volume_usd (it needs Kraken's Ticker)")
        return missing

    def _stored_snapshot(self) -> tuple[dict[str, PairMetadata], datetime | None]:
        """The store's ``pairs`` snapshot (region applied) and when it was taken."""
        try:
            rows = self.store.read_pairs().to_pylist()
        except StoreError as exc:
            log.warning("the stored pairs snapshot could not be read (%s)", exc)
            return {}, None
        pairs: dict[str, PairMetadata] = {}
        for row in rows:
            try:
                meta = PairMetadata.from_row(row)
            except (StoreError, TypeError) as exc:
                log.warning("pairs snapshot: row %r unreadable (%s); skipped",
                            row.get("canonical"), exc)
                continue
            pairs.setdefault(meta.canonical, meta)
        stamps = [r["updated_at"] for r in rows if r.get("updated_at") is not None]
        return apply_region(pairs, self.settings.region), max(stamps, default=None)

    def _require_universe(self) -> list[PairMetadata]:
        self._ensure_pairs()
        if self._universe is None:
            assert self._pairs_error is not None
            raise self._pairs_error
        return self._universe

    @property
    def universe_updated_at(self) -> datetime | None:
        """When the pair metadata in use was fetched from Kraken (the snapshot's ``updated_at``
        when stale); None before the universe is loaded or when none could be."""
        return self._updated_at

    @property
    def universe_is_stale(self) -> bool:
        """True when the universe and metadata come from the stored snapshot because
        ``AssetPairs`` could not be fetched."""
        return self._stale

    def get_universe(self) -> list[str]:
        """Canonical names (Kraken altnames) of the universe, sorted. Raises Kraken's error
        when ``AssetPairs`` cannot be fetched and no stored snapshot can stand in."""
        return [p.canonical for p in self._require_universe()]

    def get_universe_metadata(self) -> list[PairMetadata]:
        """``PairMetadata`` of every universe pair (same failure rule as ``get_universe``)."""
        return list(self._require_universe())

    def resolve(self, pair: str) -> str:
        """Any alias (``BTC/USD``, ``XXBTZUSD``, ``XBT/USD``…) -> canonical (``XBTUSD``)."""
        self._ensure_pairs()
        assert self._resolver is not None
        return self._resolver.resolve(pair)

    def get_pair_metadata(self, pair: str) -> PairMetadata:
        """Metadata of any Kraken pair (not only the universe's); ``UnknownPairError`` for a
        name that names no pair; Kraken's error when no metadata could be fetched or stored."""
        self._ensure_pairs()
        assert self._resolver is not None and self._pairs is not None
        canonical = self._resolver.resolve(pair)
        if canonical not in self._pairs:
            if not self._pairs and self._pairs_error is not None:
                raise self._pairs_error
            raise UnknownPairError(pair)
        return self._pairs[canonical]

    # -- OHLC ----------------------------------------------------------------------------------

    def backfill_ohlc(self, pair: str, timeframe: str | int, since: datetime | int | None = None,
                      *, full: bool = False) -> OhlcSyncResult:
        """Store the closed candles Kraken still serves (its latest 720) and resume from there
        next time."""
        canonical = self.resolve(pair)
        rest = self._pairs[canonical].rest_symbol if self._pairs and canonical in self._pairs \
            else canonical
        return backfill_ohlc(self.client, self.store, canonical, timeframe, rest_symbol=rest,
                             since=since, full=full)

    def get_ohlc(self, pair: str, timeframe: str | int, lookback: int | None = None
                 ) -> list[Candle]:
        """The last ``lookback`` closed candles from the store, oldest first."""
        return self.store.get_ohlc(self.resolve(pair), timeframe, lookback)

    def get_ohlc_since(self, pair: str, timeframe: str | int,
                       since_ts: datetime | int | str) -> list[Candle]:
        """Closed candles with open time >= ``since_ts`` from the store."""
        return self.store.get_ohlc_since(self.resolve(pair), timeframe, since_ts)

    def get_candles(self, pair: str, timeframe: str | int, start: Any = None, end: Any = None,
                    limit: int | None = None, as_: Any = "candles") -> Any:
        """``MarketStore.get_candles`` with any pair alias."""
        return self.store.get_candles(self.resolve(pair), timeframe, start, end, limit, as_)

    # -- health --------------------------------------------------------------------------------

    def get_data_status(self) -> dict[str, Any]:
        """REST reachable? universe size, store health and what it holds."""
        try:
            self.client.get_system_status()
            rest: dict[str, Any] = {"reachable": True, "error": None}
        except KrakenError as exc:
            rest = {"reachable": False, "error": str(exc)}
        return {
            "rest": rest,
            "universe_size": len(self._universe or []),
            "store": self.store.health_check(),
            "symbols": self.store.get_symbols(),
        }
