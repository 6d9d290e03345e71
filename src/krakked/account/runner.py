"""The account-history runner: runs the ``kraken_futures`` / ``kraken_spot`` dlt sources into a dlt
destination (DuckDB by default), reports each run, keeps a run log and raises the original plan's
alerts.

Promises:

* **Where things live** (``krakked.account.destinations``). Pipelines ``kraken_futures`` and
  ``kraken_spot``, each loading into a dataset of the same name; working dirs under
  ``settings.paths.dlt_pipelines_dir`` (so ``KRAKKED_HOME`` relocates them); the default
  destination is the DuckDB file ``<data_dir>/kraken_futures_account.duckdb`` (resp.
  ``kraken_spot_account.duckdb``; see ``DUCKDB_FILES`` for why not ``kraken_futures.duckdb``).
  Any other destination is given by name (``postgres``, ``bigquery``, ``snowflake``,
  ``clickhouse``, ``motherduck`` …) and configured the dlt way
  (``DESTINATION__POSTGRES__CREDENTIALS``, ``.dlt/secrets.toml``).
* **Source** (``krakked.account.sources``). ``futures`` is the default (the original design's
  scope); ``spot`` and ``all`` (both, one after the other) are chosen explicitly. ``all`` is not
  the default even when both key pairs exist: Spot keys are often there for market data only,
  and a Spot history sync spends the key's Spot call counter.
* **Incremental.** Cursors live in dlt's resource state; ``since`` seeds only a resource that has
  no cursor yet; without it the first run fetches all the history Kraken serves. On a machine
  without the local working dir (ephemeral runners) the state, schema and run log are restored
  from the destination before anything is extracted, so a run resumes and loads no duplicates.
* **Progress** (``krakked.account.progress``). While a run extracts, every page of every
  resource is reported (pages, rows, rate-limit waits, cursor) to a ``progress`` callback; by
  default ``ProgressLog`` writes it as INFO lines on ``krakked.account.progress``.
* **Every run is reported** (``krakked.account.runlog``). One INFO line per resource (rows,
  cursor), one summary line (duration, API requests/retries/rate-limit waits/failures); the dlt
  trace is loaded to the destination (``_trace`` tables, dlt's documented way) together with the
  run record (``_krakked_runs``). The run log is also kept locally in
  ``<pipelines_dir>/<pipeline_name>.runs.json`` (the last ``RUN_LOG_SIZE`` runs); when that file
  is missing it is read back from ``_krakked_runs``.
* **Alerts** (``krakked.account.alerts``: ``THRESHOLDS``, the original plan's table) are
  evaluated after each run and by ``account_state``; they are logged on ``krakked.account`` at
  WARNING (original severity high, medium or low) or CRITICAL (a failed run).
* **Failures.** A run that raises is recorded (status ``failed``), alerted and re-raised as the
  krakked error that caused it (``RateLimitError``, ``AuthError`` …; dlt's own failures
  translated by ``krakked.account.common.destination_error``: an unknown destination
  ``UsageError``, one not configured ``ConfigError``, one that cannot be reached
  ``StoreError``), with the ``SyncReport`` attached as ``exc.sync_report``. Failed load jobs
  raise only with ``strict``; otherwise they are reported (status ``failed_jobs``, a CRITICAL
  alert). State, reset and pipeline creation translate dlt's failures the same way
  (``krakked.account.state``).
* **Exact amounts.** Every amount column is ``DECIMAL(38,18)``; columns an earlier version
  created as ``DOUBLE`` (the account log's) are named in a warning with the reset that fixes
  them. dlt's anonymous telemetry stays off unless the user turned it on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from dlt.common.destination import Destination
from dlt.pipeline.exceptions import PipelineStepFailed

from krakked.account.alerts import evaluate_alerts
from krakked.account.common import (
    account_key_pair,
    destination_error,
    exception_chain,
    krakked_cause,
    make_client,
    now_of,
    parse_since,
    short_error,
)
from krakked.account.destinations import (
    destination_label,
    file_format,
    make_pipeline,
    warn_inexact_columns,
)
from krakked.account.progress import ProgressCallback, ProgressLog, ProgressRelay, client_stats
from krakked.account.runlog import (
    SyncReport,
    load_monitoring,
    log_report,
    run_history,
    write_local_runs,
)
from krakked.account.sources import (
    DEFAULT_SOURCE,
    INCREMENTAL_RESOURCES,
    PIPELINES,
    PUBLIC_RESOURCES,
    RESOURCES,
    expand_source_kind,
    one_kind,
    validate_resources,
)
from krakked.account.state import cursor_of, resource_states, rows_loaded
from krakked.config import Settings, load_settings
from krakked.credentials import KeyPair
from krakked.errors import ConfigError, KrakkedError, StoreError, UsageError

__all__ = ["SOURCE_OPTIONS", "run_sync", "run_syncs"]

log = logging.getLogger("krakked.account")

SOURCE_OPTIONS: dict[str, dict[str, Any]] = {"futures": {"account_log_count": 5000}}
"""The runner's defaults for the source factories (``source_options`` overrides them). The
account log at 5,000 entries a call: Kraken prices ``count`` <= 5,000 at 6 history tokens and
<= 1,000 (the source's default is 500) at 3, so a long history costs 5x fewer tokens — 12
minutes of pacing instead of 60 per 100,000 entries — while a page stays small enough to keep
memory flat (``bench/account.py``)."""


def _key_pair(kind: str, settings: Settings, credentials: KeyPair | None,
              resources: Iterable[str]) -> KeyPair | None:
    """The key pair for ``kind`` (None only when every selected resource is public)."""
    return account_key_pair(kind, credentials, settings.paths,
                            public_only=set(resources) <= PUBLIC_RESOURCES[kind])


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
    kind = one_kind(source_kind)
    selected = validate_resources(kind, resources)
    since_at = parse_since(since, "--since")
    pipeline_name, factory = PIPELINES[kind]

    owned_client = None
    if client is None:
        credentials = _key_pair(kind, settings, credentials, selected)
        client = owned_client = make_client(kind, credentials, settings)
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
                     strict=strict, progress=ProgressRelay(pipeline_name, client, progress),
                     **options)
    source = source.with_resources(*selected)

    stats_before = client_stats(client)
    started_at = now_of(now)
    t0 = monotonic()
    info: Any = None
    error: BaseException | None = None
    status = "ok"
    try:
        info = pipeline.run(source, loader_file_format=file_format(pipeline))
        if strict:
            info.raise_on_failed_jobs()
    except Exception as exc:  # recorded, alerted and re-raised below
        if _is_failed_job(exc) and not strict:
            status = "failed_jobs"  # alerted (run_failed, CRITICAL) below
            info = getattr(exc, "step_info", None)
        else:
            error, status = exc, "failed"
    duration = monotonic() - t0
    finished_at = now_of(now)

    trace = pipeline.last_trace
    incremental = [r for r in selected if r in INCREMENTAL_RESOURCES[kind]]
    rows = rows_loaded(pipeline, selected) if status != "failed" else dict.fromkeys(selected, 0)
    states = resource_states(pipeline, getattr(source, "name", None) or pipeline_name)
    resources_out = {
        name: {"rows": rows.get(name, 0), **cursor_of(states.get(name),
                                                   name in INCREMENTAL_RESOURCES[kind])}
        for name in selected
    }
    api = _stats_delta(stats_before, client_stats(client))
    failed_jobs = _failed_job_count(info)
    raised: KrakkedError | None = None
    translated = False
    if error is not None:
        raised = krakked_cause(error)
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
        error=short_error(raised) if raised is not None else None,
        error_chain=[type(e).__name__ for e in exception_chain(error)] if error is not None else [],
        failed_jobs=failed_jobs,
        incremental=incremental,
    )
    # read after the run: ``run`` restores state, schema and the run log's table from the
    # destination first when the local working dir is new (a fresh machine)
    history = [] if dev_mode else run_history(pipeline)
    history.append(report.to_record())
    cursor_state = {name: cursor_of(states.get(name), True)
                    for name in INCREMENTAL_RESOURCES[kind] if name in states}
    report.alerts = evaluate_alerts(history, cursor_state, finished_at)
    record = report.to_record()
    history[-1] = record
    if not dev_mode:
        write_local_runs(pipeline, history)
    if isinstance(raised, UsageError | ConfigError | StoreError):
        log.debug("%s: trace and run record not loaded: the destination failed (%s)",
                  pipeline_name, raised)
    else:
        load_monitoring(pipeline, trace, record)
    if status != "failed":
        warn_inexact_columns(pipeline, source, selected)
    log_report(report)

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
