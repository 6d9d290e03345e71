"""The service's scheduler (service/scheduler.py): APScheduler 3's real machinery on a clock the
test moves — APScheduler reads the time through ``datetime.now`` in its scheduler and executor
modules, so those two names are replaced by a class whose ``now`` returns the test's time, and
``wakeup()`` makes the scheduler look at its jobs right away."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest

from krakked.errors import UsageError
from krakked.service.scheduler import (
    CATCH_UP_JOB_ID,
    INGEST_JOB_ID,
    INGEST_JOB_NAME,
    UNIVERSE_JOB_ID,
    IngestScheduler,
)
from krakked.sync.ingest import IngestBusyError, IngestConfig, IngestRun

T = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Wall:
    """The time APScheduler sees."""

    def __init__(self, now: datetime) -> None:
        self.now = now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    state = Wall(T + timedelta(minutes=14))

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return state.now.astimezone(tz) if tz else state.now.replace(tzinfo=None)

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", FakeDatetime)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", FakeDatetime)
    return state


def a_run(started: datetime, trigger: str = "schedule") -> IngestRun:
    return IngestRun(run_id=f"r{started:%H%M}", trigger=trigger, started_at=started,
                     finished_at=started, status="ok", assets_total=1, assets_done=1,
                     candles=1, duration_seconds=0.0)


class FakeIngestor:
    """Records every run it is asked for (with the wall time); can hold a run open."""

    def __init__(self, wall: Wall, last_run: datetime | None) -> None:
        self.wall = wall
        self.config = IngestConfig(cycle_minutes=15)
        self.runs: list[tuple[str, datetime]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.active = threading.Lock()
        self._history = [a_run(last_run)] if last_run else []

    def clock(self) -> datetime:
        return self.wall.now

    def history(self, n: int = 20) -> list[IngestRun]:
        return self._history[::-1][:n]

    def run(self, trigger: str = "manual") -> IngestRun:
        if not self.active.acquire(blocking=False):
            raise IngestBusyError("an ingest run is already active")
        try:
            self.runs.append((trigger, self.wall.now))
            self.hold.wait(10)
            run = a_run(self.wall.now, trigger)
            self._history.append(run)
            return run
        finally:
            self.active.release()


@pytest.fixture
def started() -> Iterator[list[IngestScheduler]]:
    """Schedulers a test starts; all shut down at the end."""
    schedulers: list[IngestScheduler] = []
    yield schedulers
    for s in schedulers:
        s.shutdown(wait=False)


def start(scheduler: IngestScheduler, started: list[IngestScheduler]) -> IngestScheduler:
    started.append(scheduler)
    scheduler.start()
    return scheduler


def poke(scheduler: IngestScheduler, wall: Wall, at: datetime) -> None:
    """Move the time to ``at`` and make the scheduler process its jobs now."""
    wall.now = at
    scheduler._scheduler.wakeup()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def settle() -> None:
    """Give the scheduler thread time to do what it would wrongly do."""
    time.sleep(0.4)


def test_started_at_14_the_ingest_fires_at_15_and_30_and_never_twice(
        wall: Wall, started: list[IngestScheduler]) -> None:
    ingestor = FakeIngestor(wall, last_run=T + timedelta(seconds=5))  # no catch-up due
    scheduler = start(IngestScheduler(ingestor), started)
    assert scheduler.running and scheduler.next_run_time == T + timedelta(minutes=15)
    settle()
    assert ingestor.runs == []
    poke(scheduler, wall, T + timedelta(minutes=15))
    assert eventually(lambda: len(ingestor.runs) == 1)
    assert ingestor.runs == [("schedule", T + timedelta(minutes=15))]
    assert eventually(lambda: scheduler.next_run_time == T + timedelta(minutes=30))
    poke(scheduler, wall, T + timedelta(minutes=15, seconds=30))
    poke(scheduler, wall, T + timedelta(minutes=29, seconds=59))
    settle()
    assert len(ingestor.runs) == 1
    poke(scheduler, wall, T + timedelta(minutes=30))
    assert eventually(lambda: len(ingestor.runs) == 2)
    settle()
    assert ingestor.runs == [("schedule", T + timedelta(minutes=15)),
                             ("schedule", T + timedelta(minutes=30))]
    assert scheduler.missed == []


def test_the_ingest_job_is_the_documented_one(wall: Wall) -> None:
    job = IngestScheduler(FakeIngestor(wall, None))._scheduler.get_job(INGEST_JOB_ID)
    assert (job.id, job.name, job.max_instances, job.coalesce, job.misfire_grace_time) == (
        "kraken_ingest", "Kraken OHLCV Ingestion", 1, True, 120)
    assert INGEST_JOB_NAME == "Kraken OHLCV Ingestion"
    assert str(job.trigger) == "cron[month='*', day='*', day_of_week='*', hour='*', " \
                               "minute='0,15,30,45']"


def test_a_cycle_arriving_while_a_run_is_active_does_not_start_a_second_one(
        wall: Wall, started: list[IngestScheduler], caplog: pytest.LogCaptureFixture) -> None:
    ingestor = FakeIngestor(wall, last_run=T + timedelta(seconds=5))
    ingestor.hold.clear()
    scheduler = start(IngestScheduler(ingestor, misfire_grace_seconds=3600), started)
    poke(scheduler, wall, T + timedelta(minutes=15))
    assert eventually(lambda: len(ingestor.runs) == 1)
    poke(scheduler, wall, T + timedelta(minutes=30))
    assert eventually(lambda: any("previous run is still active" in r.getMessage()
                                  for r in caplog.records))
    ingestor.hold.set()
    settle()
    assert ingestor.runs == [("schedule", T + timedelta(minutes=15))]


def test_a_cycle_missed_past_the_grace_is_logged_critical_and_recorded_once(
        wall: Wall, started: list[IngestScheduler], caplog: pytest.LogCaptureFixture) -> None:
    ingestor = FakeIngestor(wall, last_run=T + timedelta(seconds=5))
    scheduler = start(IngestScheduler(ingestor, misfire_grace_seconds=120), started)
    poke(scheduler, wall, T + timedelta(minutes=50))  # 12:15, 12:30, 12:45 all passed
    assert eventually(lambda: scheduler.missed != [])
    settle()
    assert scheduler.missed == [T + timedelta(minutes=45)]  # coalesced: one, the latest
    assert ingestor.runs == []
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "12:45:00" in critical[0].getMessage()
    assert scheduler.next_run_time == T + timedelta(hours=1)


@pytest.mark.parametrize("last_run", [T - timedelta(minutes=20), None],
                         ids=["older-than-a-cycle", "never"])
def test_start_catches_up_once_when_the_last_run_is_older_than_a_cycle(
        wall: Wall, started: list[IngestScheduler], last_run: datetime | None) -> None:
    ingestor = FakeIngestor(wall, last_run=last_run)
    scheduler = start(IngestScheduler(ingestor), started)
    assert eventually(lambda: len(ingestor.runs) == 1)
    settle()
    assert ingestor.runs == [("catch-up", T + timedelta(minutes=14))]
    assert scheduler._scheduler.get_job(CATCH_UP_JOB_ID) is None  # a one-off, gone


def test_start_does_not_catch_up_when_the_last_run_is_within_a_cycle(
        wall: Wall, started: list[IngestScheduler]) -> None:
    ingestor = FakeIngestor(wall, last_run=T + timedelta(minutes=1))  # 13 minutes ago
    start(IngestScheduler(ingestor), started)
    settle()
    assert ingestor.runs == []


def test_the_cron_is_configurable_and_a_bad_one_is_a_usage_error(
        wall: Wall, started: list[IngestScheduler]) -> None:
    ingestor = FakeIngestor(wall, last_run=T + timedelta(seconds=5))
    scheduler = start(IngestScheduler(ingestor, cron="5,35 * * * *"), started)
    assert scheduler.next_run_time == T + timedelta(minutes=35)
    with pytest.raises(UsageError, match="'every 15' is not a five-field crontab"):
        IngestScheduler(ingestor, cron="every 15")


def test_the_universe_refreshes_hourly_and_a_failure_is_only_logged(
        wall: Wall, started: list[IngestScheduler], caplog: pytest.LogCaptureFixture) -> None:
    calls: list[datetime] = []

    def refresh() -> None:
        calls.append(wall.now)
        raise RuntimeError("AssetPairs unreachable")

    ingestor = FakeIngestor(wall, last_run=T + timedelta(seconds=5))
    scheduler = start(IngestScheduler(ingestor, universe_refresh=refresh), started)
    job = scheduler._scheduler.get_job(UNIVERSE_JOB_ID)
    assert job.next_run_time == T + timedelta(hours=1, minutes=7)
    poke(scheduler, wall, T + timedelta(hours=1, minutes=7))
    assert eventually(lambda: len(calls) == 1)
    assert eventually(lambda: job.id and scheduler._scheduler.get_job(UNIVERSE_JOB_ID)
                      .next_run_time == T + timedelta(hours=2, minutes=7))
    assert any(r.levelno == logging.ERROR and "AssetPairs unreachable" in r.getMessage()
               for r in caplog.records)
    assert scheduler.running


def test_shutdown_waits_for_the_run_in_progress_and_stops(
        wall: Wall, started: list[IngestScheduler]) -> None:
    ingestor = FakeIngestor(wall, last_run=T + timedelta(seconds=5))
    ingestor.hold.clear()
    scheduler = start(IngestScheduler(ingestor), started)
    poke(scheduler, wall, T + timedelta(minutes=15))
    assert eventually(lambda: len(ingestor.runs) == 1)
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (scheduler.shutdown(wait=True), done.set()))
    stopper.start()
    settle()
    assert not done.is_set()  # the run holds it
    ingestor.hold.set()
    stopper.join(10)
    assert done.is_set() and not scheduler.running and scheduler.next_run_time is None
    assert len(ingestor.history()) == 2  # the held run finished and was recorded
