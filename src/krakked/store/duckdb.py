"""The reference market store: one DuckDB file (``duckdb:///path.duckdb``). Its SQL (derivation,
exact vwap, coverage, the dedupe and trade-id rules) is ``store.sql``, shared with the other
backends.

Tables follow DESIGN.md's data model (``pairs``, ``trades``, ``candles``, ``data_sync_status``,
``schema_version``); ``candles_5m`` … ``candles_1w`` are views deriving each interval from the
1-minute candles, where Kraken's own stored candles of that interval win. Decimals are
``DECIMAL(38,18)``, timestamps ``TIMESTAMPTZ`` with the connection's time zone set to UTC.

Promises:

- upserts are idempotent on the natural keys; a stored candle is replaced only by a version whose
  volume is >= its own (within one batch, the highest-volume row of a key wins, the later one on
  a tie); ``data_sync_status`` rows are written in the same transaction as the rows;
- trades are inserted once on (timestamp, symbol, id). A trade without a Kraken id (a row of
  Kraken's CSV files) is stored under the synthetic id ``-(epoch microseconds × 1000 + n)``,
  ``n`` its 1-based position among the id-less trades of that pair and instant in the batch,
  so re-importing the same file stores nothing twice (an importer must not split one instant
  across batches); it reads back with ``id = None``. A CSV row and an API row with the same
  pair, price and volume in the same second are one trade: the CSV row is not stored when the
  API row exists, and storing the API row removes the CSV one;
- derived candles are exact (``DECIMAL`` arithmetic throughout, vwap = quote volume / volume
  rounded half-even to 18 places, without a floating-point round trip; only the SQL views fall
  back to DOUBLE for a bucket volume above 1.7 × 10^14) and only complete buckets are derived;
- the ``candles`` table is kept in (symbol, interval, time) order per write, so reading a
  range needs no sort and time filters skip whole row groups;
- a second process opening the file gets ``StoreLockedError`` naming it; every other DuckDB
  failure is a ``StoreError`` naming the file.
"""

# SQL here is composed from our own identifiers and values quoted by lit()/ts_lit() or
# coerced by int(); nothing user-typed reaches it unquoted.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
import pyarrow as pa

from krakked.errors import (
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    UsageError,
    first_line,
)
from krakked.market.candles import SourceSegment, epoch_us
from krakked.store.arrow import CANDLE_SCHEMA, PAIR_SCHEMA, TRADE_SCHEMA, as_schema
from krakked.store.base import (
    ROLLUPS,
    SCHEMA_VERSION,
    MarketStore,
    SyncUpdate,
    batch_coverage,
    sync_target,
)
from krakked.store.duckdb_writes import (
    exec_all,
    merge_coverage,
    rebuild_trade_candles,
    scalar,
    trade_coverage_ranges,
    trim_coverage,
    upsert_candle_rows,
    write_trade_rows,
)
from krakked.store.sql import (
    CANDLE_COLS,
    DEC,
    PAIR_COLS,
    TRADE_READ_COLS,
    US_PER_MINUTE,
    aggregate_query,
    coverage_query,
    coverage_runs_query,
    last_closes_with,
    lit,
    py_value,
    read_segments_with,
    to_arrow,
    ts_lit,
)
from krakked.store.trade_sql import (
    candles_from_trades_query,
    trade_id_holes_query,
    trades_summary_query,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "MIGRATIONS",
    "DuckDBStore",
]

_exec = exec_all
_scalar = scalar

# --- schema and migrations ----------------------------------------------------------------------

