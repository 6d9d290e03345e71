"""The reference market store: one DuckDB file (``duckdb:///path.duckdb``), plus the DuckDB SQL
(rollups, exact vwap, coverage) that the Parquet/CSV store runs over its files too.

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
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import StoreError, StoreLockedError, StoreNotFoundError, UsageError
from krakked.market.candles import (
    TIMEFRAMES,
    SourceSegment,
    bucket_ceil_us,
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
)

__all__ = [
    "MIGRATIONS",
    "DuckDBStore",
    "aggregate_query",
    "coverage_query",
    "coverage_runs_query",
    "dedupe_candles_query",
    "exact_div",
    "fill_vwap",
    "last_closes_with",
    "lit",
    "merge_coverage",
    "read_segments_with",
    "same_trade",
    "sort_by_time",
    "to_arrow",
    "trim_coverage",
    "ts_lit",
    "with_trade_ids",
]

DEC = "DECIMAL(38,18)"
US_PER_MINUTE = 60_000_000
MONDAY_US = 4 * 86_400 * 1_000_000  # 1970-01-05 00:00 UTC, the first Monday after the epoch
CANDLE_COLS = tuple(CANDLE_SCHEMA.names)
TRADE_COLS = tuple(TRADE_SCHEMA.names)
PAIR_COLS = tuple(PAIR_SCHEMA.names)


# --- SQL helpers shared with the file store ---------------------------------------------------

def lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def ts_lit(value: datetime) -> str:
    """A ``TIMESTAMPTZ`` literal for an aware (or UTC-naive) datetime."""
    v = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f"TIMESTAMPTZ '{v.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def to_arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """The relation's rows as an Arrow table (``to_arrow_table`` where DuckDB has it)."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return fetch()


def bucket_us(us: str, minutes: int) -> str:
    """SQL: the bucket start (epoch µs) of ``us`` for ``minutes`` buckets aligned to UTC
    boundaries (weeks start Monday 00:00 UTC; everything else is aligned to the epoch)."""
    width = minutes * US_PER_MINUTE
    origin = MONDAY_US if minutes == 10080 else 0
    return f"({us} - ((({us} - {origin}) % {width}) + {width}) % {width})"


def _unscaled(x: str) -> str:
    """SQL: the unscaled HUGEINT of a non-negative ``DECIMAL(38,18)`` (x × 10^18)."""
    return (f"(trunc({x})::HUGEINT * 1000000000000000000::HUGEINT"
            f" + (({x} - trunc({x})) * 1000000000000000000)::HUGEINT)")


_DIV_STEPS = 3  # three steps of 6 digits: exact while the denominator is below 1.7e14
_DIV_DIGITS = 18 // _DIV_STEPS


def exact_div(relation: str, numerator: str, denominator: str, out: str) -> str:
    """SQL selecting every column of ``relation`` plus ``out`` = numerator / denominator
    (both non-negative ``DECIMAL(38,18)`` columns) rounded half-even to 18 places.

    DuckDB divides decimals in DOUBLE; this is a long division on the unscaled HUGEINTs, in
    three steps of six digits — exact for any denominator below 1.7 × 10^14 (a volume no
    Kraken candle reaches), DOUBLE beyond. ``NULL`` when either side is NULL or the
    denominator is 0. (``read_candles`` does the same division in Python: ``fill_vwap``.)
    """
    step = f"{10 ** _DIV_DIGITS}::HUGEINT"
    sql = (f"SELECT *, {_unscaled(numerator)} AS __Q, {_unscaled(denominator)} AS __V "
           f"FROM {relation}")
    sql = ("SELECT * EXCLUDE (__Q), CASE WHEN __V > 0 THEN __Q // __V END AS __ip, "
           "CASE WHEN __V > 0 THEN __Q % __V END AS __r, 0::HUGEINT AS __acc "
           f"FROM ({sql})")
    for _ in range(_DIV_STEPS):
        sql = (f"SELECT * REPLACE ((__r * {step}) % __V AS __r, "
               f"__acc * {step} + (__r * {step}) // __V AS __acc) FROM ({sql})")
    up = "(2 * __r > __V OR (2 * __r = __V AND __acc::BIGINT % 2 = 1))"
    value = (f"__ip::{DEC} + (__acc + CASE WHEN {up} THEN 1 ELSE 0 END)::DECIMAL(38,0)"
             f" * 0.000000000000000001::DECIMAL(18,18)")
    fallback = f"({numerator}::DOUBLE / {denominator}::DOUBLE)::{DEC}"
    limit = 17 * 10 ** (37 - _DIV_DIGITS)
    return (f"SELECT * EXCLUDE (__V, __ip, __r, __acc), CASE WHEN __V IS NULL OR __V = 0 "
            f"THEN NULL WHEN __V < {limit}::HUGEINT THEN {value} ELSE {fallback} END AS {out} "
            f"FROM ({sql})")


