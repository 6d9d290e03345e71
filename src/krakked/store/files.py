"""The file-based market store of the original module: ``parquet:///dir`` and ``csv:///dir``.

Layout under the root directory (timeframe names from ``market.candles.TIMEFRAMES``)::

    <root>/<timeframe>/<PAIR>.<ext>     candles of one pair and interval   (1m/XBTUSD.parquet)
    <root>/trades/<PAIR>.<ext>          trades of one pair
    <root>/pairs.<ext>                  the universe snapshot

Each file holds the store's columns (``CANDLE_SCHEMA``, ``TRADE_SCHEMA``, ``PAIR_SCHEMA``), oldest
row first; decimals are exact (``decimal128(38, 18)`` in Parquet, plain decimal strings in CSV).
Files are read through an in-memory DuckDB connection with explicit column types, and higher
timeframes are derived from the finest stored file of the pair with the same SQL as the DuckDB
store.

Promises:

- a write merges the file's rows with the new ones (the volume rule: a stored candle is replaced
  only by one with volume >= its own; trades are kept once per (timestamp, symbol, id), with
  the DuckDB store's synthetic ids and CSV/API reconciliation — see ``store.duckdb``), writes
  a temporary file in the same directory, fsyncs it and renames it over the old one: a reader
  sees the old file or the new one, never a mix, and a failed write leaves no temporary file;
- every target directory is checked writable before any file of a write is replaced, so an
  unwritable directory fails the write with nothing changed (a batch spanning several files is
  otherwise written file by file, each atomically);
- ``data_sync_status``: in Parquet, the status lives in the data file's key-value metadata
  (key ``krakked.sync_status``), so it is replaced atomically with the rows. In CSV it is a
  sidecar ``<PAIR>.csv.status.json`` written after the data file is in place: a crash between
  the two leaves the previous status, whose cursor is behind the data (the next sync re-fetches
  a little, which the idempotent upsert absorbs) — never a cursor ahead of the data;
- the recorded coverage of a candle file (``MarketStore.write_candles``: the ranges its
  writers vouched for), and of a trades file (``TradeCoverage``), lives beside its status:
  Parquet metadata key ``krakked.coverage``, or the CSV sidecar ``<PAIR>.csv.coverage.json``
  (written after the data file: a crash between the two
  leaves less coverage recorded, never more). The runs of consecutive candles a file holds are
  coverage by themselves (so a file written by other tools still serves every bucket its rows
  span), and nothing is recorded while they say it all;
- one writer at a time per root (an exclusive lock on ``<root>/.krakked.lock``, waited for);
  readers take no lock;
- a file that cannot be read (a corrupted Parquet file, a malformed CSV) is a ``StoreError``
  naming it; an unwritable root or directory is a ``StoreError`` naming the directory.
"""

# SQL here is composed from our own identifiers and values quoted by lit()/ts_lit() or
# coerced by int(); nothing user-typed reaches it unquoted.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from krakked.errors import StoreError, UsageError, first_line
from krakked.market.candles import (
    TIMEFRAMES,
    SourceSegment,
    bucket_ceil_us,
    epoch_us,
    from_epoch_us,
    merge_ranges,
    timeframe_name,
)
from krakked.store.arrow import CANDLE_SCHEMA, PAIR_SCHEMA, TRADE_SCHEMA, TS, as_schema
from krakked.store.base import (
    MarketStore,
    SyncUpdate,
    batch_coverage,
    sync_target,
)
from krakked.store.files_trades import FileTrades
from krakked.store.sql import (
    CANDLE_COLS,
    TRADE_COLS,
    coverage_query,
    coverage_runs_query,
    duck_type,
    last_closes_with,
    lit,
    py_value,
    read_segments_with,
    row_index,
    to_arrow,
    with_trade_ids,
)

__all__ = ["FileStore"]

