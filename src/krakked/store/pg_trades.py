"""The PostgreSQL store's trades, each step run on the caller's cursor inside its transaction:
insert once on the key, the synthetic ids of Kraken's CSV rows and their reconciliation with API
rows (the rules of ``store.trade_sql``, in PostgreSQL's dialect), the recorded trade coverage,
and 1-minute candles aggregated from trades by the server.
"""

# ruff: noqa: S608 - SQL is assembled from module constants and our own identifiers

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from krakked.market.candles import epoch_us, from_epoch_us, merge_ranges
from krakked.store.arrow import CANDLE_SCHEMA, TRADE_SCHEMA, csv_ids_in_arrow
from krakked.store.pg_copy import NUM, copy_in, copy_into, copy_out, ident, select_out, ts_in
from krakked.store.pg_rollups import bucket_sql

__all__ = [
    "candles_from_trades",
    "insert_trades",
    "merge_trade_coverage",
    "trade_coverage_ranges",
    "trade_id_holes",
    "trades_summary",
]

_FAR_US = 253_402_300_799_000_000  # 9999-12-31 23:59:59 UTC
_SECOND = "date_trunc('second', \"timestamp\")"


def insert_trades(cur: Any, table: pa.Table) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Insert the rows of ``table`` (``TRADE_SCHEMA``) the store lacks; CSV rows (no id) get
    ``-(epoch µs × 1000 + n)``, ``n`` their position (in the batch's order) among the CSV rows
    of their pair and instant; then the CSV rows that API rows in the batch's range stand for
    are removed. Returns (change in rows per symbol, per symbol the batch's [first, last] µs)."""
    cur.execute("SET LOCAL work_mem = '128MB'")
    with_ids = csv_ids_in_arrow(table)
    if with_ids is not None:  # a batch of Kraken's CSV files: one pair, in time order
        symbol = with_ids["symbol"][0].as_py()
        us = pc.min_max(pc.cast(with_ids["timestamp"], pa.int64())).as_py()
        a, b = int(us["min"]), int(us["max"])
        cur.execute('SELECT 1 FROM trades WHERE symbol = %s AND "timestamp" >= %s AND '
                    '"timestamp" < %s LIMIT 1',
                    (symbol, from_epoch_us(a - a % 1_000_000),
                     from_epoch_us(b - b % 1_000_000 + 1_000_000)))
        if cur.fetchone() is None:  # nothing stored in its seconds: COPY it straight in
            copy_into(cur, "trades", with_ids)
            return {symbol: with_ids.num_rows}, {symbol: (a, b)}
    copy_in(cur, "_kk_in_trades", table)
    names = ", ".join(ident(n) for n in TRADE_SCHEMA.names)
    rest = ", ".join(ts_in('"timestamp"') if n == "timestamp" else ident(n)
                     for n in TRADE_SCHEMA.names[1:])
    cur.execute(f"""
        WITH ins AS (
            INSERT INTO trades ({names})
            SELECT CASE WHEN id IS NOT NULL THEN id ELSE -("timestamp" * 1000 + row_number()
                   OVER (PARTITION BY symbol, "timestamp", id IS NULL ORDER BY _ord)) END,
                   {rest}
            FROM _kk_in_trades ORDER BY symbol, "timestamp", _ord
            ON CONFLICT DO NOTHING RETURNING symbol)
        SELECT symbol, count(*) FROM ins GROUP BY symbol""")
    deltas = {symbol: int(n) for symbol, n in cur.fetchall()}
    cur.execute('SELECT symbol, min("timestamp"), max("timestamp") FROM _kk_in_trades '
                "GROUP BY symbol")
    spans = {symbol: (int(a), int(b)) for symbol, a, b in cur.fetchall()}
    for symbol, (a, b) in spans.items():
        lo = from_epoch_us(a - a % 1_000_000)
        hi = from_epoch_us(b - b % 1_000_000 + 1_000_000)
        near = 'symbol = %(s)s AND "timestamp" >= %(lo)s AND "timestamp" < %(hi)s'
        args = {"s": symbol, "lo": lo, "hi": hi}
        cur.execute(f"SELECT count(DISTINCT id < 0) FROM trades WHERE {near}", args)
        if cur.fetchone()[0] < 2:
            continue
        group = f"{_SECOND}, price, volume"
        cur.execute(f"""
            WITH c AS (SELECT id, {_SECOND} AS s, price, volume, row_number() OVER (
                           PARTITION BY {group} ORDER BY id DESC) AS r
                       FROM trades WHERE id < 0 AND {near}),
                 a AS (SELECT {_SECOND} AS s, price, volume, count(*) AS k
                       FROM trades WHERE id >= 0 AND {near} GROUP BY 1, 2, 3),
                 gone AS (DELETE FROM trades t USING c JOIN a
                          ON c.s = a.s AND c.price = a.price AND c.volume = a.volume
                          WHERE c.r <= a.k AND t.id = c.id AND t.id < 0 AND t.symbol = %(s)s
                            AND t."timestamp" >= %(lo)s AND t."timestamp" < %(hi)s
                          RETURNING 1)
            SELECT count(*) FROM gone""", args)
        deltas[symbol] = deltas.get(symbol, 0) - int(cur.fetchone()[0])
    return deltas, spans


def merge_trade_coverage(cur: Any, coverage: Mapping[str, Sequence[tuple[int, int]]]) -> None:
    """Merge ``coverage`` (symbol -> epoch-µs ranges) into ``trade_coverage``."""
    for symbol, ranges in sorted(coverage.items()):
        if not ranges:
            continue
        lo = from_epoch_us(min(a for a, _ in ranges))
        hi = from_epoch_us(max(b for _, b in ranges))
        cur.execute("DELETE FROM trade_coverage WHERE symbol = %s AND covered_until >= %s "
                    "AND covered_from <= %s RETURNING covered_from, covered_until",
                    (symbol, lo, hi))
        existing = [(epoch_us(a), epoch_us(b)) for a, b in cur.fetchall()]
        cur.executemany("INSERT INTO trade_coverage VALUES (%s, %s, %s)",
                        [(symbol, from_epoch_us(a), from_epoch_us(b))
                         for a, b in merge_ranges([*ranges, *existing])])


def trade_coverage_ranges(cur: Any, symbol: str, lo: int | None = None,
                          hi: int | None = None) -> list[tuple[int, int]]:
    """``symbol``'s recorded trade coverage (epoch µs, in order), only the ranges touching
    ``[lo, hi]`` when given."""
    where, args = "symbol = %s", [symbol]
    if lo is not None:
        where += " AND covered_until >= %s"
        args.append(from_epoch_us(lo))
    if hi is not None and hi < _FAR_US:
        where += " AND covered_from <= %s"
        args.append(from_epoch_us(hi))
    cur.execute("SELECT covered_from, covered_until FROM trade_coverage WHERE "
                f"{where} ORDER BY covered_from", args)
    return [(epoch_us(a), epoch_us(b)) for a, b in cur.fetchall()]


def candles_from_trades(cur: Any, symbol: str, start_us: int, end_us: int,
                        minutes: int = 1) -> pa.Table:
    """``symbol``'s ``minutes`` candles (``CANDLE_SCHEMA``) aggregated by the server from the
    trades with ``start <= time < end``: open and close by sequence (time, then |id|), quote
    volume Σ price × volume (exact), vwap rounded to 18 places, source ``trades``."""
    minute = bucket_sql(minutes, '"timestamp"')
    query = f"""
        SELECT symbol, {minute} AS "timestamp", {int(minutes)} AS interval_minutes,
               (array_agg(price ORDER BY "timestamp", abs(id)))[1] AS open,
               max(price) AS high, min(price) AS low,
               (array_agg(price ORDER BY "timestamp" DESC, abs(id) DESC))[1] AS close,
               sum(volume) AS volume, round(sum(price * volume), 18)::{NUM} AS quote_volume,
               count(*) AS trade_count,
               CASE WHEN sum(volume) > 0
                    THEN round(sum(price * volume) / sum(volume), 18) END::{NUM} AS vwap,
               'trades' AS source
        FROM trades WHERE symbol = %(s)s AND "timestamp" >= %(a)s AND "timestamp" < %(b)s
        GROUP BY symbol, {minute} ORDER BY {minute}"""
    return copy_out(cur, f"SELECT {select_out(CANDLE_SCHEMA)} FROM ({query}) c",
                    {"s": symbol, "a": from_epoch_us(start_us), "b": from_epoch_us(end_us)},
                    CANDLE_SCHEMA)


def _window(start: datetime | None, end: datetime | None) -> tuple[str, dict[str, Any]]:
    where, args = "", {}
    if start is not None:
        where += ' AND "timestamp" >= %(start)s'
        args["start"] = start
    if end is not None:
        where += ' AND "timestamp" < %(end)s'
        args["end"] = end
    return where, args


def trade_id_holes(cur: Any, symbol: str, start: datetime | None,
                   end: datetime | None) -> list[dict[str, Any]]:
    """Holes in Kraken's trade-id sequence among ``symbol``'s API rows (see the base class)."""
    where, args = _window(start, end)
    cur.execute(f"""
        SELECT symbol, id, "timestamp", nxt, nxt_time, nxt - id - 1 FROM (
            SELECT symbol, id, "timestamp", lead(id) OVER w AS nxt,
                   lead("timestamp") OVER w AS nxt_time
            FROM trades WHERE symbol = %(s)s AND id >= 0{where}
            WINDOW w AS (ORDER BY id)) x
        WHERE nxt > id + 1 ORDER BY id""", {"s": symbol, **args})
    keys = ("symbol", "after_id", "after_time", "before_id", "before_time", "missing")
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


def trades_summary(cur: Any, symbol: str) -> dict[str, Any] | None:
    """``first``, ``last``, ``rows``, ``last_id``, ``last_api_time`` of ``symbol``'s trades."""
    cur.execute("""SELECT min("timestamp"), max("timestamp"), count(*),
                          max(id) FILTER (WHERE id >= 0),
                          max("timestamp") FILTER (WHERE id >= 0)
                   FROM trades WHERE symbol = %s""", (symbol,))
    first, last, rows, last_id, last_api = cur.fetchone()
    if not rows:
        return None
    return {"first": first, "last": last, "rows": int(rows), "last_id": last_id,
            "last_api_time": last_api}
