"""The SQL library the backends share, in DuckDB's dialect: exact derivation of higher
timeframes (``aggregate_query``, ``exact_div``, ``fill_vwap``), reading a plan's segments and
carried closes, recorded coverage, the per-key dedupe and trade-id rules, and the literals they
are built with.

The DuckDB store runs it on its file, the Parquet/CSV store over its files, and the PostgreSQL
store to aggregate a large batch's own rollups in memory. Nothing here opens a database:
functions return SQL text, or take a ``run(sql) -> pa.Table`` callable.
"""

# SQL here is composed from our own identifiers and values quoted by lit()/ts_lit() or
# coerced by int(); nothing user-typed reaches it unquoted.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import UsageError
from krakked.market.candles import SourceSegment, from_epoch_us
from krakked.store.arrow import CANDLE_SCHEMA, PAIR_SCHEMA, TRADE_SCHEMA, as_schema

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "CANDLE_COLS",
    "DEC",
    "PAIR_COLS",
    "TRADE_COLS",
    "TRADE_READ_COLS",
    "US_PER_MINUTE",
    "aggregate_query",
    "bucket_us",
    "coverage_query",
    "coverage_runs_query",
    "dedupe_candles_query",
    "duck_type",
    "exact_div",
    "fill_vwap",
    "keys_unique",
    "last_closes_with",
    "lit",
    "py_value",
    "read_segments_with",
    "row_index",
    "to_arrow",
    "ts_lit",
    "with_trade_ids",
]

DEC = "DECIMAL(38,18)"
"""The SQL type of prices and volumes."""
US_PER_MINUTE = 60_000_000
MONDAY_US = 4 * 86_400 * 1_000_000  # 1970-01-05 00:00 UTC, the first Monday after the epoch
CANDLE_COLS = tuple(CANDLE_SCHEMA.names)
TRADE_COLS = tuple(TRADE_SCHEMA.names)
PAIR_COLS = tuple(PAIR_SCHEMA.names)


def duck_type(t: pa.DataType) -> str:
    """The DuckDB SQL type of a store column's Arrow type."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    return "VARCHAR"


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
    return as_schema(table, CANDLE_SCHEMA)


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



def dedupe_candles_query(relation: str, index: str) -> str:
    """SQL: ``relation``'s candles with one row per key — the highest volume, the later row
    (larger ``index`` column) on a tie — in ``CANDLE_SCHEMA`` column order."""
    return (f"SELECT {', '.join(CANDLE_COLS)} FROM {relation} QUALIFY row_number() OVER "
            f"(PARTITION BY timestamp, symbol, interval_minutes ORDER BY volume DESC, "
            f"{index} DESC) = 1")


def with_trade_ids(relation: str, index: str, *, keep_index: bool = False) -> str:
    """SQL: ``relation``'s trades (``TRADE_SCHEMA`` order, then ``index`` if ``keep_index``)
    where a missing id (a row of Kraken's CSV files) is replaced by the synthetic
    ``-(epoch µs × 1000 + n)``, ``n`` the row's 1-based position, in ``index`` order, among the
    id-less trades of its pair and instant: the same file stored twice gets the same ids."""
    cols = ", ".join(c for c in TRADE_COLS if c != "id")
    extra = f", {index}" if keep_index else ""
    return (f"SELECT CASE WHEN id IS NOT NULL THEN id ELSE -(epoch_us(timestamp) * 1000 + "
            f"row_number() OVER (PARTITION BY symbol, timestamp, id IS NULL ORDER BY {index}))"
            f" END::BIGINT AS id, {cols}{extra} FROM {relation}")


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


def py_value(value: Any) -> Any:
    """A DuckDB Python value with timestamps as aware ``datetime.UTC``."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value
