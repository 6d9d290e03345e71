# ruff: noqa: S608 - SQL is assembled from module constants; values always travel as parameters
"""The PostgreSQL market store (``postgresql://…``): psycopg 3 with a connection pool, Arrow in
and out through ``COPY``, rollup tables kept current incrementally.

Schema (version 1, applied on open under an advisory lock): ``trades``, ``candles``, the rollup
tables ``candles_5m`` … ``candles_1w``, ``data_sync_status``, ``pairs``, ``schema_version``.
Every time-series key holds ``timestamp``, so TimescaleDB is a one-line migration per table
(``SELECT create_hypertable('candles', 'timestamp', migrate_data => true)``); nothing here needs
TimescaleDB.

How it works:

- Writes COPY the Arrow rows (as CSV made by Arrow: exact decimal text, timestamps as Unix
  microseconds) into a temporary table, then upsert from it in one transaction, together with the
  ``data_sync_status`` rows. Candles follow the volume rule (a stored candle is replaced only by
  a version with volume >= its own; within one batch the largest volume, then the last row,
  wins).
- Rollups form a cascade: 5m from 1m candles, 15m from 5m, 30m from 15m, 1h from 30m, 4h from 1h,
  12h from 4h, 1d from 12h, 1w from 1d (all buckets nest exactly; weeks start Monday). A write of
  1m rows recomputes only the buckets those rows touch, level by level, in the same
  transaction; ``refresh_continuous_aggregates()`` rebuilds every level. Where 1m candles carry
  no quote volume it is taken as vwap × volume (rounded to 18 places at the 5m level).
- Trades without a Kraken id (Kraken's CSV files) get a deterministic negative id (a hash of
  symbol, time, price, volume and the occurrence number), so re-importing a file adds nothing;
  they read back with ``id = None``. A CSV trade is not stored when an API trade with the same
  symbol, price and volume exists in the same second, and storing such an API trade removes the
  CSV one — each trade is stored once.
- Writes to one symbol are serialized (a transaction-scoped advisory lock per symbol), so
  concurrent writers keep the rollups and the sync counters exact.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from krakked.errors import StoreError, UsageError
from krakked.market.candles import (
    TIMEFRAMES,
    SourceSegment,
    bucket_ceil_us,
    bucket_floor_us,
    epoch_us,
    from_epoch_us,
    interval_minutes,
    merge_ranges,
)
from krakked.store.base import (
    CANDLE_SCHEMA,
    PAIR_SCHEMA,
    ROLLUPS,
    SCHEMA_VERSION,
    TRADE_SCHEMA,
    MarketStore,
    SyncUpdate,
    batch_coverage,
    redact_url,
)

__all__ = ["PostgresStore"]

log = logging.getLogger("krakked.store.postgres")

_NUM = "numeric(38,18)"
_MIGRATION_LOCK = 0x6B72616B6B6564  # "krakked": serializes schema migrations across openers
_BULK_BUCKETS = 2_000  # touched buckets above which a rollup level is recomputed in one pass
_BATCH_ROLLUP_ROWS = 2_000  # 1m rows from which a write works out its whole buckets itself
_COPY_CHUNK = 65_536  # rows per COPY block (encoded in a thread while the previous one is sent)
_PARSE_BYTES = 4 << 20  # COPY output parsed by Arrow in pieces of about this size, while more comes
_TF_NAME = {v: k for k, v in TIMEFRAMES.items()}
_EPOCH = "timestamptz '1970-01-01 00:00:00+00'"
_MONDAY = "timestamptz '1970-01-05 00:00:00+00'"  # weekly buckets start on Monday (like Kraken)

# -- schema -----------------------------------------------------------------------------------

_CANDLE_COLUMNS_DDL = f"""
    symbol text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    interval_minutes integer NOT NULL,
    open {_NUM} NOT NULL,
    high {_NUM} NOT NULL,
    low {_NUM} NOT NULL,
    close {_NUM} NOT NULL,
    volume {_NUM} NOT NULL,
    quote_volume {_NUM},
    trade_count bigint,
    vwap {_NUM},
    source text"""

_CASCADE: list[tuple[int, int]] = [  # (rollup minutes, the finer level it is built from)
    (5, 1), (15, 5), (30, 15), (60, 30), (240, 60), (720, 240), (1440, 720), (10080, 1440),
]
assert [m for m, _ in _CASCADE] == list(ROLLUPS)


def _schema_v1() -> tuple[str, ...]:
    rollups = tuple(
        f"""CREATE TABLE {name} ({_CANDLE_COLUMNS_DDL},
            CHECK (interval_minutes = {minutes}),
            PRIMARY KEY (symbol, "timestamp"))"""
        for minutes, name in ROLLUPS.items()
    )
    return (
        f"""CREATE TABLE trades (
            id bigint NOT NULL,
            symbol text NOT NULL,
            "timestamp" timestamptz NOT NULL,
            price {_NUM} NOT NULL,
            volume {_NUM} NOT NULL,
            side text NOT NULL,
            order_type text,
            misc text,
            source text,
            PRIMARY KEY ("timestamp", symbol, id))""",
        'CREATE INDEX trades_symbol_time ON trades (symbol, "timestamp", id)',
        # rows from Kraken's CSV files (no Kraken id): small, and what reconciliation probes
        'CREATE INDEX trades_without_kraken_id ON trades (symbol, "timestamp") WHERE id < 0',
        f"""CREATE TABLE candles ({_CANDLE_COLUMNS_DDL},
            PRIMARY KEY ("timestamp", symbol, interval_minutes))""",
        "CREATE INDEX candles_symbol_interval_time ON candles "
        '(symbol, interval_minutes, "timestamp")',
        *rollups,
        """CREATE TABLE data_sync_status (
            symbol text NOT NULL,
            data_type text NOT NULL,
            oldest_timestamp timestamptz,
            newest_timestamp timestamptz,
            last_sync_at timestamptz NOT NULL,
            last_kraken_since bigint,
            total_records bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (symbol, data_type))""",
        f"""CREATE TABLE pairs (
            canonical text PRIMARY KEY,
            base text, quote text, rest_symbol text, ws_symbol text, wsname text, raw_name text,
            price_decimals integer, volume_decimals integer,
            lot_size {_NUM}, ordermin {_NUM}, costmin {_NUM}, tick_size {_NUM},
            status text, updated_at timestamptz)""",
    )


# -- URLs and errors ----------------------------------------------------------------------------

def _conninfo(url: str) -> str:
    """Accept ``postgres://`` and SQLAlchemy-style ``postgresql+psycopg://`` too."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url, count=1)


def _target(url: str) -> str:
    """``host=… port=… database=…`` for messages: where, never the password."""
    import psycopg.conninfo

    try:
        info = psycopg.conninfo.conninfo_to_dict(_conninfo(url))
    except Exception:  # an unparseable URL: show what it looks like, redacted
        return redact_url(url)
    host = info.get("host") or info.get("hostaddr") or "localhost (default socket)"
    return (f"host={host} port={info.get('port') or 5432} "
            f"database={info.get('dbname') or info.get('user') or '(default)'}")


