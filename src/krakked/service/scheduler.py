"""The service's clock: the ingest every 15 minutes (APScheduler 3, in a background thread).

Jobs: ``kraken_ingest`` ("Kraken OHLCV Ingestion", cron ``0,15,30,45 * * * *`` in UTC by
default, one instance at a time, late runs coalesced into one, a misfire grace) and, when a
refresher is given, ``universe_refresh`` hourly. A cycle the scheduler could not start within
the grace is logged at CRITICAL and kept in ``missed``. On ``start()``, when the last recorded
run is older than one cycle (or there is none), one ``catch-up`` run is started at once: the
OHLC cursor brings back every closed candle since the last run — up to Kraken's 720 bars per
interval (7.5 days of 15m candles); an older gap is for ``krakked gaps`` and trades.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from krakked.errors import UsageError, first_line
from krakked.sync.ingest import IngestBusyError, IngestConfig, IngestRun

__all__ = [
    "CATCH_UP_JOB_ID",
    "DEFAULT_CRON",
    "DEFAULT_UNIVERSE_CRON",
    "INGEST_JOB_ID",
    "INGEST_JOB_NAME",
    "UNIVERSE_JOB_ID",
    "IngestScheduler",
]

log = logging.getLogger("krakked.service.scheduler")

INGEST_JOB_ID = "kraken_ingest"
INGEST_JOB_NAME = "Kraken OHLCV Ingestion"
UNIVERSE_JOB_ID = "universe_refresh"
CATCH_UP_JOB_ID = "kraken_ingest_catch_up"
DEFAULT_CRON = "0,15,30,45 * * * *"
"""Every quarter hour, on the quarter (UTC), when Kraken's 15m candles close."""
DEFAULT_UNIVERSE_CRON = "7 * * * *"
"""Hourly, away from the quarter hours the ingest runs on."""


class IngestorLike(Protocol):
    """What the scheduler needs of ``sync.ingest.Ingestor``."""

    config: IngestConfig
    clock: Callable[[], datetime]

    def run(self, trigger: str = ...) -> IngestRun: ...

    def history(self, n: int = ...) -> list[IngestRun]: ...


class IngestScheduler:
    """Runs ``ingestor`` on a cron in a background thread (see the module docstring).

    ``cron`` is a five-field crontab string read in UTC; ``misfire_grace_seconds`` is how late a
    cycle may still start; ``universe_refresh`` (e.g. ``Market.refresh``) runs on
    ``universe_cron``."""

    def __init__(
        self,
        ingestor: IngestorLike,
        *,
        cron: str = DEFAULT_CRON,
        misfire_grace_seconds: int = 120,
        universe_refresh: Callable[[], Any] | None = None,
        universe_cron: str = DEFAULT_UNIVERSE_CRON,
    ) -> None:
        self.ingestor = ingestor
        self.cron = cron
        self._missed: list[datetime] = []
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._run, _crontab(cron, "cron"), args=("schedule",), id=INGEST_JOB_ID,
            name=INGEST_JOB_NAME, max_instances=1, coalesce=True,
            misfire_grace_time=misfire_grace_seconds, replace_existing=True,
        )
        self._universe_refresh = universe_refresh
        if universe_refresh is not None:
            self._scheduler.add_job(
                self._refresh_universe, _crontab(universe_cron, "universe_cron"),
                id=UNIVERSE_JOB_ID, name="Kraken pair universe refresh", max_instances=1,
                coalesce=True, misfire_grace_time=misfire_grace_seconds, replace_existing=True,
            )
        self._scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._scheduler.add_listener(self._on_overlap, EVENT_JOB_MAX_INSTANCES)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background scheduler; start one catch-up run when the last run is older
        than one cycle (or there is none)."""
        self._scheduler.start()
        now = self.ingestor.clock()
        last = self.ingestor.history(1)
        cycle = timedelta(minutes=self.ingestor.config.cycle_minutes)
        if not last or now - last[0].started_at > cycle:
            since = last[0].started_at.isoformat() if last else "never"
            log.info("last ingest run: %s; starting a catch-up run", since)
            self._scheduler.add_job(self._run, "date", run_date=now, args=("catch-up",),
                                    id=CATCH_UP_JOB_ID, name="Kraken OHLCV catch-up",
                                    misfire_grace_time=None, replace_existing=True)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler; with ``wait``, after the run in progress ends."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return bool(self._scheduler.running)

    @property
    def next_run_time(self) -> datetime | None:
        """When ``kraken_ingest`` fires next (UTC); ``None`` when not running."""
        if not self._scheduler.running:
            return None
        job = self._scheduler.get_job(INGEST_JOB_ID)
        return job.next_run_time if job is not None else None

    @property
    def missed(self) -> list[datetime]:
        """Scheduled times of the cycles that could not start within the grace (this process)."""
        with self._lock:
            return list(self._missed)

    # -- jobs and events -----------------------------------------------------------------------

    def _run(self, trigger: str) -> None:
        try:
            self.ingestor.run(trigger)
        except IngestBusyError as exc:
            log.warning("%s ingest run not started: %s", trigger, first_line(exc))

    def _refresh_universe(self) -> None:
        if self._universe_refresh is None:
            return
        try:
            self._universe_refresh()
        except Exception as exc:  # the next hour tries again; the ingest keeps the last universe
            log.error("universe refresh failed: %s", first_line(exc))

    def _on_missed(self, event: JobEvent) -> None:
        if event.job_id not in (INGEST_JOB_ID, CATCH_UP_JOB_ID):
            log.warning("job %s missed its %s run", event.job_id,
                        event.scheduled_run_time.isoformat())
            return
        with self._lock:
            self._missed.append(event.scheduled_run_time)
        log.critical("ingest cycle of %s missed: not started within the misfire grace",
                     event.scheduled_run_time.isoformat())

    def _on_overlap(self, event: JobSubmissionEvent) -> None:
        log.warning("job %s not started at %s: its previous run is still active", event.job_id,
                    ", ".join(t.isoformat() for t in event.scheduled_run_times))


def _crontab(expression: str, name: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise UsageError(f"{name} {expression!r} is not a five-field crontab: "
                         f"{first_line(exc)}") from None
