"""Helpers the integration tests share: a Market whose REST goes to the in-process simulator."""

from __future__ import annotations

from pathlib import Path

import httpx

from krakked.config import load_settings
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market_data import Market
from krakked.sim import Simulator


def sim_market(sim: Simulator, tmp_path: Path, url: str | None = None,
               transport: httpx.BaseTransport | None = None) -> Market:
    """A ``Market`` on ``url`` (default a DuckDB file in ``tmp_path``) asking ``sim`` in-process,
    unpaced and without retries (the tests pace themselves)."""
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    client = SpotClient(settings=settings, transport=transport or sim.transport(),
                        public_limiter=PublicLimiter(1000, 1000),
                        retry=RetryPolicy(max_attempts=1))
    return Market(url or f"duckdb:///{tmp_path / 'm.duckdb'}", settings=settings,
                  client=client)
