"""The PostgreSQL store's rollups: the tables ``candles_5m`` … ``candles_1w`` form a cascade
(5m from 1m candles, 15m from 5m, …, 1w from 1d; all buckets nest exactly, weeks start
Monday), each holding only the buckets the 1-minute coverage spans whole. Here: the
aggregation rule in PostgreSQL's SQL (the rule of ``store.sql.aggregate_query``), the
statements that keep the cascade current after a write (bucket by bucket, in one pass, or a
whole span), the full rebuild, and a large batch's own rollups worked out in memory.
"""

# ruff: noqa: S608 - SQL is assembled from module constants; values always travel as parameters

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from krakked.market.candles import bucket_ceil_us, bucket_floor_us, from_epoch_us
from krakked.store.arrow import CANDLE_SCHEMA
from krakked.store.base import ROLLUPS, batch_coverage
from krakked.store.pg_copy import EPOCH, encode_csv, ident

__all__ = [
    "CANDLE_NAMES",
    "CANDLE_UPDATE",
    "CASCADE",
    "BatchRollups",
    "agg_columns",
    "apply_batch_rollups",
    "batch_rollups",
    "bucket_sql",
    "maintain_rollups",
    "rollup_rebuild_sql",
]

_MONDAY = "timestamptz '1970-01-05 00:00:00+00'"  # weekly buckets start on Monday (like Kraken)
_BULK_BUCKETS = 2_000  # touched buckets above which a rollup level is recomputed in one pass

CASCADE: list[tuple[int, int]] = [  # (rollup minutes, the finer level it is built from)
    (5, 1), (15, 5), (30, 15), (60, 30), (240, 60), (720, 240), (1440, 720), (10080, 1440),
]
assert [m for m, _ in CASCADE] == list(ROLLUPS)


def bucket_sql(minutes: int, expr: str) -> str:
    """SQL: the open time of the ``minutes`` bucket holding the ``timestamptz`` ``expr``
    (aligned to the epoch; weeks start Monday)."""
    origin = _MONDAY if minutes == 10080 else EPOCH
    return f"date_bin(interval '{minutes} minutes', {expr}, {origin})"


def agg_columns(minutes: int, bucket: str) -> str:
    """Aggregates of source rows ``s`` into one candle per (symbol, ``bucket``) — the rule of
    ``store.sql.aggregate_query``: rows without volume (Kraken's filler for intervals
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


CANDLE_NAMES = ", ".join(ident(n) for n in CANDLE_SCHEMA.names)
"""The candle columns, quoted, in ``CANDLE_SCHEMA`` order (``candles`` and every rollup)."""
_CANDLE_VALUES = [ident(n) for n in CANDLE_SCHEMA.names
                  if n not in ("symbol", "timestamp", "interval_minutes")]
CANDLE_UPDATE = ", ".join(f"{n} = excluded.{n}" for n in _CANDLE_VALUES)
"""``SET`` list of an upsert replacing a candle's values (all but its key)."""
_ROLLUP_UPDATE = (f"{CANDLE_UPDATE} WHERE ({', '.join(f'd.{n}' for n in _CANDLE_VALUES)}) "
                  f"IS DISTINCT FROM ({', '.join(f'excluded.{n}' for n in _CANDLE_VALUES)})")
"""A rollup row is rewritten (and reported upwards) only when its values change."""