_WORD = (1 << 64) - 1


def _unscaled_ints(array: pa.Array) -> list[int]:
    """The unscaled integers of a non-negative decimal128 array (garbage where null)."""
    n = len(array)
    words = pa.Array.from_buffers(pa.uint64(), 2 * n, [None, array.buffers()[1]],
                                  offset=2 * array.offset).to_pylist()
    return [(hi << 64) | lo for lo, hi in zip(words[0::2], words[1::2], strict=True)]


def fill_vwap(table: pa.Table, flag: str = "__derived") -> pa.Table:
    """``table`` without the boolean column ``flag``, where flagged rows get
    vwap = quote_volume / volume rounded half-even to 18 places (exact integer arithmetic;
    NULL when either is NULL or volume is 0)."""
    mask = table[flag].combine_chunks()
    table = table.drop_columns([flag])
    picked = pc.indices_nonzero(mask)
    n = len(picked)
    if not n:
        return table
    quote = table["quote_volume"].take(picked).combine_chunks()
    volume = table["volume"].take(picked).combine_chunks()
    usable = pc.and_(pc.and_(quote.is_valid(), volume.is_valid()),
                     pc.greater(pc.fill_null(volume, 0), 0)).to_pylist()
    scale = 10 ** 18
    words: list[int] = [0] * (2 * n)
    for i, (q, v, ok) in enumerate(zip(_unscaled_ints(quote), _unscaled_ints(volume), usable,
                                       strict=True)):
        if ok:
            res, rem = divmod(q * scale, v)
            if 2 * rem > v or (2 * rem == v and res & 1):
                res += 1
            words[2 * i], words[2 * i + 1] = res & _WORD, res >> 64
    data = pa.array(words, pa.uint64()).buffers()[1]
    bitmap = pa.array(usable, pa.bool_()).buffers()[1]
    values = pa.Array.from_buffers(quote.type, n, [bitmap, data])
    vwap = pc.replace_with_mask(table["vwap"].combine_chunks(), mask, values)
    return table.set_column(table.schema.get_field_index("vwap"), "vwap", vwap)


