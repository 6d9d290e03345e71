"""Shared fixtures: a market store of every backend (the same tests run against each)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from krakked.config import load_settings
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.store import MarketStore, open_store

BACKENDS = ("duckdb", "parquet", "csv", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL of each backend."""
    kind = request.param
    if kind == "duckdb":
        return f"duckdb:///{tmp_path / 'market.duckdb'}"
    if kind in ("parquet", "csv"):
        return f"{kind}:///{tmp_path / kind}"
    return request.getfixturevalue("postgres_db_url")


@pytest.fixture
def store(store_url: str) -> Iterator[MarketStore]:
    with open_store(store_url) as s:
        yield s


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (see tests/postgres_server.py)."""
    from tests.postgres_server import throwaway_cluster

    with throwaway_cluster() as base_url:
        yield base_url


@pytest.fixture
def postgres_db_url(postgres_server: str) -> str:
    """A fresh database in the session's cluster."""
    from tests.postgres_server import fresh_database

    return fresh_database(postgres_server)


@pytest.fixture(params=["duckdb", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL: a DuckDB file, then a PostgreSQL database."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'store.duckdb'}"
    return request.getfixturevalue("postgres_db_url")


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> SimClock:
    """A simulator clock standing at the test module's ``NOW``."""
    return SimClock(request.module.NOW)


@pytest.fixture
def sim(clock: SimClock) -> Simulator:
    """The simulator on that clock, public pacing off (the tests pace themselves)."""
    return Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic,
                               public_rate=0))


@pytest.fixture
def client(sim: Simulator, tmp_path: Path) -> Iterator[SpotClient]:
    """A SpotClient asking ``sim`` in-process, public pacing opened up."""
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    with SpotClient(settings=settings, transport=sim.transport(),
                    public_limiter=PublicLimiter(1000, 1000)) as c:
        yield c
