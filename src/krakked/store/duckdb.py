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
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import InvalidRequestError, StoreError, StoreLockedError
from krakked.market.candles import TIMEFRAMES, bucket_start, interval_minutes
from krakked.store.base import (
    CANDLE_SCHEMA,
    PAIR_SCHEMA,
    ROLLUPS,
    SCHEMA_VERSION,
    TRADE_SCHEMA,
    MarketStore,
    SyncUpdate,
)

__all__ = [
    "MIGRATIONS",
    "DuckDBStore",
    "coverage_query",
    "dedupe_candles_query",
    "derive_query",
    "exact_div",
    "fill_vwap",
    "lit",
    "read_candles_with",
    "same_trade",
    "sort_by_time",
    "to_arrow",
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


def _bucket_ceil(value: datetime, minutes: int) -> datetime:
    """The first ``minutes`` bucket start at or after ``value``."""
    v = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    floor = bucket_start(v, minutes)
    return floor if floor == v else floor + timedelta(minutes=minutes)


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


def derive_query(
    source: str,
    source_minutes: int,
    minutes: int,
    *,
    stored: str | None = None,
    symbol: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    vwap: Literal["sql", "flag"] = "sql",
    edge_us: int | None = None,
    fallback: bool = True,
    one_source: str | None = None,
) -> str:
    """SQL for ``minutes`` candles (``CANDLE_SCHEMA`` columns, unordered): the rows of
    ``stored`` (a relation of that interval's stored candles), plus, for every (symbol, bucket)
    that has none, the candle aggregated exactly from ``source`` (a relation of
    ``source_minutes`` candles) — only buckets that end at or before the newest source
    candle's close, so a derived candle is never a partial one.

    open = first, close = last, high = max, low = min; volume, quote volume (vwap × volume
    where a source row has no quote volume; NULL if a row has neither) and trade count summed;
    vwap = quote volume / volume; source = the sources' common source, else ``trades``.

    ``symbol``: both relations hold only that symbol (cheaper plan); then ``edge_us`` may give
    the newest source candle's open time (epoch µs) instead of querying it, and
    ``fallback=False`` may promise that no source row in range lacks its quote volume, and
    ``one_source`` that every source row in range has that ``source``.
    ``vwap="sql"`` divides in SQL (``exact_div``); ``vwap="flag"`` leaves derived vwaps NULL
    and adds a boolean ``__derived`` column for ``fill_vwap`` to finish in Python.
    """
    if minutes <= source_minutes or minutes % source_minutes:
        raise InvalidRequestError(
            f"cannot derive {minutes}m candles from {source_minutes}m candles")
    width = minutes * US_PER_MINUTE
    # Source rows of exactly the buckets b with start <= b < end: [ceil(start), ceil(end)).
    src_filter = ["TRUE"]
    out_filter = [f"a.__b + {width} <= e.__end"]
    stored_filter = ["TRUE"]
    if start is not None:
        src_filter.append(f"timestamp >= {ts_lit(_bucket_ceil(start, minutes))}")
        stored_filter.append(f"timestamp >= {ts_lit(start)}")
    if end is not None:
        src_filter.append(f"timestamp < {ts_lit(_bucket_ceil(end, minutes))}")
        stored_filter.append(f"timestamp < {ts_lit(end)}")
    # Quote volume of a source row: its own, else vwap × volume computed exactly by parts
    # (DuckDB cannot multiply two DECIMAL(38,18) without overflowing 38 digits, and rescaling
    # a 38-digit decimal per row is slow): with t = integer part and f = fraction,
    # vwap × volume = tv·volume + fv·tq (scale 18) + fv₉·fq (scale 27) + (fv - fv₉)·fq (scale 36),
    # fv₉ being fv rounded to 9 places; the last two are summed per bucket, then rounded once.
    rows = f"SELECT * FROM {source} WHERE {' AND '.join(src_filter)}"
    if fallback:
        rows = (
            "SELECT *, (vwap - __tv)::DECIMAL(18,18) AS __fv, "
            "(volume - __tq)::DECIMAL(18,18) AS __fq FROM ("
            "SELECT *, CASE WHEN quote_volume IS NULL THEN trunc(vwap) END AS __tv, "
            f"CASE WHEN quote_volume IS NULL THEN trunc(volume) END AS __tq FROM ({rows}))")
        qhi = ("CASE WHEN quote_volume IS NOT NULL THEN quote_volume ELSE "
               "__tv * volume + __fv * __tq END")
        qparts = (f"{qhi} AS __qhi, "
                  "CASE WHEN quote_volume IS NULL THEN __fv::DECIMAL(18,9) * __fq END AS __qmid, "
                  "CASE WHEN quote_volume IS NULL THEN (__fv - __fv::DECIMAL(18,9)) * __fq END "
                  "AS __qlo")
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
    cols = ", ".join(CANDLE_COLS)
    group = "__b" if symbol else "symbol, __b"
    sym_out = lit(symbol) if symbol else "symbol"
    anti = ""
    stored_cte = ""
    if stored is not None:
        stored_cte = (f"__stored AS (SELECT {cols} FROM {stored} "
                      f"WHERE {' AND '.join(stored_filter)}), ")
        same_symbol = "" if symbol else "s.symbol = a.symbol AND "
        anti = (f" AND NOT EXISTS (SELECT 1 FROM __stored s WHERE {same_symbol}"
                "epoch_us(s.timestamp) = a.__b)")
    if symbol and edge_us is not None:
        edge = ""
        join = f"__agg a, (SELECT {edge_us + source_minutes * US_PER_MINUTE} AS __end) e"
    elif symbol:
        edge = (f"__edge AS (SELECT max(timestamp) AS __last FROM {source}), ")
        join = "__agg a, (SELECT epoch_us(__last) + " \
               f"{source_minutes * US_PER_MINUTE} AS __end FROM __edge) e"
    else:
        edge = (f"__edge AS (SELECT symbol, max(timestamp) AS __last FROM {source} "
                "GROUP BY symbol), ")
        join = "__agg a JOIN (SELECT symbol, epoch_us(__last) + " \
               f"{source_minutes * US_PER_MINUTE} AS __end FROM __edge) e USING (symbol)"
    derived = f"SELECT a.* FROM {join} WHERE {' AND '.join(out_filter)}{anti}"
    if vwap == "sql":
        with_vwap = exact_div(f"({derived})", "quote_volume", "volume", "vwap")
        flag_d = flag_s = ""
    else:
        with_vwap = f"SELECT *, NULL::{DEC} AS vwap FROM ({derived})"
        flag_d, flag_s = ", TRUE AS __derived", ", FALSE AS __derived"
    sql = (
        f"WITH {stored_cte}{edge}"
        f"__agg AS (SELECT {group}, "
        f"arg_min(open, __us) AS open, max(high) AS high, min(low) AS low, "
        f"arg_max(close, __us) AS close, sum(volume) AS volume, "
        f"{quote} AS quote_volume, sum(trade_count)::BIGINT AS trade_count, "
        f"{source_agg} AS source "
        f"FROM (SELECT symbol, {bucket_us('epoch_us(timestamp)', minutes)} AS __b, "
        f"epoch_us(timestamp) AS __us, open, high, low, close, volume, trade_count, "
        f"{source_col}{qparts} FROM ({rows})) GROUP BY {group}) "
        f"SELECT {sym_out} AS symbol, make_timestamptz(__b) AS timestamp, {minutes}::INTEGER "
        f"AS interval_minutes, open, high, low, close, volume, quote_volume, trade_count, vwap, "
        f"source{flag_d} FROM ({with_vwap})"
    )
    if stored is not None:
        sql += f" UNION ALL SELECT {cols}{flag_s} FROM __stored"
    return sql


def read_candles_with(
    run: Callable[[str], pa.Table],
    symbol: str,
    minutes: int,
    stored: str | None,
    source: tuple[str, int] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int | None,
    newest_first: bool,
) -> pa.Table:
    """``MarketStore.read_candles`` over SQL relations of one symbol: ``stored`` (its candles
    of ``minutes``) and/or ``source`` = (relation, interval) of finer candles to derive the
    other buckets from. ``run`` executes DuckDB SQL (and names the culprit when it fails)."""
    order = " ORDER BY timestamp DESC" if newest_first else (
        " ORDER BY timestamp" if limit is not None else "")
    tail = order + (f" LIMIT {max(0, int(limit))}" if limit is not None else "")
    edge_us, fallback, one_source = None, True, None
    if source is not None:
        rel, finer = source
        window = ["TRUE"]
        if start is not None:
            window.append(f"timestamp >= {ts_lit(_bucket_ceil(start, minutes))}")
        if end is not None:
            window.append(f"timestamp < {ts_lit(_bucket_ceil(end, minutes))}")
        where = " AND ".join(window)
        facts = run(
            f"SELECT epoch_us(max(timestamp)) AS last, count(*) FILTER (WHERE {where} AND "
            f"quote_volume IS NULL) AS bare, count(*) FILTER (WHERE {where} AND source IS NULL) "
            f"AS anon, min(source) FILTER (WHERE {where}) AS lo, max(source) FILTER (WHERE "
            f"{where}) AS hi FROM {rel}").to_pylist()[0]
        edge_us, fallback = facts["last"], bool(facts["bare"])
        if not facts["anon"] and facts["lo"] is not None and facts["lo"] == facts["hi"]:
            one_source = facts["lo"]
        if edge_us is None:
            source = None
    if source is None:
        if stored is None:
            return CANDLE_SCHEMA.empty_table()
        where = ["TRUE"]
        if start is not None:
            where.append(f"timestamp >= {ts_lit(start)}")
        if end is not None:
            where.append(f"timestamp < {ts_lit(end)}")
        cols = ", ".join(c for c in CANDLE_COLS if c not in ("symbol", "interval_minutes"))
        table = run(f"SELECT {cols} FROM {stored} WHERE {' AND '.join(where)}{tail}")
        table = table.add_column(0, "symbol", pa.repeat(symbol, table.num_rows))
        table = table.add_column(2, "interval_minutes",
                                 pa.repeat(pa.scalar(minutes, pa.int32()), table.num_rows))
    else:
        rel, finer = source
        derived = derive_query(rel, finer, minutes, stored=stored, symbol=symbol, start=start,
                               end=end, vwap="flag", edge_us=edge_us, fallback=fallback,
                               one_source=one_source)
        table = fill_vwap(run(f"SELECT * FROM ({derived}){tail}"))
    if not order:
        table = sort_by_time(table)
    return _as_schema(table, CANDLE_SCHEMA)


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


def coverage_query(relation: str) -> str:
    """SQL: per (symbol, interval_minutes) of the candles in ``relation``: first, last, rows,
    missing buckets between first and last, and gaps (runs of missing buckets)."""
    return (
        "SELECT symbol, interval_minutes, min(timestamp) AS first, max(timestamp) AS last, "
        "count(*) AS rows, "
        f"((max(__us) - min(__us)) // (interval_minutes * {US_PER_MINUTE}::BIGINT) + 1 "
        "- count(*))::BIGINT AS missing, "
        f"count(*) FILTER (WHERE __prev IS NOT NULL AND __us - __prev > interval_minutes * "
        f"{US_PER_MINUTE}::BIGINT) AS gaps "
        "FROM (SELECT symbol, interval_minutes, timestamp, epoch_us(timestamp) AS __us, "
        "lag(epoch_us(timestamp)) OVER (PARTITION BY symbol, interval_minutes "
        f"ORDER BY timestamp) AS __prev FROM {relation}) "
        "GROUP BY symbol, interval_minutes ORDER BY symbol, interval_minutes"
    )


def sync_target(update: SyncUpdate, kind: str | None = None) -> tuple[str, int | None]:
    """``SyncUpdate.data_type`` -> (``trades`` | ``candles``, interval minutes or None); an
    ``InvalidRequestError`` if it names neither, or not ``kind`` when given."""
    target: tuple[str, int | None] | None = None
    if update.data_type == "trades":
        target = ("trades", None)
    elif update.data_type.startswith("candles_"):
        try:
            target = ("candles", interval_minutes(update.data_type.removeprefix("candles_")))
        except InvalidRequestError:
            target = None
    if target is not None:
        if kind is not None and target[0] != kind:
            raise InvalidRequestError(
                f"sync status {update.data_type!r} does not describe the {kind} written")
        return target
    raise InvalidRequestError(
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

def _rollup_view(minutes: int) -> str:
    source = "(SELECT * FROM candles WHERE interval_minutes = 1)"
    stored = f"(SELECT * FROM candles WHERE interval_minutes = {minutes})"
    return (f"CREATE OR REPLACE VIEW {ROLLUPS[minutes]} AS "
            f"{derive_query(source, 1, minutes, stored=stored)}")


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
    *(_rollup_view(m) for m in sorted(ROLLUPS)),
]

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "tables pairs, trades, candles, data_sync_status; rollup views candles_5m..candles_1w",
     _V1),
]
"""(version, description, statements), applied in order, each in one transaction."""

