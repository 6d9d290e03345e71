"""Benchmark: the market store's write and read paths on one machine.

- DuckDB upsert of N one-minute candles (default 1,000,000) through ``MarketStore.upsert_candles``
  against a bare ``INSERT … ON CONFLICT DO UPDATE … WHERE excluded.volume >= volume`` of the same
  Arrow table into an equivalent fresh table, in alternating runs; the ratio of their rows/s
  (target >= 0.8);
- ``get_candles(..., as_="arrow")`` of one year of 1m candles (525,600 rows): median over >= 7
  runs (target < 150 ms); the derived 1h candles of the same year (target < 200 ms); and the
  derived 1h from REST-like candles that carry only a vwap (their quote volume is then computed
  exactly as vwap × volume);
- the same year as ``Candle`` objects (``as_="candles"``, the original API's main read; median
  of 3, target <= 1.5 s) beside its floor measured in the same run: a bare loop building the
  same objects from the same Arrow columns (``Candle(…, Decimal(text), …)`` per row, the
  columns' values made Python lists outside the timer), and the ratio of the two;
- CPU time per read (all threads) beside the wall clock, since a shared machine's other load
  inflates the latter;
- with ``--pg-url URL`` (or env ``KRAKKED_BENCH_PG_URL``; a scratch database: its ``public``
  schema is dropped and recreated between runs) the same on PostgreSQL, and:
  the upsert through the store against the same ``COPY`` into a temporary table + one
  ``INSERT … ON CONFLICT`` run bare (no rollups, no sync status) in alternating runs, the ratio
  (target >= 0.7), where the store's time goes (COPY, the upsert statement and its
  bookkeeping, rollup maintenance, status), and the store's upsert with rollup maintenance
  switched off, to price it; the 1m year read against the server's own cost of producing the
  same rows (``COPY … TO '/dev/null'``, csv and binary; needs a superuser) and against the
  same ``COPY … TO STDOUT`` drained and discarded by the client (target <= 300 ms).

The candles look like Kraken's built from trades: prices with one decimal, volumes with eight,
quote volume and vwap present. Prints one JSON object.

Run: ``uv run python bench/store.py [--rows 1000000] [--runs 7] [--pg-url URL]``
"""

# ruff: noqa: S608 - the SQL is built from constants and integers
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from krakked.market.candles import CANDLE_COLUMNS, Candle
from krakked.store import open_store
from krakked.store import postgres as pgstore
from krakked.store.arrow import CANDLE_SCHEMA
from krakked.store.base import MarketStore
from krakked.store.duckdb import MIGRATIONS
from krakked.store.pg_copy import copy_in, ident, select_out, ts_in
from krakked.store.pg_rollups import CANDLE_NAMES, CANDLE_UPDATE
from krakked.store.sql import to_arrow

START = datetime(2023, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2024, 1, 1, tzinfo=UTC)
YEAR_ROWS = 525_600
SYMBOL = "XBTUSD"


def candles(rows: int, symbol: str = SYMBOL, *, vwap_only: bool = False) -> pa.Table:
    """``rows`` 1m candles from 2023-01-01 (deterministic pseudo-random values)."""
    dec = "DECIMAL(38,18)"
    quote = "NULL" if vwap_only else "vol * vwap"
    sql = f"""
        WITH r AS (
            SELECT i, (300000 + hash(i) % 200000)::BIGINT * 0.1 AS base,
                   (1 + hash(i * 7 + 1) % 100000000000)::BIGINT * 0.00000001 AS vol,
                   (hash(i * 13 + 5) % 100)::BIGINT * 0.1 AS up,
                   (hash(i * 17 + 3) % 100)::BIGINT * 0.1 AS down
            FROM range({rows}) t(i))
        SELECT '{symbol}' AS symbol,
               make_timestamptz({int(START.timestamp()) * 1_000_000} + i * 60000000) AS timestamp,
               1::INTEGER AS interval_minutes, base::{dec} AS open, (base + up)::{dec} AS high,
               (base - down)::{dec} AS low, (base + up - down)::{dec} AS close,
               vol::{dec} AS volume, ({quote})::{dec} AS quote_volume,
               (1 + hash(i) % 60)::BIGINT AS trade_count, vwap::{dec} AS vwap,
               'trades' AS source
        FROM (SELECT *, (base * 2 + up - down) * 0.5 AS vwap FROM r)
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return to_arrow(con.sql(sql)).cast(CANDLE_SCHEMA)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds for ``fn()``; its result is freed after the clock stops (freeing half a million
    objects is not part of building them)."""
    started = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - started
    del result
    return elapsed


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm
    return round(statistics.median(timed(fn) * 1000 for _ in range(runs)), 1)