def aggregate_query(
    source: str,
    source_minutes: int,
    minutes: int,
    *,
    symbol: str | None = None,
    where: str = "TRUE",
    vwap: Literal["sql", "flag"] = "sql",
    fallback: bool = True,
    one_source: str | None = None,
) -> str:
    """SQL for the ``minutes`` candles (``CANDLE_SCHEMA`` columns, unordered) aggregated exactly
    from the rows of ``source`` (a relation of ``source_minutes`` candles) that match ``where``
    — one per (symbol, bucket) that has rows. Which buckets are complete is the caller's
    business (``plan_sources``: only buckets a recorded coverage spans).

    Kraken answers an interval without trades with a zero-volume candle repeating the previous
    close, so rows without volume count for the close only: open = the first traded row's open,
    high = max and low = min over traded rows, close = the last row's close; a bucket without
    any volume is a zero-volume candle at that carried close. Volume, quote volume (vwap ×
    volume where a row has no quote volume; zero for a row without volume; NULL if a traded row
    has neither) and trade count are summed; vwap = quote volume / volume; source = the rows'
    common source, else ``trades``.

    ``symbol``: the relation holds only that symbol (cheaper plan). ``fallback=False`` promises
    that no matching row lacks its quote volume, ``one_source`` that every matching row has that
    ``source``. ``vwap="sql"`` divides in SQL (``exact_div``); ``vwap="flag"`` leaves vwaps NULL
    and adds a boolean ``__derived`` column for ``fill_vwap`` to finish in Python.
    """
    if minutes <= source_minutes or minutes % source_minutes:
        raise UsageError(
            f"cannot derive {minutes}m candles from {source_minutes}m candles")
    # Quote volume of a source row: its own, else vwap × volume computed exactly by parts
    # (DuckDB cannot multiply two DECIMAL(38,18) without overflowing 38 digits, and rescaling
    # a 38-digit decimal per row is slow): with t = integer part and f = fraction,
    # vwap × volume = tv·volume + fv·tq (scale 18) + fv₉·fq (scale 27) + (fv - fv₉)·fq (scale 36),
    # fv₉ being fv rounded to 9 places; the last two are summed per bucket, then rounded once.
    rows = f"SELECT * FROM {source} WHERE {where}"
    if fallback:
        bare = "quote_volume IS NULL AND volume <> 0"
        rows = (
            "SELECT *, (vwap - __tv)::DECIMAL(18,18) AS __fv, "
            "(volume - __tq)::DECIMAL(18,18) AS __fq FROM ("
            f"SELECT *, CASE WHEN {bare} THEN trunc(vwap) END AS __tv, "
            f"CASE WHEN {bare} THEN trunc(volume) END AS __tq FROM ({rows}))")
        qhi = ("CASE WHEN volume = 0 THEN 0 WHEN quote_volume IS NOT NULL THEN quote_volume "
               "ELSE __tv * volume + __fv * __tq END")
        qparts = (f"{qhi} AS __qhi, "
                  f"CASE WHEN {bare} THEN __fv::DECIMAL(18,9) * __fq END AS __qmid, "
                  f"CASE WHEN {bare} THEN (__fv - __fv::DECIMAL(18,9)) * __fq END AS __qlo")
        mid18 = f"coalesce(sum(__qmid), 0)::{DEC}"
        rest = (f"((coalesce(sum(__qmid), 0) - {mid18})::DECIMAL(38,36) "
                f"+ coalesce(sum(__qlo), 0))::{DEC}")
        quote = f"CASE WHEN count(__qhi) = count(*) THEN sum(__qhi) + {mid18} + {rest} END"
    else:
        qparts = "quote_volume"
        quote = "sum(quote_volume)"
    if one_source is not None:
        source_agg, source_col = lit(one_source), ""
    else:
        source_agg = ("CASE WHEN count(source) = 0 THEN NULL WHEN count(source) = count(*) "
                      "AND min(source) = max(source) THEN min(source) ELSE 'trades' END")
        source_col = "source, "
    group = "__b" if symbol else "symbol, __b"
    sym_out = lit(symbol) if symbol else "symbol"
    carried = "arg_max(close, __us)"
    traded = "FILTER (WHERE volume > 0)"
    agg = (
        f"SELECT {group}, "
        f"coalesce(arg_min(open, __us) {traded}, {carried}) AS open, "
        f"coalesce(max(high) {traded}, {carried}) AS high, "
        f"coalesce(min(low) {traded}, {carried}) AS low, "
        f"{carried} AS close, sum(volume) AS volume, "
        f"{quote} AS quote_volume, sum(trade_count)::BIGINT AS trade_count, "
        f"{source_agg} AS source "
        f"FROM (SELECT symbol, {bucket_us('epoch_us(timestamp)', minutes)} AS __b, "
        f"epoch_us(timestamp) AS __us, open, high, low, close, volume, trade_count, "
        f"{source_col}{qparts} FROM ({rows})) GROUP BY {group}")
    if vwap == "sql":
        with_vwap, flag = exact_div(f"({agg})", "quote_volume", "volume", "vwap"), ""
    else:
        with_vwap, flag = f"SELECT *, NULL::{DEC} AS vwap FROM ({agg})", ", TRUE AS __derived"
    return (f"SELECT {sym_out} AS symbol, make_timestamptz(__b) AS timestamp, "
            f"{minutes}::INTEGER AS interval_minutes, open, high, low, close, volume, "
            f"quote_volume, trade_count, vwap, source{flag} FROM ({with_vwap})")