assert MIGRATIONS[-1][0] == SCHEMA_VERSION, "base.SCHEMA_VERSION must match the last migration"

_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
    "applied_at TIMESTAMPTZ NOT NULL, description VARCHAR)")

_LOCK_PID = re.compile(r"\(PID (\d+)\)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DuckDBStore(MarketStore):
    """The market store in one DuckDB file (or ``:memory:``). Thread-safe (one lock)."""

    backend = "duckdb"

    def __init__(self, path: str, read_only: bool = False) -> None:
        super().__init__()
        self.path = path
        self.read_only = read_only
        self.url = f"duckdb:///{path}" if path == ":memory:" else f"duckdb://{path}"
        self._lock = threading.RLock()
        self._con = self._connect(path, read_only)
        try:
            _exec(self._con, "SET TimeZone = 'UTC'")
            self._migrate()
        except BaseException:
            self._con.close()
            raise

    # -- connection, transactions, migrations --------------------------------------------

    @staticmethod
    def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            message = _first_line(exc)
            if "lock" in message.lower():
                pid = _LOCK_PID.search(str(exc))
                holder = f"PID {pid.group(1)}" if pid else "see `lsof` for the holder"
                raise StoreLockedError(
                    f"{path} is locked by another process ({holder}): a DuckDB store has one "
                    "writer at a time; stop that process (or use a PostgreSQL store)") from None
            raise StoreError(f"{path}: cannot open the DuckDB store ({message})") from None
        except duckdb.Error as exc:
            raise StoreError(
                f"{path}: not a usable DuckDB database ({_first_line(exc)})") from None

    @contextlib.contextmanager
    def _txn(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the store lock; DuckDB errors become a StoreError naming
        the file, and nothing of the transaction remains."""
        with self._lock:
            if self.read_only:
                raise StoreError(f"{self.path}: the store is open read-only")
            con = self._con
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
        with self._lock:
            try:
                return to_arrow(self._con.sql(sql))
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: {_first_line(exc)}") from None

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        with self._lock:
            try:
                rel = self._con.sql(sql)
                names = rel.columns
                rows = rel.fetchall()
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: {_first_line(exc)}") from None
        return [{k: _py(v) for k, v in zip(names, row, strict=True)} for row in rows]

    def schema_version(self) -> int:
        """The schema version recorded in the file (0 for a store never migrated)."""
        with self._lock:
            found = _scalar(self._con, "SELECT count(*) FROM information_schema.tables "
                                       "WHERE table_name = 'schema_version'")
            if not found:
                return 0
            version = _scalar(self._con, "SELECT max(version) FROM schema_version")
            return int(version) if version is not None else 0

    def _migrate(self) -> None:
        """Bring the file to ``SCHEMA_VERSION``: each missing migration in one transaction."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this krakked supports "
                f"({SCHEMA_VERSION}); upgrade krakked")
        if current == SCHEMA_VERSION:
            return
        if self.read_only:
            raise StoreError(
                f"{self.path}: schema version {current} needs migrating to {SCHEMA_VERSION}; "
                "open it once without read-only")
        con = self._con
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
        """Close the connection (releases the file lock)."""
        with self._lock:
            self._con.close()

    # -- writing ------------------------------------------------------------------------------

    def write_candles(self, table: pa.Table, sync: Sequence[SyncUpdate] = ()) -> int:
        """Upsert candles with the volume rule; ``sync`` rows (``candles_<tf>``) in the same
        transaction.

        Done as an UPDATE of the stored keys the batch beats, then an INSERT of the new keys
        in (symbol, interval, time) order — the same result as ``INSERT … ON CONFLICT DO
        UPDATE … WHERE excluded.volume >= candles.volume``, but the table stays in time order
        on disk, so reads need no sort and time filters skip whole row groups.
        """
        targets = [sync_target(u, "candles") for u in sync]
        if table.num_rows == 0 and not sync:
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
            raise InvalidRequestError(f"kind must be trades or candles, not {kind!r}")
        with self._txn() as con:
            deleted = int(_scalar(
                con, f"DELETE FROM {kind} WHERE timestamp < {ts_lit(cutoff)}") or 0)
            statuses = _exec(con, "SELECT symbol, data_type FROM data_sync_status")
            for symbol, data_type in statuses:
                target = sync_target(SyncUpdate(symbol, data_type))
                if target[0] == kind:
                    self._refresh_status(con, symbol, data_type, target[0], target[1],
                                         None, None, touch=False)
        return deleted

    # -- reading ------------------------------------------------------------------------------

    def _intervals(self, symbol: str) -> set[int]:
        """The intervals stored for ``symbol``."""
        with self._lock:
            try:
                rows = _exec(self._con, "SELECT DISTINCT interval_minutes FROM candles "
                                        "WHERE symbol = ?", [symbol])
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: {_first_line(exc)}") from None
        return {int(r[0]) for r in rows}

    def read_candles(
        self,
        symbol: str,
        minutes: int,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> pa.Table:
        """See ``MarketStore.read_candles``: stored candles of ``minutes`` win, the other
        buckets are derived exactly from the finest stored interval that divides it."""
        def rel(interval: int) -> str:
            return (f"(SELECT * FROM candles WHERE symbol = {lit(symbol)} AND "
                    f"interval_minutes = {int(interval)})")

        intervals = self._intervals(symbol) if minutes > 1 else {minutes}
        finer = [i for i in intervals if i < minutes and minutes % i == 0]
        stored = rel(minutes) if minutes in intervals else None
        source = (rel(min(finer)), min(finer)) if finer else None
        return read_candles_with(self._arrow, symbol, minutes, stored, source, start, end,
                                 limit, newest_first)

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
        rows = self._rows(coverage_query(f"(SELECT * FROM candles{where})"))
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