def _secrets(url: str) -> list[str]:
    found = []
    with contextlib.suppress(Exception):
        import psycopg.conninfo

        password = psycopg.conninfo.conninfo_to_dict(_conninfo(url)).get("password")
        if password:
            found.append(str(password))
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
    return found


# -- Arrow <-> COPY -----------------------------------------------------------------------------

def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return _NUM
    if pa.types.is_timestamp(t) or pa.types.is_int64(t):
        return "bigint"  # timestamps travel as Unix microseconds
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_boolean(t):
        return "boolean"
    return "text"


def _q(name: str) -> str:
    return f'"{name}"'


def _ts_in(expr: str) -> str:
    return f"({_EPOCH} + {expr} * interval '1 microsecond')"


def _encode(table: pa.Table, first_ord: int | None) -> bytes:
    """Rows -> CSV for ``COPY … (FORMAT csv)``: exact decimal text (trailing zeros trimmed),
    timestamps as Unix microseconds, then a row ordinal — or, with ``first_ord`` None (a
    COPY straight into a table), timestamps as ISO text in UTC and no ordinal."""
    cols: list[pa.ChunkedArray | pa.Array] = []
    for field, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_decimal(field.type):
            col = col.cast(pa.string())
            if field.type.scale > 0:  # "1.500000…" -> "1.5" ("2." is valid numeric input)
                # but not Arrow's exponent form of values under 1e-6: "1.00000000E-10" trimmed
                # would be "1.00000000E-1"
                col = pc.if_else(pc.match_substring(col, "E"), col,
                                 pc.utf8_rtrim(col, characters="0"))
        elif pa.types.is_timestamp(field.type):
            col = col.cast(pa.timestamp("us", tz="UTC"))
            col = col.cast(pa.int64()) if first_ord is not None else col.cast(pa.string())
        cols.append(col)
    names = list(table.column_names)
    if first_ord is not None:
        cols.append(pa.array(range(first_ord, first_ord + table.num_rows), pa.int64()))
        names.append("_ord")
    out = io.BytesIO()
    pacsv.write_csv(pa.table(cols, names=names), out, pacsv.WriteOptions(include_header=False))
    return out.getvalue()


def _copy_in(cur: Any, temp: str, table: pa.Table) -> None:
    """Create temporary table ``temp`` (dropped at commit) shaped like ``table`` plus ``_ord``,
    and COPY the rows into it."""
    cols = ", ".join(f"{_q(f.name)} {_pg_type(f.type)}" for f in table.schema)
    cur.execute(f"CREATE TEMP TABLE {temp} ({cols}, _ord bigint) ON COMMIT DROP")
    if not table.num_rows:
        return
    with ThreadPoolExecutor(1) as pool, cur.copy(f"COPY {temp} FROM STDIN (FORMAT csv)") as copy:
        pending: deque[Future[bytes]] = deque()
        for offset in range(0, table.num_rows, _COPY_CHUNK):
            pending.append(pool.submit(_encode, table.slice(offset, _COPY_CHUNK), offset))
            if len(pending) > 2:
                copy.write(pending.popleft().result())
        while pending:
            copy.write(pending.popleft().result())


def _select_out(schema: pa.Schema, alias: str = "") -> str:
    """A SELECT list in ``schema`` order for ``_copy_out``: decimals without trailing zeros
    (less to send and parse; the value is unchanged)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        f"trim_scale({prefix}{_q(f.name)}) AS {_q(f.name)}" if pa.types.is_decimal(f.type)
        else f"{prefix}{_q(f.name)}"
        for f in schema
    )


def _copy_out(cur: Any, query: str, params: Sequence[Any] | dict[str, Any],
              schema: pa.Schema) -> pa.Table:
    """Run ``query`` (columns as ``_select_out`` gives them) through ``COPY … TO STDOUT`` and
    parse it with Arrow into ``schema``. Timestamps arrive as ISO text in UTC (the pool's
    sessions use ``TimeZone=UTC``, ``DateStyle=ISO``).

    libpq hands COPY data over one row at a time; every ``_PARSE_BYTES`` of whole rows go to
    Arrow's CSV reader in a worker thread while the next rows arrive, so parsing overlaps the
    transfer instead of following it."""
    read = pacsv.ReadOptions(column_names=schema.names)
    convert = pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema}, null_values=[""],
        strings_can_be_null=True, quoted_strings_can_be_null=False)

    def parse(rows: bytearray) -> pa.Table:
        return pacsv.read_csv(pa.py_buffer(rows), read_options=read, convert_options=convert)

    parts: list[Future[pa.Table]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="krakked-csv") as pool:
        buf = bytearray()
        with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", params) as copy:
            for row in copy:  # one whole row each (libpq's COPY protocol)
                buf += row
                if len(buf) >= _PARSE_BYTES:
                    parts.append(pool.submit(parse, buf))
                    buf = bytearray()
        if buf:
            parts.append(pool.submit(parse, buf))
        tables = [part.result() for part in parts]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).cast(schema)


# -- aggregation SQL ----------------------------------------------------------------------------

def _bucket(minutes: int, expr: str) -> str:
    origin = _MONDAY if minutes == 10080 else _EPOCH
    return f"date_bin(interval '{minutes} minutes', {expr}, {origin})"


def _agg_columns(minutes: int, bucket: str) -> str:
    """Aggregates of source rows ``s`` into one candle per (symbol, ``bucket``) — the rule of
    ``store.duckdb.aggregate_query``: rows without volume (Kraken's filler for intervals
    without trades, repeating the previous close) count for the close only."""
    quote = "CASE WHEN s.volume = 0 THEN 0 ELSE coalesce(s.quote_volume, s.vwap * s.volume) END"
    full = f"count(*) = count({quote})"
    close = '(array_agg(s.close ORDER BY s."timestamp" DESC))[1]'
    traded = "FILTER (WHERE s.volume > 0)"
    return f"""s.symbol, {bucket} AS "timestamp", {minutes} AS interval_minutes,
        coalesce((array_agg(s.open ORDER BY s."timestamp") {traded})[1], {close}) AS open,
        coalesce(max(s.high) {traded}, {close}) AS high,
        coalesce(min(s.low) {traded}, {close}) AS low,
        {close} AS close,
        sum(s.volume) AS volume,
        CASE WHEN {full} THEN round(sum({quote}), 18) END AS quote_volume,
        sum(s.trade_count) AS trade_count,
        CASE WHEN {full} AND sum(s.volume) <> 0
             THEN round(sum({quote}) / sum(s.volume), 18) END AS vwap,
        CASE WHEN count(s.source) = 0 THEN NULL
             WHEN count(s.source) = count(*) AND min(s.source) = max(s.source) THEN min(s.source)
             ELSE 'trades' END AS source"""


def _covered(symbol: str, bucket: str, minutes: int) -> str:
    """SQL: the 1-minute coverage of ``symbol`` spans the whole ``minutes`` bucket opening at
    ``bucket`` (only such buckets are kept in the rollup tables: never a partial one)."""
    return f"""EXISTS (SELECT 1 FROM candle_coverage cv WHERE cv.symbol = {symbol}
        AND cv.interval_minutes = 1 AND cv.covered_from <= {bucket}
        AND cv.covered_until >= {bucket} + interval '{minutes} minutes')"""


def _rollup_source(level: int) -> tuple[str, str]:
    """(table, extra condition) holding the rows a rollup of ``level``'s finer level."""
    if level == 1:
        return "candles", "AND s.interval_minutes = 1"
    return ROLLUPS[level], ""


