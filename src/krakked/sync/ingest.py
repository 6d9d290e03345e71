"""The scheduled OHLC ingest: every cycle, each active pair's new closed candles into the store.

One run walks the pairs in batches of ``batch_size`` and, for each pair and timeframe, takes the
``ohlc backfill`` path (``sync.ohlc.backfill_ohlc``): Kraken's closed bars since the stored
cursor, written with the cursor and the coverage in one transaction — so every pair is committed
on its own and a run killed between batches keeps the batches it finished. After each batch it
logs "Processed 10/30 assets".

Failure rules (the service's runbook):

* a pair Kraken does not know (invalid, delisted) or refuses is logged as an error and skipped;
  the other pairs are stored and the run is ``partial``;
* Kraken's ``SystemStatus`` saying ``maintenance`` makes the run ``skipped``;
* a store error is retried once; a second one fails the whole run; a whole-run failure (store,
  Kraken unreachable, every pair failing) is logged at CRITICAL with its cause;
* ``breaker_failures`` consecutive failed runs open a circuit breaker for
  ``breaker_pause_seconds`` (logged at WARNING as an alert); runs meanwhile are ``skipped``;
  the first run after the pause closes it on success and reopens it on failure;
* each run ends with one summary line (assets, candles, duration, errors) and is appended to
  the run log (JSON lines, the newest ``history_size`` kept).

OHLC serves only the latest 720 bars per interval: a gap longer than that (720 x 15 minutes =
7.5 days for 15m candles) is not refilled by a catch-up run; ``krakked gaps`` and trades fill it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from krakked.errors import (
    IngestBusyError,
    KrakenError,
    KrakkedError,
    StoreError,
    UsageError,
    first_line,
)
from krakked.kraken.spot import SpotClient
from krakked.market.candles import API_INTERVALS, interval_minutes
from krakked.store.base import MarketStore
from krakked.sync.ohlc import backfill_ohlc

__all__ = [
    "DEFAULT_ACTIVE_PAIRS",
    "RUN_STATUSES",
    "RUN_TRIGGERS",
    "IngestBusyError",
    "IngestConfig",
    "IngestRun",
    "Ingestor",
]

log = logging.getLogger("krakked.sync.ingest")

DEFAULT_ACTIVE_PAIRS: tuple[str, ...] = (
    "XBTUSD", "ETHUSD", "SOLUSD", "XRPUSD", "XDGUSD", "ADAUSD", "DOTUSD", "LINKUSD", "AVAXUSD",
    "LTCUSD", "BCHUSD", "ATOMUSD", "UNIUSD", "XLMUSD", "AAVEUSD", "ALGOUSD", "FILUSD", "NEARUSD",
    "ARBUSD", "OPUSD", "SHIBUSD", "PEPEUSD", "TRXUSD", "XTZUSD", "INJUSD", "SUIUSD", "APTUSD",
    "POLUSD", "USDTUSD", "USDCUSD",
)
"""The 30 liquid USD pairs the service ingests when no ``pairs`` are configured (altnames)."""

RUN_TRIGGERS = ("schedule", "manual", "catch-up")
"""What started a run: the cron, a person (API), the scheduler's start-up catch-up."""

RUN_STATUSES = ("ok", "partial", "failed", "skipped")
"""``ok``: every pair stored; ``partial``: some pairs skipped with errors; ``failed``: the run
could not do its job (cause in ``errors``); ``skipped``: not attempted (``skipped_reason``)."""


@dataclass(frozen=True)
class IngestConfig:
    """What the ingestor fetches and how it paces and protects itself.

    ``pairs`` ``None`` means ``DEFAULT_ACTIVE_PAIRS``; ``cycle_minutes`` is the schedule's
    period (the one ``missed_cycles`` counts in)."""

    timeframes: tuple[str, ...] = ("15m",)
    pairs: tuple[str, ...] | None = None
    batch_size: int = 5
    breaker_failures: int = 5
    breaker_pause_seconds: float = 300.0
    history_size: int = 100
    cycle_minutes: int = 15

    def __post_init__(self) -> None:
        if not self.timeframes:
            raise UsageError("ingest timeframes: give at least one (e.g. 15m)")
        for tf in self.timeframes:
            if interval_minutes(tf) not in API_INTERVALS:
                raise UsageError(f"ingest timeframe {tf}: not served by Kraken's OHLC API")
        if self.pairs is not None and not self.pairs:
            raise UsageError("ingest pairs: give at least one pair, or None for the defaults")
        for name, value in (("batch_size", self.batch_size),
                            ("breaker_failures", self.breaker_failures),
                            ("history_size", self.history_size),
                            ("cycle_minutes", self.cycle_minutes)):
            if value < 1:
                raise UsageError(f"ingest {name} must be at least 1, not {value}")
        if self.breaker_pause_seconds < 0:
            raise UsageError("ingest breaker_pause_seconds must not be negative")

    @property
    def active_pairs(self) -> tuple[str, ...]:
        """The pairs a run ingests."""
        return self.pairs if self.pairs is not None else DEFAULT_ACTIVE_PAIRS