def _rollup_view(minutes: int) -> str:
    """The view ``candles_<tf>``: Kraken's stored candles of that interval, plus the buckets
    derived from 1-minute candles whose recorded coverage spans the whole bucket."""
    cols = ", ".join(CANDLE_COLS)
    derived = aggregate_query("(SELECT * FROM candles WHERE interval_minutes = 1)", 1, minutes)
    width = minutes * US_PER_MINUTE
    return (
        f"CREATE OR REPLACE VIEW {ROLLUPS[minutes]} AS SELECT {cols} FROM ({derived}) AS d "
        "WHERE EXISTS (SELECT 1 FROM candle_coverage AS cv WHERE cv.symbol = d.symbol AND "
        "cv.interval_minutes = 1 AND cv.covered_from <= d.timestamp AND "
        f"epoch_us(cv.covered_until) >= epoch_us(d.timestamp) + {width}) "
        "AND NOT EXISTS (SELECT 1 FROM candles AS k WHERE k.symbol = d.symbol AND "
        f"k.interval_minutes = {minutes} AND k.timestamp = d.timestamp) "
        f"UNION ALL SELECT {cols} FROM candles WHERE interval_minutes = {minutes}")


_V1 = [
    "CREATE TABLE IF NOT EXISTS pairs (canonical VARCHAR PRIMARY KEY, base VARCHAR, "
    "quote VARCHAR, rest_symbol VARCHAR, ws_symbol VARCHAR, wsname VARCHAR, raw_name VARCHAR, "
    f"price_decimals INTEGER, volume_decimals INTEGER, lot_size {DEC}, ordermin {DEC}, "
    f"costmin {DEC}, tick_size {DEC}, status VARCHAR, updated_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS trades (id BIGINT NOT NULL, symbol VARCHAR NOT NULL, "
    f"timestamp TIMESTAMPTZ NOT NULL, price {DEC} NOT NULL, volume {DEC} NOT NULL, "
    "side VARCHAR NOT NULL, order_type VARCHAR, misc VARCHAR, source VARCHAR, "
    "PRIMARY KEY (timestamp, symbol, id))",
    "CREATE TABLE IF NOT EXISTS candles (symbol VARCHAR NOT NULL, timestamp TIMESTAMPTZ NOT NULL, "
    f"interval_minutes INTEGER NOT NULL, open {DEC} NOT NULL, high {DEC} NOT NULL, "
    f"low {DEC} NOT NULL, close {DEC} NOT NULL, volume {DEC} NOT NULL, quote_volume {DEC}, "
    f"trade_count BIGINT, vwap {DEC}, source VARCHAR, "
    "PRIMARY KEY (timestamp, symbol, interval_minutes))",
    "CREATE TABLE IF NOT EXISTS data_sync_status (symbol VARCHAR NOT NULL, "
    "data_type VARCHAR NOT NULL, oldest_timestamp TIMESTAMPTZ, newest_timestamp TIMESTAMPTZ, "
    "last_sync_at TIMESTAMPTZ, last_kraken_since BIGINT, total_records BIGINT NOT NULL DEFAULT 0, "
    "PRIMARY KEY (symbol, data_type))",
    # (version 1 also created the rollup views; version 2 replaces them)
]

_V2 = [
    "CREATE TABLE IF NOT EXISTS candle_coverage (symbol VARCHAR NOT NULL, "
    "interval_minutes INTEGER NOT NULL, covered_from TIMESTAMPTZ NOT NULL, "
    "covered_until TIMESTAMPTZ NOT NULL, PRIMARY KEY (symbol, interval_minutes, covered_from))",
    # What a store of version 1 holds vouches for the runs of consecutive candles it has.
    "INSERT INTO candle_coverage SELECT * FROM (" + coverage_runs_query("candles") + ") "
    "ON CONFLICT DO NOTHING",
    *(_rollup_view(m) for m in sorted(ROLLUPS)),
]

