"""The DuckDB store's writes, each run inside the caller's transaction: candles with the volume
rule, trades with the key the writer keeps (``store.trade_sql``), recorded coverage of candles
and of trades, and the 1-minute candles rebuilt from trades where the trade coverage spans
whole minutes.
"""

# SQL here is composed from our own identifiers and values quoted by lit()/ts_lit() or
# coerced by int(); nothing user-typed reaches it unquoted.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from krakked.market.candles import (
    bucket_ceil_us,
    epoch_us,
    from_epoch_us,
    merge_ranges,
)
from krakked.store.arrow import csv_ids_in_arrow
from krakked.store.base import minutes_to_build
from krakked.store.sql import (
    CANDLE_COLS,
    TRADE_COLS,
    dedupe_candles_query,
    keys_unique,
    lit,
    row_index,
    to_arrow,
    ts_lit,
    with_trade_ids,
)
from krakked.store.trade_sql import (
    candles_from_trades_query,
    insert_missing_trades,
    reconcile_csv_rows,
)

__all__ = [
    "exec_all",
    "merge_coverage",
    "merge_trade_coverage",
    "rebuild_trade_candles",
    "scalar",
    "trade_coverage_ranges",
    "trim_coverage",
    "upsert_candle_rows",
    "write_trade_rows",
]

US_PER_MINUTE = 60_000_000


def exec_all(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[Any]:
    """Run ``sql`` and consume its whole result (DuckDB wants results finished)."""
    cursor = con.execute(sql) if params is None else con.execute(sql, params)
    return cursor.fetchall()


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> Any:
    """The first column of the first row of ``sql``."""
    rows = exec_all(con, sql, params)
    return rows[0][0] if rows else None


# -- coverage ------------------------------------------------------------------------------------

def _merge_ranges_into(con: duckdb.DuckDBPyConnection, table: str, key: str,
                       params: dict[str, Any], ranges: Sequence[tuple[int, int]]) -> None:
    lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
    near = f"{key} AND epoch_us(covered_until) >= $lo AND epoch_us(covered_from) <= $hi"
    keys = tuple(params.values())
    params = {**params, "lo": lo, "hi": hi}
    existing = exec_all(con, "SELECT epoch_us(covered_from), epoch_us(covered_until) FROM "
                             f"{table} WHERE {near}", params)
    merged = merge_ranges([*ranges, *((int(a), int(b)) for a, b in existing)])
    exec_all(con, f"DELETE FROM {table} WHERE {near}", params)
    if merged:
        holes = ", ".join("?" for _ in keys)
        con.executemany(f"INSERT INTO {table} VALUES ({holes}, make_timestamptz(?), "
                        "make_timestamptz(?))", [(*keys, a, b) for a, b in merged])


def merge_coverage(con: duckdb.DuckDBPyConnection,
                   coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]]) -> None:
    """Merge ``coverage`` ((symbol, interval) -> epoch-µs ranges) into ``candle_coverage``
    (kept as disjoint, non-touching ranges)."""
    for (symbol, minutes), ranges in sorted(coverage.items()):
        if ranges:
            _merge_ranges_into(con, "candle_coverage",
                               "symbol = $symbol AND interval_minutes = $m",
                               {"symbol": symbol, "m": minutes}, ranges)


def merge_trade_coverage(con: duckdb.DuckDBPyConnection,
                         coverage: Mapping[str, Sequence[tuple[int, int]]]) -> None:
    """Merge ``coverage`` (symbol -> epoch-µs ranges) into ``trade_coverage``."""
    for symbol, ranges in sorted(coverage.items()):
        if ranges:
            _merge_ranges_into(con, "trade_coverage", "symbol = $symbol", {"symbol": symbol},
                               ranges)


def trade_coverage_ranges(con: duckdb.DuckDBPyConnection, symbol: str, lo: int | None = None,
                          hi: int | None = None) -> list[tuple[int, int]]:
    """``symbol``'s recorded trade coverage (epoch µs, in order), only ranges touching
    ``[lo, hi]`` when given."""
    where = f"symbol = {lit(symbol)}"
    if lo is not None:
        where += f" AND epoch_us(covered_until) >= {int(lo)}"
    if hi is not None:
        where += f" AND epoch_us(covered_from) <= {int(hi)}"
    rows = exec_all(con, "SELECT epoch_us(covered_from), epoch_us(covered_until) FROM "
                         f"trade_coverage WHERE {where} ORDER BY covered_from")
    return [(int(a), int(b)) for a, b in rows]