_CANDLE_NAMES = ", ".join(_q(n) for n in CANDLE_SCHEMA.names)
_CANDLE_VALUES = [_q(n) for n in CANDLE_SCHEMA.names
                  if n not in ("symbol", "timestamp", "interval_minutes")]
_CANDLE_UPDATE = ", ".join(f"{n} = excluded.{n}" for n in _CANDLE_VALUES)
_ROLLUP_UPDATE = (f"{_CANDLE_UPDATE} WHERE ({', '.join(f'd.{n}' for n in _CANDLE_VALUES)}) "
                  f"IS DISTINCT FROM ({', '.join(f'excluded.{n}' for n in _CANDLE_VALUES)})")
"""A rollup row is rewritten (and reported upwards) only when its values change."""


def _rollup_touched_sql(minutes: int, finer: int, touched: str, out: str) -> str:
    """Recompute the ``minutes`` buckets holding the (symbol, timestamp) rows of ``touched``;
    record the buckets written in ``out``. Each bucket reads its own index range, whatever the
    planner's statistics say (a late minute costs one bucket per level)."""
    src, cond = _rollup_source(finer)
    return f"""
        WITH w AS (
            INSERT INTO {ROLLUPS[minutes]} AS d ({_CANDLE_NAMES})
            SELECT a.* FROM (
                SELECT DISTINCT symbol, {_bucket(minutes, '"timestamp"')} AS b
                FROM {touched}) t
            CROSS JOIN LATERAL (
                SELECT {_agg_columns(minutes, "t.b")} FROM {src} s
                WHERE s.symbol = t.symbol AND s."timestamp" >= t.b
                  AND s."timestamp" < t.b + interval '{minutes} minutes' {cond}
                GROUP BY s.symbol) a
            WHERE {_covered("t.symbol", "t.b", minutes)}
            ORDER BY a.symbol, a."timestamp"
            ON CONFLICT (symbol, "timestamp") DO UPDATE SET {_ROLLUP_UPDATE}
            RETURNING d.symbol, d."timestamp")
        INSERT INTO {out} SELECT symbol, "timestamp" FROM w"""


def _rollup_bulk_sql(minutes: int, finer: int, touched: str, out: str) -> str:
    """``_rollup_touched_sql`` for many touched buckets: one pass over the source rows between
    the first and the last touched bucket (parameters: symbols, start, end), hash-joined to the
    touched buckets (run with nested loops off, so no statistics can make it quadratic)."""
    src, cond = _rollup_source(finer)
    return f"""
        WITH t AS (
            SELECT DISTINCT symbol, {_bucket(minutes, '"timestamp"')} AS b FROM {touched}),
        w AS (
            INSERT INTO {ROLLUPS[minutes]} AS d ({_CANDLE_NAMES})
            SELECT a.* FROM (
                SELECT {_agg_columns(minutes, "t.b")}
                FROM {src} s
                JOIN t ON t.symbol = s.symbol AND t.b = {_bucket(minutes, 's."timestamp"')}
                WHERE s.symbol = ANY(%s) AND s."timestamp" >= %s AND s."timestamp" < %s {cond}
                GROUP BY s.symbol, t.b) a
            WHERE {_covered("a.symbol", 'a."timestamp"', minutes)}
            ORDER BY a.symbol, a."timestamp"
            ON CONFLICT (symbol, "timestamp") DO UPDATE SET {_ROLLUP_UPDATE}
            RETURNING d.symbol, d."timestamp")
        INSERT INTO {out} SELECT symbol, "timestamp" FROM w"""


def _rollup_range_sql(minutes: int, finer: int, out: str) -> str:
    """Recompute every ``minutes`` bucket between two bucket boundaries (parameters: symbols,
    start, end) — for writes that touch (nearly) all of them; record the buckets changed."""
    src, cond = _rollup_source(finer)
    bucket = _bucket(minutes, 's."timestamp"')
    return f"""
        WITH w AS (
            INSERT INTO {ROLLUPS[minutes]} AS d ({_CANDLE_NAMES})
            SELECT a.* FROM (
                SELECT {_agg_columns(minutes, bucket)}
                FROM {src} s
                WHERE s.symbol = ANY(%s) AND s."timestamp" >= %s AND s."timestamp" < %s {cond}
                GROUP BY s.symbol, {bucket}) a
            WHERE {_covered("a.symbol", 'a."timestamp"', minutes)}
            ORDER BY a.symbol, a."timestamp"
            ON CONFLICT (symbol, "timestamp") DO UPDATE SET {_ROLLUP_UPDATE}
            RETURNING d.symbol, d."timestamp")
        INSERT INTO {out} SELECT symbol, "timestamp" FROM w"""


def _rollup_rebuild_sql(minutes: int, finer: int) -> str:
    src, cond = _rollup_source(finer)
    bucket = _bucket(minutes, 's."timestamp"')
    return f"""
        INSERT INTO {ROLLUPS[minutes]} ({_CANDLE_NAMES})
        SELECT a.* FROM (
            SELECT {_agg_columns(minutes, bucket)}
            FROM {src} s WHERE true {cond}
            GROUP BY s.symbol, {bucket}) a
        WHERE {_covered("a.symbol", 'a."timestamp"', minutes)}"""


def _sync_target(update: SyncUpdate, kind: str | None = None) -> tuple[str, int | None]:
    """``data_type`` -> (``trades`` | ``candles``, interval minutes or None); an
    ``UsageError`` naming it if it describes neither (or not ``kind`` when given)."""
    target: tuple[str, int | None] | None = None
    if update.data_type == "trades":
        target = ("trades", None)
    elif update.data_type.startswith("candles_"):
        with contextlib.suppress(UsageError):
            target = ("candles", interval_minutes(update.data_type.removeprefix("candles_")))
    if target is None:
        raise UsageError(
            f"data_sync_status data_type must be trades or candles_<timeframe> "
            f"({', '.join(TIMEFRAMES)}), not {update.data_type!r}")
    if kind is not None and target[0] != kind:
        raise UsageError(
            f"sync status {update.data_type!r} does not describe the {kind} written")
    return target


