"""The scheduled ingest (sync/ingest.py) against the in-process simulator: what a cycle stores,
what survives a kill, what is skipped, and the circuit breaker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from krakked.errors import StoreError
from krakked.market_data import Market
from krakked.sim import SimClock, Simulator
from krakked.store import open_store
from krakked.sync.ingest import (
    DEFAULT_ACTIVE_PAIRS,
    IngestBusyError,
    IngestConfig,
    Ingestor,
)
from tests.integration.simkit import sim_market

NOW = datetime(2026, 11, 22, 12, 2, 30, tzinfo=UTC)
PAIRS = ("XBTUSD", "ETHUSD", "SOLUSD")


class Killed(BaseException):
    """Stands in for the process dying mid-run (not an Exception: nothing may catch it)."""


class Switchboard(httpx.BaseTransport):
    """The simulator's transport with switches: Kraken down, in maintenance, killed at a pair."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.maintenance = False
        self.kill_at: str | None = None
        self.ohlc_pairs: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("/SystemStatus") and self.maintenance:
            return httpx.Response(200, json={"error": [], "result": {
                "status": "maintenance", "timestamp": "2026-11-22T12:02:30Z"}})
        if request.url.path.endswith("/OHLC"):
            pair = request.url.params.get("pair") or ""
            if pair == self.kill_at:
                raise Killed
            self.ohlc_pairs.append(pair)
        return self.inner.handle_request(request)


