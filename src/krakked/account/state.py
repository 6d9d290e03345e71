"""State and reset of the account pipelines: each resource's cursor as dlt keeps it,
``account_state`` (cursors, rows at the destination, the alerts that hold now, the last runs —
restored from the destination on a fresh machine), and ``reset_resource`` / ``reset_all``
(dlt's drop, in the destination and locally)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.pipeline.helpers import pipeline_drop

from krakked.account.alerts import evaluate_alerts
from krakked.account.common import destination_errors, now_of
from krakked.account.destinations import default_duckdb_path, destination_label, make_pipeline
from krakked.account.runlog import run_history, runs_file
from krakked.account.sources import (
    DEFAULT_SOURCE,
    INCREMENTAL_RESOURCES,
    PIPELINES,
    RESOURCES,
    one_kind,
    validate_resources,
)
from krakked.config import Settings, load_settings

__all__ = ["CURSOR_KEYS", "account_state", "reset_all", "reset_resource"]

log = logging.getLogger("krakked.account")

CURSOR_KEYS: tuple[str, ...] = ("last_timestamp", "continuation_token", "last_id")


def resource_states(pipeline: dlt.Pipeline, source_name: str) -> dict[str, dict[str, Any]]:
    """Resource -> its state as dlt keeps it (``sources.<source_name>.resources``)."""
    sources = pipeline.state.get("sources") or {}
    resources = (sources.get(source_name) or {}).get("resources") or {}
    return {name: dict(value) for name, value in resources.items() if isinstance(value, dict)}


def cursor_of(state: Mapping[str, Any] | None, incremental: bool) -> dict[str, Any]:
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


def tables_by_resource(pipeline: dlt.Pipeline) -> dict[str, list[str]]:
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


def rows_loaded(pipeline: dlt.Pipeline, resources: Sequence[str]) -> dict[str, int]:
    """Rows the pipeline's last run loaded per resource (summed over its root tables)."""
    trace = pipeline.last_trace
    info = trace.last_normalize_info if trace is not None else None
    counts = dict(info.row_counts) if info is not None else {}
    tables = tables_by_resource(pipeline)
    return {r: sum(int(counts.get(t, 0)) for t in tables.get(r, [r])) for r in resources}


def _open_existing(source_kind: str, settings: Settings, destination: str | Destination | None,
                   pipelines_dir: Path | str | None) -> dlt.Pipeline | None:
    """The pipeline, synced with its destination; None when nothing exists anywhere yet."""
    kind = one_kind(source_kind)
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
    kind = one_kind(source_kind)
    name = PIPELINES[kind][0]
    pipeline = _open_existing(kind, settings, destination, pipelines_dir)
    out: dict[str, Any] = {"pipeline": name, "source": kind, "dataset": name,
                           "destination": None, "resources": {}, "alerts": [], "runs": []}
    if pipeline is None:
        out["destination"] = destination_label(kind, destination, settings)
        out["resources"] = {r: {**cursor_of(None, r in INCREMENTAL_RESOURCES[kind]), "rows": None}
                            for r in RESOURCES[kind]}
        return out
    out["destination"] = destination_label(kind, destination, settings)
    out["dataset"] = pipeline.dataset_name
    states = resource_states(pipeline, name)
    tables = tables_by_resource(pipeline)
    for resource in RESOURCES[kind]:
        out["resources"][resource] = {
            **cursor_of(states.get(resource), resource in INCREMENTAL_RESOURCES[kind]),
            "rows": _count_rows(pipeline, tables.get(resource, [])),
        }
    history = run_history(pipeline)
    cursor_state = {r: cursor_of(states.get(r), True)
                    for r in INCREMENTAL_RESOURCES[kind] if r in states}
    alerts = evaluate_alerts(history, cursor_state, now_of(now))
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
    kind = one_kind(source_kind)
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
    kind = one_kind(source_kind)
    pipeline = _open_existing(kind, settings, destination, pipelines_dir)
    if pipeline is None or not pipeline.default_schema_name:
        return {"pipeline": PIPELINES[kind][0], "tables": [], "state": []}
    with destination_errors(destination_label(kind, destination, settings)):
        drop = pipeline_drop(pipeline, drop_all=True)
        info = drop.info
        drop()
    with contextlib.suppress(FileNotFoundError):
        runs_file(pipeline).unlink()
    log.info("%s: dropped all data and state (%d tables)", pipeline.pipeline_name,
             len(info["tables"]))
    return {"pipeline": pipeline.pipeline_name, "tables": list(info["tables"]),
            "state": list(info["resource_states"])}
