"""The store's Arrow side: the column schemas every backend reads and writes
(``CANDLE_SCHEMA``, ``TRADE_SCHEMA``, ``PAIR_SCHEMA``; decimals ``decimal128(38, 18)``,
timestamps ``timestamp[us, UTC]``) and the exact conversion of ``Candle``/trade objects to and
from Arrow tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import UsageError
from krakked.market.candles import (
    CANDLE_COLUMNS,
    Candle,
    HistoricalTrade,
    candles_from_columns,
)

__all__ = [
    "CANDLE_SCHEMA",
    "DECIMAL",
    "PAIR_SCHEMA",
    "TRADE_SCHEMA",
    "TS",
    "arrow_to_candles",
    "as_schema",
    "candles_to_arrow",
    "csv_ids_in_arrow",
    "trades_to_arrow",
]

DECIMAL = pa.decimal128(38, 18)
"""Prices and volumes: exact, 18 places (``DECIMAL(38,18)`` in the databases)."""
_Q = Decimal(1).scaleb(-18)
TS = pa.timestamp("us", tz="UTC")
"""Timestamps: microseconds, UTC."""

CANDLE_SCHEMA = pa.schema([
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("timestamp", TS, nullable=False),
    pa.field("interval_minutes", pa.int32(), nullable=False),
    pa.field("open", DECIMAL, nullable=False),
    pa.field("high", DECIMAL, nullable=False),
    pa.field("low", DECIMAL, nullable=False),
    pa.field("close", DECIMAL, nullable=False),
    pa.field("volume", DECIMAL, nullable=False),
    pa.field("quote_volume", DECIMAL),
    pa.field("trade_count", pa.int64()),
    pa.field("vwap", DECIMAL),
    pa.field("source", pa.string()),
])
"""Columns of ``candles`` (and of every rollup), in order."""

TRADE_SCHEMA = pa.schema([
    pa.field("id", pa.int64()),  # Kraken's per-pair trade id; null for CSV rows until reconciled
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("timestamp", TS, nullable=False),
    pa.field("price", DECIMAL, nullable=False),
    pa.field("volume", DECIMAL, nullable=False),
    pa.field("side", pa.string()),  # buy | sell; null for rows of Kraken's CSV files
    pa.field("order_type", pa.string()),
    pa.field("misc", pa.string()),
    pa.field("source", pa.string()),
])
"""Columns of ``trades``, in order. Key (timestamp, symbol, id)."""

PAIR_SCHEMA = pa.schema([
    pa.field("canonical", pa.string(), nullable=False),
    pa.field("base", pa.string()),
    pa.field("quote", pa.string()),
    pa.field("rest_symbol", pa.string()),
    pa.field("ws_symbol", pa.string()),
    pa.field("wsname", pa.string()),
    pa.field("raw_name", pa.string()),
    pa.field("price_decimals", pa.int32()),
    pa.field("volume_decimals", pa.int32()),
    pa.field("lot_size", DECIMAL),
    pa.field("ordermin", DECIMAL),
    pa.field("costmin", DECIMAL),
    pa.field("tick_size", DECIMAL),
    pa.field("status", pa.string()),
    pa.field("updated_at", TS),
])
"""Columns of ``pairs`` (the universe snapshot). Key canonical."""


_CONTEXT = Context(prec=38, traps=[InvalidOperation])  # DECIMAL(38,18) holds 38 digits


def _dec(value: Any, name: str) -> Decimal | None:
    """``value`` at the store's 18 places, or a clear error when DECIMAL(38,18) cannot hold it."""
    if value is None:
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        return d.quantize(_Q, context=_CONTEXT)
    except InvalidOperation:
        raise UsageError(
            f"{name} = {value!r} does not fit the store's DECIMAL(38,18) "
            "(at most 20 digits before the point)") from None


def candles_to_arrow(candles: Iterable[Candle]) -> pa.Table:
    """Candles -> an Arrow table in ``CANDLE_SCHEMA`` (decimals quantized to 18 places)."""
    cols: dict[str, list[Any]] = {name: [] for name in CANDLE_COLUMNS}
    for c in candles:
        cols["symbol"].append(c.symbol)
        cols["timestamp"].append(c.timestamp)
        cols["interval_minutes"].append(c.interval_minutes)
        for k in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
            cols[k].append(_dec(getattr(c, k), k))
        cols["trade_count"].append(c.trade_count)
        cols["source"].append(c.source)
    return pa.table(cols, schema=CANDLE_SCHEMA)