def _status_source(data_type: str) -> tuple[str, tuple[Any, ...]]:
    """(FROM … WHERE clause with a ``%s`` for the symbol, extra params) behind a data type."""
    kind, minutes = _sync_target(SyncUpdate("", data_type))
    if kind == "trades":
        return "trades WHERE symbol = %s", ()
    return "candles WHERE symbol = %s AND interval_minutes = %s", (minutes,)


def _subtract_all(piece: tuple[int, int], ranges: Sequence[tuple[int, int]]
                  ) -> list[tuple[int, int]]:
    """The parts of ``piece`` outside every range of ``ranges`` (epoch µs)."""
    parts = [piece]
    for a, b in ranges:
        parts = [p for x, y in parts
                 for p in ((x, min(y, a)), (max(x, b), y)) if p[1] > p[0]]
    return parts


@dataclass(frozen=True)
class _BatchRollups:
    """What a candle batch's 1m rows say of the rollups by themselves."""

    minutes: int  # 1m rows, one per key
    levels: list[tuple[int, bytes]]  # per rollup level: the buckets the batch fills whole,
    # as COPY csv (encoded here, off the connection's critical path)
    runs: list[tuple[str, int, int]]  # (symbol, from, until): its runs of minutes (epoch µs)


def _batch_rollups(table: pa.Table) -> _BatchRollups:
    """The batch's 1m candles, one per key as the upsert keeps them (the highest volume, the
    later row on a tie); per rollup level in cascade order, the buckets they fill whole,
    aggregated exactly (a level's from the whole buckets of the level below); and the ends of
    their runs."""
    import duckdb

    from krakked.store.duckdb import aggregate_query, dedupe_candles_query, row_index, to_arrow

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("__raw", row_index(table.filter(pc.equal(table["interval_minutes"], 1))))
        ones = to_arrow(con.sql(dedupe_candles_query("__raw", "__i"))).cast(CANDLE_SCHEMA)
        con.register("__level_1", ones)
        levels: list[tuple[int, bytes]] = []
        for minutes, finer in _CASCADE:
            source = (f"(SELECT * FROM __level_{finer} QUALIFY count(*) OVER (PARTITION BY "
                      f"symbol, {_duck_bucket(minutes)}) = {minutes // finer})")
            level = to_arrow(con.sql(aggregate_query(source, finer, minutes))).cast(
                CANDLE_SCHEMA)
            if not level.num_rows:
                break
            con.register(f"__level_{minutes}", level)
            levels.append((minutes, _encode(level, None)))
    finally:
        con.close()
    runs = [(symbol, a, b) for (symbol, _), ranges in batch_coverage(ones).items()
            for a, b in ranges]
    return _BatchRollups(ones.num_rows, levels, runs)


def _duck_bucket(minutes: int) -> str:
    from krakked.store.duckdb import bucket_us

    return bucket_us("epoch_us(timestamp)", minutes)


# -- migrations -------------------------------------------------------------------------------

def _schema_v2() -> tuple[str, ...]:
    run = ('extract(epoch FROM "timestamp")::bigint / (interval_minutes * 60) - row_number() '
           'OVER (PARTITION BY symbol, interval_minutes ORDER BY "timestamp")')
    return (
        """CREATE TABLE candle_coverage (
            symbol text NOT NULL,
            interval_minutes integer NOT NULL,
            covered_from timestamptz NOT NULL,
            covered_until timestamptz NOT NULL,
            PRIMARY KEY (symbol, interval_minutes, covered_from))""",
        # What a store of version 1 holds vouches for the runs of consecutive candles it has.
        f"""INSERT INTO candle_coverage
            SELECT symbol, interval_minutes, min("timestamp"),
                   max("timestamp") + make_interval(mins => interval_minutes)
            FROM (SELECT symbol, interval_minutes, "timestamp", {run} AS run FROM candles) r
            GROUP BY symbol, interval_minutes, run""",
        # Rollups rebuilt: only buckets the 1-minute coverage spans, zero-volume rule.
        "TRUNCATE " + ", ".join(ROLLUPS.values()),
        *(_rollup_rebuild_sql(minutes, finer) for minutes, finer in _CASCADE),
    )


_MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "market store: trades, candles, rollups, data_sync_status, pairs", _schema_v1()),
    (2, "candle_coverage (recorded coverage per candle series, filled with the runs of "
        "consecutive candles stored); rollups rebuilt with only the buckets it spans",
     _schema_v2()),
]
"""(version, what it does, statements). Append a step to change the schema; never edit one."""
assert _MIGRATIONS[-1][0] == SCHEMA_VERSION


# -- the store ----------------------------------------------------------------------------------