@dataclass
class IngestRun:
    """What one run did; ``to_dict()`` is its JSON form (API and run log).

    ``errors`` holds ``{"pair", "error"}`` (``pair`` ``None`` for a whole-run cause or the
    account sync); ``account`` is the account sync's summary when one ran."""

    run_id: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    assets_total: int
    assets_done: int
    candles: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped_reason: str | None = None
    duration_seconds: float | None = None
    account: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: times as ISO 8601 strings."""
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestRun:
        """The inverse of ``to_dict``."""
        values = dict(data)
        values["started_at"] = datetime.fromisoformat(values["started_at"])
        if values.get("finished_at"):
            values["finished_at"] = datetime.fromisoformat(values["finished_at"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


class _RunFailed(Exception):
    """The whole run cannot go on; ``cause`` is the one-line reason."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Ingestor:
    """Runs one ingest cycle at a time and remembers the runs (see the module docstring).

    ``resolve`` turns any pair alias into the store's canonical name (``Market.resolve``);
    ``account_sync``, when given, runs after the candles and returns a JSON-able summary."""

    def __init__(
        self,
        client: SpotClient,
        store: MarketStore,
        resolve: Callable[[str], str],
        config: IngestConfig | None = None,
        *,
        runlog_path: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        account_sync: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.resolve = resolve
        self.config = config or IngestConfig()
        self.runlog_path = Path(runlog_path)
        self.clock = clock
        self.account_sync = account_sync
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._history: deque[IngestRun] = deque(self._load(), maxlen=self.config.history_size)
        self._failures = self._trailing_failures()
        self._breaker_until: datetime | None = None
        self._current: IngestRun | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a run is in progress."""
        return self._run_lock.locked()

    @property
    def breaker_open_until(self) -> datetime | None:
        """When the open circuit breaker lets runs through again; ``None`` when closed."""
        with self._state_lock:
            until = self._breaker_until
        return until if until is not None and self.clock() < until else None

    def history(self, n: int = 20) -> list[IngestRun]:
        """The last ``n`` runs, newest first (persisted across restarts)."""
        with self._state_lock:
            runs = list(self._history)
        return runs[::-1][:max(n, 0)]

    def missed_cycles(self) -> list[datetime]:
        """Start times of the schedule's cycles that ended with no run, since the last run's
        cycle (empty before any run)."""
        last = self.history(1)
        if not last:
            return []
        minutes = self.config.cycle_minutes
        step = timedelta(minutes=minutes)
        cycle = _cycle_start(last[0].started_at, minutes) + step
        current = _cycle_start(self.clock(), minutes)
        missed = []
        while cycle < current:
            missed.append(cycle)
            cycle += step
        return missed

    # -- a run ---------------------------------------------------------------------------------

    def run(self, trigger: str = "manual") -> IngestRun:
        """Run one ingest cycle now and return what it did (blocking).

        Raises ``IngestBusyError`` if a run is already active; a failing run is returned with
        status ``failed``, never raised."""
        if trigger not in RUN_TRIGGERS:
            raise UsageError(f"ingest trigger {trigger!r}: use one of {', '.join(RUN_TRIGGERS)}")
        if not self._run_lock.acquire(blocking=False):
            current = self._current
            since = f" (started {current.started_at.isoformat()})" if current else ""
            raise IngestBusyError(f"an ingest run is already active{since}")
        try:
            run = self._execute(trigger)
            self._record(run)
            return run
        finally:
            self._current = None
            self._run_lock.release()

    def _execute(self, trigger: str) -> IngestRun:
        pairs = self.config.active_pairs
        run = IngestRun(run_id=uuid.uuid4().hex, trigger=trigger, started_at=self.clock(),
                        finished_at=None, status="running", assets_total=len(pairs),
                        assets_done=0, candles=0)
        self._current = run
        started = time.monotonic()
        until = self.breaker_open_until
        if until is not None:
            return self._skip(run, started, f"circuit breaker open until {until.isoformat()} "
                                            f"after {self._failures} consecutive failed runs")
        try:
            status = self.client.get_system_status().get("status")
            if status == "maintenance":
                return self._skip(run, started, "Kraken is in maintenance (SystemStatus)")
            self._ingest(run, pairs)
            if run.errors and len({e["pair"] for e in run.errors}) >= len(pairs):
                raise _RunFailed("every pair failed; last error: " + run.errors[-1]["error"])
        except _RunFailed as exc:
            return self._fail(run, started, exc.cause, None)
        except KrakkedError as exc:
            return self._fail(run, started, first_line(exc), None)
        except Exception as exc:  # a bug must not kill the scheduler thread: record it loudly
            return self._fail(run, started, f"{type(exc).__name__}: {first_line(exc)}", exc)
        if self.account_sync is not None:
            try:
                run.account = self.account_sync()
            except Exception as exc:  # the candles are stored; say what the account sync did
                log.error("ingest run %s: account sync failed: %s", run.run_id, first_line(exc))
                run.errors.append({"pair": None, "error": f"account sync: {first_line(exc)}"})
        run.status = "partial" if run.errors else "ok"
        return self._finish(run, started)

    def _ingest(self, run: IngestRun, pairs: Sequence[str]) -> None:
        size = self.config.batch_size
        for first in range(0, len(pairs), size):
            for pair in pairs[first:first + size]:
                run.candles += self._ingest_pair(run, pair)
                run.assets_done += 1
            log.info("Processed %d/%d assets", run.assets_done, run.assets_total)

    def _ingest_pair(self, run: IngestRun, pair: str) -> int:
        try:
            symbol = self.resolve(pair)
        except KrakkedError as exc:
            return self._pair_error(run, pair, exc)
        stored = 0
        for tf in self.config.timeframes:
            try:
                stored += self._backfill(symbol, tf)
            except StoreError as exc:
                raise _RunFailed(f"store error on {symbol} {tf} (after one retry): "
                                 f"{first_line(exc)}") from exc
            except KrakenError as exc:
                return stored + self._pair_error(run, pair, exc)
        return stored

    def _backfill(self, symbol: str, tf: str) -> int:
        """One pair and timeframe through ``ohlc backfill``'s path; a store error retried once."""
        try:
            return backfill_ohlc(self.client, self.store, symbol, tf, now=self.clock).stored
        except StoreError as exc:
            log.warning("%s %s: store error, retrying once: %s", symbol, tf, first_line(exc))
            return backfill_ohlc(self.client, self.store, symbol, tf, now=self.clock).stored

    @staticmethod
    def _pair_error(run: IngestRun, pair: str, exc: KrakkedError) -> int:
        log.error("ingest %s skipped: %s", pair, first_line(exc))
        run.errors.append({"pair": pair, "error": first_line(exc)})
        return 0

    def _skip(self, run: IngestRun, started: float, reason: str) -> IngestRun:
        run.status, run.skipped_reason = "skipped", reason
        return self._finish(run, started)

    def _fail(self, run: IngestRun, started: float, cause: str,
              exc: BaseException | None) -> IngestRun:
        run.status = "failed"
        run.errors.append({"pair": None, "error": cause})
        log.critical("ingest run %s failed: %s", run.run_id, cause, exc_info=exc)
        return self._finish(run, started)

    def _finish(self, run: IngestRun, started: float) -> IngestRun:
        run.finished_at = self.clock()
        run.duration_seconds = round(time.monotonic() - started, 3)
        log.info("ingest run %s (%s): %s, %d/%d assets, %d candles, %.1fs, %d errors%s",
                 run.run_id, run.trigger, run.status, run.assets_done, run.assets_total,
                 run.candles, run.duration_seconds, len(run.errors),
                 f" ({run.skipped_reason})" if run.skipped_reason else "")
        self._update_breaker(run)
        return run

    def _update_breaker(self, run: IngestRun) -> None:
        if run.status == "skipped":
            return
        with self._state_lock:
            if run.status != "failed":
                self._failures, self._breaker_until = 0, None
                return
            self._failures += 1
            if self._failures < self.config.breaker_failures:
                return
            pause = timedelta(seconds=self.config.breaker_pause_seconds)
            self._breaker_until = self.clock() + pause
            failures, until = self._failures, self._breaker_until
        log.warning("ALERT: ingest circuit breaker open after %d consecutive failed runs; "
                    "runs are skipped until %s", failures, until.isoformat())

    # -- the run log ---------------------------------------------------------------------------

    def _record(self, run: IngestRun) -> None:
        with self._state_lock:
            self._history.append(run)
            runs = list(self._history)
        try:
            self.runlog_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.runlog_path.with_name(self.runlog_path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in runs),
                           encoding="utf-8")
            os.replace(tmp, self.runlog_path)
        except OSError as exc:  # the run happened; losing its record must not fail it
            log.error("ingest run log %s not written: %s", self.runlog_path, first_line(exc))

    def _load(self) -> list[IngestRun]:
        runs: list[IngestRun] = []
        with contextlib.suppress(FileNotFoundError):
            for number, line in enumerate(
                    self.runlog_path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    runs.append(IngestRun.from_dict(json.loads(line)))
                except (ValueError, TypeError, KeyError) as exc:
                    log.warning("%s:%d: unreadable ingest run skipped: %s", self.runlog_path,
                                number, first_line(exc))
        return runs

    def _trailing_failures(self) -> int:
        count = 0
        for run in reversed(self._history):
            if run.status == "skipped":
                continue
            if run.status != "failed":
                break
            count += 1
        return count


def _cycle_start(ts: datetime, minutes: int) -> datetime:
    """The start of the ``minutes``-long schedule cycle holding ``ts`` (cycles from the epoch)."""
    seconds = int(ts.timestamp())
    return datetime.fromtimestamp(seconds - seconds % (minutes * 60), UTC)
