"""Benchmark: full history — Kraken's trades CSV into the store, 1m candles from trades, the
Trades backfill's pacing, and the whole `krakked history` at Kraken's real scale.

Measured in one run (each step in its own process, so its peak RSS is its own):

- **import into DuckDB**: ``krakked import-csv`` of a generated N-row time-and-sales file
  (default 20,000,000; realistic timestamps with many trades per second, prices with one
  decimal, volumes with eight) — rows/s and peak RSS — against DuckDB's own ``read_csv`` of the
  same file into a bare table of the same column types (timestamp, DECIMAL(38,18) ×2); the ratio
  (target >= 0.7, RSS <= 1 GB);
- **1m candles from those trades**: ``build_candles_from_trades`` (the store's SQL) against a bare
  DuckDB ``GROUP BY`` minute of the bare table (target ratio >= 0.8); beside it, from the CSV end
  to end: krakked (import with candles), pandas ``read_csv`` + ``resample`` and polars
  ``group_by_dynamic`` (krakked must beat pandas and be within 1.25× polars);
- **import into PostgreSQL** (``--pg-url``, else a throwaway cluster from the installed binaries)
  against a bare ``COPY`` of the same file into a table of the same column types (target >= 0.7);
- **backfill of 200 Trades pages** from the simulator with a public limiter of ``--rate``
  calls/s: wall time against the pacing minimum (within 10 %);
- **real scale** (``--scale-rows``, default 85,000,000; skip with ``--scale-rows 0``): a file of
  that size inside a zip, then ``krakked history XBTUSD --csv that.zip`` with the simulator as
  Kraken (its API tail excluded from the timing): seconds and peak RSS (goal <= 60 s, <= 1 GB).

Prints one JSON object. Needs pandas and polars for the comparison (``make bench-history``
installs them from the lock).

Run: ``uv run python bench/history.py [--rows N] [--scale-rows N] [--pg-url URL] [--dir D]``
"""

# ruff: noqa: S603, S608 - subprocesses of this very script; SQL from constants and paths
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

DEC = "DECIMAL(38,18)"
SYMBOL = "XBTUSD"


# -- data -----------------------------------------------------------------------------------------

def generate(path: Path, rows: int, seed: float = 0.42, end: int | None = None) -> None:
    """A Kraken-like time-and-sales file: ``timestamp,price,volume`` without a header, whole
    seconds, ~45 % of trades sharing their second with the previous one, a random-walk price
    with one decimal, volumes with eight; the last trade 10 minutes before ``end`` (now)."""
    import duckdb

    end = int(time.time()) - 600 if end is None else end
    con = duckdb.connect()
    con.execute(f"SELECT setseed({seed})")
    con.execute(f"""COPY (
        SELECT {end} - coalesce(sum(g) OVER (ORDER BY i ROWS BETWEEN 1 FOLLOWING
                                             AND UNBOUNDED FOLLOWING), 0)::BIGINT AS ts,
               round(30000 + sum(step) OVER (ORDER BY i), 1)::DECIMAL(18,1) AS price,
               round(-ln(random()) * 0.05 + 0.00000001, 8)::DECIMAL(18,8) AS volume
        FROM (SELECT i, CASE WHEN random() < 0.45 THEN 0 ELSE -ln(random()) * 2.0 END AS g,
                     (random() - 0.5) * 4 AS step FROM range({rows}) t(i))
        ORDER BY i) TO '{path}' (HEADER false)""")
    con.close()


