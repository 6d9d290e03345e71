"""The account-history runner: runs the ``kraken_futures`` / ``kraken_spot`` dlt sources into a dlt
destination (DuckDB by default), reports each run, keeps a run log and raises the original plan's
alerts.

Promises:

* **Where things live.** Pipelines ``kraken_futures`` and ``kraken_spot``, each loading into a
  dataset of the same name; working dirs under ``settings.paths.dlt_pipelines_dir`` (so
  ``KRAKKED_HOME`` relocates them); the default destination is the DuckDB file
  ``<data_dir>/kraken_futures_account.duckdb`` (resp. ``kraken_spot_account.duckdb``; see
  ``DUCKDB_FILES`` for why not ``kraken_futures.duckdb``). Any other destination is
  given by name (``postgres``, ``bigquery``, ``snowflake``, ``clickhouse``, ``motherduck`` …) and
  configured the dlt way (``DESTINATION__POSTGRES__CREDENTIALS``, ``.dlt/secrets.toml``).
* **Source.** ``futures`` is the default (the original design's scope); ``spot`` and ``all``
  (both, one after the other) are chosen explicitly. ``all`` is not the default even when both
  key pairs exist: Spot keys are often there for market data only, and a Spot history sync spends
  the key's Spot call counter.
* **Incremental.** Cursors live in dlt's resource state; ``since`` seeds only a resource that has
  no cursor yet; without it the first run fetches all the history Kraken serves. On a machine
  without the local working dir (ephemeral runners) the state, schema and run log are restored
  from the destination before anything is extracted, so a run resumes and loads no duplicates.
* **Progress.** While a run extracts, every page of every resource is reported (pages, rows,
  rate-limit waits, cursor) to a ``progress`` callback; by default ``ProgressLog`` writes it as
  INFO lines on ``krakked.account.progress``.
* **Every run is reported.** One INFO line per resource (rows, cursor), one summary line
  (duration, API requests/retries/rate-limit waits/failures); the dlt trace is loaded to the
  destination (``_trace`` tables, dlt's documented way) together with the run record
  (``_krakked_runs``). The run log is also kept locally in
  ``<pipelines_dir>/<pipeline_name>.runs.json`` (the last ``RUN_LOG_SIZE`` runs); when that file is
  missing it is read back from ``_krakked_runs``.
* **Alerts** (``THRESHOLDS``, the original plan's table) are evaluated after each run and by
  ``account_state``; they are logged on ``krakked.account`` at WARNING (original severity high,
  medium or low) or CRITICAL (a failed run).
* **Failures.** A run that raises is recorded (status ``failed``), alerted and re-raised as the
  krakked error that caused it (``RateLimitError``, ``AuthError`` …; dlt's own failures
  translated by ``krakked.account.common.destination_error``: an unknown destination
  ``UsageError``, one not configured ``ConfigError``, one that cannot be reached
  ``StoreError``), with the ``SyncReport`` attached as ``exc.sync_report``. Failed load jobs
  raise only with ``strict``; otherwise they are reported (status ``failed_jobs``, a CRITICAL
  alert). State, reset and pipeline creation translate dlt's failures the same way.
* **Exact amounts.** Every amount column is ``DECIMAL(38,18)``; columns an earlier version
  created as ``DOUBLE`` (the account log's) are named in a warning with the reset that fixes
  them. dlt's anonymous telemetry stays off unless the user turned it on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.pipeline.helpers import pipeline_drop

from krakked.account.common import (
    ProgressCallback,
    ResourceProgress,
    destination_error,
    destination_errors,
    dlt_telemetry_off_unless_chosen,
    exception_chain,
)
from krakked.account.futures import kraken_futures_source
from krakked.account.spot import kraken_spot_source
from krakked.config import Settings, load_settings
from krakked.credentials import KeyPair, load_key_pair
from krakked.errors import (
    ConfigError,
    KrakkedError,
    NoCredentialsError,
    RateLimitError,
    StoreError,
    UsageError,
)

__all__ = [
    "CURSOR_KEYS",
    "DUCKDB_FILES",
    "INCREMENTAL_RESOURCES",
    "PIPELINES",
    "PUBLIC_RESOURCES",
    "RESOURCES",
    "RUNS_TABLE",
    "RUN_LOG_SIZE",
    "SINCE_HELP",
    "SOURCE_KINDS",
    "SOURCE_OPTIONS",
    "THRESHOLDS",
    "TRACE_TABLE",
    "Alert",
    "ProgressLog",
    "ResourceProgress",
    "SyncReport",
    "Threshold",
    "account_state",
    "default_duckdb_path",
    "describe_progress",
    "destination_label",
    "evaluate_alerts",
    "expand_source_kind",
    "make_pipeline",
    "parse_since",
    "rate_limit_waits",
    "reset_all",
    "reset_resource",
    "run_history",
    "run_sync",
    "run_syncs",
    "validate_resources",
]

log = logging.getLogger("krakked.account")

# --- what exists ----------------------------------------------------------------------------

PIPELINES: dict[str, tuple[str, Callable[..., Any]]] = {
    "futures": ("kraken_futures", kraken_futures_source),
    "spot": ("kraken_spot", kraken_spot_source),
}
"""Source kind -> (pipeline, dataset and dlt source name; source factory)."""

RESOURCES: dict[str, tuple[str, ...]] = {
    "futures": ("executions", "account_log", "position_history", "tickers", "open_positions"),
    "spot": ("balances", "ledgers", "trades_history", "closed_orders", "deposits", "withdrawals"),
}
"""Source kind -> its resource names, in load order."""

INCREMENTAL_RESOURCES: dict[str, frozenset[str]] = {
    "futures": frozenset({"executions", "account_log", "position_history"}),
    "spot": frozenset({"ledgers", "trades_history", "closed_orders", "deposits", "withdrawals"}),
}
"""Resources with a cursor (merge); the others are snapshots (replace)."""

PUBLIC_RESOURCES: dict[str, frozenset[str]] = {"futures": frozenset({"tickers"}),
                                               "spot": frozenset()}
"""Resources that need no key pair."""

SOURCE_KINDS: tuple[str, ...] = ("futures", "spot", "all")
DEFAULT_SOURCE = "futures"
CURSOR_KEYS: tuple[str, ...] = ("last_timestamp", "continuation_token", "last_id")
TRACE_TABLE = "_trace"
RUNS_TABLE = "_krakked_runs"
RUN_LOG_SIZE = 200

SOURCE_OPTIONS: dict[str, dict[str, Any]] = {"futures": {"account_log_count": 5000}}
"""The runner's defaults for the source factories (``source_options`` overrides them). The
account log at 5,000 entries a call: Kraken prices ``count`` <= 5,000 at 6 history tokens and
<= 1,000 (the source's default is 500) at 3, so a long history costs 5x fewer tokens — 12
minutes of pacing instead of 60 per 100,000 entries — while a page stays small enough to keep
memory flat (``bench/account.py``)."""

SINCE_HELP = (
    "ISO 8601 time (e.g. 2024-01-01T00:00:00Z) that seeds the first incremental run of each "
    "resource; later runs resume from the saved cursor. Without it the first run fetches all "
    "the history Kraken serves."
)

_PRODUCT = {"futures": "futures", "spot": "spot"}

DUCKDB_FILES: dict[str, str] = {
    "futures": "kraken_futures_account.duckdb",
    "spot": "kraken_spot_account.duckdb",
}
"""Default DuckDB file per source kind, in the user data dir. Not ``kraken_futures.duckdb``:
DuckDB names a file's catalog after its stem (up to the first dot), and a catalog named like
the dataset (schema) ``kraken_futures`` makes every ``kraken_futures.<table>`` reference
ambiguous, which DuckDB refuses ("Ambiguous reference to catalog or schema") and dlt warns of."""


# --- alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """One alert rule of the original plan: its code, severity there, limit and meaning."""

    code: str
    severity: str  # the original plan's: critical | high | medium | low
    limit: float
    description: str

    @property
    def level(self) -> str:
        """The log level: CRITICAL for critical, WARNING for the rest."""
        return "CRITICAL" if self.severity == "critical" else "WARNING"


THRESHOLDS: dict[str, Threshold] = {
    t.code: t
    for t in (
        Threshold("zero_rows", "high", 2,
                  "incremental resources loaded 0 rows in this many consecutive runs"),
        Threshold("run_failed", "critical", 0, "the run raised (or load jobs failed)"),
        Threshold("rate_limit_exhausted", "medium", 0,
                  "a rate limit outlasted every retry and ended the run"),
        Threshold("cursor_lag", "medium", 3600,
                  "seconds a resource has not been in sync: since the last run that synced it "
                  "(a quiet account is in sync), or its last_timestamp if newer"),
        Threshold("slow_run", "low", 300, "seconds a run took"),
        Threshold("token_stale", "medium", 6 * 3600,
                  "seconds the same continuation token has persisted"),
    )
}
"""The original plan's alert table as data (limits in runs or seconds)."""


@dataclass(frozen=True)
class Alert:
    """A raised alert: ``level`` (WARNING | CRITICAL), ``code`` (a ``THRESHOLDS`` key),
    a one-line ``message``, the original ``severity`` and the ``resource`` concerned, if any."""

    level: str
    code: str
    message: str
    severity: str
    resource: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _alert(code: str, message: str, thresholds: Mapping[str, Threshold],
           resource: str | None = None) -> Alert:
    rule = thresholds[code]
    return Alert(rule.level, code, message, rule.severity, resource)


def _parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO string / datetime / Unix ms; None if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _as_dict(record: Any) -> Mapping[str, Any]:
    return record.to_dict() if hasattr(record, "to_dict") else record


def evaluate_alerts(
    history: Sequence[Mapping[str, Any]],
    state: Mapping[str, Mapping[str, Any]],
    now: datetime,
    *,
    thresholds: Mapping[str, Threshold] = THRESHOLDS,
) -> list[Alert]:
    """Return the alerts that hold now, by the original plan's thresholds.

    ``history`` holds run records (oldest first, as ``SyncReport.to_record`` makes them);
    ``state`` maps resource -> cursor dict (``last_timestamp``, ``continuation_token``) as it
    stands now. Run alerts (run_failed, rate_limit_exhausted, slow_run) look at the last run;
    zero_rows at the last ``limit`` runs (incremental resources only: snapshots such as tickers
    always have rows); cursor_lag and token_stale at every resource with a cursor. A resource
    is in sync as of the start of the last successful run that synced it without an error
    (a run that finds nothing new means the account was quiet, not that the data is behind),
    or as of its ``last_timestamp`` when that is newer; cursor_lag measures from there.
    """
    now = _parse_time(now) or datetime.now(UTC)
    records = [_as_dict(r) for r in history]
    alerts: list[Alert] = []
    last = records[-1] if records else None
    if last is not None:
        status = last.get("status")
        if status in ("failed", "failed_jobs"):
            what = last.get("error") or f"{last.get('failed_jobs', 0)} load job(s) failed"
            alerts.append(_alert("run_failed", f"{last.get('pipeline')}: run failed: {what}",
                                 thresholds))
        exhausted = (last.get("api") or {}).get("by_error", {}).get(RateLimitError.__name__)
        if RateLimitError.__name__ in (last.get("error_chain") or []) or exhausted:
            alerts.append(_alert(
                "rate_limit_exhausted",
                f"{last.get('pipeline')}: a rate limit outlasted every retry (the run, or a "
                "resource's part of it, stopped there; sync less often)", thresholds))
        duration = float(last.get("duration_seconds") or 0.0)
        if duration > thresholds["slow_run"].limit:
            alerts.append(_alert(
                "slow_run", f"{last.get('pipeline')}: run took {duration:.0f} s "
                f"(over {thresholds['slow_run'].limit:.0f} s)", thresholds))
    runs_needed = int(thresholds["zero_rows"].limit)
    recent = [r for r in records if r.get("incremental")][-runs_needed:]
    if runs_needed > 0 and len(recent) >= runs_needed and all(
        r.get("status") == "ok" and sum(r.get("incremental_rows", {}).values()) == 0
        for r in recent
    ) and last is not None and recent[-1] is last:
        alerts.append(_alert(
            "zero_rows", f"{last.get('pipeline')}: incremental resources loaded 0 rows in "
            f"{len(recent)} consecutive runs (check connectivity, permissions and cursors)",
            thresholds))
    lag_limit = thresholds["cursor_lag"].limit
    stale_limit = thresholds["token_stale"].limit
    for resource, cursor in state.items():
        stamps = [t for t in (_parse_time(cursor.get("last_timestamp")),
                              _last_clean_sync(records, resource)) if t is not None]
        in_sync = max(stamps) if stamps else None
        if in_sync is not None and (now - in_sync).total_seconds() > lag_limit:
            hours = (now - in_sync).total_seconds() / 3600
            alerts.append(_alert(
                "cursor_lag", f"{resource}: in sync only up to {in_sync.isoformat()}, "
                f"{hours:.1f} h behind (over {lag_limit / 3600:g} h)", thresholds, resource))
        token = cursor.get("continuation_token")
        if token:
            since = _token_since(records, resource, token)
            if since is not None and (now - since).total_seconds() > stale_limit:
                hours = (now - since).total_seconds() / 3600
                alerts.append(_alert(
                    "token_stale", f"{resource}: the same continuation token has persisted "
                    f"{hours:.1f} h (over {stale_limit / 3600:g} h; paging may be stuck)",
                    thresholds, resource))
    return alerts


def _last_clean_sync(records: Sequence[Mapping[str, Any]], resource: str) -> datetime | None:
    """When the newest successful run that synced ``resource`` without an error started (its
    data is complete up to then), or None."""
    for record in reversed(records):
        cursor = (record.get("cursors") or {}).get(resource)
        if record.get("status") == "ok" and cursor is not None and not cursor.get("error"):
            return _parse_time(record.get("started_at"))
    return None


def _token_since(records: Sequence[Mapping[str, Any]], resource: str, token: str
                 ) -> datetime | None:
    """When ``token`` was first seen for ``resource`` in the unbroken run of recent records
    that all carry it (None if no record carries it)."""
    since: datetime | None = None
    for record in reversed(records):
        cursor = (record.get("cursors") or {}).get(resource)
        if cursor is None:
            continue  # this run did not touch the resource
        if cursor.get("continuation_token") != token:
            break
        since = _parse_time(record.get("finished_at")) or since
    return since


# --- progress -------------------------------------------------------------------------------

progress_log = logging.getLogger("krakked.account.progress")


def rate_limit_waits(counters: Mapping[str, Any]) -> int:
    """How many calls waited on a rate limit, read from a client's ``stats.to_dict()`` or a
    run's ``api`` counters: ``rate_limit_waits`` (the client's own limiter made a call wait)
    where the client counts it, else ``rate_limited`` (Kraken told it to wait). The one place
    that reads the figure, for the progress display and the run summary."""
    value = counters.get("rate_limit_waits", counters.get("rate_limited", 0))
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def describe_progress(event: ResourceProgress) -> str:
    """One line for a resource's progress: ``kraken_futures.executions: 3 pages, 150 rows,
    0 rate-limit waits, cursor 2026-…`` (``; done`` or ``; stopped: <error>`` at its end)."""
    name = f"{event.pipeline}.{event.resource}" if event.pipeline else event.resource
    text = (f"{name}: {event.pages} page{'s' if event.pages != 1 else ''}, {event.rows} rows, "
            f"{event.rate_limit_waits} rate-limit waits, cursor {event.cursor or '-'}")
    if event.error:
        return f"{text}; stopped: {event.error}"
    return f"{text}; done" if event.done else text


class ProgressLog:
    """Progress as INFO lines on ``krakked.account.progress`` (what a sync shows when no
    terminal is watching): per resource at most one line every ``interval`` seconds while it
    runs, and always one when it ends."""

    def __init__(self, interval: float = 5.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[str | None, str], float] = {}

    def __call__(self, event: ResourceProgress) -> None:
        key = (event.pipeline, event.resource)
        now = self.clock()
        if not event.done and now - self._last.get(key, -math.inf) < self.interval:
            return
        self._last[key] = now
        progress_log.info("%s", describe_progress(event))


class _ProgressRelay:
    """Passes the sources' progress on with the pipeline's name and each resource's rate-limit
    waits: the client's count since the previous page is credited to the resource whose page
    that was (calls are made one at a time). Pages, rows and cursor never go backwards."""

    def __init__(self, pipeline: str, client: Any, target: ProgressCallback) -> None:
        self.pipeline = pipeline
        self.client = client
        self.target = target
        self.last_waits = rate_limit_waits(_client_stats(client))
        self.waits: dict[str, int] = {}
        self.seen: dict[str, ResourceProgress] = {}

    def __call__(self, event: ResourceProgress) -> None:
        waits = rate_limit_waits(_client_stats(self.client))
        self.waits[event.resource] = self.waits.get(event.resource, 0) + max(
            0, waits - self.last_waits)
        self.last_waits = waits
        before = self.seen.get(event.resource)
        merged = replace(
            event, pipeline=self.pipeline, rate_limit_waits=self.waits[event.resource],
            pages=max(event.pages, before.pages if before else 0),
            rows=max(event.rows, before.rows if before else 0),
            cursor=event.cursor or (before.cursor if before else None))
        self.seen[event.resource] = merged
        self.target(merged)


# --- the report -----------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What one run did. ``to_dict()`` is the ``--json`` payload (JSON-serializable)."""

    pipeline: str
    source: str
    destination: str
    dataset: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    status: str  # ok | failed | failed_jobs
    resources: dict[str, dict[str, Any]]
    api: dict[str, Any]
    alerts: list[Alert] = field(default_factory=list)
    load_info: dict[str, Any] | None = None
    error: str | None = None
    error_chain: list[str] = field(default_factory=list)
    failed_jobs: int = 0
    incremental: list[str] = field(default_factory=list)

    @property
    def rows(self) -> dict[str, int]:
        """Rows loaded per resource."""
        return {name: int(r.get("rows", 0)) for name, r in self.resources.items()}

    @property
    def cursors(self) -> dict[str, dict[str, Any]]:
        """Cursor per resource (only the cursor keys)."""
        return {name: {k: v for k, v in r.items() if k != "rows"}
                for name, r in self.resources.items()}

    def to_record(self) -> dict[str, Any]:
        """The run-log entry: compact, JSON-ready, what ``evaluate_alerts`` reads."""
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "source": self.source,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "status": self.status,
            "rows": self.rows,
            "incremental": list(self.incremental),
            "incremental_rows": {k: v for k, v in self.rows.items() if k in self.incremental},
            "cursors": self.cursors,
            "api": dict(self.api),
            "error": self.error,
            "error_chain": list(self.error_chain),
            "failed_jobs": self.failed_jobs,
            "alerts": [a.code for a in self.alerts],
        }

    def to_dict(self) -> dict[str, Any]:
        """The structured report: pipeline, destination, dataset, resources {name: {rows,
        last_timestamp, continuation_token}}, duration_seconds, api {requests, retries,
        rate_limited, failures, …}, alerts [{level, code, message, …}], load_info."""
        return {
            "pipeline": self.pipeline,
            "source": self.source,
            "destination": self.destination,
            "dataset": self.dataset,
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "resources": {name: dict(r) for name, r in self.resources.items()},
            "api": dict(self.api),
            "alerts": [a.to_dict() for a in self.alerts],
            "error": self.error,
            "failed_jobs": self.failed_jobs,
            "load_info": self.load_info,
        }