def _ranges_sql(ranges: Sequence[tuple[int, int]]) -> str:
    """SQL: ``timestamp`` lies in one of ``ranges`` (epoch µs, ``[from, until)``)."""
    return "(" + " OR ".join(
        f"(timestamp >= {ts_lit(from_epoch_us(a))} AND timestamp < {ts_lit(from_epoch_us(b))})"
        for a, b in ranges) + ")"


def read_segments_with(
    run: Callable[[str], pa.Table],
    relation: Callable[[int], str],
    symbol: str,
    minutes: int,
    segments: Sequence[SourceSegment],
) -> pa.Table:
    """``MarketStore.read_segments`` over DuckDB SQL: ``relation(interval)`` is a relation of
    ``symbol``'s stored candles of that interval; ``run`` executes SQL (naming the culprit
    when it fails). Rows in ``CANDLE_SCHEMA``, unordered."""
    by_source: dict[int, list[tuple[int, int]]] = {}
    for seg in segments:
        by_source.setdefault(seg.source_minutes, []).append((seg.start_us, seg.end_us))
    parts: list[str] = []
    cols = ", ".join(CANDLE_COLS)
    for source, ranges in sorted(by_source.items()):
        where = _ranges_sql(ranges)
        rel = relation(source)
        if source == minutes:
            parts.append(f"SELECT {cols}, FALSE AS __derived FROM {rel} WHERE {where}")
            continue
        facts = run(
            f"SELECT count(*) FILTER (WHERE quote_volume IS NULL AND volume <> 0) AS bare, "
            f"count(*) FILTER (WHERE source IS NULL) AS anon, min(source) AS lo, "
            f"max(source) AS hi FROM {rel} WHERE {where}").to_pylist()[0]
        one_source = None
        if not facts["anon"] and facts["lo"] is not None and facts["lo"] == facts["hi"]:
            one_source = facts["lo"]
        parts.append(aggregate_query(rel, source, minutes, symbol=symbol, where=where,
                                     vwap="flag", fallback=bool(facts["bare"]),
                                     one_source=one_source))
    if not parts:
        return CANDLE_SCHEMA.empty_table()
    table = fill_vwap(run(" UNION ALL ".join(f"({p})" for p in parts)))
    return _as_schema(table, CANDLE_SCHEMA)


def last_closes_with(
    run: Callable[[str], pa.Table],
    relation: Callable[[int], str],
    asks: Sequence[tuple[int, int, int]],
) -> list[tuple[Any, str | None] | None]:
    """``MarketStore.last_closes`` over DuckDB SQL (``relation`` as in ``read_segments_with``)."""
    if not asks:
        return []
    parts = [
        f"SELECT {k} AS __k, arg_max(close, timestamp) AS close, "
        f"arg_max(source, timestamp) AS source, count(*) AS n FROM {relation(source)} "
        f"WHERE {_ranges_sql([(a, b)])}"
        for k, (source, a, b) in enumerate(asks)
    ]
    rows = run(" UNION ALL ".join(f"({p})" for p in parts)).to_pylist()
    found = {r["__k"]: (r["close"], r["source"]) for r in rows if r["n"]}
    return [found.get(k) for k in range(len(asks))]