def _rollup_touched_sql(minutes: int, finer: int, touched: str, out: str) -> str:
    """Recompute the ``minutes`` buckets holding the (symbol, timestamp) rows of ``touched``;
    record the buckets written in ``out``. Each bucket reads its own index range, whatever the
    planner's statistics say (a late minute costs one bucket per level)."""
    src, cond = _rollup_source(finer)
    return f"""
        WITH w AS (
            INSERT INTO {ROLLUPS[minutes]} AS d ({CANDLE_NAMES})
            SELECT a.* FROM (
                SELECT DISTINCT symbol, {bucket_sql(minutes, '"timestamp"')} AS b
                FROM {touched}) t
            CROSS JOIN LATERAL (
                SELECT {agg_columns(minutes, "t.b")} FROM {src} s
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
            SELECT DISTINCT symbol, {bucket_sql(minutes, '"timestamp"')} AS b FROM {touched}),
        w AS (
            INSERT INTO {ROLLUPS[minutes]} AS d ({CANDLE_NAMES})
            SELECT a.* FROM (
                SELECT {agg_columns(minutes, "t.b")}
                FROM {src} s
                JOIN t ON t.symbol = s.symbol AND t.b = {bucket_sql(minutes, 's."timestamp"')}
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
    bucket = bucket_sql(minutes, 's."timestamp"')
    return f"""
        WITH w AS (
            INSERT INTO {ROLLUPS[minutes]} AS d ({CANDLE_NAMES})
            SELECT a.* FROM (
                SELECT {agg_columns(minutes, bucket)}
                FROM {src} s
                WHERE s.symbol = ANY(%s) AND s."timestamp" >= %s AND s."timestamp" < %s {cond}
                GROUP BY s.symbol, {bucket}) a
            WHERE {_covered("a.symbol", 'a."timestamp"', minutes)}
            ORDER BY a.symbol, a."timestamp"
            ON CONFLICT (symbol, "timestamp") DO UPDATE SET {_ROLLUP_UPDATE}
            RETURNING d.symbol, d."timestamp")
        INSERT INTO {out} SELECT symbol, "timestamp" FROM w"""


def rollup_rebuild_sql(minutes: int, finer: int) -> str:
    src, cond = _rollup_source(finer)
    bucket = bucket_sql(minutes, 's."timestamp"')
    return f"""
        INSERT INTO {ROLLUPS[minutes]} ({CANDLE_NAMES})
        SELECT a.* FROM (
            SELECT {agg_columns(minutes, bucket)}
            FROM {src} s WHERE true {cond}
            GROUP BY s.symbol, {bucket}) a
        WHERE {_covered("a.symbol", 'a."timestamp"', minutes)}"""


@dataclass(frozen=True)
class BatchRollups:
    """What a candle batch's 1m rows say of the rollups by themselves."""

    minutes: int  # 1m rows, one per key
    levels: list[tuple[int, bytes]]  # per rollup level: the buckets the batch fills whole,
    # as COPY csv (encoded here, off the connection's critical path)
    runs: list[tuple[str, int, int]]  # (symbol, from, until): its runs of minutes (epoch µs)


def batch_rollups(table: pa.Table) -> BatchRollups:
    """The batch's 1m candles, one per key as the upsert keeps them (the highest volume, the
    later row on a tie); per rollup level in cascade order, the buckets they fill whole,
    aggregated exactly (a level's from the whole buckets of the level below); and the ends of
    their runs."""
    import duckdb

    from krakked.store.sql import aggregate_query, dedupe_candles_query, row_index, to_arrow

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("__raw", row_index(table.filter(pc.equal(table["interval_minutes"], 1))))
        ones = to_arrow(con.sql(dedupe_candles_query("__raw", "__i"))).cast(CANDLE_SCHEMA)
        con.register("__level_1", ones)
        levels: list[tuple[int, bytes]] = []
        for minutes, finer in CASCADE:
            source = (f"(SELECT * FROM __level_{finer} QUALIFY count(*) OVER (PARTITION BY "
                      f"symbol, {_duck_bucket(minutes)}) = {minutes // finer})")
            level = to_arrow(con.sql(aggregate_query(source, finer, minutes))).cast(
                CANDLE_SCHEMA)
            if not level.num_rows:
                break
            con.register(f"__level_{minutes}", level)
            levels.append((minutes, encode_csv(level, None)))
    finally:
        con.close()
    runs = [(symbol, a, b) for (symbol, _), ranges in batch_coverage(ones).items()
            for a, b in ranges]
    return BatchRollups(ones.num_rows, levels, runs)


def _duck_bucket(minutes: int) -> str:
    from krakked.store.sql import bucket_us

    return bucket_us("epoch_us(timestamp)", minutes)


def maintain_rollups(cur: Any, touched: str, *, prune: bool = True) -> None:
    """Recompute the rollup buckets holding the 1m (symbol, timestamp) rows in ``touched``,
    level by level, each level only where the level below changed: bucket by bucket when
    few or scattered, in one pass when many (every bucket of the span when nearly all).
    ``prune=False`` recomputes every level (after rows were deleted under it)."""
    previous, changed = touched, -1
    for minutes, finer in CASCADE:
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
                                  {bucket_sql(minutes, '"timestamp"')} AS b
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


def apply_batch_rollups(cur: Any, rollups: BatchRollups) -> None:
    """Rollups of a write whose every 1m row was stored: at each level, the buckets the
    batch fills whole (those inside its runs of minutes) are replaced by the batch's own
    aggregates (``rollups``: by the rule of ``store.sql.aggregate_query``, the one the SQL
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
        with cur.copy(f"COPY {ROLLUPS[minutes]} ({CANDLE_NAMES}) FROM STDIN "
                      "(FORMAT csv)") as copy:
            copy.write(rows)
    cur.execute('CREATE TEMP TABLE _kk_run_ends (symbol text, "timestamp" timestamptz) '
                "ON COMMIT DROP")
    cur.executemany("INSERT INTO _kk_run_ends VALUES (%s, %s)", [
        (symbol, from_epoch_us(us)) for symbol, a, b in rollups.runs
        for us in sorted({a, b - 60_000_000})])
    maintain_rollups(cur, "_kk_run_ends", prune=False)