class PostgresStore(MarketStore):
    """The market store in PostgreSQL (15+; TimescaleDB not needed)."""

    backend = "postgresql"

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10,
                 connect_timeout: float = 10.0) -> None:
        super().__init__()
        if not 1 <= min_size <= max_size:
            raise StoreError(f"pool sizes must satisfy 1 <= min_size <= max_size, got "
                             f"{min_size}..{max_size}")
        self.url = redact_url(url)
        self._target = _target(url)
        self._secrets = _secrets(url)
        conninfo = _conninfo(url)
        import psycopg
        from psycopg_pool import ConnectionPool

        try:
            with psycopg.connect(conninfo, connect_timeout=max(1, int(connect_timeout))) as conn:
                self._migrate(conn)
        except psycopg.Error as exc:
            raise self._error("cannot open the PostgreSQL store", exc) from None
        self._pool = ConnectionPool(
            conninfo, min_size=min_size, max_size=max_size, open=False,
            kwargs={"connect_timeout": max(1, int(connect_timeout))},
            configure=_configure, timeout=60.0, name="krakked-store")
        try:
            self._pool.open(wait=True, timeout=connect_timeout * 2)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._error("cannot open the PostgreSQL connection pool", exc) from None

    # -- plumbing --------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StoreError:
        message = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return StoreError(f"{what} at {self._target}: {message}")

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[Any]:
        """A pooled connection's cursor inside one transaction (committed at the end)."""
        import psycopg

        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise self._error(f"PostgreSQL store: {what} failed", exc) from None

    @staticmethod
    def _migrate(conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""")
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            current = int(row[0])
            if current > SCHEMA_VERSION:
                raise StoreError(f"the database schema is version {current}, newer than this "
                                 f"krakked understands ({SCHEMA_VERSION}); upgrade krakked")
            for version, description, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                             (version, description))
                log.info("PostgreSQL store: applied schema version %d (%s)", version,
                         description)

    @staticmethod
    def _lock_symbols(cur: Any, symbols: set[str]) -> None:
        """Serialize writers of the same symbols (rollups and sync counters stay exact)."""
        for symbol in sorted(symbols):
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"krakked:{symbol}",))

    @staticmethod
    def _refresh_status(cur: Any, deltas: dict[tuple[str, str], int]) -> None:
        """Existing ``data_sync_status`` rows of the touched (symbol, data_type): oldest/newest
        from the table, ``total_records`` moved by the rows added or removed."""
        for (symbol, data_type), delta in sorted(deltas.items()):
            where, extra = _status_source(data_type)
            args = (symbol, *extra)
            cur.execute(
                f"""UPDATE data_sync_status SET
                    oldest_timestamp = (SELECT min("timestamp") FROM {where}),
                    newest_timestamp = (SELECT max("timestamp") FROM {where}),
                    total_records = total_records + %s
                    WHERE symbol = %s AND data_type = %s""",
                (*args, *args, delta, symbol, data_type))

    @staticmethod
    def _apply_sync(cur: Any, sync: Sequence[SyncUpdate]) -> None:
        for update in sync:
            cur.execute(
                """UPDATE data_sync_status SET last_sync_at = now(),
                   last_kraken_since = coalesce(%s, last_kraken_since)
                   WHERE symbol = %s AND data_type = %s""",
                (update.last_kraken_since, update.symbol, update.data_type))
            if cur.rowcount:
                continue
            where, extra = _status_source(update.data_type)
            stats = f'SELECT min("timestamp"), max("timestamp"), count(*) FROM {where}'
            args = (update.symbol, *extra)
            cur.execute(
                f"""INSERT INTO data_sync_status (symbol, data_type, oldest_timestamp,
                    newest_timestamp, total_records, last_sync_at, last_kraken_since)
                    SELECT %s, %s, x.*, now(), %s FROM ({stats}) x""",
                (update.symbol, update.data_type, update.last_kraken_since, *args))

    @staticmethod
    def _maintain_rollups(cur: Any, touched: str, *, prune: bool = True) -> None:
        """Recompute the rollup buckets holding the 1m (symbol, timestamp) rows in ``touched``,
        level by level, each level only where the level below changed: bucket by bucket when
        few or scattered, in one pass when many (every bucket of the span when nearly all).
        ``prune=False`` recomputes every level (after rows were deleted under it)."""
        previous, changed = touched, -1
        for minutes, finer in _CASCADE:
            if changed == 0 and prune:
                break  # nothing changed below: nothing above can change
            out = f"_kk_touched_{minutes}"
            cur.execute(f"DROP TABLE IF EXISTS {out}")  # (a second pass in one transaction)
            cur.execute(f'CREATE TEMP TABLE {out} (symbol text, "timestamp" timestamptz) '
                        "ON COMMIT DROP")
            buckets, density = 0, 0.0
            if changed < 0 or changed > _BULK_BUCKETS:  # (changed is -1 on the first level)
                cur.execute(f"""SELECT count(*), array_agg(DISTINCT symbol), min(b),
                                       max(b) + interval '{minutes} minutes'
                                FROM (SELECT DISTINCT symbol,
                                      {_bucket(minutes, '"timestamp"')} AS b
                                      FROM {previous}) t""")
                buckets, symbols, lo, hi = cur.fetchone()
                if buckets:
                    span = (hi - lo).total_seconds() / 60 / minutes * len(symbols)
                    density = buckets / span
            if buckets > _BULK_BUCKETS and density >= 0.9:
                cur.execute(_rollup_range_sql(minutes, finer, out), (symbols, lo, hi))
            elif buckets > _BULK_BUCKETS and density >= 0.2:
                cur.execute("SET LOCAL enable_nestloop = off")
                cur.execute(_rollup_bulk_sql(minutes, finer, previous, out), (symbols, lo, hi))
                cur.execute("SET LOCAL enable_nestloop = on")
            else:
                cur.execute(_rollup_touched_sql(minutes, finer, previous, out))
            changed = cur.rowcount
            previous = out if prune else touched  # unpruned: the same instants, every level

    # -- writing ---------------------------------------------------------------------------

    def write_candles(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                      coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]] | None = None
                      ) -> int:
        for update in sync:
            _sync_target(update, "candles")
        table = table.select(CANDLE_SCHEMA.names)
        if coverage is None:
            coverage = batch_coverage(table)
        symbols = set(pc.unique(table["symbol"]).to_pylist()) if table.num_rows else set()
        with self._transaction("writing candles") as cur:
            self._lock_symbols(cur, symbols | {s.symbol for s in sync}
                               | {symbol for symbol, _ in coverage})
            added = self._merge_coverage(cur, coverage)
            written = 0
            if table.num_rows:
                written = self._upsert_candles(cur, table)
            if added:
                # A rollup bucket can become whole without a row of its own changing (coverage
                # of a quiet stretch): recompute, at every level, the buckets holding the ends
                # of each newly covered 1-minute range.
                cur.execute('CREATE TEMP TABLE _kk_cover_ends (symbol text, '
                            '"timestamp" timestamptz) ON COMMIT DROP')
                cur.executemany("INSERT INTO _kk_cover_ends VALUES (%s, %s)", added)
                self._maintain_rollups(cur, "_kk_cover_ends", prune=False)
            self._apply_sync(cur, sync)
        return written

    @staticmethod
    def _merge_coverage(cur: Any, coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]]
                        ) -> list[tuple[str, datetime]]:
        """Merge ``coverage`` into ``candle_coverage`` (disjoint, non-touching ranges); return
        (symbol, instant) of the first and last minute of each newly covered 1-minute piece."""
        ends: list[tuple[str, datetime]] = []
        for (symbol, minutes), ranges in sorted(coverage.items()):
            if not ranges:
                continue
            lo = from_epoch_us(min(a for a, _ in ranges))
            hi = from_epoch_us(max(b for _, b in ranges))
            near = ("symbol = %s AND interval_minutes = %s AND covered_until >= %s "
                    "AND covered_from <= %s")
            args = (symbol, minutes, lo, hi)
            cur.execute(f"DELETE FROM candle_coverage WHERE {near} "
                        "RETURNING covered_from, covered_until", args)
            existing = [(epoch_us(a), epoch_us(b)) for a, b in cur.fetchall()]
            merged = merge_ranges([*ranges, *existing])
            cur.executemany("INSERT INTO candle_coverage VALUES (%s, %s, %s, %s)",
                            [(symbol, minutes, from_epoch_us(a), from_epoch_us(b))
                             for a, b in merged])
            if minutes == 1:
                for a, b in merge_ranges(ranges):
                    for x, y in _subtract_all((a, b), existing):
                        ends += [(symbol, from_epoch_us(x)),
                                 (symbol, from_epoch_us(y - 60_000_000))]
        return ends

    def _upsert_candles(self, cur: Any, table: pa.Table) -> int:
        cur.execute("SET LOCAL work_mem = '128MB'")
        with ThreadPoolExecutor(1) as pool:
            # A large batch's own rollups are worked out while the server upserts it (after
            # the COPY, whose encoding wants this process's cores); they are used if every 1m
            # row of the batch wins (see _apply_batch_rollups).
            _copy_in(cur, "_kk_in_candles", table)
            ones = pc.sum(pc.equal(table["interval_minutes"], 1)).as_py() or 0
            batch = pool.submit(_batch_rollups, table) if ones >= _BATCH_ROLLUP_ROWS else None
            cols = ", ".join(_ts_in('"timestamp"') if n == "timestamp" else _q(n)
                             for n in CANDLE_SCHEMA.names)
            cur.execute(f"""
                WITH up AS (
                    INSERT INTO candles AS c ({_CANDLE_NAMES})
                    SELECT {cols} FROM (
                        SELECT DISTINCT ON ("timestamp", symbol, interval_minutes) *
                        FROM _kk_in_candles
                        ORDER BY "timestamp", symbol, interval_minutes, volume DESC, _ord DESC) i
                    ON CONFLICT ("timestamp", symbol, interval_minutes) DO UPDATE
                    SET {_CANDLE_UPDATE} WHERE excluded.volume >= c.volume
                    RETURNING c.symbol, c.interval_minutes, c.xmax = 0 AS inserted)
                SELECT symbol, interval_minutes, count(*) FILTER (WHERE inserted), count(*)
                FROM up GROUP BY symbol, interval_minutes""")
            groups = cur.fetchall()
            changed_minutes = sum(n for _, minutes, _, n in groups if minutes == 1)
            rollups = batch.result() if batch is not None else None
        if rollups is not None and changed_minutes == rollups.minutes:
            self._apply_batch_rollups(cur, rollups)
        elif changed_minutes:
            # the batch's minutes: those that lost to a stored fuller candle changed nothing,
            # and recomputing their buckets finds that
            cur.execute("ANALYZE _kk_in_candles")
            self._maintain_rollups(cur, f'(SELECT symbol, {_ts_in(_q("timestamp"))} AS '
                                        '"timestamp" FROM _kk_in_candles '
                                        "WHERE interval_minutes = 1) AS changed")
        self._refresh_status(cur, {
            (symbol, f"candles_{_TF_NAME[minutes]}"): inserted
            for symbol, minutes, inserted, _ in groups if minutes in _TF_NAME})
        return sum(int(n) for *_, n in groups)

    def _apply_batch_rollups(self, cur: Any, rollups: _BatchRollups) -> None:
        """Rollups of a write whose every 1m row was stored: at each level, the buckets the
        batch fills whole (those inside its runs of minutes) are replaced by the batch's own
        aggregates (``rollups``: by the rule of ``store.duckdb.aggregate_query``, the one the SQL
        here follows); the buckets holding the first or last minute of a run — the only ones
        it touches without filling — are recomputed from the stored rows."""
        cur.execute('CREATE TEMP TABLE _kk_whole (minutes integer, symbol text, '
                    'lo timestamptz, hi timestamptz) ON COMMIT DROP')
        cur.executemany("INSERT INTO _kk_whole VALUES (%s, %s, %s, %s)", [
            (minutes, symbol, from_epoch_us(bucket_ceil_us(a, minutes)),
             from_epoch_us(bucket_floor_us(b, minutes)))
            for minutes, _ in rollups.levels for symbol, a, b in rollups.runs])
        for minutes, rows in rollups.levels:
            cur.execute(f"""DELETE FROM {ROLLUPS[minutes]} d USING _kk_whole w
                            WHERE w.minutes = %s AND d.symbol = w.symbol
                              AND d."timestamp" >= w.lo AND d."timestamp" < w.hi""",
                        (minutes,))
            with cur.copy(f"COPY {ROLLUPS[minutes]} ({_CANDLE_NAMES}) FROM STDIN "
                          "(FORMAT csv)") as copy:
                copy.write(rows)
        cur.execute('CREATE TEMP TABLE _kk_run_ends (symbol text, "timestamp" timestamptz) '
                    "ON COMMIT DROP")
        cur.executemany("INSERT INTO _kk_run_ends VALUES (%s, %s)", [
            (symbol, from_epoch_us(us)) for symbol, a, b in rollups.runs
            for us in sorted({a, b - 60_000_000})])
        self._maintain_rollups(cur, "_kk_run_ends", prune=False)

    def write_trades(self, table: pa.Table, sync: Sequence[SyncUpdate] = ()) -> int:
        for update in sync:
            _sync_target(update, "trades")
        table = table.select(TRADE_SCHEMA.names)
        symbols = set(pc.unique(table["symbol"]).to_pylist()) if table.num_rows else set()
        with self._transaction("writing trades") as cur:
            self._lock_symbols(cur, symbols | {s.symbol for s in sync})
            inserted = self._insert_trades(cur, table) if table.num_rows else 0
            self._apply_sync(cur, sync)
        return inserted

    def _insert_trades(self, cur: Any, table: pa.Table) -> int:
        cur.execute("SET LOCAL work_mem = '128MB'")
        _copy_in(cur, "_kk_in_trades", table)
        cur.execute('CREATE TEMP TABLE _kk_new (symbol text, "timestamp" timestamptz, '
                    f"price {_NUM}, volume {_NUM}, kraken_id boolean) ON COMMIT DROP")
        names = ", ".join(_q(n) for n in TRADE_SCHEMA.names)
        rest = ", ".join(_ts_in('"timestamp"') if n == "timestamp" else _q(n)
                         for n in TRADE_SCHEMA.names[1:])
        has_api = bool(pc.any(pc.is_valid(table["id"])).as_py())
        has_csv = bool(pc.any(pc.is_null(table["id"])).as_py())
        if has_api:
            cur.execute(f"""
                WITH ins AS (
                    INSERT INTO trades ({names})
                    SELECT id, {rest} FROM _kk_in_trades WHERE id IS NOT NULL
                    ORDER BY "timestamp", symbol, id
                    ON CONFLICT DO NOTHING
                    RETURNING symbol, "timestamp", price, volume)
                INSERT INTO _kk_new SELECT *, true FROM ins""")
        if has_csv:
            second = "date_trunc('second', i.ts)"
            cur.execute(
                """SELECT EXISTS (SELECT 1 FROM trades a JOIN (
                       SELECT symbol, min("timestamp") AS lo, max("timestamp") AS hi
                       FROM _kk_in_trades WHERE id IS NULL GROUP BY symbol) r
                     ON a.symbol = r.symbol AND a.id >= 0
                    AND a."timestamp" >= """ + _ts_in("r.lo") + """ - interval '1 second'
                    AND a."timestamp" < """ + _ts_in("r.hi") + """ + interval '1 second')""")
            overlaps_api = bool(cur.fetchone()[0])
            not_stored = f"""AND NOT EXISTS (
                SELECT 1 FROM trades a WHERE a.symbol = i.symbol AND a.id >= 0
                AND a.price = i.price AND a.volume = i.volume
                AND a."timestamp" >= {second} AND a."timestamp" < {second} + interval '1 second')"""
            cur.execute(f"""
                WITH i AS (
                    SELECT *, {_ts_in('"timestamp"')} AS ts, row_number() OVER (
                        PARTITION BY symbol, "timestamp", price, volume ORDER BY _ord) AS n
                    FROM _kk_in_trades WHERE id IS NULL),
                ins AS (
                    INSERT INTO trades ({names})
                    SELECT -1 - ('x' || left(md5(concat_ws('|', symbol, "timestamp", price,
                                 volume, n)), 15))::bit(60)::bigint,
                           symbol, ts, price, volume, side, order_type, misc, source
                    FROM i WHERE true {not_stored if overlaps_api else ""}
                    ORDER BY ts, symbol
                    ON CONFLICT DO NOTHING
                    RETURNING symbol, "timestamp", price, volume)
                INSERT INTO _kk_new SELECT *, false FROM ins""")
        cur.execute("SELECT symbol, count(*) FROM _kk_new GROUP BY symbol")
        deltas = {(symbol, "trades"): int(n) for symbol, n in cur.fetchall()}
        inserted = sum(deltas.values())
        if has_api and inserted:
            cur.execute("SELECT EXISTS (SELECT 1 FROM trades WHERE id < 0 AND symbol = ANY(%s))",
                        (sorted({s for (s, _) in deltas}),))
            csv_rows = bool(cur.fetchone()[0])
        if has_api and inserted and csv_rows:
            # CSV rows (no Kraken id) that an API trade now covers: same symbol, price, volume
            # and second.
            cur.execute("""
                WITH gone AS (
                    DELETE FROM trades t USING _kk_new n
                    WHERE n.kraken_id AND t.id < 0 AND t.symbol = n.symbol
                      AND t."timestamp" >= date_trunc('second', n."timestamp")
                      AND t."timestamp" < date_trunc('second', n."timestamp") + interval '1 second'
                      AND t.price = n.price AND t.volume = n.volume
                    RETURNING t.symbol)
                SELECT symbol, count(*) FROM gone GROUP BY symbol""")
            for symbol, n in cur.fetchall():
                deltas[(symbol, "trades")] = deltas.get((symbol, "trades"), 0) - int(n)
        self._refresh_status(cur, deltas)
        return inserted

    def write_pairs(self, table: pa.Table) -> None:
        table = table.select(PAIR_SCHEMA.names).cast(PAIR_SCHEMA)
        names = ", ".join(_q(n) for n in PAIR_SCHEMA.names)
        cols = ", ".join(_ts_in(_q(f.name)) if pa.types.is_timestamp(f.type) else _q(f.name)
                         for f in PAIR_SCHEMA)
        with self._transaction("writing pairs") as cur:
            _copy_in(cur, "_kk_in_pairs", table)
            cur.execute("DELETE FROM pairs")
            cur.execute(f"""INSERT INTO pairs ({names})
                SELECT DISTINCT ON (canonical) {cols} FROM _kk_in_pairs
                ORDER BY canonical, _ord DESC""")

    # -- reading ---------------------------------------------------------------------------

    def read_coverage(self, symbol: str) -> dict[int, list[tuple[int, int]]]:
        """See ``MarketStore.read_coverage``."""
        with self._transaction("reading coverage") as cur:
            cur.execute("""SELECT interval_minutes, covered_from, covered_until
                           FROM candle_coverage WHERE symbol = %s
                           ORDER BY interval_minutes, covered_from""", (symbol,))
            rows = cur.fetchall()
        out: dict[int, list[tuple[int, int]]] = {}
        for minutes, a, b in rows:
            out.setdefault(int(minutes), []).append((epoch_us(a), epoch_us(b)))
        return out

    def read_segments(self, symbol: str, minutes: int,
                      segments: Sequence[SourceSegment]) -> pa.Table:
        """See ``MarketStore.read_segments``: Kraken's own candles as stored; buckets derived
        from 1-minute candles from the rollup tables (which hold exactly the buckets the
        1-minute coverage spans); from other intervals aggregated here."""
        by_source: dict[int, list[tuple[int, int]]] = {}
        for seg in segments:
            by_source.setdefault(seg.source_minutes, []).append((seg.start_us, seg.end_us))
        parts: list[str] = []
        params: list[Any] = []
        for source, ranges in sorted(by_source.items()):
            window = " OR ".join(['(s."timestamp" >= %s AND s."timestamp" < %s)'] * len(ranges))
            bounds = [from_epoch_us(x) for r in ranges for x in r]
            if source == minutes:
                parts.append(f"""SELECT {_select_out(CANDLE_SCHEMA, 's')} FROM candles s
                    WHERE s.symbol = %s AND s.interval_minutes = %s AND ({window})""")
                params += [symbol, minutes, *bounds]
            elif source == 1 and minutes in ROLLUPS:
                parts.append(f"""SELECT {_select_out(CANDLE_SCHEMA, 's')}
                    FROM {ROLLUPS[minutes]} s WHERE s.symbol = %s AND ({window})""")
                params += [symbol, *bounds]
            else:
                if source == 1:  # e.g. 15d: from the coarsest rollup that divides it
                    level = max(m for m in ROLLUPS if minutes % m == 0)
                    table, cond, extra = ROLLUPS[level], "", []
                else:
                    table, cond, extra = "candles", "AND s.interval_minutes = %s", [source]
                bucket = _bucket(minutes, 's."timestamp"')
                parts.append(f"""SELECT {_select_out(CANDLE_SCHEMA, 's')} FROM (
                    SELECT {_agg_columns(minutes, bucket)} FROM {table} s
                    WHERE s.symbol = %s {cond} AND ({window})
                    GROUP BY s.symbol, {bucket}) s""")
                params += [symbol, *extra, *bounds]
        if not parts:
            return CANDLE_SCHEMA.empty_table()
        query = " UNION ALL ".join(f"({p})" for p in parts)
        with self._transaction("reading candles") as cur:
            return _copy_out(cur, query, params, CANDLE_SCHEMA)

    def last_closes(self, symbol: str, asks: Sequence[tuple[int, int, int]]
                    ) -> list[tuple[Any, str | None] | None]:
        """See ``MarketStore.last_closes``."""
        out: list[tuple[Any, str | None] | None] = []
        with self._transaction("reading candles") as cur:
            for minutes, a, b in asks:
                cur.execute("""SELECT trim_scale(close), source FROM candles
                               WHERE symbol = %s AND interval_minutes = %s
                                 AND "timestamp" >= %s AND "timestamp" < %s
                               ORDER BY "timestamp" DESC LIMIT 1""",
                            (symbol, minutes, from_epoch_us(a), from_epoch_us(b)))
                row = cur.fetchone()
                out.append((row[0], row[1]) if row else None)
        return out

    def read_trades(self, symbol: str, start: datetime | None = None,
                    end: datetime | None = None, limit: int | None = None) -> pa.Table:
        cols = _select_out(TRADE_SCHEMA, "s").replace(
            's."id"', 'CASE WHEN s."id" < 0 THEN NULL ELSE s."id" END', 1)
        query = (f"SELECT {cols} FROM trades s WHERE s.symbol = %(symbol)s"
                 + (' AND s."timestamp" >= %(start)s' if start else "")
                 + (' AND s."timestamp" < %(end)s' if end else "")
                 + ' ORDER BY s."timestamp", s.id'
                 + (" LIMIT %(limit)s" if limit is not None else ""))
        params = {"symbol": symbol, "start": start, "end": end,
                  "limit": max(0, limit) if limit is not None else None}
        with self._transaction("reading trades") as cur:
            return _copy_out(cur, query, params, TRADE_SCHEMA)

    def read_pairs(self) -> pa.Table:
        with self._transaction("reading pairs") as cur:
            return _copy_out(cur, f"SELECT {_select_out(PAIR_SCHEMA)} FROM pairs "
                             "ORDER BY canonical", (), PAIR_SCHEMA)

    def coverage(self, symbol: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE symbol = %(symbol)s" if symbol else ""
        params = {"symbol": symbol}
        with self._transaction("reading coverage") as cur:
            # missing/gaps: the holes between recorded coverage ranges, in buckets and runs
            cur.execute(f"""
                WITH c AS (SELECT symbol, interval_minutes, min("timestamp") AS first,
                                  max("timestamp") AS last, count(*) AS n
                           FROM candles {where} GROUP BY symbol, interval_minutes),
                h AS (SELECT symbol, interval_minutes,
                             sum(round(extract(epoch FROM next_from - covered_until)
                                       / 60 / interval_minutes))::bigint AS missing,
                             count(*) AS gaps
                      FROM (SELECT *, lead(covered_from) OVER (PARTITION BY symbol,
                                interval_minutes ORDER BY covered_from) AS next_from
                            FROM candle_coverage {where}) x
                      WHERE next_from IS NOT NULL GROUP BY symbol, interval_minutes)
                SELECT c.symbol, c.interval_minutes, first, last, n, coalesce(missing, 0),
                       coalesce(gaps, 0)
                FROM c LEFT JOIN h USING (symbol, interval_minutes)""", params)
            rows: list[dict[str, Any]] = [
                {"symbol": s, "interval_minutes": m, "first": first, "last": last,
                 "rows": int(n), "missing": int(missing), "gaps": int(gaps)}
                for s, m, first, last, n, missing, gaps in cur.fetchall()]
            cur.execute(f"""SELECT symbol, min("timestamp"), max("timestamp"), count(*)
                            FROM trades {where} GROUP BY symbol""", params)
            trades = [{"symbol": s, "interval_minutes": None, "first": first, "last": last,
                       "rows": int(n), "missing": None, "gaps": None}
                      for s, first, last, n in cur.fetchall()]
        for row in rows + trades:
            for key in ("first", "last"):
                row[key] = row[key].astimezone(UTC)
        rows.sort(key=lambda r: (r["symbol"], r["interval_minutes"]))
        return rows + sorted(trades, key=lambda r: r["symbol"])

    def read_sync_status(self, symbol: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE symbol = %s" if symbol else ""
        with self._transaction("reading sync status") as cur:
            cur.execute(f"""SELECT symbol, data_type, oldest_timestamp, newest_timestamp,
                            last_sync_at, last_kraken_since, total_records
                            FROM data_sync_status {where}
                            ORDER BY symbol, data_type""",
                        (symbol,) if symbol else ())
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for row in rows:
            for key in ("oldest_timestamp", "newest_timestamp", "last_sync_at"):
                if row[key] is not None:
                    row[key] = row[key].astimezone(UTC)
        return rows

    # -- maintenance -----------------------------------------------------------------------

    def delete_before(self, kind: Literal["trades", "candles"], cutoff: datetime) -> int:
        if kind not in ("trades", "candles"):
            raise UsageError(f"kind must be trades or candles, not {kind!r}")
        with self._transaction(f"deleting old {kind}") as cur:
            cur.execute(f"SELECT DISTINCT symbol FROM {kind}")
            self._lock_symbols(cur, {r[0] for r in cur.fetchall()})
            cur.execute(f'DELETE FROM {kind} WHERE "timestamp" < %s', (cutoff,))
            deleted = int(cur.rowcount)
            if kind == "candles":
                self._trim_coverage(cur, cutoff)
            if kind == "candles" and deleted:
                for name in ROLLUPS.values():
                    cur.execute(f'DELETE FROM {name} WHERE "timestamp" < %s',
                                (cutoff,))
                # the buckets holding the cutoff: rebuilt from the 1m rows that remain
                cur.execute("""CREATE TEMP TABLE _kk_touched_1 ON COMMIT DROP AS
                    SELECT DISTINCT symbol, %s::timestamptz AS "timestamp" FROM candles
                    WHERE interval_minutes = 1""", (cutoff,))
                self._maintain_rollups(cur, "_kk_touched_1", prune=False)
            if deleted:
                cur.execute("SELECT symbol, data_type FROM data_sync_status")
                for symbol, data_type in cur.fetchall():
                    with contextlib.suppress(UsageError):
                        if _sync_target(SyncUpdate(symbol, data_type))[0] == kind:
                            self._recount_status(cur, symbol, data_type)
        return deleted

    @staticmethod
    def _trim_coverage(cur: Any, cutoff: datetime) -> None:
        """After deleting candles opening before ``cutoff``: coverage starts no earlier than each
        interval's first bucket at or after it."""
        cur.execute("DELETE FROM candle_coverage WHERE covered_until <= %s", (cutoff,))
        cur.execute("SELECT DISTINCT interval_minutes FROM candle_coverage "
                    "WHERE covered_from < %s", (cutoff,))
        for (minutes,) in cur.fetchall():
            first = from_epoch_us(bucket_ceil_us(epoch_us(cutoff), int(minutes)))
            cur.execute("UPDATE candle_coverage SET covered_from = %s "
                        "WHERE interval_minutes = %s AND covered_from < %s",
                        (first, minutes, first))
        cur.execute("DELETE FROM candle_coverage WHERE covered_from >= covered_until")

    @staticmethod
    def _recount_status(cur: Any, symbol: str, data_type: str) -> None:
        where, extra = _status_source(data_type)
        cur.execute(
            f"""UPDATE data_sync_status d SET (oldest_timestamp, newest_timestamp,
                total_records) = (SELECT min("timestamp"), max("timestamp"), count(*)
                FROM {where}) WHERE d.symbol = %s AND d.data_type = %s""",
            (symbol, *extra, symbol, data_type))

    def refresh_continuous_aggregates(self) -> None:
        """Rebuild every rollup table from the 1-minute candles (one transaction)."""
        with self._transaction("rebuilding rollups") as cur:
            cur.execute("SET LOCAL work_mem = '256MB'")
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('krakked:rollups', 0))")
            cur.execute("LOCK TABLE candles IN SHARE MODE")  # no 1m writes while rebuilding
            cur.execute("TRUNCATE " + ", ".join(ROLLUPS.values()))
            for minutes, finer in _CASCADE:
                cur.execute(_rollup_rebuild_sql(minutes, finer))

    def close(self) -> None:
        """Close the connection pool."""
        pool = getattr(self, "_pool", None)
        if pool is not None and not pool.closed:
            pool.close()


def _configure(conn: Any) -> None:
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle = 'ISO'")
    conn.commit()

