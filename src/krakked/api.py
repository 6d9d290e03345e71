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
from krakked.errors import KrakenError, UnknownPairError
from krakked.kraken.spot import SpotClient
from krakked.market.candles import Candle
from krakked.market.pairs import PairMetadata, PairResolver, build_universe, parse_asset_pairs
from krakked.store import MarketStore, open_store
from krakked.store.base import PAIR_SCHEMA
from krakked.sync.ohlc import OhlcSyncResult, backfill_ohlc

__all__ = ["Market"]

log = logging.getLogger("krakked.api")


class Market:
    """Market data for the region's universe, stored in one market store.

    ``Market()`` uses the default store (a DuckDB file in the user data directory) and
    api.kraken.com; pass ``store=`` (a URL or a ``MarketStore``), ``client=`` or ``transport=``
    (e.g. ``Simulator().transport()``) to change either.
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
        pairs = parse_asset_pairs(self.client.get_asset_pairs())
        tickers = None
        if self.settings.universe.min_24h_volume_usd:
            tickers = self.client.get_ticker()
        universe = build_universe(pairs, self.settings.region, self.settings.universe, tickers)
        self._pairs, self._universe = pairs, universe
        self._resolver = PairResolver(pairs)
        self.store.set_resolver(self._resolver.resolve)
        now = datetime.now(UTC)
        rows = [{**p.to_row(), "updated_at": now} for p in pairs.values()]
        import pyarrow as pa

        self.store.write_pairs(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA))
        return [p.canonical for p in universe]

    def _ensure_pairs(self) -> None:
        if self._pairs is None:
            try:
                self.refresh()
            except KrakenError as exc:
                log.warning("AssetPairs unavailable (%s); using the offline pair tables", exc)
                self._pairs = {}
                self._universe = []
                self._resolver = PairResolver({})
                self.store.set_resolver(self._resolver.resolve)

    def get_universe(self) -> list[str]:
        """Canonical names (Kraken altnames) of the universe, sorted."""
        self._ensure_pairs()
        assert self._universe is not None
        return [p.canonical for p in self._universe]

    def get_universe_metadata(self) -> list[PairMetadata]:
        """``PairMetadata`` of every universe pair."""
        self._ensure_pairs()
        assert self._universe is not None
        return list(self._universe)

    def resolve(self, pair: str) -> str:
        """Any alias (``BTC/USD``, ``XXBTZUSD``, ``XBT/USD``…) -> canonical (``XBTUSD``)."""
        self._ensure_pairs()
        assert self._resolver is not None
        return self._resolver.resolve(pair)

    def get_pair_metadata(self, pair: str) -> PairMetadata:
        """Metadata of any Kraken pair (not only the universe's); ``UnknownPairError`` else."""
        self._ensure_pairs()
        assert self._resolver is not None and self._pairs is not None
        canonical = self._resolver.resolve(pair)
        if canonical not in self._pairs:
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