STATUS_KEY = b"krakked.sync_status"
COVERAGE_KEY = b"krakked.coverage"
LOCK_NAME = ".krakked.lock"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STATUS_TIMES = ("oldest_timestamp", "newest_timestamp", "last_sync_at")


def _lock_exclusive(fd: int) -> None:
    """Block until this process holds the exclusive lock on the open file ``fd``."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
    else:
        fcntl.flock(fd, fcntl.LOCK_EX)


@dataclass(frozen=True)
class _Target:
    """One data file a write replaces, and what goes into it."""

    path: Path
    kind: Literal["candles", "trades"]
    symbol: str
    minutes: int | None
    sync: SyncUpdate | None
    coverage: tuple[tuple[int, int], ...] = ()


class FileStore(FileTrades, MarketStore):
    """Candles, trades and pairs as Parquet or CSV files under one directory (see module doc)."""

    def __init__(self, root: Path | str, fmt: str, read_only: bool = False) -> None:
        super().__init__()
        if fmt not in ("parquet", "csv"):
            raise UsageError(f"file store format must be parquet or csv, not {fmt!r}")
        self.root = Path(root)
        self.fmt = fmt
        self.ext = fmt
        self.backend = fmt
        self.read_only = read_only
        self.url = f"{fmt}://{self.root}"
        self._lock = threading.RLock()
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such {fmt} store directory")
        if not read_only:
            self._probe_writable(self.root)
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'").fetchall()

    def close(self) -> None:
        """Close the in-memory DuckDB connection."""
        with self._lock:
            self._con.close()

    # -- paths ----------------------------------------------------------------------------------

    def _name(self, symbol: str) -> str:
        if not _SAFE_NAME.match(symbol):
            raise UsageError(f"{symbol!r} cannot name a file: use the canonical pair name")
        return f"{symbol}.{self.ext}"

    def candle_path(self, symbol: str, minutes: int) -> Path:
        """``<root>/<timeframe>/<symbol>.<ext>``."""
        return self.root / timeframe_name(minutes) / self._name(symbol)

    def trade_path(self, symbol: str) -> Path:
        """``<root>/trades/<symbol>.<ext>``."""
        return self.root / "trades" / self._name(symbol)

    def pairs_path(self) -> Path:
        """``<root>/pairs.<ext>``."""
        return self.root / f"pairs.{self.ext}"

    def _status_path(self, data: Path) -> Path:
        return data.with_name(data.name + ".status.json")

    def _coverage_path(self, data: Path) -> Path:
        return data.with_name(data.name + ".coverage.json")

    def _data_files(self, kind: Literal["candles", "trades"],
                    symbol: str | None = None) -> list[tuple[Path, int | None]]:
        """Stored data files of ``kind`` (optionally of one symbol), with their interval."""
        dirs: list[tuple[Path, int | None]] = (
            [(self.root / name, minutes) for name, minutes in TIMEFRAMES.items()]
            if kind == "candles" else [(self.root / "trades", None)])
        found = []
        for directory, minutes in dirs:
            if not directory.is_dir():
                continue
            pattern = self._name(symbol) if symbol else f"*.{self.ext}"
            found += [(p, minutes) for p in sorted(directory.glob(pattern))
                      if p.is_file() and not p.name.startswith(".")]
        return found

    # -- reading files --------------------------------------------------------------------------

    def _check(self, path: Path) -> None:
        """A StoreError naming ``path`` if it is not a readable file of this format."""
        try:
            if self.fmt == "parquet":
                pq.read_metadata(path)
            elif not os.access(path, os.R_OK):
                raise OSError("permission denied")
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(
                f"{path}: unreadable or corrupted {self.fmt} file ({first_line(exc)})") from None

    def _rel(self, path: Path, schema: pa.Schema) -> str:
        """SQL relation reading ``path`` with ``schema``'s column types."""
        self._check(path)
        if self.fmt == "parquet":
            cols = ", ".join(f"CAST({f.name} AS {duck_type(f.type)}) AS {f.name}"
                             for f in schema)
            return f"(SELECT {cols} FROM read_parquet({lit(str(path))}))"
        columns = ", ".join(f"{lit(f.name)}: {lit(duck_type(f.type))}" for f in schema)
        return (f"read_csv({lit(str(path))}, header = true, auto_detect = false, delim = ',', "
                f"quote = '\"', escape = '\"', allow_quoted_nulls = false, "
                f"columns = {{{columns}}})")

    def _arrow(self, sql: str, files: Sequence[Path]) -> pa.Table:
        with self._lock:
            try:
                return to_arrow(self._con.sql(sql))
            except duckdb.Error as exc:
                names = ", ".join(str(f) for f in files) or str(self.root)
                raise StoreError(f"{names}: cannot read ({first_line(exc)})") from None

    def _read_file(self, path: Path, schema: pa.Schema, order: str = "") -> pa.Table:
        cols = ", ".join(schema.names)
        sql = f"SELECT {cols} FROM {self._rel(path, schema)}" + (f" ORDER BY {order}" if order
                                                                 else "")
        return as_schema(self._arrow(sql, [path]), schema)

    def _read_status(self, path: Path) -> dict[str, Any] | None:
        raw: bytes | None = None
        if self.fmt == "parquet":
            if path.exists():
                self._check(path)
                raw = (pq.read_metadata(path).metadata or {}).get(STATUS_KEY)
        else:
            status = self._status_path(path)
            if status.exists():
                try:
                    raw = status.read_bytes()
                except OSError as exc:
                    raise StoreError(f"{status}: cannot read ({exc.strerror})") from None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            where = path if self.fmt == "parquet" else self._status_path(path)
            raise StoreError(f"{where}: corrupted sync status") from None
        for key in _STATUS_TIMES:
            if data.get(key):
                data[key] = datetime.fromisoformat(data[key]).astimezone(UTC)
        return data

    def _read_recorded(self, path: Path) -> list[tuple[int, int]]:
        """The coverage recorded for the data file ``path`` (epoch-µs ranges), if any."""
        raw: bytes | None = None
        if self.fmt == "parquet":
            if path.exists():
                self._check(path)
                raw = (pq.read_metadata(path).metadata or {}).get(COVERAGE_KEY)
        else:
            sidecar = self._coverage_path(path)
            if sidecar.exists():
                try:
                    raw = sidecar.read_bytes()
                except OSError as exc:
                    raise StoreError(f"{sidecar}: cannot read ({exc.strerror})") from None
        if raw is None:
            return []
        try:
            return [(int(a), int(b)) for a, b in json.loads(raw)]
        except (ValueError, TypeError):
            where = path if self.fmt == "parquet" else self._coverage_path(path)
            raise StoreError(f"{where}: corrupted coverage record") from None

    # -- writing files --------------------------------------------------------------------------

    @staticmethod
    def _probe_writable(directory: Path) -> None:
        try:
            fd, probe = tempfile.mkstemp(prefix=".krakked-probe.", dir=directory)
        except OSError as exc:
            raise StoreError(
                f"{directory}: directory not writable ({exc.strerror or exc})") from None
        os.close(fd)
        os.unlink(probe)

    def _prepare_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"{directory}: cannot create directory ({exc.strerror or exc})") from None
        self._probe_writable(directory)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The store lock and the root's exclusive file lock, for one write."""
        if self.read_only:
            raise StoreError(f"{self.root}: the store is open read-only")
        with self._lock:
            try:
                fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(
                    f"{self.root}: directory not writable ({exc.strerror or exc})") from None
            try:
                _lock_exclusive(fd)
                yield
            finally:
                os.close(fd)

    @staticmethod
    def _replace(path: Path, write: Callable[[Any], None]) -> None:
        """Write ``path`` atomically: temp file in the same directory, fsync, rename."""
        directory = path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise StoreError(
                f"{directory}: directory not writable ({exc.strerror or exc})") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StoreError(f"{path}: write failed ({exc.strerror or exc})") from None
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _csv_view(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        """``table`` with decimals as plain decimal strings and timestamps as ISO text."""
        parts = []
        for f in schema:
            if pa.types.is_decimal(f.type):
                parts.append(f"CASE WHEN {f.name} IS NULL THEN NULL ELSE "
                             f"rtrim(rtrim({f.name}::VARCHAR, '0'), '.') END AS {f.name}")
            elif pa.types.is_timestamp(f.type):
                parts.append(f"{f.name}::VARCHAR AS {f.name}")
            else:
                parts.append(f.name)
        with self._lock:
            self._con.register("__out", table)
            try:
                return to_arrow(self._con.sql(f"SELECT {', '.join(parts)} FROM __out"))
            finally:
                self._con.unregister("__out")

    def _write_table(self, path: Path, table: pa.Table, schema: pa.Schema,
                     status: dict[str, Any] | None,
                     coverage: Sequence[tuple[int, int]] = ()) -> None:
        """Replace ``path`` with ``table`` (and, in Parquet, its sync status and coverage)."""
        table = as_schema(table, schema)
        recorded = json.dumps([list(r) for r in coverage]).encode()
        if self.fmt == "parquet":
            metadata = {STATUS_KEY: _status_json(status)} if status else {}
            if coverage:
                metadata[COVERAGE_KEY] = recorded
            out = table.replace_schema_metadata(metadata or None)
            self._replace(path, lambda handle: pq.write_table(out, handle, compression="zstd"))
        else:
            text = self._csv_view(table, schema)
            self._replace(path, lambda handle: pacsv.write_csv(text, handle))
            if status:
                self._replace(self._status_path(path),
                              lambda handle: handle.write(_status_json(status)))
            if coverage:
                self._replace(self._coverage_path(path), lambda handle: handle.write(recorded))
            elif self._coverage_path(path).exists():
                with contextlib.suppress(FileNotFoundError):
                    self._coverage_path(path).unlink()

    # -- the primitives -------------------------------------------------------------------------

    def _targets(self, table: pa.Table, kind: Literal["candles", "trades"],
                 sync: Sequence[SyncUpdate],
                 coverage: Mapping[tuple[str, int | None], Sequence[tuple[int, int]]]
                 ) -> list[_Target]:
        keys: dict[tuple[str, int | None], SyncUpdate | None] = {}
        if table.num_rows:
            group = ["symbol", "interval_minutes"] if kind == "candles" else ["symbol"]
            for row in table.select(group).group_by(group).aggregate([]).to_pylist():
                keys[(row["symbol"], row.get("interval_minutes"))] = None
        for update in sync:
            _, minutes = sync_target(update, kind)
            keys[(update.symbol, minutes)] = update
        for key, ranges in coverage.items():
            if ranges:
                keys.setdefault(key, None)
        return [
            _Target(self.candle_path(sym, m) if kind == "candles" and m is not None
                    else self.trade_path(sym), kind, sym, m, update,
                    tuple(coverage.get((sym, m), ())))
            for (sym, m), update in keys.items()
        ]

    def _merge(self, target: _Target, batch: str, existing: bool) -> tuple[pa.Table, int]:
        """The file's rows merged with the batch's rows for it; and how many new rows won."""
        if target.kind == "candles":
            cols, schema = ", ".join(CANDLE_COLS), CANDLE_SCHEMA
            mine = (f"symbol = {lit(target.symbol)} AND "
                    f"interval_minutes = {int(target.minutes or 0)}")
            rank = "PARTITION BY timestamp ORDER BY volume DESC, __new DESC, __i DESC"
            order = "timestamp"
        else:
            cols, schema = ", ".join(TRADE_COLS), TRADE_SCHEMA
            mine = f"symbol = {lit(target.symbol)}"
            rank = "PARTITION BY timestamp, id ORDER BY __new, __i"
            order = "timestamp, abs(id)"
        parts = [f"SELECT {cols}, 1 AS __new, __i FROM {batch} WHERE {mine}"]
        files = []
        if existing:
            parts.insert(0, f"SELECT {cols}, 0 AS __new, 0 AS __i FROM "
                            f"{self._rel(target.path, schema)}")
            files.append(target.path)
        rows = f"({' UNION ALL '.join(parts)})"
        sql = (f"SELECT {cols}, __new FROM {rows} "
               f"QUALIFY row_number() OVER ({rank}) = 1")
        if target.kind == "trades":  # CSV rows that API rows stand for go (store.trade_sql)
            group = "symbol, epoch_us(timestamp) // 1000000, price, volume"
            sql = (f"SELECT * FROM ({sql}) QUALIFY id >= 0 OR row_number() OVER (PARTITION BY "
                   f"{group}, id < 0 ORDER BY id DESC) > sum(CASE WHEN id >= 0 THEN 1 ELSE 0 "
                   f"END) OVER (PARTITION BY {group})")
        sql += f" ORDER BY {order}"
        merged = self._arrow(sql, files)
        won = int(pc.sum(merged["__new"]).as_py() or 0)
        return as_schema(merged.drop_columns(["__new"]), schema), won

    @staticmethod
    def _fresh_status(symbol: str, data_type: str, table: pa.Table, last_sync_at: Any,
                      since: int | None) -> dict[str, Any]:
        """A status row describing ``table`` (the file's rows after the write)."""
        oldest = newest = None
        if table.num_rows:
            span = pc.min_max(table["timestamp"]).as_py()
            oldest, newest = py_value(span["min"]), py_value(span["max"])
        return {"symbol": symbol, "data_type": data_type, "oldest_timestamp": oldest,
                "newest_timestamp": newest, "last_sync_at": last_sync_at,
                "last_kraken_since": since, "total_records": table.num_rows}

    def _status(self, target: _Target, table: pa.Table, previous: dict[str, Any] | None,
                now: datetime) -> dict[str, Any] | None:
        """The status to store with ``table``: for a sync target, recomputed with
        ``last_sync_at = now`` and the new cursor (the old one if none is given); otherwise
        the previous status unchanged (as the DuckDB store leaves its row)."""
        if target.sync is None:
            return previous
        since = target.sync.last_kraken_since
        if since is None and previous is not None:
            since = previous.get("last_kraken_since")
        return self._fresh_status(target.symbol, target.sync.data_type, table, now, since)

    def _write(self, table: pa.Table, kind: Literal["candles", "trades"],
               sync: Sequence[SyncUpdate],
               coverage: Mapping[tuple[str, int | None], Sequence[tuple[int, int]]] | None = None
               ) -> int:
        targets = self._targets(table, kind, sync, coverage or {})
        if not targets:
            return 0
        now = datetime.now(UTC)
        with self._writing():
            for directory in {t.path.parent for t in targets}:
                self._prepare_dir(directory)
            batch = row_index(table)
            if kind == "trades" and table["id"].null_count:
                with self._lock:
                    self._con.register("__raw", batch)
                    try:
                        batch = to_arrow(self._con.sql(
                            with_trade_ids("__raw", "__i", keep_index=True)))
                    finally:
                        self._con.unregister("__raw")
            # Merge every file first, then replace them: a file that cannot be read fails the
            # write before anything is replaced.
            plans = []
            with self._lock:
                self._con.register("__batch", batch)
                try:
                    for target in targets:
                        exists = target.path.exists()
                        previous = self._read_status(target.path) if exists else None
                        recorded = self._read_recorded(target.path) if exists else []
                        merged, won = self._merge(target, "__batch", exists)
                        status = self._status(target, merged, previous, now)
                        covered: list[tuple[int, int]] = []
                        if target.kind == "candles":
                            runs = batch_coverage(merged).get((target.symbol, target.minutes),
                                                              [])
                            covered = merge_ranges([*recorded, *target.coverage, *runs])
                            if covered == runs:
                                covered = []  # the rows vouch for it all: nothing to record
                        else:
                            covered = merge_ranges([*recorded, *target.coverage])
                        if won or not exists or status != previous or covered != recorded:
                            plans.append((target, merged, status, won, covered))
                finally:
                    self._con.unregister("__batch")
                schema = CANDLE_SCHEMA if kind == "candles" else TRADE_SCHEMA
                for target, merged, status, _, covered in plans:
                    self._write_table(target.path, merged, schema, status, covered)
        return sum(plan[3] for plan in plans)

    def write_candles(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                      coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]] | None = None
                      ) -> int:
        """Merge candles into their files with the volume rule, and their coverage into the
        file's record (module docstring)."""
        return self._write(table, "candles", sync,
                           batch_coverage(table) if coverage is None else coverage)

    def write_pairs(self, table: pa.Table) -> None:
        """Replace ``pairs.<ext>`` with ``table``."""
        with self._writing():
            self._prepare_dir(self.root)
            self._write_table(self.pairs_path(), table.cast(PAIR_SCHEMA), PAIR_SCHEMA, None)

    def delete_before(self, kind: Literal["trades", "candles"], cutoff: datetime) -> int:
        """Rewrite the files of ``kind`` without rows older than ``cutoff``."""
        if kind not in ("trades", "candles"):
            raise UsageError(f"kind must be trades or candles, not {kind!r}")
        schema = CANDLE_SCHEMA if kind == "candles" else TRADE_SCHEMA
        order = "timestamp" if kind == "candles" else "timestamp, abs(id)"
        deleted = 0
        with self._writing():
            for path, minutes in self._data_files(kind):
                table = self._read_file(path, schema, order)
                keep = table.filter(pc.greater_equal(
                    table["timestamp"], pa.scalar(cutoff, schema.field("timestamp").type)))
                if keep.num_rows == table.num_rows:
                    continue
                previous = self._read_status(path)
                status = None
                if previous is not None:
                    status = self._fresh_status(
                        previous["symbol"], previous["data_type"], keep,
                        previous.get("last_sync_at"), previous.get("last_kraken_since"))
                covered: list[tuple[int, int]] = []
                if minutes is not None:
                    first = bucket_ceil_us(epoch_us(cutoff), minutes)
                    covered = [(max(a, first), b) for a, b in self._read_recorded(path)
                               if b > first]
                self._prepare_dir(path.parent)
                self._write_table(path, keep, schema, status, covered)
                deleted += table.num_rows - keep.num_rows
        return deleted

    def _candle_files(self, symbol: str) -> dict[int, Path]:
        """interval -> the pair's candle file of that interval, for the files that exist."""
        return {minutes: path for path, minutes in self._data_files("candles", symbol)
                if minutes is not None}

    def read_coverage(self, symbol: str) -> dict[int, list[tuple[int, int]]]:
        """See ``MarketStore.read_coverage``: each file's recorded coverage, with the runs of
        consecutive candles it holds."""
        out: dict[int, list[tuple[int, int]]] = {}
        for minutes, path in sorted(self._candle_files(symbol).items()):
            ranges = self._file_coverage(path)
            if ranges:
                out[minutes] = ranges
        return out

    def _file_coverage(self, path: Path) -> list[tuple[int, int]]:
        """The coverage of one candle file: its record merged with its runs of candles."""
        runs = self._arrow(
            "SELECT epoch_us(covered_from) AS a, epoch_us(covered_until) AS b FROM ("
            f"{coverage_runs_query(self._rel(path, CANDLE_SCHEMA))})", [path]).to_pylist()
        return merge_ranges([*self._read_recorded(path), *((r["a"], r["b"]) for r in runs)])

    def _relation(self, symbol: str) -> tuple[Callable[[int], str], list[Path]]:
        files = self._candle_files(symbol)

        def rel(interval: int) -> str:
            if interval not in files:
                return f"(SELECT * FROM ({self._empty_candles()}))"
            return self._rel(files[interval], CANDLE_SCHEMA)
        return rel, list(files.values())

    @staticmethod
    def _empty_candles() -> str:
        cols = ", ".join(f"NULL::{duck_type(f.type)} AS {f.name}" for f in CANDLE_SCHEMA)
        return f"SELECT {cols} LIMIT 0"

    def read_segments(self, symbol: str, minutes: int,
                      segments: Sequence[SourceSegment]) -> pa.Table:
        """See ``MarketStore.read_segments``."""
        rel, files = self._relation(symbol)
        return read_segments_with(lambda sql: self._arrow(sql, files), rel, symbol, minutes,
                                  segments)

    def last_closes(self, symbol: str, asks: Sequence[tuple[int, int, int]]
                    ) -> list[tuple[Any, str | None] | None]:
        """See ``MarketStore.last_closes``."""
        rel, files = self._relation(symbol)
        return last_closes_with(lambda sql: self._arrow(sql, files), rel, asks)

    def read_pairs(self) -> pa.Table:
        """The stored universe snapshot (empty if none)."""
        path = self.pairs_path()
        if not path.exists():
            return PAIR_SCHEMA.empty_table()
        return self._read_file(path, PAIR_SCHEMA, "canonical")

    def coverage(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Per candle file: first, last, rows, missing, gaps; then per trades file."""
        rows: list[dict[str, Any]] = []
        for path, minutes in self._data_files("candles", symbol):
            ranges = self._file_coverage(path)
            cov = pa.table({
                "symbol": [path.stem] * len(ranges),
                "interval_minutes": pa.array([minutes] * len(ranges), pa.int32()),
                "covered_from": pa.array([from_epoch_us(x) for x, _ in ranges], TS),
                "covered_until": pa.array([from_epoch_us(y) for _, y in ranges], TS)})
            with self._lock:
                self._con.register("__coverage", cov)
                try:
                    rows += self._dicts(coverage_query(self._rel(path, CANDLE_SCHEMA),
                                                       "__coverage"), [path])
                finally:
                    self._con.unregister("__coverage")
        for path, _ in self._data_files("trades", symbol):
            rows += self._dicts(
                "SELECT symbol, NULL AS interval_minutes, min(timestamp) AS first, "
                "max(timestamp) AS last, count(*) AS rows, NULL AS missing, NULL AS gaps "
                f"FROM {self._rel(path, TRADE_SCHEMA)} GROUP BY symbol", [path])
        return sorted(rows, key=lambda r: (r["symbol"], r["interval_minutes"] is None,
                                           r["interval_minutes"] or 0))

    def _dicts(self, sql: str, files: Sequence[Path]) -> list[dict[str, Any]]:
        with self._lock:
            try:
                rel = self._con.sql(sql)
                names, rows = rel.columns, rel.fetchall()
            except duckdb.Error as exc:
                names_ = ", ".join(str(f) for f in files)
                raise StoreError(f"{names_}: cannot read ({first_line(exc)})") from None
        return [{k: py_value(v) for k, v in zip(names, row, strict=True)} for row in rows]

    def read_sync_status(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """The sync status of every data file (Parquet metadata or CSV sidecars)."""
        out = []
        files = self._data_files("candles", symbol) + self._data_files("trades", symbol)
        for path, _ in files:
            status = self._read_status(path)
            if status is not None:
                out.append(status)
        return sorted(out, key=lambda r: (r["symbol"], r["data_type"]))


def _status_json(status: dict[str, Any]) -> bytes:
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in status.items()}
    return json.dumps(data, sort_keys=True).encode()