def trades_to_arrow(trades: Iterable[HistoricalTrade], source: str = "rest") -> pa.Table:
    """Trades -> an Arrow table in ``TRADE_SCHEMA``."""
    rows = [
        {"id": t.id, "symbol": t.symbol, "timestamp": t.timestamp, "price": _dec(t.price, "price"),
         "volume": _dec(t.volume, "volume"), "side": t.side, "order_type": t.order_type,
         "misc": t.misc, "source": source}
        for t in trades
    ]
    return pa.Table.from_pylist(rows, schema=TRADE_SCHEMA)


_PRICE_COLUMNS = ("open", "high", "low", "close")
_THREADED_ROWS = 20_000  # from here on the Arrow half of the conversion runs in a second thread

# How ``arrow_to_candles`` turns columns into Python values. Each column is done in two halves:
# Arrow work (casts, dictionary encoding, joining a column's text into one string), which
# releases the GIL, and Python work (splitting that string, building Decimals and datetimes).
# On big tables the Arrow halves run in a worker thread ahead of the Python halves.
#
# - Decimals: Arrow's decimal -> text cast is exact; trailing zeros are trimmed as text
#   ("30306.100000000000000000" -> "30306.1", never an exponent form), and ``Decimal`` is built
#   from each text by ``map`` (C-level iteration). Arrow writes values under 1e-6 (and zero) in
#   exponent form ("1.00000000E-10", "0E-18"): those are left untrimmed by the text step and
#   normalized as Decimals instead.
# - The four price columns share most of their values (one candle's close is the next one's
#   open; prices move by ticks): they are dictionary-encoded together and each distinct price
#   becomes one Decimal, shared by every candle that has it (Decimals are immutable).
# - Timestamps: naive UTC text from Arrow, read by ``datetime.fromisoformat`` with "+00:00".


def _column_text(arr: pa.Array, suffix: str = "") -> str:
    """A string array without nulls -> its values joined by newlines, each followed by
    ``suffix`` (one Arrow call; the Python side splits it in one call)."""
    text = arr.cast(pa.large_string())  # the joined text may pass 2 GiB
    lists = pa.LargeListArray.from_arrays(pa.array([0, len(text)], pa.int64()), text)
    joined: str = pc.binary_join(lists, pa.scalar(suffix + "\n", pa.large_string()))[0].as_py()
    return joined + suffix


def _int_list(arr: pa.Array) -> list[int]:
    """An integer array without nulls -> Python ints (read straight from the Arrow buffer)."""
    arr = arr.cast(pa.int64())
    if len(arr) == 0:
        return []
    return memoryview(arr.buffers()[1]).cast("q")[arr.offset:arr.offset + len(arr)].tolist()


def _null_positions(arr: pa.Array) -> list[int]:
    return pc.indices_nonzero(arr.is_null()).to_pylist() if arr.null_count else []


def _with_nulls(values: list[Any], nulls: list[int]) -> list[Any]:
    if len(nulls) == len(values):
        return [None] * len(values)
    for i in nulls:
        values[i] = None
    return values


_Finish = Callable[[], list[Any]]


def _decimals_prepare(arr: pa.Array) -> _Finish:
    """Arrow half of decimal -> tidy ``Decimal``; returns the Python half."""
    nulls = _null_positions(arr)
    if len(nulls) == len(arr):
        return lambda: [None] * len(arr)
    text = arr.cast(pa.string())
    exponent: list[int] = []
    if arr.type.scale > 0:  # "1.500000" -> "1.5"; "100.000000" -> "100"
        trimmed = pc.utf8_rtrim(pc.utf8_rtrim(text, characters="0"), characters=".")
        is_exp = pc.fill_null(pc.match_substring(text, "E"), False)
        if pc.any(is_exp).as_py():
            exponent = pc.indices_nonzero(is_exp).to_pylist()
            trimmed = pc.if_else(is_exp, text, trimmed)  # "1.0E-10" must keep its zeros
        text = trimmed
    joined = _column_text(pc.fill_null(text, "0") if nulls else text)

    def finish() -> list[Any]:
        values: list[Any] = list(map(Decimal, joined.split("\n")))
        for i in exponent:  # values under 1e-6 in magnitude, and zero
            values[i] = values[i].normalize()
        return _with_nulls(values, nulls)

    return finish


def _shared_decimals_prepare(arrs: Sequence[pa.Array]) -> _Finish:
    """Arrow half of several decimal columns converted as one: each distinct value becomes one
    ``Decimal``. The Python half returns one list per column."""
    # One hash table over all the columns: every chunk carries the same (whole) dictionary.
    encoded = pc.dictionary_encode(pa.chunked_array(arrs, arrs[0].type))
    dictionary = encoded.chunk(0).dictionary
    distinct = _decimals_prepare(dictionary)
    none = len(dictionary)  # nulls point one past the distinct values
    positions = [_int_list(pc.fill_null(c.indices, none) if c.indices.null_count else c.indices)
                 for c in encoded.chunks]

    def finish() -> list[Any]:
        values = distinct()
        values.append(None)
        return [list(map(values.__getitem__, p)) for p in positions]

    return finish


