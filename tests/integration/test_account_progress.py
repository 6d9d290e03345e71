"""An account sync reports its progress per resource while it runs: pages, rows, rate-limit
waits and cursor, through the real runner against the simulator into a real DuckDB file."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from krakked.account.progress import (
    ProgressLog,
    ResourceProgress,
    describe_progress,
    rate_limit_waits,
)
from krakked.account.runner import run_sync
from krakked.config import Settings, load_settings
from krakked.credentials import KeyPair
from krakked.kraken.futures import FuturesClient
from krakked.kraken.limits import FuturesLimiter
from krakked.sim import SimClock, SimConfig, Simulator

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _offline_dlt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


@pytest.fixture
def sim(clock: SimClock) -> Simulator:
    return Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0,
                               futures_executions=150))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"KRAKKED_HOME": str(tmp_path / "home")})


def _client(sim: Simulator, clock: SimClock, settings: Settings) -> FuturesClient:
    spec = sim.config.account("futures")
    return FuturesClient(KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"),
                         settings=settings, transport=sim.transport(),
                         limiter=FuturesLimiter(clock=clock.monotonic, sleep=clock.sleep),
                         sleep=clock.sleep, persist_nonce=False)


def test_every_page_is_reported_with_rows_cursor_and_the_resource_s_rate_limit_waits(
        sim, clock, settings) -> None:
    events: list[ResourceProgress] = []
    sim.inject("ratelimit", "executions", times=2)  # two 429s: the client waits, then retries
    with _client(sim, clock, settings) as client:
        report = run_sync("futures", settings=settings, client=client, progress=events.append,
                          source_options={"page_size": 40, "account_log_count": 100},
                          now=lambda: datetime.fromtimestamp(clock.now(), UTC))

    by_resource: dict[str, list[ResourceProgress]] = {}
    for event in events:
        by_resource.setdefault(event.resource, []).append(event)
    assert set(by_resource) == set(report.resources)
    for name, seen in by_resource.items():
        assert all(e.pipeline == "kraken_futures" for e in seen)
        assert [e.done for e in seen] == [False] * (len(seen) - 1) + [True], name
        pages = [e.pages for e in seen]
        rows = [e.rows for e in seen]
        assert pages == sorted(pages) and rows == sorted(rows), name
        last = seen[-1]
        assert last.rows == report.resources[name]["rows"], name
        assert last.cursor == report.resources[name].get("last_timestamp"), name
    assert by_resource["executions"][-1].pages >= 4  # 150 fills, 40 a page, reported page by page
    assert len(by_resource["executions"]) >= 4
    # the two 429s made executions wait (the client's limiter paces the history pool too)
    assert by_resource["executions"][-1].rate_limit_waits >= 2
    assert report.api["rate_limited"] == 2
    # the summary's figure comes from the same helper, and is the resources' waits added up
    assert rate_limit_waits(report.api) == report.api["rate_limit_waits"] == sum(
        seen[-1].rate_limit_waits for seen in by_resource.values())


def test_a_resource_stopped_by_a_denied_permission_ends_with_the_reason(
        sim, clock, settings) -> None:
    events: list[ResourceProgress] = []
    sim.inject("permission", "account-log")
    with _client(sim, clock, settings) as client:
        run_sync("futures", settings=settings, client=client, progress=events.append,
                 resources=["executions", "account_log"],
                 now=lambda: datetime.fromtimestamp(clock.now(), UTC))
    (end,) = [e for e in events if e.resource == "account_log"]
    assert end.done and "permission denied" in (end.error or "")
    assert "stopped: permission denied" in describe_progress(end)


def test_rate_limit_waits_reads_the_client_s_limiter_count_where_it_has_one() -> None:
    assert rate_limit_waits({"requests": 9, "rate_limited": 2}) == 2  # Kraken's waits only
    assert rate_limit_waits({"rate_limited": 2, "rate_limit_waits": 5}) == 5
    assert rate_limit_waits({}) == 0


def test_progress_log_writes_a_line_per_resource_every_interval_and_always_the_end(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter([0.0, 1.0, 2.0, 6.0, 6.5, 7.0])
    progress = ProgressLog(clock=lambda: next(ticks))  # by default a line every 5 s at most
    caplog.set_level(logging.INFO, logger="krakked.account.progress")
    for pages, done in ((1, False), (2, False), (3, False), (4, False), (5, False), (6, True)):
        progress(ResourceProgress("ledgers", pages, pages * 50, "2026-01-01T00:00:00+00:00",
                                  done, pipeline="kraken_spot"))
    lines = [r.getMessage() for r in caplog.records if r.name == "krakked.account.progress"]
    assert lines == [
        "kraken_spot.ledgers: 1 page, 50 rows, 0 rate-limit waits, "
        "cursor 2026-01-01T00:00:00+00:00",
        "kraken_spot.ledgers: 4 pages, 200 rows, 0 rate-limit waits, "
        "cursor 2026-01-01T00:00:00+00:00",
        "kraken_spot.ledgers: 6 pages, 300 rows, 0 rate-limit waits, "
        "cursor 2026-01-01T00:00:00+00:00; done",
    ]