def trim_coverage(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> None:
    """After deleting candles opening before ``cutoff``: coverage starts no earlier than each
    interval's first bucket at or after it."""
    exec_all(con, f"DELETE FROM candle_coverage WHERE covered_until <= {ts_lit(cutoff)}")
    cut = epoch_us(cutoff)
    for (minutes,) in exec_all(con, "SELECT DISTINCT interval_minutes FROM candle_coverage "
                                    f"WHERE covered_from < {ts_lit(cutoff)}"):
        first = bucket_ceil_us(cut, int(minutes))
        exec_all(con, "UPDATE candle_coverage SET covered_from = make_timestamptz($first) "
                      "WHERE interval_minutes = $m AND epoch_us(covered_from) < $first",
                 {"first": first, "m": int(minutes)})
        exec_all(con, "DELETE FROM candle_coverage WHERE covered_from >= covered_until")


# -- candles -------------------------------------------------------------------------------------

def upsert_candle_rows(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Upsert candles (``CANDLE_SCHEMA``) with the volume rule: an UPDATE of the stored keys the
    batch beats, then an INSERT of the new keys in (symbol, interval, time) order — the same
    result as ``INSERT … ON CONFLICT DO UPDATE … WHERE excluded.volume >= candles.volume``,
    but the table stays in time order on disk. Returns rows inserted or replaced."""
    if not table.num_rows:
        return 0
    if not keys_unique(table):
        con.register("__raw", row_index(table))
        try:
            table = to_arrow(con.sql(dedupe_candles_query("__raw", "__i")))
        finally:
            con.unregister("__raw")
    cols = ", ".join(CANDLE_COLS)
    span = pc.min_max(table["timestamp"]).as_py()
    near = (f"c.timestamp >= {ts_lit(span['min'])} AND "
            f"c.timestamp <= {ts_lit(span['max'])}")
    same = ("c.timestamp = b.timestamp AND c.symbol = b.symbol AND "
            "c.interval_minutes = b.interval_minutes")
    sets = ", ".join(f"{c} = b.{c}" for c in CANDLE_COLS[3:])
    con.register("__batch", table)
    try:
        written = int(scalar(
            con, f"UPDATE candles AS c SET {sets} FROM __batch AS b "
                 f"WHERE {near} AND {same} AND b.volume >= c.volume") or 0)
        written += int(scalar(
            con, f"INSERT INTO candles ({cols}) SELECT {cols} FROM __batch AS b "
                 f"WHERE NOT EXISTS (SELECT 1 FROM candles AS c WHERE {near} AND "
                 f"{same}) ORDER BY symbol, interval_minutes, timestamp") or 0)
    finally:
        con.unregister("__batch")
    return written


def rebuild_trade_candles(con: duckdb.DuckDBPyConnection, symbol: str,
                          window: tuple[int, int] | None = None) -> int:
    """Rebuild ``symbol``'s 1-minute candles from its stored trades in every whole minute that
    the recorded trade coverage spans (within ``window``, epoch µs, when given), with the
    volume rule, and record those minutes as 1m coverage. Returns candles written."""
    lo, hi = window if window is not None else (None, None)
    minutes = minutes_to_build(trade_coverage_ranges(con, symbol, lo, hi), window)
    written = 0
    for a, b in minutes:
        where = (f"symbol = {lit(symbol)} AND timestamp >= {ts_lit(from_epoch_us(a))} AND "
                 f"timestamp < {ts_lit(from_epoch_us(b))}")
        built = to_arrow(con.sql(candles_from_trades_query("trades", where)
                                 + " ORDER BY timestamp"))
        written += upsert_candle_rows(con, built)
    merge_coverage(con, {(symbol, 1): minutes} if minutes else {})
    return written


# -- trades --------------------------------------------------------------------------------------

def _api_ids_unique(table: pa.Table) -> bool:
    """Cheap proof that the API rows of a batch hold no (symbol, id) twice: one symbol and
    strictly increasing ids (a page from Kraken)."""
    if table.num_rows < 2:
        return True
    if pc.count_distinct(table["symbol"]).as_py() != 1 or table["id"].null_count:
        return False
    ids = table["id"].combine_chunks()
    return bool(pc.all(pc.greater(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py())


def _in_order(table: pa.Table) -> bool:
    """The batch is in (symbol, timestamp, |id|) order (one symbol, time not decreasing)."""
    if table.num_rows < 2:
        return True
    if pc.count_distinct(table["symbol"]).as_py() != 1:
        return False
    ts = pc.cast(table["timestamp"], pa.int64()).combine_chunks()
    ids = pc.abs(table["id"]).combine_chunks()
    n = len(ts)
    step = pc.subtract(ts.slice(1), ts.slice(0, n - 1))
    tie_ok = pc.or_(pc.greater(step, 0),
                    pc.and_(pc.equal(step, 0), pc.greater(ids.slice(1), ids.slice(0, n - 1))))
    return bool(pc.all(tie_ok).as_py())


def _select_list(table: pa.Table) -> str:
    """The batch's columns in ``TRADE_COLS`` order, with a column that holds one value (or
    only nulls) in every row written as that literal: DuckDB then skips converting it row by
    row (a batch from a CSV file has one symbol and source and no side)."""
    out = []
    for name in TRADE_COLS:
        col = table[name]
        if pa.types.is_string(col.type) and table.num_rows:
            if col.null_count == table.num_rows:
                out.append(f"NULL::VARCHAR AS {name}")
                continue
            if not col.null_count and pc.count_distinct(col).as_py() == 1:
                out.append(f"{lit(col[0].as_py())} AS {name}")
                continue
        out.append(name)
    return ", ".join(out)


def _both_kinds(con: duckdb.DuckDBPyConnection, near: str) -> bool:
    """CSV rows and API rows are both stored in the range ``near``."""
    return all(exec_all(con, f"SELECT 1 FROM trades AS t WHERE {near} AND t.id {op} 0 LIMIT 1")
               for op in ("<", ">="))


def write_trade_rows(con: duckdb.DuckDBPyConnection, table: pa.Table,
                     coverage: Mapping[str, Sequence[tuple[int, int]]],
                     build_candles: bool
                     ) -> tuple[int, dict[str, int], dict[str, tuple[int, int]]]:
    """Insert the trades the store lacks, reconcile CSV rows with API rows in the batch's
    range, merge ``coverage`` (symbol -> epoch-µs ranges) into ``trade_coverage`` and, with
    ``build_candles``, rebuild the 1m candles of the minutes the batch or the new coverage
    touch. Returns (change in stored trades, candles written per symbol, per symbol the
    batch's first and last time in epoch µs)."""
    touched: dict[str, list[tuple[int, int]]] = {
        s: [(a, b) for a, b in ranges] for s, ranges in coverage.items() if ranges}
    inserted = 0
    spans: list[Any] = []
    if table.num_rows:
        csv_rows = table["id"].null_count
        fast = csv_ids_in_arrow(table) if csv_rows else None
        if fast is not None:
            table = fast
        elif csv_rows:
            con.register("__raw", row_index(table))
            try:
                table = to_arrow(con.sql(with_trade_ids("__raw", "__i") + " ORDER BY __i"))
            finally:
                con.unregister("__raw")
        elif not _api_ids_unique(table):
            con.register("__raw", row_index(table))
            try:
                table = to_arrow(con.sql(
                    f"SELECT {', '.join(TRADE_COLS)} FROM __raw QUALIFY row_number() OVER "
                    "(PARTITION BY timestamp, symbol, id ORDER BY __i) = 1"))
            finally:
                con.unregister("__raw")
        con.register("__batch", table)
        try:
            spans = exec_all(con, "SELECT symbol, min(epoch_us(timestamp)), "
                                  "max(epoch_us(timestamp)) FROM __batch GROUP BY symbol")
            lo_us = min(int(a) for _, a, _ in spans)
            hi_us = max(int(b) for _, _, b in spans)
            lo = from_epoch_us(lo_us - lo_us % 1_000_000)
            hi = from_epoch_us(hi_us - hi_us % 1_000_000 + 1_000_000)
            near = f"t.timestamp >= {ts_lit(lo)} AND t.timestamp < {ts_lit(hi)}"
            if len(spans) == 1:  # one pair (a page, a file's batch): only its rows matter
                near += f" AND t.symbol = {lit(spans[0][0])}"
            stored = exec_all(con, "SELECT DISTINCT id < 0 FROM (SELECT id FROM trades AS t "
                                   f"WHERE {near} LIMIT 1)")
            ordered = _in_order(table)
            if stored:
                inserted = int(scalar(con, insert_missing_trades(
                    "trades", "__batch", near, ordered=ordered)) or 0)
            else:  # nothing stored in the batch's range (an import's usual case)
                order = "" if ordered else " ORDER BY symbol, timestamp, abs(id)"
                inserted = int(scalar(con, f"INSERT INTO trades ({', '.join(TRADE_COLS)}) "
                                           f"SELECT {_select_list(table)} FROM __batch{order}")
                               or 0)
        finally:
            con.unregister("__batch")
        if stored and _both_kinds(con, near):
            inserted -= int(scalar(con, reconcile_csv_rows("trades", near)) or 0)
        for symbol, a, b in spans:
            touched.setdefault(symbol, []).append((int(a), int(b) + 1))
    merge_trade_coverage(con, coverage)
    candles: dict[str, int] = {}
    if build_candles:
        for symbol, ranges in sorted(touched.items()):
            window = (min(a for a, _ in ranges), max(b for _, b in ranges))
            candles[symbol] = rebuild_trade_candles(con, symbol, window)
    return inserted, candles, {str(sym): (int(a), int(b)) for sym, a, b in spans}