_V3 = [
    # The trades key becomes the writer's rule (an ART index costs 2.5 GB for 20 M rows);
    # side is unknown for rows of Kraken's CSV files.
    "CREATE TABLE trades_v3 (id BIGINT NOT NULL, symbol VARCHAR NOT NULL, "
    f"timestamp TIMESTAMPTZ NOT NULL, price {DEC} NOT NULL, volume {DEC} NOT NULL, "
    "side VARCHAR, order_type VARCHAR, misc VARCHAR, source VARCHAR)",
    "INSERT INTO trades_v3 SELECT * FROM trades ORDER BY symbol, timestamp, abs(id)",
    "DROP TABLE trades",
    "ALTER TABLE trades_v3 RENAME TO trades",
    "CREATE TABLE IF NOT EXISTS trade_coverage (symbol VARCHAR NOT NULL, "
    "covered_from TIMESTAMPTZ NOT NULL, covered_until TIMESTAMPTZ NOT NULL, "
    "PRIMARY KEY (symbol, covered_from))",
]

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "tables pairs, trades, candles, data_sync_status", _V1),
    (2, "table candle_coverage (recorded coverage of each candle series, filled with the runs "
        "of consecutive candles stored); rollup views candles_5m..candles_1w derive only "
        "buckets that coverage spans", _V2),
    (3, "trades keyed by the writer (no index; side nullable for CSV rows); table "
        "trade_coverage (ranges in which every trade is stored)", _V3),
]
"""(version, description, statements), applied in order, each in one transaction."""

assert MIGRATIONS[-1][0] == SCHEMA_VERSION, "base.SCHEMA_VERSION must match the last migration"

_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "applied_at TIMESTAMPTZ NOT NULL, description VARCHAR)")