def sort_by_time(table: pa.Table) -> pa.Table:
    """``table`` ordered by ``timestamp`` (unique per table). Rows that come back from a scan
    in a few ordered runs are spliced run by run (no copy); anything else is sorted."""
    n = table.num_rows
    if n < 2:
        return table
    ts = table["timestamp"].combine_chunks().view(pa.int64())
    breaks = pc.indices_nonzero(pc.less_equal(ts.slice(1), ts.slice(0, n - 1))).to_pylist()
    if not breaks:
        return table
    if len(breaks) <= 256:
        bounds = [0, *(b + 1 for b in breaks), n]
        runs = sorted((ts[lo].as_py(), ts[hi - 1].as_py(), lo, hi)
                      for lo, hi in itertools.pairwise(bounds))
        if all(a[1] < b[0] for a, b in itertools.pairwise(runs)):
            return pa.concat_tables([table.slice(lo, hi - lo) for _, _, lo, hi in runs])
    return table.take(pc.sort_indices(ts))


def dedupe_candles_query(relation: str, index: str) -> str:
    """SQL: ``relation``'s candles with one row per key — the highest volume, the later row
    (larger ``index`` column) on a tie — in ``CANDLE_SCHEMA`` column order."""
    return (f"SELECT {', '.join(CANDLE_COLS)} FROM {relation} QUALIFY row_number() OVER "
            f"(PARTITION BY timestamp, symbol, interval_minutes ORDER BY volume DESC, "
            f"{index} DESC) = 1")


def with_trade_ids(relation: str, index: str, *, keep_index: bool = False) -> str:
    """SQL: ``relation``'s trades (``TRADE_SCHEMA`` order, then ``index`` if ``keep_index``)
    where a missing id is replaced by the synthetic ``-(epoch µs × 1000 + n)`` described in
    the module docstring (``n`` counts in ``index`` order)."""
    cols = ", ".join(c for c in TRADE_COLS if c != "id")
    extra = f", {index}" if keep_index else ""
    return (f"SELECT CASE WHEN id IS NOT NULL THEN id ELSE -(epoch_us(timestamp) * 1000 + "
            f"row_number() OVER (PARTITION BY symbol, timestamp, id IS NULL ORDER BY {index}))"
            f" END::BIGINT AS id, {cols}{extra} FROM {relation}")


def same_trade(a: str, b: str) -> str:
    """SQL: rows ``a`` and ``b`` are the same trade seen twice — same pair, price and volume
    in the same second (how a CSV row, which has no Kraken id, is matched to an API row)."""
    return (f"{a}.symbol = {b}.symbol AND {a}.price = {b}.price AND {a}.volume = {b}.volume "
            f"AND epoch_us({a}.timestamp) // 1000000 = epoch_us({b}.timestamp) // 1000000")


TRADE_READ_COLS = ", ".join(
    "CASE WHEN id < 0 THEN NULL ELSE id END AS id" if c == "id" else c for c in TRADE_COLS)
"""Trade columns as read back: synthetic (negative) ids of CSV rows come back as NULL."""


def coverage_query(relation: str, coverage: str) -> str:
    """SQL: per (symbol, interval_minutes) of the candles in ``relation``: first, last, rows,
    and from the recorded coverage ``coverage`` (``candle_coverage`` columns) the buckets no
    coverage vouches for between its ranges (``missing``) and how many such holes (``gaps``)."""
    return (
        "WITH __c AS (SELECT symbol, interval_minutes, min(timestamp) AS first, "
        f"max(timestamp) AS last, count(*) AS rows FROM {relation} "
        "GROUP BY symbol, interval_minutes), "
        "__h AS (SELECT symbol, interval_minutes, sum((epoch_us(__next) - "
        f"epoch_us(covered_until)) // (interval_minutes * {US_PER_MINUTE}::BIGINT))::BIGINT "
        "AS missing, count(*) AS gaps FROM (SELECT *, lead(covered_from) OVER (PARTITION BY "
        f"symbol, interval_minutes ORDER BY covered_from) AS __next FROM {coverage}) "
        "WHERE __next IS NOT NULL GROUP BY symbol, interval_minutes) "
        "SELECT __c.symbol, __c.interval_minutes, first, last, rows, "
        "coalesce(missing, 0)::BIGINT AS missing, coalesce(gaps, 0)::BIGINT AS gaps "
        "FROM __c LEFT JOIN __h USING (symbol, interval_minutes) "
        "ORDER BY __c.symbol, __c.interval_minutes"
    )


