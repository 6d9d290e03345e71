"""The original plan's alerts: its threshold table as data (``THRESHOLDS``) and
``evaluate_alerts``, which says which hold now from the run log and the resources' cursors.
The runner logs them on ``krakked.account`` at WARNING (original severity high, medium or low)
or CRITICAL (a failed run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from krakked.account.common import readable_time
from krakked.errors import RateLimitError

__all__ = ["THRESHOLDS", "Alert", "Threshold", "evaluate_alerts"]


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
    now = readable_time(now) or datetime.now(UTC)
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
        stamps = [t for t in (readable_time(cursor.get("last_timestamp")),
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
            return readable_time(record.get("started_at"))
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
        since = readable_time(record.get("finished_at")) or since
    return since

