"""Account history as dlt sources: Kraken Futures (``kraken_futures_source``) and Spot
(``kraken_spot_source``), plus ``KrakenFuturesAuth`` / ``KrakenSpotAuth`` for dlt's RESTClient."""

from __future__ import annotations

from krakked.account.auth import KrakenFuturesAuth, KrakenSpotAuth
from krakked.account.futures import kraken_futures_source
from krakked.account.spot import kraken_spot_source

__all__ = ["KrakenFuturesAuth", "KrakenSpotAuth", "kraken_futures_source", "kraken_spot_source"]
