"""``krakked export``: candles and trades from the market store into any dlt destination.

Data leaves as Arrow tables (dlt loads about a million Arrow rows a second here, but takes
minutes per million row dicts), in time windows so memory stays flat. Each run resumes from the
cursor in the pipeline's state (``last_timestamp`` per resource, stored at the destination with
the data) minus an overlap of one day, and the destination merges on the natural keys — so a
candle replaced in the store by a later, fuller version (the volume rule) is re-sent and merged,
and nothing is duplicated. The destination is configured the dlt way (``.dlt/secrets.toml`` or
``DESTINATION__<NAME>__CREDENTIALS``…); dlt's failures leave as krakked errors (see
``krakked.account.common.destination_error``) and dlt's telemetry stays off unless the user
turned it on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa

from krakked.account.common import destination_errors, dlt_telemetry_off_unless_chosen
from krakked.store.base import MarketStore

__all__ = ["DEFAULT_DATASET", "DEFAULT_PIPELINE", "export_market", "market_source"]

log = logging.getLogger("krakked.sync.export")

DEFAULT_PIPELINE = "krakked_market"
DEFAULT_DATASET = "kraken_market"
OVERLAP = timedelta(days=1)
WINDOW = timedelta(days=30)


def _windows(first: datetime, last: datetime) -> Iterator[tuple[datetime, datetime]]:
    start = first
    while start <= last:
        end = start + WINDOW
        yield start, end
        start = end


def _since(state: dict[str, Any], key: str) -> datetime | None:
    value = state.get(key)
    return datetime.fromisoformat(value) - OVERLAP if value else None


@dlt.source(name="kraken_market")
def market_source(store: MarketStore, symbols: Sequence[str] | None = None) -> Any:
    """``candles`` (key timestamp, symbol, interval_minutes) and ``trades`` (key timestamp,
    symbol, id) from the market store, incremental by timestamp, merged at the destination."""

    wanted = {store.canonical(s) for s in symbols} if symbols else None
    series = [r for r in store.coverage() if wanted is None or r["symbol"] in wanted]

    @dlt.resource(name="candles", write_disposition="merge",
                  primary_key=["timestamp", "symbol", "interval_minutes"])
    def candles() -> Iterator[pa.Table]:
        state = dlt.current.resource_state()
        since = _since(state, "last_timestamp")
        newest: datetime | None = None
        for row in series:
            minutes = row.get("interval_minutes")
            if not minutes or row["rows"] == 0:
                continue
            first = max(row["first"], since) if since else row["first"]
            for start, end in _windows(first, row["last"]):
                table = store.read_stored_candles(row["symbol"], minutes, start, end)
                if table.num_rows:
                    yield table
            newest = max(newest, row["last"]) if newest else row["last"]
        if newest is not None:
            state["last_timestamp"] = newest.isoformat()

    @dlt.resource(name="trades", write_disposition="merge",
                  primary_key=["timestamp", "symbol", "id"])
    def trades() -> Iterator[pa.Table]:
        state = dlt.current.resource_state()
        since = _since(state, "last_timestamp")
        newest: datetime | None = None
        for row in series:
            if row.get("interval_minutes") or row["rows"] == 0:
                continue
            first = max(row["first"], since) if since else row["first"]
            for start, end in _windows(first, row["last"] + timedelta(microseconds=1)):
                table = store.read_trades(row["symbol"], start, end)
                if table.num_rows:
                    yield table
            newest = max(newest, row["last"]) if newest else row["last"]
        if newest is not None:
            state["last_timestamp"] = newest.isoformat()

    return candles, trades


def export_market(
    store: MarketStore,
    destination: Any,
    *,
    pipelines_dir: Path,
    dataset: str = DEFAULT_DATASET,
    pipeline_name: str = DEFAULT_PIPELINE,
    symbols: Sequence[str] | None = None,
    duckdb_path: Path | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Run the export; returns rows per table, the cursors and the load info as a dict.

    ``destination`` is a dlt destination name (configured the dlt way) or a dlt destination
    object (e.g. ``dlt.destinations.postgres(credentials=...)``). An unknown destination raises
    ``UsageError``, one not configured ``ConfigError``, one that cannot be reached or fails to
    load ``StoreError`` — one line each, dlt's exception attached as the cause.
    """
    dest: Any = destination
    if destination == "duckdb" and duckdb_path is not None:
        dest = dlt.destinations.duckdb(credentials=str(duckdb_path))
    label = destination if isinstance(destination, str) else str(
        getattr(destination, "destination_name", None) or type(destination).__name__)
    dlt_telemetry_off_unless_chosen()
    with destination_errors(label):
        pipeline = dlt.pipeline(pipeline_name=pipeline_name, destination=dest,
                                dataset_name=dataset, pipelines_dir=str(pipelines_dir))
        source = market_source(store, symbols)
        started = datetime.now(UTC)
        info = pipeline.run(source, refresh="drop_resources" if full else None)
    rows = {}
    trace = pipeline.last_trace
    if trace and trace.last_normalize_info:
        rows = {t: n for t, n in trace.last_normalize_info.row_counts.items()
                if not t.startswith("_dlt")}
    state = pipeline.state.get("sources", {}).get("kraken_market", {}).get("resources", {})
    return {
        "pipeline": pipeline_name,
        "destination": destination if isinstance(destination, str) else type(dest).__name__,
        "dataset": dataset,
        "rows": rows,
        "cursors": {name: s.get("last_timestamp") for name, s in state.items()},
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 3),
        "load_packages": len(info.load_packages),
    }