# --- inputs ---------------------------------------------------------------------------------


def expand_source_kind(source: str | None) -> tuple[str, ...]:
    """``futures`` / ``spot`` / ``all`` (None = ``futures``) -> the kinds to run, in order."""
    source = DEFAULT_SOURCE if source is None else source.strip().lower()
    if source == "all":
        return ("futures", "spot")
    if source not in PIPELINES:
        raise UsageError(
            f"unknown source {source!r}; expected one of {', '.join(SOURCE_KINDS)}")
    return (source,)


def _one_kind(source: str | None) -> str:
    """``source`` as one kind (``futures`` / ``spot``); ``all`` is refused where one is meant."""
    kinds = expand_source_kind(source)
    if len(kinds) != 1:
        raise UsageError(f"source {source!r} names {len(kinds)} sources; give one of "
                         f"{', '.join(PIPELINES)} here")
    return kinds[0]


def validate_resources(source_kind: str, resources: Iterable[str] | None) -> tuple[str, ...]:
    """The resources to run (all of the kind's when None/empty), in load order, deduplicated.

    Raises ``UsageError`` naming the unknown names and listing the valid ones.
    """
    kind = _one_kind(source_kind)
    known = RESOURCES[kind]
    wanted = [r.strip() for r in (resources or ()) if r and r.strip()]
    if not wanted:
        return known
    unknown = [r for r in dict.fromkeys(wanted) if r not in known]
    if unknown:
        raise UsageError(
            f"unknown {kind} resource(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    return tuple(r for r in known if r in wanted)


def parse_since(since: str | datetime | None) -> datetime | None:
    """``--since`` as an aware UTC datetime (naive input is taken as UTC); None passes through.

    Raises ``UsageError`` for text that is not ISO 8601.
    """
    if since is None or (isinstance(since, str) and not since.strip()):
        return None
    parsed = _parse_time(since) if not isinstance(since, int | float) else None
    if parsed is None:
        raise UsageError(
            f"--since {since!r} is not an ISO 8601 time (e.g. 2024-01-01T00:00:00Z)")
    return parsed.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _now_of(now: Callable[[], datetime] | datetime | None) -> datetime:
    if now is None:
        return _utcnow()
    value = now() if callable(now) else now
    return _parse_time(value) or _utcnow()


# --- pipelines ------------------------------------------------------------------------------


def default_duckdb_path(source_kind: str, settings: Settings) -> Path:
    """``<data_dir>/kraken_futures_account.duckdb`` (resp. spot): see ``DUCKDB_FILES``."""
    kind = _one_kind(source_kind)
    return settings.paths.data_dir / DUCKDB_FILES[kind]


DUCKDB_CONFIG: dict[str, Any] = {"memory_limit": "90MB"}
"""Settings of the default DuckDB destination. A bounded memory (DuckDB spills to disk beyond
it) keeps a sync of any size flat on a laptop: unbounded, merging a first sync of 100,000
executions takes ~550 MB in DuckDB alone; bounded, the merge is slower (it spills) but the
process stays under 400 MB (``bench/account.py``). 90 MB since the account log's amounts became
DECIMAL(38,18) (16 bytes a value, DOUBLE's 8): at 100 MB its merge of 100,000 entries peaked at
~402 MB; at 90 MB ~394 MB, for a few seconds more."""


def _destination(source_kind: str, destination: str | Destination | None,
                 settings: Settings) -> Destination | str:
    if isinstance(destination, str) and destination.strip().lower() == "duckdb":
        destination = None
    if destination is None:
        path = default_duckdb_path(source_kind, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        return dlt.destinations.duckdb(credentials=DuckDbCredentials(
            str(path), global_config=dict(DUCKDB_CONFIG)))
    return destination.strip() if isinstance(destination, str) else destination


def make_pipeline(
    source_kind: str,
    *,
    destination: str | Destination | None = None,
    settings: Settings,
    dev_mode: bool = False,
    pipelines_dir: Path | str | None = None,
) -> dlt.Pipeline:
    """The dlt pipeline of ``source_kind``: name and dataset ``kraken_futures`` /
    ``kraken_spot``, working dir under ``pipelines_dir`` (default
    ``settings.paths.dlt_pipelines_dir``), destination the default DuckDB file unless another
    is named (configured the dlt way). ``dev_mode`` gives dlt's fresh dataset and state.
    dlt's anonymous telemetry stays off unless the user turned it on
    (``dlt_telemetry_off_unless_chosen``). An unknown destination raises ``UsageError``."""
    kind = _one_kind(source_kind)
    name = PIPELINES[kind][0]
    directory = Path(pipelines_dir) if pipelines_dir is not None else (
        settings.paths.dlt_pipelines_dir)
    directory.mkdir(parents=True, exist_ok=True)
    dlt_telemetry_off_unless_chosen()
    with destination_errors(destination_label(kind, destination, settings)):
        return dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(directory),
            destination=_destination(kind, destination, settings),
            dataset_name=name,
            dev_mode=dev_mode,
        )


def destination_label(source_kind: str, destination: str | Destination | None,
                      settings: Settings) -> str:
    """How reports name the destination: ``duckdb:<path>`` for the default, else its name."""
    if destination is None or (
            isinstance(destination, str) and destination.strip().lower() == "duckdb"):
        return f"duckdb:{default_duckdb_path(source_kind, settings)}"
    if isinstance(destination, str):
        return destination.strip()
    return str(getattr(destination, "destination_name", None) or destination.destination_type)


def _file_format(pipeline: dlt.Pipeline) -> str | None:
    """Parquet for DuckDB, whose dlt default (INSERT VALUES statements) costs ~100x the time
    and gigabytes of memory on a large history; other destinations keep dlt's choice."""
    dest = pipeline.destination
    if dest is not None and str(dest.destination_type).rsplit(".", 1)[-1] == "duckdb":
        return "parquet"
    return None


def _runs_file(pipeline: dlt.Pipeline) -> Path:
    return Path(pipeline.pipelines_dir) / f"{pipeline.pipeline_name}.runs.json"


# --- run log --------------------------------------------------------------------------------


def _read_local_runs(pipeline: dlt.Pipeline) -> list[dict[str, Any]] | None:
    path = _runs_file(pipeline)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("run log %s unreadable (%s); starting a new one", path, type(exc).__name__)
        return None
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else None


def _write_local_runs(pipeline: dlt.Pipeline, records: Sequence[Mapping[str, Any]]) -> None:
    path = _runs_file(pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(list(records)[-RUN_LOG_SIZE:], default=str, indent=1),
                   encoding="utf-8")
    tmp.replace(path)


def _has_table(pipeline: dlt.Pipeline, table: str) -> bool:
    if not pipeline.default_schema_name:
        return False
    return table in pipeline.default_schema.tables


def _read_remote_runs(pipeline: dlt.Pipeline) -> list[dict[str, Any]]:
    """The run log kept in the destination's ``_krakked_runs`` (empty if there is none)."""
    if not _has_table(pipeline, RUNS_TABLE):
        return []
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name(RUNS_TABLE)
            rows = client.execute_sql(
                f"SELECT record_json FROM {table} ORDER BY started_at DESC LIMIT {RUN_LOG_SIZE}"  # noqa: S608
            )
    except Exception as exc:  # a missing log is not a reason to fail a run
        log.debug("run log not readable from the destination: %s", exc)
        return []
    records = []
    for (text,) in reversed(rows or []):
        try:
            records.append(json.loads(text))
        except (TypeError, ValueError):
            continue
    return records


def run_history(pipeline: dlt.Pipeline) -> list[dict[str, Any]]:
    """The pipeline's run log, oldest first: the local file, else the destination's copy."""
    local = _read_local_runs(pipeline)
    if local is not None:
        return local
    return _read_remote_runs(pipeline)


# --- credentials and clients ----------------------------------------------------------------


def _key_pair(kind: str, settings: Settings, credentials: KeyPair | None,
              resources: Sequence[str]) -> KeyPair | None:
    """The key pair for ``kind`` (None only when every selected resource is public)."""
    if credentials is not None:
        return credentials
    try:
        return load_key_pair(_PRODUCT[kind], paths=settings.paths)
    except NoCredentialsError:
        if set(resources) <= PUBLIC_RESOURCES[kind]:
            return None
        raise


def _make_client(kind: str, credentials: KeyPair | None, settings: Settings) -> Any:
    if kind == "futures":
        from krakked.kraken.futures import FuturesClient

        return FuturesClient(credentials, settings=settings)
    from krakked.kraken.spot import SpotClient

    return SpotClient(credentials, settings=settings)


def _client_stats(client: Any) -> dict[str, Any]:
    stats = getattr(client, "stats", None)
    if stats is None:
        return {"requests": 0, "retries": 0, "rate_limited": 0, "failures": 0}
    return dict(stats.to_dict())


def _stats_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What this run added to a (possibly reused) client's counters."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        prev = before.get(key)
        if isinstance(value, int | float) and isinstance(prev, int | float):
            out[key] = round(value - prev, 3) if isinstance(value, float) else value - prev
        elif isinstance(value, dict) and isinstance(prev, dict):
            diff = {k: v - prev.get(k, 0) for k, v in value.items() if v - prev.get(k, 0)}
            out[key] = diff
        else:
            out[key] = value
    return out


# --- state ----------------------------------------------------------------------------------


def _resource_states(pipeline: dlt.Pipeline, source_name: str) -> dict[str, dict[str, Any]]:
    sources = pipeline.state.get("sources") or {}
    resources = (sources.get(source_name) or {}).get("resources") or {}
    return {name: dict(value) for name, value in resources.items() if isinstance(value, dict)}


def _cursor(state: Mapping[str, Any] | None, incremental: bool) -> dict[str, Any]:
    """The cursor keys of a resource's state (both main keys always, for incremental ones),
    plus ``error`` when the resource recorded one it kept going past (Spot's ``last_error``)."""
    state = state or {}
    out: dict[str, Any] = {}
    if incremental:
        out["last_timestamp"] = state.get("last_timestamp")
        out["continuation_token"] = state.get("continuation_token")
    for key in CURSOR_KEYS:
        if key in state and key not in out:
            out[key] = state[key]
    error = state.get("last_error")
    if error:
        out["error"] = str(error.get("message") if isinstance(error, Mapping) else error)
    return out


def _tables_by_resource(pipeline: dlt.Pipeline) -> dict[str, list[str]]:
    """Resource -> its root tables in the default schema."""
    out: dict[str, list[str]] = {}
    if not pipeline.default_schema_name:
        return out
    for name, table in pipeline.default_schema.tables.items():
        if table.get("parent") or name.startswith("_dlt"):
            continue
        resource = table.get("resource") or name
        out.setdefault(resource, []).append(name)
    return out


def _rows_loaded(pipeline: dlt.Pipeline, resources: Sequence[str]) -> dict[str, int]:
    trace = pipeline.last_trace
    info = trace.last_normalize_info if trace is not None else None
    counts = dict(info.row_counts) if info is not None else {}
    tables = _tables_by_resource(pipeline)
    return {r: sum(int(counts.get(t, 0)) for t in tables.get(r, [r])) for r in resources}


# --- monitoring loads -----------------------------------------------------------------------


class _DropNoTypeWarnings(logging.Filter):
    """dlt warns about every always-null trace column; those columns are expected to be null."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not receive any data" not in record.getMessage()


@contextlib.contextmanager
def _quiet_trace_columns() -> Iterator[None]:
    dlt_log = logging.getLogger("dlt")
    flt = _DropNoTypeWarnings()
    dlt_log.addFilter(flt)
    try:
        yield
    finally:
        dlt_log.removeFilter(flt)


def _runs_row(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": record["run_id"],
        "pipeline": record["pipeline"],
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
        "status": record["status"],
        "duration_seconds": record["duration_seconds"],
        "total_rows": sum(record["rows"].values()),
        "error": record.get("error"),
        "record_json": json.dumps(record, default=str, sort_keys=True),
    }


def _load_monitoring(pipeline: dlt.Pipeline, trace: Any, record: Mapping[str, Any]) -> bool:
    """Load the run's dlt trace (``_trace``) and its run record (``_krakked_runs``) to the
    destination in one load; False (logged) if that could not be done."""
    if pipeline.has_pending_data:
        log.warning("%s: trace and run record not loaded: the failed run left pending load "
                    "packages, which the next run loads first", pipeline.pipeline_name)
        return False
    data: list[Any] = [dlt.resource([_runs_row(record)], name=RUNS_TABLE,
                                    write_disposition="append")]
    if trace is not None:
        data.insert(0, dlt.resource([trace], name=TRACE_TABLE, write_disposition="append",
                                    max_table_nesting=0))
    try:
        with _quiet_trace_columns():
            pipeline.run(data)
    except Exception as exc:  # monitoring must not turn a good run into a failure
        log.warning("%s: trace and run record not loaded to the destination: %s",
                    pipeline.pipeline_name, _short_error(exc))
        return False
    return True


# --- columns written by an earlier version ---------------------------------------------------


def _warn_inexact_columns(pipeline: dlt.Pipeline, source: Any, selected: Sequence[str]
                          ) -> dict[str, list[str]]:
    """Warn about destination columns holding amounts as floating point (an earlier krakked
    stored the Futures account log as DOUBLE): dlt never changes a column's type, so new
    amounts would be rounded there too until the resource is reset. Returns {table: columns}."""
    wanted: dict[str, list[str]] = {}
    for name in selected:
        resource = source.resources.get(name) if hasattr(source, "resources") else None
        hints = getattr(resource, "columns", None)
        if isinstance(hints, Mapping):
            decimals = [c for c, h in hints.items() if (h or {}).get("data_type") == "decimal"]
            if decimals:
                wanted[name] = decimals
    if not wanted:
        return {}
    found: dict[str, list[str]] = {}
    try:
        with pipeline.destination_client() as client:
            if not hasattr(client, "get_storage_tables"):
                return {}
            for table, columns in client.get_storage_tables(list(wanted)):
                stored = {str(k).lower(): v for k, v in columns.items()}
                inexact = [c for c in wanted.get(table, [])
                           if (stored.get(c) or {}).get("data_type") in ("double", "bigint")]
                if inexact:
                    found[table] = inexact
    except Exception as exc:  # a check that cannot run must not fail a good sync
        log.debug("column types at the destination unavailable: %s", exc)
        return {}
    for table, columns in found.items():
        log.warning(
            "%s.%s: columns %s hold amounts as floating point (written by an earlier krakked); "
            "new rows are rounded there too. Run `krakked account reset %s` (--source %s) and "
            "sync again to store them exactly", pipeline.pipeline_name, table,
            ", ".join(columns), table, pipeline.pipeline_name.removeprefix("kraken_"))
    return found


# --- errors ---------------------------------------------------------------------------------


def _krakked_cause(exc: BaseException) -> KrakkedError | None:
    return next((e for e in exception_chain(exc) if isinstance(e, KrakkedError)), None)


def _short_error(exc: BaseException) -> str:
    cause = _krakked_cause(exc)
    target = cause if cause is not None else (
        exc.exception if isinstance(exc, PipelineStepFailed) else exc)
    text = str(target).strip().splitlines()
    return f"{type(target).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _is_failed_job(exc: BaseException) -> bool:
    from dlt.common.destination.exceptions import DestinationHasFailedJobs
    from dlt.load.exceptions import LoadClientJobFailed

    return isinstance(exc, PipelineStepFailed) and exc.step == "load" and isinstance(
        exc.exception, LoadClientJobFailed | DestinationHasFailedJobs)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _load_info_dict(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    try:
        return _jsonable(info.asdict())
    except Exception:  # fall back to the text form
        return {"text": str(info)}


def _failed_job_count(info: Any) -> int:
    if info is None:
        return 0
    try:
        return sum(len(p.jobs["failed_jobs"]) for p in info.load_packages)
    except (AttributeError, KeyError, TypeError):
        return 0


# --- running --------------------------------------------------------------------------------


def _log_report(report: SyncReport) -> None:
    for name, res in report.resources.items():
        cursor = " ".join(f"{k}={v}" for k, v in res.items() if k != "rows") or "snapshot"
        log.info("%s.%s: %d rows; %s", report.pipeline, name, res.get("rows", 0), cursor)
    api = report.api
    log.info(
        "%s: %s in %.1f s to %s; api requests=%s retries=%s rate-limit waits=%s failures=%s%s",
        report.pipeline, report.status, report.duration_seconds, report.destination,
        api.get("requests", 0), api.get("retries", 0), rate_limit_waits(api),
        api.get("failures", 0),
        f" errors={api.get('by_error')}" if api.get("by_error") else "",
    )
    for alert in report.alerts:
        log.log(logging.getLevelName(alert.level), "alert %s: %s", alert.code, alert.message)


def run_sync(
    source_kind: str = DEFAULT_SOURCE,
    *,
    resources: Iterable[str] | None = None,
    since: str | datetime | None = None,
    strict: bool = False,
    destination: str | Destination | None = None,
    dev_mode: bool = False,
    settings: Settings | None = None,
    credentials: KeyPair | None = None,
    client: Any = None,
    now: Callable[[], datetime] | datetime | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    pipelines_dir: Path | str | None = None,
    source_options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> SyncReport:
    """Run one account-history sync and return its report.

    Validates ``resources`` (``UsageError`` lists the valid names) and ``since``, finds
    the key pair (``NoCredentialsError`` says every way to set one; a region profile without
    Futures only earns a warning), restores state from the destination when the local working
    dir is new, extracts and loads the selected resources, then reports rows, duration, cursors
    and API counters, appends the run to the run log, loads the trace and run record to the
    destination and evaluates the alerts. ``client`` (with ``credentials``) replaces the client
    built from the key pair; ``now``/``monotonic`` are the clocks (tests); ``source_options``
    are passed to the source factory over ``SOURCE_OPTIONS`` (e.g. ``page_size``).
    ``progress`` is told, after every page and at each resource's end, its pages, rows,
    rate-limit waits and cursor (default: ``ProgressLog``, log lines). A failed run is recorded
    and re-raised as a krakked error with ``sync_report`` attached — Kraken's own, or dlt's
    translated by ``destination_error`` (an unknown destination ``UsageError``, a destination
    not configured ``ConfigError``, one that cannot be reached ``StoreError``); failed load
    jobs raise only with ``strict``.
    """
    settings = settings or load_settings()
    kind = _one_kind(source_kind)
    selected = validate_resources(kind, resources)
    since_at = parse_since(since)
    pipeline_name, factory = PIPELINES[kind]

    owned_client = None
    if client is None:
        credentials = _key_pair(kind, settings, credentials, selected)
        client = owned_client = _make_client(kind, credentials, settings)
    elif credentials is None:
        credentials = getattr(client, "credentials", None)
    if kind == "futures" and credentials is not None and not settings.region.supports_futures:
        log.warning(
            "region profile %s does not list futures; syncing Futures account history anyway "
            "because a Futures key pair exists", settings.region.code)

    try:
        return _run(kind, pipeline_name, factory, selected, since_at, strict, destination,
                    dev_mode, settings, credentials, client, now, monotonic, pipelines_dir,
                    dict(source_options or {}), progress or ProgressLog())
    finally:
        if owned_client is not None:
            owned_client.close()


def _run(
    kind: str, pipeline_name: str, factory: Callable[..., Any], selected: tuple[str, ...],
    since_at: datetime | None, strict: bool, destination: str | Destination | None,
    dev_mode: bool, settings: Settings, credentials: KeyPair | None, client: Any,
    now: Callable[[], datetime] | datetime | None, monotonic: Callable[[], float],
    pipelines_dir: Path | str | None, source_options: dict[str, Any],
    progress: ProgressCallback,
) -> SyncReport:
    pipeline = make_pipeline(kind, destination=destination, settings=settings,
                             dev_mode=dev_mode, pipelines_dir=pipelines_dir)
    label = destination_label(kind, destination, settings)
    options = {**SOURCE_OPTIONS.get(kind, {}), **source_options}
    source = factory(credentials, client=client, settings=settings, since=since_at,
                     strict=strict, progress=_ProgressRelay(pipeline_name, client, progress),
                     **options)
    source = source.with_resources(*selected)

    stats_before = _client_stats(client)
    started_at = _now_of(now)
    t0 = monotonic()
    info: Any = None
    error: BaseException | None = None
    status = "ok"
    try:
        info = pipeline.run(source, loader_file_format=_file_format(pipeline))
        if strict:
            info.raise_on_failed_jobs()
    except Exception as exc:  # recorded, alerted and re-raised below
        if _is_failed_job(exc) and not strict:
            status = "failed_jobs"  # alerted (run_failed, CRITICAL) below
            info = getattr(exc, "step_info", None)
        else:
            error, status = exc, "failed"
    duration = monotonic() - t0
    finished_at = _now_of(now)

    trace = pipeline.last_trace
    incremental = [r for r in selected if r in INCREMENTAL_RESOURCES[kind]]
    rows = _rows_loaded(pipeline, selected) if status != "failed" else dict.fromkeys(selected, 0)
    states = _resource_states(pipeline, getattr(source, "name", None) or pipeline_name)
    resources_out = {
        name: {"rows": rows.get(name, 0), **_cursor(states.get(name),
                                                   name in INCREMENTAL_RESOURCES[kind])}
        for name in selected
    }
    api = _stats_delta(stats_before, _client_stats(client))
    failed_jobs = _failed_job_count(info)
    raised: KrakkedError | None = None
    translated = False
    if error is not None:
        raised = _krakked_cause(error)
        if raised is None:
            raised, translated = destination_error(error, label), True
    report = SyncReport(
        pipeline=pipeline_name,
        source=kind,
        destination=label,
        dataset=pipeline.dataset_name,
        run_id=uuid.uuid4().hex,
        started_at=started_at,
        finished_at=finished_at,
        duration_seconds=duration,
        status=status,
        resources=resources_out,
        api=api,
        load_info=_load_info_dict(info),
        error=_short_error(raised) if raised is not None else None,
        error_chain=[type(e).__name__ for e in exception_chain(error)] if error is not None else [],
        failed_jobs=failed_jobs,
        incremental=incremental,
    )
    # read after the run: ``run`` restores state, schema and the run log's table from the
    # destination first when the local working dir is new (a fresh machine)
    history = [] if dev_mode else run_history(pipeline)
    history.append(report.to_record())
    cursor_state = {name: _cursor(states.get(name), True)
                    for name in INCREMENTAL_RESOURCES[kind] if name in states}
    report.alerts = evaluate_alerts(history, cursor_state, finished_at)
    record = report.to_record()
    history[-1] = record
    if not dev_mode:
        _write_local_runs(pipeline, history)
    if isinstance(raised, UsageError | ConfigError | StoreError):
        log.debug("%s: trace and run record not loaded: the destination failed (%s)",
                  pipeline_name, raised)
    else:
        _load_monitoring(pipeline, trace, record)
    if status != "failed":
        _warn_inexact_columns(pipeline, source, selected)
    _log_report(report)

    if raised is not None:
        with contextlib.suppress(AttributeError):
            raised.sync_report = report  # type: ignore[attr-defined]
        if translated:
            raise raised from error  # dlt's failure, translated; the original stays attached
        raise raised  # the krakked error itself (the CLI maps it); dlt's wrapper is in the trace
    return report


def run_syncs(
    source: str | None = DEFAULT_SOURCE,
    *,
    resources: Iterable[str] | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> list[SyncReport]:
    """Run ``futures``, ``spot`` or ``all`` (both, futures first) and return their reports.

    With ``all``, each resource name must belong to one of the sources; a source none of the
    named resources belongs to is skipped; both key pairs are checked before anything runs.
    """
    settings = settings or load_settings()
    kinds = expand_source_kind(source)
    wanted = [r for r in (resources or ()) if r and r.strip()]
    plan: list[tuple[str, tuple[str, ...]]] = []
    if len(kinds) == 1 or not wanted:
        plan = [(k, validate_resources(k, wanted)) for k in kinds]
    else:
        known = {r for k in kinds for r in RESOURCES[k]}
        unknown = [r for r in wanted if r not in known]
        if unknown:
            valid = "; ".join(f"{k}: {', '.join(RESOURCES[k])}" for k in kinds)
            raise UsageError(f"unknown resource(s) {', '.join(unknown)}; valid: {valid}")
        plan = [(k, validate_resources(k, [r for r in wanted if r in RESOURCES[k]]))
                for k in kinds if any(r in RESOURCES[k] for r in wanted)]
    if len(plan) > 1 and (kwargs.get("client") is not None
                          or kwargs.get("credentials") is not None):
        raise UsageError("client and credentials belong to one source; "
                                  "run each source with run_sync instead")
    if len(plan) > 1:
        for kind, selected in plan:
            _key_pair(kind, settings, None, selected)  # fail before any run
    return [run_sync(kind, resources=selected, settings=settings, **kwargs)
            for kind, selected in plan]


# --- state, reset ---------------------------------------------------------------------------


def _open_existing(source_kind: str, settings: Settings, destination: str | Destination | None,
                   pipelines_dir: Path | str | None) -> dlt.Pipeline | None:
    """The pipeline, synced with its destination; None when nothing exists anywhere yet."""
    kind = _one_kind(source_kind)
    directory = Path(pipelines_dir) if pipelines_dir is not None else (
        settings.paths.dlt_pipelines_dir)
    local = directory / PIPELINES[kind][0]
    is_default = destination is None or (
        isinstance(destination, str) and destination.strip().lower() == "duckdb")
    if is_default and not local.exists() and not default_duckdb_path(kind, settings).exists():
        return None
    pipeline = make_pipeline(kind, destination=destination, settings=settings,
                             pipelines_dir=pipelines_dir)
    with destination_errors(destination_label(kind, destination, settings)):
        pipeline.sync_destination()
    return pipeline


def _count_rows(pipeline: dlt.Pipeline, tables: Sequence[str]) -> int | None:
    if not tables:
        return None
    total = 0
    try:
        with pipeline.sql_client() as client:
            for table in tables:
                qualified = client.make_qualified_table_name(table)
                result = client.execute_sql(f"SELECT COUNT(*) FROM {qualified}")  # noqa: S608
                total += int(result[0][0]) if result else 0
    except Exception as exc:  # a table not yet created counts as unknown
        log.debug("row count of %s unavailable: %s", tables, exc)
        return None
    return total


def account_state(
    source_kind: str = DEFAULT_SOURCE,
    settings: Settings | None = None,
    destination: str | Destination | None = None,
    *,
    now: Callable[[], datetime] | datetime | None = None,
    pipelines_dir: Path | str | None = None,
    runs: int = 10,
) -> dict[str, Any]:
    """Per resource: ``last_timestamp``, ``continuation_token`` (``last_id`` where kept) and
    ``rows`` (rows in the destination table; None if it does not exist), plus the alerts that
    hold now and the last ``runs`` runs. State is restored from the destination first, so this
    works on a fresh machine; nothing is created when nothing was ever synced."""
    settings = settings or load_settings()
    kind = _one_kind(source_kind)
    name = PIPELINES[kind][0]
    pipeline = _open_existing(kind, settings, destination, pipelines_dir)
    out: dict[str, Any] = {"pipeline": name, "source": kind, "dataset": name,
                           "destination": None, "resources": {}, "alerts": [], "runs": []}
    if pipeline is None:
        out["destination"] = destination_label(kind, destination, settings)
        out["resources"] = {r: {**_cursor(None, r in INCREMENTAL_RESOURCES[kind]), "rows": None}
                            for r in RESOURCES[kind]}
        return out
    out["destination"] = destination_label(kind, destination, settings)
    out["dataset"] = pipeline.dataset_name
    states = _resource_states(pipeline, name)
    tables = _tables_by_resource(pipeline)
    for resource in RESOURCES[kind]:
        out["resources"][resource] = {
            **_cursor(states.get(resource), resource in INCREMENTAL_RESOURCES[kind]),
            "rows": _count_rows(pipeline, tables.get(resource, [])),
        }
    history = run_history(pipeline)
    cursor_state = {r: _cursor(states.get(r), True)
                    for r in INCREMENTAL_RESOURCES[kind] if r in states}
    alerts = evaluate_alerts(history, cursor_state, _now_of(now))
    out["alerts"] = [a.to_dict() for a in alerts]
    out["runs"] = history[-runs:] if runs > 0 else []
    return out


def reset_resource(
    source_kind: str,
    resource: str,
    settings: Settings | None = None,
    *,
    destination: str | Destination | None = None,
    pipelines_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Drop one resource's tables (with their nested tables) and its state, in the destination
    and locally (dlt's drop, as ``dlt pipeline <name> drop <resource>``); the next sync of it
    starts over. Returns what was dropped (empty when nothing was ever synced)."""
    settings = settings or load_settings()
    kind = _one_kind(source_kind)
    (resource,) = validate_resources(kind, [resource])
    pipeline = _open_existing(kind, settings, destination, pipelines_dir)
    if pipeline is None or not pipeline.default_schema_name:
        return {"pipeline": PIPELINES[kind][0], "resource": resource, "tables": [],
                "state": []}
    with destination_errors(destination_label(kind, destination, settings)):
        drop = pipeline_drop(pipeline, resources=[resource])
        info = drop.info
        drop()
    log.info("%s: reset %s (tables %s; state %s)", pipeline.pipeline_name, resource,
             ", ".join(info["tables"]) or "none", ", ".join(info["resource_states"]) or "none")
    return {"pipeline": pipeline.pipeline_name, "resource": resource,
            "tables": list(info["tables"]), "state": list(info["resource_states"])}


def reset_all(
    source_kind: str = DEFAULT_SOURCE,
    settings: Settings | None = None,
    *,
    destination: str | Destination | None = None,
    pipelines_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Drop every table and all resource state of the pipeline, in the destination and locally
    (as ``dlt pipeline <name> drop --drop-all``), and forget the local run log."""
    settings = settings or load_settings()
    kind = _one_kind(source_kind)
    pipeline = _open_existing(kind, settings, destination, pipelines_dir)
    if pipeline is None or not pipeline.default_schema_name:
        return {"pipeline": PIPELINES[kind][0], "tables": [], "state": []}
    with destination_errors(destination_label(kind, destination, settings)):
        drop = pipeline_drop(pipeline, drop_all=True)
        info = drop.info
        drop()
    with contextlib.suppress(FileNotFoundError):
        _runs_file(pipeline).unlink()
    log.info("%s: dropped all data and state (%d tables)", pipeline.pipeline_name,
             len(info["tables"]))
    return {"pipeline": pipeline.pipeline_name, "tables": list(info["tables"]),
            "state": list(info["resource_states"])}