def median_cpu_ms(fn: Callable[[], Any], runs: int) -> float:
    """Median CPU time of the whole process (all threads) per call: the work, whatever the
    machine's other load does to the wall clock."""
    samples = []
    for _ in range(runs):
        started = time.process_time()
        result = fn()
        samples.append((time.process_time() - started) * 1000)
        del result
    return round(statistics.median(samples), 1)


def bare_upsert(path: Path, table: pa.Table) -> float:
    """Seconds for a bare ``INSERT … ON CONFLICT`` of ``table`` into a fresh equivalent table."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(next(ddl for ddl in MIGRATIONS[0][2] if "TABLE IF NOT EXISTS candles" in ddl))
    cols = ", ".join(CANDLE_SCHEMA.names)
    updates = ", ".join(f"{c} = excluded.{c}" for c in CANDLE_SCHEMA.names[3:])
    con.register("batch", table)
    sql = (f"INSERT INTO candles ({cols}) SELECT {cols} FROM batch ON CONFLICT "
           f"(timestamp, symbol, interval_minutes) DO UPDATE SET {updates} "
           "WHERE excluded.volume >= candles.volume")
    seconds = timed(lambda: con.execute(sql).fetchall())
    con.close()
    return seconds


def median_wall_cpu_ms(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of the whole process) over ``runs`` calls, no warm-up."""
    walls, cpus = [], []
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
        del result  # freed outside the clock
    return round(statistics.median(walls), 1), round(statistics.median(cpus), 1)


def _tidy(text: str | None) -> str | None:
    if text is None:
        return None
    if "E" in text:
        return format(Decimal(text).normalize(), "f")
    return (text.rstrip("0").rstrip(".") or "0") if "." in text else text


def candle_floor_ms(table: pa.Table, runs: int = 3) -> float:
    """The floor of ``as_="candles"``: a bare loop building the same ``Candle`` objects from the
    same Arrow columns — one plain ``Candle(…)`` with seven ``Decimal(text)`` per row. The
    columns' values are made Python lists outside the timer (decimals as their tidy text), so
    the figure is only what building 525,600 objects with seven Decimals costs in CPython."""
    cols: dict[str, list[Any]] = {}
    for name in CANDLE_COLUMNS:
        if pa.types.is_decimal(table.schema.field(name).type):
            cols[name] = [_tidy(v) for v in pc.cast(table[name], pa.string()).to_pylist()]
        else:
            cols[name] = table[name].to_pylist()
    rows = list(zip(*(cols[k] for k in CANDLE_COLUMNS), strict=True))

    def bare_loop() -> list[Candle]:
        dec = Decimal
        return [Candle(sym, ts, m, dec(o), dec(h), dec(lo), dec(c), dec(v),
                       None if q is None else dec(q), n, None if w is None else dec(w), src)
                for sym, ts, m, o, h, lo, c, v, q, n, w, src in rows]

    return median_wall_cpu_ms(bare_loop, runs)[0]


def reads(store: MarketStore, runs: int, year_end: datetime) -> dict[str, Any]:
    """The read figures of one store."""
    arrow_1m = median_ms(lambda: store.get_candles(SYMBOL, "1m", START, year_end, as_="arrow"),
                         runs)
    derived = median_ms(lambda: store.get_candles(SYMBOL, "1h", START, year_end, as_="arrow"),
                        runs)
    cpu_1m = median_cpu_ms(
        lambda: store.get_candles(SYMBOL, "1m", START, year_end, as_="arrow"), runs)
    cpu_1h = median_cpu_ms(
        lambda: store.get_candles(SYMBOL, "1h", START, year_end, as_="arrow"), runs)
    rows = store.get_candles(SYMBOL, "1m", START, year_end, as_="arrow").num_rows
    objects, objects_cpu = median_wall_cpu_ms(
        lambda: store.get_candles(SYMBOL, "1m", START, year_end), 3)
    return {"year_rows": rows, "get_candles_1m_year_arrow_ms": arrow_1m,
            "get_candles_1h_derived_year_arrow_ms": derived,
            "get_candles_1m_year_arrow_cpu_ms": cpu_1m,
            "get_candles_1h_derived_year_arrow_cpu_ms": cpu_1h,
            "get_candles_1m_year_objects_ms": objects,
            "get_candles_1m_year_objects_cpu_ms": objects_cpu}