def _timestamps_prepare(arr: pa.Array) -> _Finish:
    """Arrow half of ``timestamp[us, UTC]`` -> aware UTC datetimes."""
    text = _column_text(arr.cast(TS).cast(pa.timestamp("us")).cast(pa.string()), "+00:00")
    return lambda: list(map(datetime.fromisoformat, text.split("\n")))


def _pyvalues_prepare(arr: pa.Array) -> _Finish:
    """Arrow half of a string or integer column -> Python values (None for nulls)."""
    if pa.types.is_integer(arr.type):
        nulls = _null_positions(arr)
        ints = _int_list(pc.fill_null(arr, 0) if nulls else arr)
        return lambda: _with_nulls(ints, nulls)
    encoded = pc.dictionary_encode(arr)  # a few distinct symbols and sources: share them
    distinct = [*encoded.dictionary.to_pylist(), None]
    indices = encoded.indices
    positions = _int_list(pc.fill_null(indices, len(distinct) - 1) if indices.null_count
                          else indices)
    return lambda: list(map(distinct.__getitem__, positions))


def arrow_to_candles(table: pa.Table) -> list[Candle]:
    """Arrow rows (``CANDLE_SCHEMA``) -> ``Candle`` objects with tidy decimals (exact, no
    trailing zeros, no exponent form in ``to_dict``) and aware UTC timestamps."""
    n = table.num_rows
    if n == 0:
        return []
    table = table.select(list(CANDLE_COLUMNS)).cast(CANDLE_SCHEMA).combine_chunks()
    cols = {name: table[name].chunk(0) if table[name].num_chunks == 1
            else table[name].combine_chunks() for name in CANDLE_COLUMNS}
    steps: list[tuple[Callable[..., _Finish], tuple[Any, ...]]] = [
        (_decimals_prepare, (cols["volume"],)),
        (_shared_decimals_prepare, ([cols[k] for k in _PRICE_COLUMNS],)),
        (_decimals_prepare, (cols["quote_volume"],)),
        (_decimals_prepare, (cols["vwap"],)),
        (_timestamps_prepare, (cols["timestamp"],)),
        *((_pyvalues_prepare, (cols[k],))
          for k in ("symbol", "interval_minutes", "trade_count", "source")),
    ]
    if n >= _THREADED_ROWS:
        # The worker starts with the longest Arrow step while this thread does the first
        # column alone, then finishes each column as the worker hands it over.
        with ThreadPoolExecutor(1, thread_name_prefix="krakked-arrow") as pool:
            futures = [pool.submit(fn, *args) for fn, args in steps[1:]]
            first, rest = steps[0]
            done = [first(*rest)(), *(f.result()() for f in futures)]
    else:
        done = [fn(*args)() for fn, args in steps]
    volume, prices, quote_volume, vwap, stamps, symbol, minutes, count, source = done
    o, h, lo, c = prices
    return candles_from_columns(symbol, stamps, minutes, o, h, lo, c, volume, quote_volume,
                                count, vwap, source)


def as_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` relabelled/cast to ``schema`` (DuckDB marks every column nullable)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = [table.column(i).cast(schema.field(i).type)
               if not table.schema.field(i).type.equals(schema.field(i).type)
               else table.column(i) for i in range(len(schema))]
    return pa.Table.from_arrays(columns, schema=schema)


def csv_ids_in_arrow(table: pa.Table) -> pa.Table | None:
    """``table`` with the synthetic ids of its CSV rows (``store.sql.with_trade_ids``) worked
    out in Arrow — when every row is a CSV row of one symbol in time order (a batch of
    Kraken's files); None otherwise (the SQL does it)."""
    n = table.num_rows
    if (n < 2 or table["id"].null_count != n
            or pc.count_distinct(table["symbol"]).as_py() != 1):
        return None
    us = pc.cast(table["timestamp"], pa.int64()).combine_chunks()
    step = pc.subtract(us.slice(1), us.slice(0, n - 1))
    if not pc.all(pc.greater_equal(step, 0)).as_py():
        return None
    idx = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)
    starts = pa.concat_arrays([pa.array([True]), pc.not_equal(step, 0)])
    run_start = pc.cumulative_max(pc.if_else(starts, idx, 0))
    n_in_run = pc.add(pc.subtract(idx, run_start), 1)
    ids = pc.negate(pc.add(pc.multiply(us, 1000), n_in_run))
    return table.set_column(0, "id", ids)