def merge_coverage(con: duckdb.DuckDBPyConnection,
                   coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]]) -> None:
    """Merge ``coverage`` ((symbol, interval) -> epoch-µs ranges) into ``candle_coverage``
    (kept as disjoint, non-touching ranges), inside the caller's transaction."""
    for (symbol, minutes), ranges in sorted(coverage.items()):
        if not ranges:
            continue
        lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
        near = ("symbol = $symbol AND interval_minutes = $m AND "
                "epoch_us(covered_until) >= $lo AND epoch_us(covered_from) <= $hi")
        params = {"symbol": symbol, "m": minutes, "lo": lo, "hi": hi}
        existing = _exec(con, "SELECT epoch_us(covered_from), epoch_us(covered_until) FROM "
                              f"candle_coverage WHERE {near}", params)
        merged = merge_ranges([*ranges, *((int(a), int(b)) for a, b in existing)])
        _exec(con, f"DELETE FROM candle_coverage WHERE {near}", params)
        con.executemany(
            "INSERT INTO candle_coverage VALUES (?, ?, make_timestamptz(?), make_timestamptz(?))",
            [(symbol, minutes, a, b) for a, b in merged])


def trim_coverage(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> None:
    """After deleting candles opening before ``cutoff``: coverage starts no earlier than each
    interval's first bucket at or after it."""
    _exec(con, f"DELETE FROM candle_coverage WHERE covered_until <= {ts_lit(cutoff)}")
    cut = epoch_us(cutoff)
    for (minutes,) in _exec(con, "SELECT DISTINCT interval_minutes FROM candle_coverage "
                                 f"WHERE covered_from < {ts_lit(cutoff)}"):
        first = bucket_ceil_us(cut, int(minutes))
        _exec(con, "UPDATE candle_coverage SET covered_from = make_timestamptz($first) "
                   "WHERE interval_minutes = $m AND epoch_us(covered_from) < $first",
              {"first": first, "m": int(minutes)})
        _exec(con, "DELETE FROM candle_coverage WHERE covered_from >= covered_until")


def sync_target(update: SyncUpdate, kind: str | None = None) -> tuple[str, int | None]:
    """``SyncUpdate.data_type`` -> (``trades`` | ``candles``, interval minutes or None); an
    ``UsageError`` if it names neither, or not ``kind`` when given."""
    target: tuple[str, int | None] | None = None
    if update.data_type == "trades":
        target = ("trades", None)
    elif update.data_type.startswith("candles_"):
        try:
            target = ("candles", interval_minutes(update.data_type.removeprefix("candles_")))
        except UsageError:
            target = None
    if target is not None:
        if kind is not None and target[0] != kind:
            raise UsageError(
                f"sync status {update.data_type!r} does not describe the {kind} written")
        return target
    raise UsageError(
        f"data_sync_status data_type must be trades or candles_<timeframe> "
        f"({', '.join(TIMEFRAMES)}), not {update.data_type!r}")


def keys_unique(table: pa.Table) -> bool:
    """Cheap proof that a candle batch has no duplicate key: one symbol, one interval, and
    strictly increasing timestamps (the usual shape of a page from Kraken)."""
    if table.num_rows < 2:
        return True
    for name in ("symbol", "interval_minutes"):
        mm = pc.min_max(table[name]).as_py()
        if mm["min"] != mm["max"]:
            return False
    ts = table["timestamp"].combine_chunks().view(pa.int64())
    n = len(ts)
    return bool(pc.all(pc.greater(ts.slice(1), ts.slice(0, n - 1))).as_py())


def row_index(table: pa.Table, name: str = "__i") -> pa.Table:
    """``table`` with a 1-based int64 row-number column ``name`` appended."""
    return table.append_column(name, pc.cumulative_sum(pa.repeat(1, table.num_rows))
                               .cast(pa.int64()))


# --- schema and migrations ----------------------------------------------------------------------

def coverage_runs_query(relation: str) -> str:
    """SQL: per (symbol, interval_minutes), the runs of consecutive candles in ``relation`` as
    ``covered_from`` / ``covered_until`` (what a stored candle vouches for by itself)."""
    return (
        "SELECT symbol, interval_minutes, make_timestamptz(min(__us)) AS covered_from, "
        f"make_timestamptz(max(__us) + interval_minutes * {US_PER_MINUTE}::BIGINT) "
        "AS covered_until FROM (SELECT symbol, interval_minutes, epoch_us(timestamp) AS __us, "
        f"epoch_us(timestamp) // (interval_minutes * {US_PER_MINUTE}::BIGINT) - row_number() "
        "OVER (PARTITION BY symbol, interval_minutes ORDER BY timestamp) AS __run "
        f"FROM {relation}) GROUP BY symbol, interval_minutes, __run")


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

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "tables pairs, trades, candles, data_sync_status", _V1),
    (2, "table candle_coverage (recorded coverage of each candle series, filled with the runs "
        "of consecutive candles stored); rollup views candles_5m..candles_1w derive only "
        "buckets that coverage spans", _V2),
]
"""(version, description, statements), applied in order, each in one transaction."""