def zipped(csv_path: Path, zip_path: Path) -> None:
    """``csv_path`` as ``TimeAndSales_Combined/<name>`` inside a deflated zip (as Kraken's)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.write(csv_path, f"TimeAndSales_Combined/{csv_path.name}")


# -- steps, each run in a process of its own ------------------------------------------

def step_bare_duckdb(csv_path: str, work: str) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(Path(work) / "bare.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TABLE t (timestamp TIMESTAMPTZ, price {DEC}, volume {DEC})")
    t0 = time.perf_counter()
    con.execute(f"INSERT INTO t SELECT to_timestamp(ts), price, volume FROM read_csv("
                f"'{csv_path}', header = false, columns = {{'ts': 'BIGINT', 'price': '{DEC}', "
                f"'volume': '{DEC}'}})")
    con.execute("CHECKPOINT")
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = con.execute("""CREATE TABLE c AS SELECT time_bucket(INTERVAL 1 minute, timestamp) AS m,
        arg_min(price, timestamp) AS open, max(price) AS high, min(price) AS low,
        arg_max(price, timestamp) AS close, sum(volume) AS volume, count(*) AS trades
        FROM t GROUP BY m""").fetchall()
    group = time.perf_counter() - t0
    t0 = time.perf_counter()
    con.execute(f"""CREATE TABLE q AS SELECT time_bucket(INTERVAL 1 minute, timestamp) AS m,
        arg_min(price, timestamp) AS open, max(price) AS high, min(price) AS low,
        arg_max(price, timestamp) AS close, sum(volume) AS volume, count(*) AS trades,
        sum(price::DECIMAL(38,12) * volume::DECIMAL(38,12))::{DEC} AS quote_volume
        FROM t GROUP BY m""")
    group_quote = time.perf_counter() - t0
    rows = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    candles = con.execute("SELECT count(*) FROM c").fetchall()[0][0]
    del n
    return {"seconds": load, "rows": rows, "group_by_seconds": group, "candles": candles,
            "group_by_with_quote_volume_seconds": group_quote}


def _market(url: str) -> Any:
    from krakked.market_data import Market

    return Market(url, offline=True)


def step_import(csv_path: str, url: str, candles: str) -> dict[str, Any]:
    with _market(url) as market:
        t0 = time.perf_counter()
        result = market.import_csv([csv_path], build_candles=candles == "1")
        seconds = time.perf_counter() - t0
    data = result.to_dict() if hasattr(result, "to_dict") else {}
    return {"seconds": seconds, "result": data}


def step_build(url: str) -> dict[str, Any]:
    with _market(url) as market:
        t0 = time.perf_counter()
        n = market.store.build_candles_from_trades(SYMBOL)
        return {"seconds": time.perf_counter() - t0, "candles": n}


def step_pandas(csv_path: str) -> dict[str, Any]:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_csv(csv_path, header=None, names=["ts", "price", "volume"])
    df.index = pd.to_datetime(df["ts"], unit="s", utc=True)
    bars = df["price"].resample("1min").ohlc()
    bars["volume"] = df["volume"].resample("1min").sum()
    bars = bars.dropna()
    return {"seconds": time.perf_counter() - t0, "candles": len(bars)}


def step_polars(csv_path: str) -> dict[str, Any]:
    import polars as pl

    t0 = time.perf_counter()
    df = pl.read_csv(csv_path, has_header=False, new_columns=["ts", "price", "volume"])
    df = df.with_columns(pl.from_epoch("ts", time_unit="s").alias("t")).sort("t")
    bars = df.group_by_dynamic("t", every="1m").agg(
        pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
        pl.col("volume").sum().alias("volume"), pl.len().alias("trades"))
    return {"seconds": time.perf_counter() - t0, "candles": bars.height}


def step_bare_copy(csv_path: str, url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bare_trades")
        conn.execute("CREATE TABLE bare_trades (ts bigint, price numeric(38,18), "
                     "volume numeric(38,18))")
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bare_trades FROM STDIN (FORMAT csv)") as copy, \
                open(csv_path, "rb") as f:
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        seconds = time.perf_counter() - t0
        conn.execute("DROP TABLE bare_trades")
    return {"seconds": seconds}


def step_backfill(pages: int, rate: float) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from krakked.config import load_settings
    from krakked.kraken.limits import PublicLimiter
    from krakked.kraken.spot import SpotClient
    from krakked.market_data import Market
    from krakked.sim import SimConfig, Simulator

    sim = Simulator(SimConfig(seed=7, public_rate=0, rate_limits=False))
    burst = 1
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({"KRAKKED_HOME": home})
        client = SpotClient(settings=settings, transport=sim.transport(),
                            public_limiter=PublicLimiter(rate, burst))
        with Market(f"duckdb:///{home}/b.duckdb", settings=settings, client=client) as market:
            since = datetime.now(UTC) - timedelta(days=300)
            t0 = time.perf_counter()
            result = market.backfill_trades(SYMBOL, since=since, max_pages=pages,
                                            auto_stop=True)
            seconds = time.perf_counter() - t0
    done = result.pages
    floor = max(0, done - burst) / rate
    return {"seconds": seconds, "pages": done, "trades": result.stored,
            "pacing_minimum_seconds": floor, "ratio_to_minimum": seconds / floor if floor else None}


def step_history(zip_path: str, url: str) -> dict[str, Any]:
    """``krakked history XBTUSD --csv zip`` as a user runs it, the simulator as Kraken."""
    from krakked.sim import SimConfig, Simulator
    from krakked.sim.server import running

    with tempfile.TemporaryDirectory() as home, running(
            Simulator(SimConfig(seed=7, public_rate=0, rate_limits=False))) as info:
        env = {**os.environ, "KRAKKED_HOME": home, "KRAKKED_SPOT_URL": info["spot_url"]}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "krakked.cli", "history", SYMBOL, "--csv",
                               zip_path, "--store", url, "--json"], env=env,
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"krakked history failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    timings = report.get("timings", {})
    return {"seconds": seconds, "timings": timings, "peak_rss_mb": usage.ru_maxrss / 1024,
            "report": {k: report.get(k) for k in ("first_trade", "last_trade", "rows")}}


def step_generate(path: str, rows: int, seed: float = 0.42) -> dict[str, Any]:
    t0 = time.perf_counter()
    generate(Path(path), rows, seed)
    return {"seconds": time.perf_counter() - t0}


def step_zip(csv_path: str, zip_path: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    zipped(Path(csv_path), Path(zip_path))
    return {"seconds": time.perf_counter() - t0}


STEPS = {"generate": step_generate, "zip": step_zip,
         "bare_duckdb": step_bare_duckdb, "import": step_import, "build": step_build,
         "pandas": step_pandas, "polars": step_polars, "bare_copy": step_bare_copy,
         "backfill": step_backfill, "history": step_history}


def run_step(name: str, *args: Any) -> dict[str, Any]:
    """Run a step in a fresh process; its result plus its own peak RSS."""
    proc = subprocess.run([sys.executable, __file__, "--step", name, *map(str, args)],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"step {name} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child_main(name: str, args: list[str]) -> None:
    fn = STEPS[name]
    conv = [int(a) if a.isdigit() else (float(a) if a.replace(".", "", 1).isdigit() else a)
            for a in args]
    out = fn(*conv)
    if "peak_rss_mb" not in out:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, default=str))


@contextlib.contextmanager
def postgres(url: str | None) -> Any:
    if url:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.postgres_server import fresh_database, throwaway_cluster

    with throwaway_cluster() as base:
        yield fresh_database(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--scale-rows", type=int, default=85_000_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2.0, help="public calls/s (backfill)")
    parser.add_argument("--pg-url", default=os.environ.get("KRAKKED_BENCH_PG_URL"))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.step:
        _child_main(args.step, rest)
        return
    work = Path(args.dir or tempfile.mkdtemp(prefix="krakked-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "rows": args.rows}
    csv_path = work / f"{SYMBOL}.csv"
    # Everything heavy runs in a child process, this one stays small: Linux hands a child the
    # parent's peak RSS as its own starting peak.
    out["generate_seconds"] = round(run_step("generate", csv_path, args.rows)["seconds"], 1)
    out["csv_bytes"] = csv_path.stat().st_size

    bare = run_step("bare_duckdb", csv_path, work)
    url = f"duckdb:///{work / 'store.duckdb'}"
    imp = run_step("import", csv_path, url, 0)
    build = run_step("build", url)
    (work / "store.duckdb").unlink()
    e2e = run_step("import", csv_path, f"duckdb:///{work / 'e2e.duckdb'}", 1)
    (work / "e2e.duckdb").unlink()
    (work / "bare.duckdb").unlink()
    pandas = run_step("pandas", csv_path)
    polars = run_step("polars", csv_path)
    out["duckdb_import"] = {
        "krakked_seconds": round(imp["seconds"], 2),
        "krakked_rows_per_second": round(args.rows / imp["seconds"]),
        "krakked_peak_rss_mb": round(imp["peak_rss_mb"], 1),
        "bare_read_csv_seconds": round(bare["seconds"], 2),
        "bare_rows_per_second": round(args.rows / bare["seconds"]),
        "bare_peak_rss_mb": round(bare["peak_rss_mb"], 1),
        "ratio": round(bare["seconds"] / imp["seconds"], 3), "target_ratio": 0.7}
    out["candles_1m"] = {
        "krakked_build_seconds": round(build["seconds"], 2), "candles": build["candles"],
        "bare_group_by_seconds": round(bare["group_by_seconds"], 2),
        "bare_candles": bare["candles"],
        "ratio": round(bare["group_by_seconds"] / build["seconds"], 3), "target_ratio": 0.8,
        "bare_group_by_with_exact_quote_volume_seconds": round(
            bare["group_by_with_quote_volume_seconds"], 2),
        "ratio_to_that": round(bare["group_by_with_quote_volume_seconds"] / build["seconds"],
                               3),
        "end_to_end_from_csv": {
            "krakked_import_with_candles_seconds": round(e2e["seconds"], 2),
            "krakked_peak_rss_mb": round(e2e["peak_rss_mb"], 1),
            "pandas_read_csv_resample_seconds": round(pandas["seconds"], 2),
            "pandas_peak_rss_mb": round(pandas["peak_rss_mb"], 1),
            "polars_group_by_dynamic_seconds": round(polars["seconds"], 2),
            "polars_peak_rss_mb": round(polars["peak_rss_mb"], 1),
            "krakked_vs_polars": round(e2e["seconds"] / polars["seconds"], 3),
            "targets": "beat pandas; <= 1.25 x polars"}}
    if not args.no_pg:
        with postgres(args.pg_url) as pg:
            copy = run_step("bare_copy", csv_path, pg)
            pg_imp = run_step("import", csv_path, pg, 0)
        out["postgresql_import"] = {
            "krakked_seconds": round(pg_imp["seconds"], 2),
            "krakked_peak_rss_mb": round(pg_imp["peak_rss_mb"], 1),
            "bare_copy_seconds": round(copy["seconds"], 2),
            "ratio": round(copy["seconds"] / pg_imp["seconds"], 3), "target_ratio": 0.7}
    back = run_step("backfill", args.pages, args.rate)
    out["trades_backfill"] = {k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in back.items()}
    out["trades_backfill"]["target"] = "within 10 % of the pacing minimum"
    csv_path.unlink()
    if args.scale_rows:
        big = work / f"{SYMBOL}.csv"
        t0 = time.perf_counter()
        run_step("generate", big, args.scale_rows, 0.17)
        size = big.stat().st_size
        archive = work / "Kraken_Trading_History.zip"
        run_step("zip", big, archive)
        big.unlink()
        out["scale"] = {"rows": args.scale_rows, "csv_bytes": size,
                        "zip_bytes": archive.stat().st_size,
                        "prepare_seconds": round(time.perf_counter() - t0, 1)}
        hist = run_step("history", archive, f"duckdb:///{work / 'history.duckdb'}")
        out["scale"].update({"history_seconds": round(hist["seconds"], 2),
                             "peak_rss_mb": round(hist["peak_rss_mb"], 1),
                             "timings": hist["timings"], "report": hist["report"],
                             "goal": "<= 60 s and <= 1 GB (import + 1m candles)"})
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