# -- PostgreSQL ------------------------------------------------------------------------------

def _reset(url: str) -> None:
    """An empty scratch database: the store's tables go with the ``public`` schema."""
    import psycopg

    with psycopg.connect(pgstore._conninfo(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def pg_bare_upsert(url: str, table: pa.Table) -> float:
    """Seconds for the store's ``COPY`` into a temporary table + one ``INSERT … ON CONFLICT``
    (the store's volume rule, no RETURNING, no rollups, no sync status) into a fresh
    ``candles`` table made by the store's own migration, committed."""
    import psycopg

    _reset(url)
    open_store(url).close()  # the schema, made by the store
    cols = ", ".join(ts_in('"timestamp"') if n == "timestamp" else ident(n)
                     for n in CANDLE_SCHEMA.names)
    with psycopg.connect(pgstore._conninfo(url)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute("SET LOCAL work_mem = '128MB'")
        copy_in(cur, "_kk_in_candles", table)
        cur.execute(f"""
            INSERT INTO candles AS c ({CANDLE_NAMES})
            SELECT {cols} FROM (
                SELECT DISTINCT ON ("timestamp", symbol, interval_minutes) *
                FROM _kk_in_candles
                ORDER BY "timestamp", symbol, interval_minutes, volume DESC, _ord DESC) i
            ON CONFLICT ("timestamp", symbol, interval_minutes) DO UPDATE
            SET {CANDLE_UPDATE} WHERE excluded.volume >= c.volume""")
        conn.commit()
        return time.perf_counter() - started


@contextlib.contextmanager
def _timing(parts: dict[str, float], *, rollups: bool = True) -> Iterator[None]:
    """Seconds spent in the store's COPY, rollup maintenance (the server's, and writing the
    buckets a large batch aggregated itself — that aggregation runs in a worker thread during
    the upsert statement and is not counted apart) and status refresh (the rest of an upsert is
    its own statements); with ``rollups=False`` rollup maintenance is skipped (the worker's
    aggregation still runs)."""
    # The names the store's write path calls, in ``krakked.store.postgres``'s namespace.
    saved = {"copy_in": pgstore.copy_in, "maintain_rollups": pgstore.maintain_rollups,
             "apply_batch_rollups": pgstore.apply_batch_rollups,
             "_refresh_status": pgstore.PostgresStore.__dict__["_refresh_status"]}

    running: set[str] = set()

    def timed_part(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if name in running:  # a part inside the same part is counted once
                return fn(*args, **kwargs)
            running.add(name)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs) if name != "rollups" or rollups else None
            finally:
                running.discard(name)
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    pgstore.copy_in = timed_part("copy", saved["copy_in"])  # type: ignore[assignment]
    pgstore.maintain_rollups = timed_part(  # type: ignore[assignment]
        "rollups", saved["maintain_rollups"])
    pgstore.apply_batch_rollups = timed_part(  # type: ignore[assignment]
        "rollups", saved["apply_batch_rollups"])
    pgstore.PostgresStore._refresh_status = staticmethod(  # type: ignore[method-assign]
        timed_part("status", saved["_refresh_status"].__func__))
    try:
        yield
    finally:
        pgstore.copy_in = saved["copy_in"]  # type: ignore[assignment]
        pgstore.maintain_rollups = saved["maintain_rollups"]  # type: ignore[assignment]
        pgstore.apply_batch_rollups = saved["apply_batch_rollups"]  # type: ignore[assignment]
        pgstore.PostgresStore._refresh_status = saved["_refresh_status"]  # type: ignore[method-assign]


def pg_store_upsert(url: str, table: pa.Table, *, rollups: bool = True
                    ) -> tuple[float, dict[str, float]]:
    """Seconds for ``upsert_candles`` into a fresh store, and where they went."""
    _reset(url)
    parts: dict[str, float] = {}
    with open_store(url) as store, _timing(parts, rollups=rollups):
        seconds = timed(lambda: store.upsert_candles(table))
    parts["upsert_statements_and_rest"] = seconds - sum(parts.values())
    return seconds, parts


def pg_read_floors(url: str, year_end: datetime, runs: int) -> dict[str, Any]:
    """What producing and moving the 1m year's rows costs before any parsing: the server alone
    (``COPY … TO '/dev/null'``, csv as the store reads and binary, the cheapest it has; needs a
    superuser) and the same csv drained and discarded by a psycopg client."""
    import psycopg

    query = (f"SELECT {select_out(CANDLE_SCHEMA, 's')} FROM candles s "
             "WHERE s.symbol = %(symbol)s AND s.interval_minutes = 1 "
             'AND s."timestamp" >= %(start)s AND s."timestamp" < %(end)s ORDER BY "timestamp"')
    params = {"symbol": SYMBOL, "start": START, "end": year_end}
    out: dict[str, Any] = {}
    with psycopg.connect(pgstore._conninfo(url), autocommit=True) as conn:
        pgstore._configure(conn)
        cur = conn.cursor()
        literal = psycopg.ClientCursor(conn)  # COPY takes no server-side parameters
        for fmt in ("csv", "binary"):
            try:
                out[f"server_copy_{fmt}_to_devnull_ms"] = median_ms(
                    lambda f=fmt: literal.execute(
                        f"COPY ({query}) TO '/dev/null' (FORMAT {f})", params), runs)
            except psycopg.Error as exc:
                out[f"server_copy_{fmt}_to_devnull_ms"] = f"not measured: {exc}".strip()

        def drain() -> None:
            with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", params) as copy:
                for _ in copy:
                    pass

        out["copy_csv_to_client_drained_ms"] = median_ms(drain, runs)
    out["adbc_read_1m_year_ms"] = adbc_read_ms(url, query, params, runs)
    return out


def adbc_read_ms(url: str, query: str, params: dict[str, Any], runs: int) -> float | str:
    """The same read through ADBC's PostgreSQL driver, if it is installed (it is not a
    dependency: ``uv run --with adbc-driver-postgresql python bench/store.py …``): fetched as
    Arrow, its numeric columns (which the driver returns as text) cast to decimal128(38, 18)."""
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        return "not measured: adbc-driver-postgresql is not installed"
    positional = (query.replace("%(symbol)s", "$1").replace("%(start)s", "$2")
                  .replace("%(end)s", "$3"))

    def read() -> pa.Table:
        cur.execute(positional, (params["symbol"], params["start"], params["end"]))
        got = cur.fetch_arrow_table()
        return pa.table([col.cast(f.type) if not isinstance(col.type, pa.ExtensionType)
                         else col.combine_chunks().storage.cast(f.type)
                         for col, f in zip(got.columns, CANDLE_SCHEMA, strict=True)],
                        schema=CANDLE_SCHEMA)

    with adbc.connect(url) as conn, conn.cursor() as cur:
        return median_ms(read, runs)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "cpu": model,
            "memory": memory, "duckdb": duckdb.__version__, "pyarrow": pa.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per read (>= 7)")
    parser.add_argument("--upserts", type=int, default=3, help="alternating upsert runs")
    parser.add_argument("--pg-url", default=os.environ.get("KRAKKED_BENCH_PG_URL"))
    args = parser.parse_args()
    runs = max(7, args.runs)

    table = candles(args.rows)
    year_end = min(YEAR_END, START + timedelta(minutes=args.rows))
    out: dict[str, Any] = {
        "machine": machine(),
        "rows": args.rows,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="krakked-bench-") as tmp:
        root = Path(tmp)
        store_s, bare_s = [], []
        for i in range(max(1, args.upserts)):  # alternate, each into a fresh file
            bare_s.append(bare_upsert(root / f"bare{i}.duckdb", table))
            with open_store(f"duckdb:///{root / f'store{i}.duckdb'}") as store:
                store_s.append(timed(lambda st=store: st.upsert_candles(table)))
        store_rps = args.rows / statistics.median(store_s)
        bare_rps = args.rows / statistics.median(bare_s)
        out["duckdb"] = {
            "upsert_rows_per_s": round(store_rps),
            "bare_insert_on_conflict_rows_per_s": round(bare_rps),
            "upsert_ratio": round(store_rps / bare_rps, 3),
            "upsert_runs_s": {"store": [round(x, 3) for x in store_s],
                              "bare": [round(x, 3) for x in bare_s]},
        }
        with open_store(f"duckdb:///{root / 'store0.duckdb'}") as store:
            out["duckdb"].update(reads(store, runs, year_end))
            year = store.get_candles(SYMBOL, "1m", START, year_end, as_="arrow")
            floor = candle_floor_ms(year)
            out["candles_floor_bare_loop_ms"] = floor
            out["duckdb"]["objects_to_floor_ratio"] = round(
                out["duckdb"]["get_candles_1m_year_objects_ms"] / floor, 3)
            vwap_rows = min(args.rows, YEAR_ROWS)
            store.upsert_candles(candles(vwap_rows, "ETHUSD", vwap_only=True))
            out["duckdb"]["get_candles_1h_derived_year_vwap_only_ms"] = median_ms(
                lambda: store.get_candles("ETHUSD", "1h", START, year_end, as_="arrow"), 3)
        if args.pg_url:
            out["postgresql"] = postgres_figures(args.pg_url, table, args.upserts, runs,
                                                 year_end, floor)
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    d = out["duckdb"]
    out["targets"] = {
        "upsert_ratio_ge_0.8": d["upsert_ratio"] >= 0.8,
        "read_1m_year_lt_150ms": d["get_candles_1m_year_arrow_ms"] < 150,
        "derived_1h_year_lt_200ms": d["get_candles_1h_derived_year_arrow_ms"] < 200,
        "objects_1m_year_le_1500ms": d["get_candles_1m_year_objects_ms"] <= 1500,
    }
    if "postgresql" in out:
        p = out["postgresql"]
        out["targets"] |= {
            "pg_upsert_ratio_ge_0.7": p["upsert_ratio"] >= 0.7,
            "pg_read_1m_year_le_300ms": p["get_candles_1m_year_arrow_ms"] <= 300,
        }
    print(json.dumps(out, indent=2))


def postgres_figures(url: str, table: pa.Table, upserts: int, runs: int, year_end: datetime,
                     floor: float) -> dict[str, Any]:
    """Upsert (store vs bare, alternating, each into a fresh schema) and read figures."""
    import psycopg

    with psycopg.connect(pgstore._conninfo(url)) as conn:
        server = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                  for name in ("server_version", "fsync", "synchronous_commit",
                               "shared_buffers")}
    rows = table.num_rows
    store_s: list[float] = []
    bare_s: list[float] = []
    parts: list[dict[str, float]] = []
    for _ in range(max(1, upserts)):
        bare_s.append(pg_bare_upsert(url, table))
        seconds, where = pg_store_upsert(url, table)
        store_s.append(seconds)
        parts.append(where)
    no_rollups_s, _ = pg_store_upsert(url, table, rollups=False)
    store = statistics.median(store_s)
    bare = statistics.median(bare_s)
    median_parts = {k: round(statistics.median(p[k] for p in parts), 3) for k in parts[0]}
    out: dict[str, Any] = {
        "server": server,
        "upsert_rows_per_s": round(rows / store),
        "bare_copy_insert_on_conflict_rows_per_s": round(rows / bare),
        "upsert_ratio": round(bare / store, 3),
        "upsert_runs_s": {"store": [round(x, 3) for x in store_s],
                          "bare": [round(x, 3) for x in bare_s]},
        "upsert_store_seconds_by_part": median_parts,
        "upsert_without_rollup_maintenance_s": round(no_rollups_s, 3),
        "upsert_ratio_without_rollup_maintenance": round(bare / no_rollups_s, 3),
    }
    pg_store_upsert(url, table)  # the data the reads use
    with open_store(url) as pg:
        out.update(reads(pg, runs, year_end))
    out["objects_to_floor_ratio"] = round(out["get_candles_1m_year_objects_ms"] / floor, 3)
    out.update(pg_read_floors(url, year_end, runs))
    return out


if __name__ == "__main__":
    main()