assert MIGRATIONS[-1][0] == SCHEMA_VERSION, "base.SCHEMA_VERSION must match the last migration"

_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "applied_at TIMESTAMPTZ NOT NULL, description VARCHAR)")

_LOCK_PID = re.compile(r"\(PID (\d+)\)")
DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds an operation waits for a DuckDB file another process holds."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
                message = _first_line(exc)
                if "lock" not in message.lower():
                    raise StoreError(
                        f"{self.path}: cannot open the DuckDB store ({message})") from None
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 0.25)
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
                    f"{self.path}: not a usable DuckDB database ({_first_line(exc)})") from None
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
            con = self._open(read_only)
            self._held, self._held_read_only = con, read_only
            try:
                yield con
            finally:
                self._held = None
                con.close()

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
                raise StoreError(f"{self.path}: {_first_line(exc)}") from None
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
                raise StoreError(f"{self.path}: {_first_line(exc)}") from None

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        with self._session() as con:
            try:
                rel = con.sql(sql)
                names = rel.columns
                rows = rel.fetchall()
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: {_first_line(exc)}") from None
        return [{k: _py(v) for k, v in zip(names, row, strict=True)} for row in rows]

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
                        f"({_first_line(exc)})") from None
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
        unique = keys_unique(table)
        cols = ", ".join(CANDLE_COLS)
        with self._txn() as con:
            written = 0
            if table.num_rows:
                if not unique:
                    con.register("__raw", row_index(table))
                    try:
                        table = to_arrow(con.sql(dedupe_candles_query("__raw", "__i")))
                    finally:
                        con.unregister("__raw")
                span = pc.min_max(table["timestamp"]).as_py()
                near = (f"c.timestamp >= {ts_lit(span['min'])} AND "
                        f"c.timestamp <= {ts_lit(span['max'])}")
                same = ("c.timestamp = b.timestamp AND c.symbol = b.symbol AND "
                        "c.interval_minutes = b.interval_minutes")
                sets = ", ".join(f"{c} = b.{c}" for c in CANDLE_COLS[3:])
                con.register("__batch", table)
                try:
                    written = int(_scalar(
                        con, f"UPDATE candles AS c SET {sets} FROM __batch AS b "
                             f"WHERE {near} AND {same} AND b.volume >= c.volume") or 0)
                    written += int(_scalar(
                        con, f"INSERT INTO candles ({cols}) SELECT {cols} FROM __batch AS b "
                             f"WHERE NOT EXISTS (SELECT 1 FROM candles AS c WHERE {near} AND "
                             f"{same}) ORDER BY symbol, interval_minutes, timestamp") or 0)
                finally:
                    con.unregister("__batch")
            merge_coverage(con, coverage)
            self._write_sync(con, sync, targets)
        return written

    def write_trades(self, table: pa.Table, sync: Sequence[SyncUpdate] = ()) -> int:
        """Insert trades once each (module docstring: synthetic ids for id-less CSV rows, and
        a CSV row and an API row of the same trade are stored once, as the API row)."""
        targets = [sync_target(u, "trades") for u in sync]
        if table.num_rows == 0 and not sync:
            return 0
        cols = ", ".join(TRADE_COLS)
        with self._txn() as con:
            written = 0
            if table.num_rows:
                csv_rows = table["id"].null_count
                if csv_rows:
                    con.register("__raw", row_index(table))
                    try:
                        table = to_arrow(con.sql(with_trade_ids("__raw", "__i")))
                    finally:
                        con.unregister("__raw")
                span = pc.min_max(table["timestamp"]).as_py()
                lo = span["min"].replace(microsecond=0)
                hi = span["max"].replace(microsecond=0) + timedelta(seconds=1)
                near = f"t.timestamp >= {ts_lit(lo)} AND t.timestamp < {ts_lit(hi)}"
                keep = ""
                if csv_rows:  # a CSV row yields to an API row of the same trade
                    keep = (f"WHERE b.id >= 0 OR NOT EXISTS (SELECT 1 FROM (SELECT * FROM "
                            f"trades AS t WHERE t.id >= 0 AND {near} UNION ALL SELECT * FROM "
                            f"__batch WHERE id >= 0) AS a WHERE {same_trade('a', 'b')}) ")
                con.register("__batch", table)
                try:
                    written = int(_scalar(
                        con, f"INSERT INTO trades ({cols}) SELECT {cols} FROM __batch AS b "
                             f"{keep}ORDER BY symbol, timestamp, abs(id) "
                             "ON CONFLICT DO NOTHING") or 0)
                    if csv_rows < table.num_rows:  # API rows replace their CSV twins
                        _exec(con, f"DELETE FROM trades AS t WHERE t.id < 0 AND {near} AND "
                                   f"EXISTS (SELECT 1 FROM __batch AS b WHERE b.id >= 0 AND "
                                   f"{same_trade('b', 't')})")
                finally:
                    con.unregister("__batch")
            self._write_sync(con, sync, targets)
        return written

    def _write_sync(self, con: duckdb.DuckDBPyConnection, sync: Sequence[SyncUpdate],
                    targets: Sequence[tuple[str, int | None]]) -> None:
        now = datetime.now(UTC)
        for update, (kind, minutes) in zip(sync, targets, strict=True):
            self._refresh_status(con, update.symbol, update.data_type, kind, minutes,
                                 now, update.last_kraken_since, touch=True)

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
        return _as_schema(self._arrow(sql), TRADE_SCHEMA)

    def read_pairs(self) -> pa.Table:
        """The stored universe snapshot, by canonical name."""
        return _as_schema(
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


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    found = _scalar(con, "SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name = 'schema_version'")
    if not found:
        return 0
    version = _scalar(con, "SELECT max(version) FROM schema_version")
    return int(version) if version is not None else 0


def _exec(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[Any]:
    """Run ``sql`` and consume its whole result (DuckDB wants results finished)."""
    cursor = con.execute(sql) if params is None else con.execute(sql, params)
    return cursor.fetchall()


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> Any:
    """The first column of the first row of ``sql``."""
    rows = _exec(con, sql, params)
    return rows[0][0] if rows else None


def _py(value: Any) -> Any:
    """DuckDB Python values with timestamps as aware ``datetime.UTC``."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _as_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` relabelled/cast to ``schema`` (DuckDB marks every column nullable)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = [table.column(i).cast(schema.field(i).type)
               if not table.schema.field(i).type.equals(schema.field(i).type)
               else table.column(i) for i in range(len(schema))]
    return pa.Table.from_arrays(columns, schema=schema)