_LOCK_PID = re.compile(r"\(PID (\d+)\)")
DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds an operation waits for a DuckDB file another process holds."""
_RETRY_MAX_DELAY = 0.01  # a waiting operation tries again every 10 ms: it must not miss a gap
WRITER_GAP = 0.03
"""Seconds a writer leaves the file free between two write transactions of its own."""


class DuckDBStore(MarketStore):
    """The market store in one DuckDB file (or ``:memory:``). Thread-safe (one lock).

    The file is held only while an operation runs: each read or write opens it, does its work
    (a write in one transaction) and closes it, so that other processes can read and write
    between a long job's batches. DuckDB lets one process write a file, or several read it; an
    operation that finds the file held retries for ``lock_timeout`` seconds before giving up
    with ``StoreLockedError``. ``:memory:`` keeps its one connection for the store's life.
    A store opened ``read_only`` never creates anything: a missing file is
    ``StoreNotFoundError`` (an old schema is still migrated, in one short write).
    """

    backend = "duckdb"

    def __init__(self, path: str, read_only: bool = False,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        super().__init__()
        self.path = path
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.url = f"duckdb:///{path}" if path == ":memory:" else f"duckdb://{path}"
        self._lock = threading.RLock()
        self._memory = path == ":memory:"
        self._held: duckdb.DuckDBPyConnection | None = None
        self._closed_at = -1e9  # when this store last closed the file after a write
        self._held_read_only = False
        if read_only and not self._memory and not os.path.isfile(path):
            raise StoreNotFoundError(
                f"no store at {path}: nothing to read (a read never creates a store; check "
                "the path, or write to it first, e.g. krakked ohlc backfill)")
        if self._memory:
            self._held = self._open(read_only=False)
        try:
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    # -- connection, transactions, migrations --------------------------------------------

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection to the file, retrying while another process holds it."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(self.path, read_only=read_only)
            except duckdb.IOException as exc:
                message = first_line(exc)
                if "lock" not in message.lower():
                    raise StoreError(
                        f"{self.path}: cannot open the DuckDB store ({message})") from None
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, _RETRY_MAX_DELAY)
                    continue
                pid = _LOCK_PID.search(str(exc))
                holder = f"PID {pid.group(1)}" if pid else "see `lsof` for the holder"
                raise StoreLockedError(
                    f"{self.path} is locked by another process ({holder}) for over "
                    f"{self.lock_timeout:g} s: krakked holds a DuckDB file only for one "
                    "transaction at a time, so that process is not krakked or is stuck in one "
                    "(a PostgreSQL store takes many writers)") from None
            except duckdb.Error as exc:
                raise StoreError(
                    f"{self.path}: not a usable DuckDB database ({first_line(exc)})") from None
            try:
                _exec(con, "SET TimeZone = 'UTC'")
            except BaseException:
                con.close()
                raise
            return con

    @contextlib.contextmanager
    def _session(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection of the operation in progress (opened here, closed at its end, unless
        an enclosing operation holds one already). ``write`` opens the file for writing even
        when the store is read-only (migrations only)."""
        with self._lock:
            if self._held is not None:
                if write and self._held_read_only:
                    raise StoreError(f"{self.path}: cannot write inside a read")
                yield self._held
                return
            read_only = self.read_only and not write
            if not read_only and not self._memory:
                # Back-to-back write transactions (an import's batches) leave the file free a
                # moment between them, so that a waiting reader gets in (readers never wait
                # for a whole job).
                pause = self._closed_at + WRITER_GAP - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            con = self._open(read_only)
            self._held, self._held_read_only = con, read_only
            try:
                yield con
            finally:
                self._held = None
                con.close()
                if not read_only:
                    self._closed_at = time.monotonic()

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """Hold the file across several operations (released at the end of the block)."""
        return self._session()

    @contextlib.contextmanager
    def _txn(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the store lock; DuckDB errors become a StoreError naming
        the file, and nothing of the transaction remains."""
        if self.read_only:
            raise StoreError(f"{self.path}: the store is open read-only")
        with self._session() as con:
            con.begin()
            try:
                yield con
            except duckdb.Error as exc:
                con.rollback()
                raise StoreError(f"{self.path}: {first_line(exc)}") from None
            except BaseException:
                con.rollback()
                raise
            else:
                con.commit()

    def _arrow(self, sql: str) -> pa.Table:
        with self._session() as con:
            try:
                return to_arrow(con.sql(sql))
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: {first_line(exc)}") from None

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        with self._session() as con:
            try:
                rel = con.sql(sql)
                names = rel.columns
                rows = rel.fetchall()
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: {first_line(exc)}") from None
        return [{k: py_value(v) for k, v in zip(names, row, strict=True)} for row in rows]

    def schema_version(self) -> int:
        """The schema version recorded in the file (0 for a store never migrated)."""
        with self._session() as con:
            return _schema_version(con)

    def _ensure_schema(self) -> None:
        """Bring the file to ``SCHEMA_VERSION``: each missing migration in one transaction."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this krakked supports "
                f"({SCHEMA_VERSION}); upgrade krakked")
        if current == SCHEMA_VERSION:
            return
        with self._session(write=True) as con:
            current = _schema_version(con)  # another process may have migrated meanwhile
            for version, description, statements in MIGRATIONS:
                if version <= current:
                    continue
                con.begin()
                try:
                    _exec(con, _SCHEMA_VERSION_DDL)
                    for statement in statements:
                        _exec(con, statement)
                    _exec(con, "INSERT INTO schema_version VALUES (?, ?, ?)",
                          [version, datetime.now(UTC), description])
                except duckdb.Error as exc:
                    con.rollback()
                    raise StoreError(
                        f"{self.path}: migration to schema version {version} failed "
                        f"({first_line(exc)})") from None
                con.commit()

    def close(self) -> None:
        """Release the store (an in-memory store's data goes with it)."""
        with self._lock:
            if self._memory and self._held is not None:
                self._held.close()
                self._held = None

    # -- writing ------------------------------------------------------------------------------

    def write_candles(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                      coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]] | None = None
                      ) -> int:
        """Upsert candles with the volume rule; the coverage (``MarketStore.write_candles``) and
        ``sync`` rows (``candles_<tf>``) in the same transaction.

        Done as an UPDATE of the stored keys the batch beats, then an INSERT of the new keys
        in (symbol, interval, time) order — the same result as ``INSERT … ON CONFLICT DO
        UPDATE … WHERE excluded.volume >= candles.volume``, but the table stays in time order
        on disk, so reads need no sort and time filters skip whole row groups.
        """
        targets = [sync_target(u, "candles") for u in sync]
        if coverage is None:
            coverage = batch_coverage(table)
        if table.num_rows == 0 and not sync and not coverage:
            return 0
        with self._txn() as con:
            written = upsert_candle_rows(con, table)
            merge_coverage(con, coverage)
            self._write_sync(con, sync, targets)
        return written

    def write_trades(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                     coverage: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                     build_candles: bool = False) -> int:
        """See ``MarketStore.write_trades``; the key is kept by the writer and CSV rows are
        reconciled with API rows (``store.trade_sql``), all in one transaction."""
        targets = [sync_target(u, "trades") for u in sync]
        coverage = coverage or {}
        if table.num_rows == 0 and not sync and not coverage:
            return 0
        with self._txn() as con:
            written, built, spans = write_trade_rows(con, table, coverage, build_candles)
            if len(spans) == 1 and all(u.symbol in spans for u in sync):
                # one pair: its status moves by the batch (a full recount scans all its
                # trades — 85 M rows for XBTUSD — on every page)
                (symbol, (lo, hi)), = spans.items()
                self._bump_trades_status(con, symbol, lo, hi, written, sync)
            else:
                self._write_sync(con, sync, targets)
            now = datetime.now(UTC)
            for symbol in built:
                self._refresh_status(con, symbol, "candles_1m", "candles", 1, now, None,
                                     touch=True)
        return written

    def _write_sync(self, con: duckdb.DuckDBPyConnection, sync: Sequence[SyncUpdate],
                    targets: Sequence[tuple[str, int | None]]) -> None:
        now = datetime.now(UTC)
        for update, (kind, minutes) in zip(sync, targets, strict=True):
            self._refresh_status(con, update.symbol, update.data_type, kind, minutes,
                                 now, update.last_kraken_since, touch=True)

    def _bump_trades_status(self, con: duckdb.DuckDBPyConnection, symbol: str, lo: int, hi: int,
                            delta: int, sync: Sequence[SyncUpdate]) -> None:
        """Move ``symbol``'s trades status by a batch spanning ``[lo, hi]`` (epoch µs) that
        changed the stored rows by ``delta``; touched (last_sync_at, the cursor) when ``sync``
        names it. A pair without a status row yet gets one counted from the table."""
        found = _exec(con, "SELECT 1 FROM data_sync_status WHERE symbol = $s AND "
                           "data_type = 'trades'", {"s": symbol})
        since = next((u.last_kraken_since for u in sync if u.last_kraken_since is not None),
                     None)
        if not found:
            if sync:
                self._refresh_status(con, symbol, "trades", "trades", None,
                                     datetime.now(UTC), since, touch=True)
            return
        touch = (", last_sync_at = $now, last_kraken_since = coalesce($since::BIGINT, "
                 "last_kraken_since)") if sync else ""
        _exec(con, "UPDATE data_sync_status SET oldest_timestamp = least(oldest_timestamp, "
                   "make_timestamptz($lo)), newest_timestamp = greatest(newest_timestamp, "
                   f"make_timestamptz($hi)), total_records = total_records + $d{touch} "
                   "WHERE symbol = $s AND data_type = 'trades'",
              {"s": symbol, "lo": lo, "hi": hi, "d": delta,
               **({"now": datetime.now(UTC), "since": since} if sync else {})})

    @staticmethod
    def _refresh_status(con: duckdb.DuckDBPyConnection, symbol: str, data_type: str,
                        kind: str, minutes: int | None, now: datetime | None,
                        since: int | None, *, touch: bool) -> None:
        """Recompute a status row's oldest/newest/total from the table; with ``touch`` also
        set last_sync_at and (when given) last_kraken_since."""
        where = "symbol = $symbol" + ("" if minutes is None else " AND interval_minutes = $m")
        table = "trades" if kind == "trades" else "candles"
        params: dict[str, Any] = {"symbol": symbol, "dt": data_type, "now": now,
                                  "since": since}
        if minutes is not None:
            params["m"] = minutes
        if touch:
            set_touch = ("last_sync_at = excluded.last_sync_at, last_kraken_since = "
                         "coalesce(excluded.last_kraken_since, "
                         "data_sync_status.last_kraken_since)")
        else:
            set_touch = ("last_sync_at = data_sync_status.last_sync_at, "
                         "last_kraken_since = data_sync_status.last_kraken_since")
        _exec(
            con,
            "INSERT INTO data_sync_status (symbol, data_type, oldest_timestamp, "
            "newest_timestamp, last_sync_at, last_kraken_since, total_records) "
            f"SELECT $symbol, $dt, min(timestamp), max(timestamp), $now::TIMESTAMPTZ, "
            f"$since::BIGINT, count(*) FROM {table} WHERE {where} "
            "ON CONFLICT (symbol, data_type) DO UPDATE SET "
            "oldest_timestamp = excluded.oldest_timestamp, "
            "newest_timestamp = excluded.newest_timestamp, "
            f"total_records = excluded.total_records, {set_touch}",
            params,
        )

    def write_pairs(self, table: pa.Table) -> None:
        """Replace the universe snapshot (one transaction)."""
        batch = table.cast(PAIR_SCHEMA)
        cols = ", ".join(PAIR_COLS)
        with self._txn() as con:
            _exec(con, "DELETE FROM pairs")
            con.register("__pairs", batch)
            try:
                _exec(con, f"INSERT INTO pairs ({cols}) SELECT {cols} FROM __pairs "
                      "QUALIFY row_number() OVER (PARTITION BY canonical) = 1")
            finally:
                con.unregister("__pairs")

    def delete_before(self, kind: Literal["trades", "candles"], cutoff: datetime) -> int:
        """Delete rows older than ``cutoff``; the status rows of that kind are recomputed."""
        if kind not in ("trades", "candles"):
            raise UsageError(f"kind must be trades or candles, not {kind!r}")
        with self._txn() as con:
            deleted = int(_scalar(
                con, f"DELETE FROM {kind} WHERE timestamp < {ts_lit(cutoff)}") or 0)
            if kind == "candles":
                trim_coverage(con, cutoff)
            statuses = _exec(con, "SELECT symbol, data_type FROM data_sync_status")
            for symbol, data_type in statuses:
                target = sync_target(SyncUpdate(symbol, data_type))
                if target[0] == kind:
                    self._refresh_status(con, symbol, data_type, target[0], target[1],
                                         None, None, touch=False)
        return deleted

    # -- reading ------------------------------------------------------------------------------

    def _relation(self, symbol: str) -> Callable[[int], str]:
        def rel(interval: int) -> str:
            return (f"(SELECT * FROM candles WHERE symbol = {lit(symbol)} AND "
                    f"interval_minutes = {int(interval)})")
        return rel

    def read_coverage(self, symbol: str) -> dict[int, list[tuple[int, int]]]:
        """See ``MarketStore.read_coverage``."""
        rows = self._arrow(
            "SELECT interval_minutes, epoch_us(covered_from) AS a, epoch_us(covered_until) AS b "
            f"FROM candle_coverage WHERE symbol = {lit(symbol)} "
            "ORDER BY interval_minutes, covered_from").to_pylist()
        out: dict[int, list[tuple[int, int]]] = {}
        for r in rows:
            out.setdefault(int(r["interval_minutes"]), []).append((r["a"], r["b"]))
        return out

    def read_segments(self, symbol: str, minutes: int,
                      segments: Sequence[SourceSegment]) -> pa.Table:
        """See ``MarketStore.read_segments``."""
        return read_segments_with(self._arrow, self._relation(symbol), symbol, minutes,
                                  segments)

    def last_closes(self, symbol: str, asks: Sequence[tuple[int, int, int]]
                    ) -> list[tuple[Any, str | None] | None]:
        """See ``MarketStore.last_closes``."""
        return last_closes_with(self._arrow, self._relation(symbol), asks)

    def read_trades(self, symbol: str, start: datetime | None = None,
                    end: datetime | None = None, limit: int | None = None) -> pa.Table:
        """Trades of ``symbol`` with start <= timestamp < end, oldest first (ties by id)."""
        where = [f"symbol = {lit(symbol)}"]
        if start is not None:
            where.append(f"timestamp >= {ts_lit(start)}")
        if end is not None:
            where.append(f"timestamp < {ts_lit(end)}")
        sql = (f"SELECT {TRADE_READ_COLS} FROM trades WHERE {' AND '.join(where)} "
               "ORDER BY timestamp, abs(id)")
        if limit is not None:
            sql += f" LIMIT {max(0, int(limit))}"
        return as_schema(self._arrow(sql), TRADE_SCHEMA)

    def read_trade_coverage(self, symbol: str) -> list[tuple[int, int]]:
        """See ``MarketStore.read_trade_coverage``."""
        with self._session() as con:
            return trade_coverage_ranges(con, symbol)

    def build_candles_from_trades(self, symbol: str, start: datetime | None = None,
                                  end: datetime | None = None) -> int:
        """See ``MarketStore.build_candles_from_trades`` (in SQL, one transaction)."""
        window = None
        if start is not None or end is not None:
            window = (epoch_us(start) if start else 0,
                      epoch_us(end) if end else 2 ** 62)
        with self._txn() as con:
            written = rebuild_trade_candles(con, symbol, window)
            self._refresh_status(con, symbol, "candles_1m", "candles", 1, datetime.now(UTC),
                                 None, touch=True)
        return written

    def read_trade_candles(self, symbol: str, minutes: int, start: datetime,
                           end: datetime) -> pa.Table:
        """See ``MarketStore.read_trade_candles``."""
        where = f"symbol = {lit(symbol)}" + _time_filter(start, end)
        return as_schema(self._arrow(candles_from_trades_query("trades", where, minutes)
                                     + " ORDER BY timestamp"), CANDLE_SCHEMA)

    def trade_id_holes(self, symbol: str, start: datetime | None = None,
                       end: datetime | None = None) -> list[dict[str, Any]]:
        """See ``MarketStore.trade_id_holes``."""
        return self._rows(trade_id_holes_query(
            "trades", f"symbol = {lit(symbol)}" + _time_filter(start, end)))

    def trades_summary(self, symbol: str) -> dict[str, Any] | None:
        """See ``MarketStore.trades_summary``."""
        rows = self._rows(trades_summary_query("trades", symbol))
        return rows[0] if rows and rows[0]["rows"] else None

    def read_pairs(self) -> pa.Table:
        """The stored universe snapshot, by canonical name."""
        return as_schema(
            self._arrow(f"SELECT {', '.join(PAIR_COLS)} FROM pairs ORDER BY canonical"),
            PAIR_SCHEMA)

    def coverage(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Per stored (symbol, interval): first, last, rows, missing, gaps; then trades."""
        where = f" WHERE symbol = {lit(symbol)}" if symbol else ""
        with self._session():
            rows = self._rows(coverage_query(f"(SELECT * FROM candles{where})",
                                             f"(SELECT * FROM candle_coverage{where})"))
            rows += self._rows(
                "SELECT symbol, NULL AS interval_minutes, min(timestamp) AS first, "
                "max(timestamp) AS last, count(*) AS rows, NULL AS missing, NULL AS gaps "
                f"FROM trades{where} GROUP BY symbol ORDER BY symbol")
        return rows

    def read_sync_status(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``data_sync_status`` rows as dicts, by symbol and data type."""
        where = f" WHERE symbol = {lit(symbol)}" if symbol else ""
        return self._rows(
            "SELECT symbol, data_type, oldest_timestamp, newest_timestamp, last_sync_at, "
            f"last_kraken_since, total_records FROM data_sync_status{where} "
            "ORDER BY symbol, data_type")


def _time_filter(start: datetime | None, end: datetime | None) -> str:
    out = f" AND timestamp >= {ts_lit(start)}" if start is not None else ""
    return out + (f" AND timestamp < {ts_lit(end)}" if end is not None else "")


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    found = _scalar(con, "SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name = 'schema_version'")
    if not found:
        return 0
    version = _scalar(con, "SELECT max(version) FROM schema_version")
    return int(version) if version is not None else 0