class FlakyStore:
    """A store whose first ``failures`` candle writes raise ``StoreError``."""

    def __init__(self, store: Any, failures: int) -> None:
        self._store = store
        self.failures = failures

    def upsert_candles(self, *args: Any, **kwargs: Any) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk full (injected)")
        return self._store.upsert_candles(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def wires(sim: Simulator) -> Switchboard:
    return Switchboard(sim.transport())


@pytest.fixture
def market(sim: Simulator, tmp_path: Path, wires: Switchboard) -> Iterator[Market]:
    with sim_market(sim, tmp_path, transport=wires) as m:
        yield m


def utc(clock: SimClock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


def ingestor(market: Market, clock: SimClock, tmp_path: Path, store: Any = None,
             **kwargs: Any) -> Ingestor:
    config = kwargs.pop("config", IngestConfig(pairs=PAIRS, batch_size=2))
    return Ingestor(market.client, store or market.store, market.resolve, config,
                    runlog_path=tmp_path / "ingest.runs.jsonl", clock=lambda: utc(clock),
                    **kwargs)


def assert_store_holds_sim_candles(market: Market, sim: Simulator, pair: str) -> None:
    """Every closed 15m bar the simulator serves now is stored, value for value, and nothing
    newer (older bars the simulator's 720-bar window has since dropped may stay stored)."""
    rows = sim.market.ohlc(pair, 15)[0][:-1]  # the sim takes altnames; the last bar runs
    stored = market.get_ohlc(pair, "15m")
    assert rows and len(stored) >= len(rows)
    recent = stored[-len(rows):]
    assert [int(c.timestamp.timestamp()) for c in recent] == [int(r[0]) for r in rows]
    for candle, row in zip(recent, rows, strict=True):
        assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == tuple(
            Decimal(str(v)) for v in (row[1], row[2], row[3], row[4], row[6]))


def test_a_cycle_stores_each_pairs_closed_15m_candles_as_kraken_serves_them(
        sim: Simulator, clock: SimClock, tmp_path: Path, db_url: str, wires: Switchboard,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="krakked.sync.ingest")
    with sim_market(sim, tmp_path, db_url, transport=wires) as market:
        ing = ingestor(market, clock, tmp_path)
        run = ing.run("manual")
        assert (run.status, run.trigger, run.assets_total, run.assets_done) == (
            "ok", "manual", 3, 3)
        assert run.errors == [] and run.finished_at is not None
        for pair in PAIRS:
            assert_store_holds_sim_candles(market, sim, pair)
        assert run.candles == sum(len(market.get_ohlc(p, "15m")) for p in PAIRS)
        assert all(c.close_time <= NOW for c in market.get_ohlc("XBTUSD", "15m"))
    messages = [r.getMessage() for r in caplog.records]
    assert "Processed 2/3 assets" in messages and "Processed 3/3 assets" in messages
    summary = [m for m in messages if m.startswith(f"ingest run {run.run_id}")]
    assert len(summary) == 1 and f"3/3 assets, {run.candles} candles" in summary[0]
    assert "0 errors" in summary[0]


def test_the_next_cycle_fetches_only_what_closed_since_through_the_ohlc_cursor(
        market: Market, sim: Simulator, clock: SimClock, tmp_path: Path) -> None:
    ing = ingestor(market, clock, tmp_path)
    first = ing.run("schedule")
    clock.advance(15 * 60)
    second = ing.run("schedule")
    assert first.candles > 700 and second.candles == len(PAIRS)  # one new bar per pair
    for pair in PAIRS:
        assert_store_holds_sim_candles(market, sim, pair)


def test_a_run_killed_between_batches_keeps_the_batches_it_finished(
        sim: Simulator, clock: SimClock, tmp_path: Path, wires: Switchboard) -> None:
    url = f"duckdb:///{tmp_path / 'killed.duckdb'}"
    wires.kill_at = "SOLUSD"  # the first pair of the second batch
    with sim_market(sim, tmp_path, url, transport=wires) as market, pytest.raises(Killed):
        ingestor(market, clock, tmp_path).run()
    with open_store(url) as store:
        assert store.get_ohlc("XBTUSD", "15m") and store.get_ohlc("ETHUSD", "15m")
        assert store.get_ohlc("SOLUSD", "15m") == []


def test_an_unknown_pair_is_logged_and_skipped_and_the_others_are_stored(
        market: Market, sim: Simulator, clock: SimClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    config = IngestConfig(pairs=("XBTUSD", "NOPEUSD", "ETHUSD"), batch_size=5)
    run = ingestor(market, clock, tmp_path, config=config).run()
    assert run.status == "partial" and run.assets_done == 3
    assert [e["pair"] for e in run.errors] == ["NOPEUSD"]
    assert "NOPEUSD" in run.errors[0]["error"]
    assert any(r.levelno == logging.ERROR and "NOPEUSD" in r.getMessage()
               for r in caplog.records)
    for pair in ("XBTUSD", "ETHUSD"):
        assert_store_holds_sim_candles(market, sim, pair)


def test_kraken_in_maintenance_skips_the_run_without_asking_for_candles(
        market: Market, clock: SimClock, tmp_path: Path, wires: Switchboard) -> None:
    wires.maintenance = True
    run = ingestor(market, clock, tmp_path).run("schedule")
    assert run.status == "skipped" and "maintenance" in (run.skipped_reason or "")
    assert run.candles == 0 and wires.ohlc_pairs == []
    assert market.get_ohlc("XBTUSD", "15m") == []


def test_a_store_error_is_retried_once(market: Market, sim: Simulator, clock: SimClock,
                                       tmp_path: Path) -> None:
    run = ingestor(market, clock, tmp_path, store=FlakyStore(market.store, 1)).run()
    assert run.status == "ok" and run.errors == []
    for pair in PAIRS:
        assert_store_holds_sim_candles(market, sim, pair)


def test_a_store_error_twice_fails_the_run_at_critical_with_its_cause(
        market: Market, clock: SimClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    run = ingestor(market, clock, tmp_path, store=FlakyStore(market.store, 2)).run()
    assert run.status == "failed" and run.assets_done == 0
    assert run.errors == [{"pair": None, "error": "store error on XBTUSD 15m (after one "
                                                  "retry): disk full (injected)"}]
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "disk full (injected)" in critical[0].getMessage()


def test_the_breaker_opens_once_after_five_failed_runs_skips_then_recovers(
        market: Market, sim: Simulator, clock: SimClock, tmp_path: Path, wires: Switchboard,
        caplog: pytest.LogCaptureFixture) -> None:
    ing = ingestor(market, clock, tmp_path)
    wires.down = True
    runs = [ing.run("schedule") for _ in range(5)]
    assert [r.status for r in runs] == ["failed"] * 5
    assert ing.breaker_open_until == utc(clock) + timedelta(seconds=300)
    alerts = [r for r in caplog.records if r.levelno == logging.WARNING and "ALERT" in
              r.getMessage()]
    assert len(alerts) == 1 and "5 consecutive failed runs" in alerts[0].getMessage()
    skipped = ing.run("schedule")
    assert skipped.status == "skipped" and "circuit breaker open" in skipped.skipped_reason
    assert len([r for r in caplog.records if "ALERT" in r.getMessage()]) == 1
    wires.down = False
    clock.advance(301)
    assert ing.breaker_open_until is None
    recovered = ing.run("schedule")
    assert recovered.status == "ok" and ing.breaker_open_until is None
    assert_store_holds_sim_candles(market, sim, "XBTUSD")


def test_a_run_asked_for_while_one_is_active_raises_busy(
        market: Market, clock: SimClock, tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def account_sync() -> dict[str, Any]:
        seen["candles_before_account"] = len(market.get_ohlc("XBTUSD", "15m"))
        entered.set()
        release.wait(10)
        return {"rows": 3}

    ing = ingestor(market, clock, tmp_path, account_sync=account_sync)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(ing.run("schedule")))
    worker.start()
    try:
        assert entered.wait(30)
        assert ing.running
        with pytest.raises(IngestBusyError, match="already active"):
            ing.run("manual")
    finally:
        release.set()
        worker.join(30)
    assert not ing.running
    assert result[0].status == "ok" and result[0].account == {"rows": 3}
    assert seen["candles_before_account"] > 0  # the account sync runs after the candles
    assert len(ing.history()) == 1  # the refused run left no record


def test_runs_are_persisted_newest_first_and_missed_cycles_counted_since_the_last(
        market: Market, clock: SimClock, tmp_path: Path) -> None:
    ing = ingestor(market, clock, tmp_path)
    first = ing.run("catch-up")
    clock.advance(15 * 60)
    second = ing.run("schedule")
    clock.advance(40 * 60)  # 12:17:30 -> 12:57:30: the 12:30 cycle had no run
    again = ingestor(market, clock, tmp_path)
    assert [r.run_id for r in again.history()] == [second.run_id, first.run_id]
    assert again.history(1)[0].to_dict() == second.to_dict()
    assert again.missed_cycles() == [datetime(2026, 11, 22, 12, 30, tzinfo=UTC)]


def test_the_default_pairs_are_thirty_distinct_usd_pairs_the_simulator_knows(
        market: Market) -> None:
    assert len(set(DEFAULT_ACTIVE_PAIRS)) == 30
    assert all(market.resolve(p) == p and p.endswith("USD") for p in DEFAULT_ACTIVE_PAIRS)
    assert all(market.get_pair_metadata(p).quote in ("USD", "ZUSD")
               for p in DEFAULT_ACTIVE_PAIRS)
