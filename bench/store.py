"""Benchmark: the market store's write and read paths on one machine.

- DuckDB upsert of N one-minute candles (default 1,000,000) through ``MarketStore.upsert_candles``
  against a bare ``INSERT … ON CONFLICT DO UPDATE … WHERE excluded.volume >= volume`` of the same
  Arrow table into an equivalent fresh table, in alternating runs; the ratio of their rows/s
  (target >= 0.8);
- ``get_candles(..., as_="arrow")`` of one year of 1m candles (525,600 rows): median over >= 7
  runs (target < 150 ms); the derived 1h candles of the same year (target < 200 ms); and, for
  information, the same year as ``Candle`` objects (one run) and the derived 1h from REST-like
  candles that carry only a vwap (their quote volume is then computed exactly as vwap × volume);
- CPU time per read (all threads) beside the wall clock, since a shared machine's other load
  inflates the latter;
- with ``--pg-url URL`` (or env ``KRAKKED_BENCH_PG_URL``; use a scratch database) the upsert and
  the two reads on PostgreSQL beside DuckDB.

The candles look like Kraken's built from trades: prices with one decimal, volumes with eight,
quote volume and vwap present. Prints one JSON object.

Run: ``uv run python bench/store.py [--rows 1000000] [--runs 7] [--pg-url URL]``
"""

# ruff: noqa: S608 - the SQL is built from constants and integers
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from krakked.store import open_store
from krakked.store.base import CANDLE_SCHEMA, MarketStore
from krakked.store.duckdb import MIGRATIONS, to_arrow

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
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm
    return round(statistics.median(timed(fn) * 1000 for _ in range(runs)), 1)


def median_cpu_ms(fn: Callable[[], Any], runs: int) -> float:
    """Median CPU time of the whole process (all threads) per call: the work, whatever the
    machine's other load does to the wall clock."""
    samples = []
    for _ in range(runs):
        started = time.process_time()
        fn()
        samples.append((time.process_time() - started) * 1000)
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
    objects = round(timed(lambda: store.get_candles(SYMBOL, "1m", START, year_end)) * 1000, 1)
    return {"year_rows": rows, "get_candles_1m_year_arrow_ms": arrow_1m,
            "get_candles_1h_derived_year_arrow_ms": derived,
            "get_candles_1m_year_arrow_cpu_ms": cpu_1m,
            "get_candles_1h_derived_year_arrow_cpu_ms": cpu_1h,
            "get_candles_1m_year_objects_ms": objects}


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
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "duckdb": duckdb.__version__, "pyarrow": pa.__version__},
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
            vwap_rows = min(args.rows, YEAR_ROWS)
            store.upsert_candles(candles(vwap_rows, "ETHUSD", vwap_only=True))
            out["duckdb"]["get_candles_1h_derived_year_vwap_only_ms"] = median_ms(
                lambda: store.get_candles("ETHUSD", "1h", START, year_end, as_="arrow"), 3)
        if args.pg_url:
            with open_store(args.pg_url) as pg:
                seconds = timed(lambda: pg.upsert_candles(table))
                out["postgresql"] = {"upsert_rows_per_s": round(args.rows / seconds),
                                     **reads(pg, runs, year_end)}
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    d = out["duckdb"]
    out["targets"] = {
        "upsert_ratio_ge_0.8": d["upsert_ratio"] >= 0.8,
        "read_1m_year_lt_150ms": d["get_candles_1m_year_arrow_ms"] < 150,
        "derived_1h_year_lt_200ms": d["get_candles_1h_derived_year_arrow_ms"] < 200,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
