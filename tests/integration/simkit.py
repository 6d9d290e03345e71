"""Helpers the integration tests share: a Market whose REST goes to the in-process simulator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from krakked.config import load_settings
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market_data import Market
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.sim.server import running


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


@contextlib.contextmanager
def served_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: datetime
               ) -> Iterator[tuple[Path, Simulator, SimClock, dict[str, str]]]:
    """The simulator served on 127.0.0.1 at ``now`` and the environment that points the CLI at
    it (a fresh KRAKKED_HOME with public pacing opened up, KRAKKED_*_URL, no store set):
    (home, sim, clock, the variables set)."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        "[limits]\npublic_rate_per_second = 500.0\npublic_burst = 100\n")
    clock = SimClock(now)
    sim = Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic,
                              public_rate=0))
    with running(sim) as info:
        values = {"KRAKKED_HOME": str(home), "KRAKKED_SPOT_URL": info["spot_url"],
                  "KRAKKED_FUTURES_URL": info["futures_url"], "KRAKKED_WS_URL": info["ws_url"]}
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        for var in ("KRAKKED_STORE", "DATABASE_URL"):
            monkeypatch.delenv(var, raising=False)
        yield home, sim, clock, values
