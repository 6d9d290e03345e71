"""Where an account pipeline loads: the default DuckDB file per source (``DUCKDB_FILES``, with a
bounded memory), any other dlt destination by name, the ``kraken_futures`` / ``kraken_spot``
pipeline itself (``make_pipeline``), how reports name the destination, and the check for
amount columns an earlier version stored as floating point."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from krakked.account.common import destination_errors, dlt_telemetry_off_unless_chosen
from krakked.account.sources import PIPELINES, one_kind
from krakked.config import Settings

__all__ = [
    "DUCKDB_CONFIG",
    "DUCKDB_FILES",
    "default_duckdb_path",
    "destination_label",
    "make_pipeline",
]

log = logging.getLogger("krakked.account")

DUCKDB_FILES: dict[str, str] = {
    "futures": "kraken_futures_account.duckdb",
    "spot": "kraken_spot_account.duckdb",
}
"""Default DuckDB file per source kind, in the user data dir. Not ``kraken_futures.duckdb``:
DuckDB names a file's catalog after its stem (up to the first dot), and a catalog named like
the dataset (schema) ``kraken_futures`` makes every ``kraken_futures.<table>`` reference
ambiguous, which DuckDB refuses ("Ambiguous reference to catalog or schema") and dlt warns of."""


def default_duckdb_path(source_kind: str, settings: Settings) -> Path:
    """``<data_dir>/kraken_futures_account.duckdb`` (resp. spot): see ``DUCKDB_FILES``."""
    kind = one_kind(source_kind)
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
    kind = one_kind(source_kind)
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


def file_format(pipeline: dlt.Pipeline) -> str | None:
    """The loader file format a run uses: Parquet for DuckDB, whose dlt default (INSERT VALUES
    statements) costs ~100x the time and gigabytes of memory on a large history; other
    destinations keep dlt's choice (None)."""
    dest = pipeline.destination
    if dest is not None and str(dest.destination_type).rsplit(".", 1)[-1] == "duckdb":
        return "parquet"
    return None


def warn_inexact_columns(pipeline: dlt.Pipeline, source: Any, selected: Sequence[str]
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
