"""What a run leaves behind: its ``SyncReport`` (the ``--json`` payload) and the report's log
lines; the run log — ``<pipelines_dir>/<pipeline_name>.runs.json`` (the last ``RUN_LOG_SIZE``
runs), read back from the destination's ``_krakked_runs`` when that file is missing; and the
dlt trace (``_trace``) loaded to the destination with the run record."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt

from krakked.account.alerts import Alert
from krakked.account.common import short_error
from krakked.account.progress import rate_limit_waits

__all__ = ["RUNS_TABLE", "RUN_LOG_SIZE", "TRACE_TABLE", "SyncReport", "run_history"]

log = logging.getLogger("krakked.account")

TRACE_TABLE = "_trace"
RUNS_TABLE = "_krakked_runs"
RUN_LOG_SIZE = 200


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


def log_report(report: SyncReport) -> None:
    """Log the run on ``krakked.account``: one INFO line per resource (rows, cursor), one
    summary line (duration, API counters), and each alert at its level."""
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


# --- the run log ---------------------------------------------------------------------------------


def runs_file(pipeline: dlt.Pipeline) -> Path:
    """The local run log of ``pipeline``: ``<pipelines_dir>/<pipeline_name>.runs.json``."""
    return Path(pipeline.pipelines_dir) / f"{pipeline.pipeline_name}.runs.json"


def _read_local_runs(pipeline: dlt.Pipeline) -> list[dict[str, Any]] | None:
    path = runs_file(pipeline)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("run log %s unreadable (%s); starting a new one", path, type(exc).__name__)
        return None
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else None


def write_local_runs(pipeline: dlt.Pipeline, records: Sequence[Mapping[str, Any]]) -> None:
    """Replace the local run log with the last ``RUN_LOG_SIZE`` of ``records`` (atomically)."""
    path = runs_file(pipeline)
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


# --- monitoring loads ---------------------------------------------------------------------------


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


def load_monitoring(pipeline: dlt.Pipeline, trace: Any, record: Mapping[str, Any]) -> bool:
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
                    pipeline.pipeline_name, short_error(exc))
        return False
    return True
