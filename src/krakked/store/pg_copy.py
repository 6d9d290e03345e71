"""Arrow tables in and out of PostgreSQL through ``COPY``: rows in as CSV made by Arrow (exact
decimal text, timestamps as Unix microseconds, a row ordinal), rows out as CSV parsed by Arrow
while it arrives.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = [
    "EPOCH",
    "NUM",
    "copy_in",
    "copy_into",
    "copy_out",
    "encode_csv",
    "ident",
    "select_out",
    "ts_in",
]

NUM = "numeric(38,18)"
"""The SQL type of prices and volumes."""
EPOCH = "timestamptz '1970-01-01 00:00:00+00'"
"""SQL: the Unix epoch, what ``ts_in`` counts microseconds from."""
_COPY_CHUNK = 65_536  # rows per COPY block (encoded in a thread while the previous one is sent)
_PARSE_BYTES = 4 << 20  # COPY output parsed by Arrow in pieces of about this size, while more comes


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return NUM
    if pa.types.is_timestamp(t) or pa.types.is_int64(t):
        return "bigint"  # timestamps travel as Unix microseconds
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_boolean(t):
        return "boolean"
    return "text"


def ident(name: str) -> str:
    """A quoted SQL identifier (our own column names)."""
    return f'"{name}"'


def ts_in(expr: str) -> str:
    """SQL: the ``timestamptz`` of ``expr``, Unix microseconds (how ``copy_in`` sends them)."""
    return f"({EPOCH} + {expr} * interval '1 microsecond')"


def encode_csv(table: pa.Table, first_ord: int | None) -> bytes:
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


def copy_in(cur: Any, temp: str, table: pa.Table) -> None:
    """Create temporary table ``temp`` (dropped at commit) shaped like ``table`` plus ``_ord``,
    and COPY the rows into it."""
    cols = ", ".join(f"{ident(f.name)} {_pg_type(f.type)}" for f in table.schema)
    cur.execute(f"DROP TABLE IF EXISTS {temp}")  # a second batch in one transaction
    cur.execute(f"CREATE TEMP TABLE {temp} ({cols}, _ord bigint) ON COMMIT DROP")
    _stream(cur, f"COPY {temp} FROM STDIN (FORMAT csv)", table, ordinals=True)


def copy_into(cur: Any, target: str, table: pa.Table) -> None:
    """COPY the rows of ``table`` straight into the table ``target`` (its columns named as
    ``table``'s; timestamps as ISO text)."""
    cols = ", ".join(ident(n) for n in table.column_names)
    _stream(cur, f"COPY {target} ({cols}) FROM STDIN (FORMAT csv)", table, ordinals=False)


def _stream(cur: Any, statement: str, table: pa.Table, *, ordinals: bool) -> None:
    """Send ``table`` through ``statement`` in blocks, each encoded in a thread while the
    previous one is sent."""
    if not table.num_rows:
        return
    with ThreadPoolExecutor(1) as pool, cur.copy(statement) as copy:
        pending: deque[Future[bytes]] = deque()
        for offset in range(0, table.num_rows, _COPY_CHUNK):
            pending.append(pool.submit(encode_csv, table.slice(offset, _COPY_CHUNK),
                                       offset if ordinals else None))
            if len(pending) > 2:
                copy.write(pending.popleft().result())
        while pending:
            copy.write(pending.popleft().result())


def select_out(schema: pa.Schema, alias: str = "") -> str:
    """A SELECT list in ``schema`` order for ``copy_out``: decimals without trailing zeros
    (less to send and parse; the value is unchanged)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        f"trim_scale({prefix}{ident(f.name)}) AS {ident(f.name)}" if pa.types.is_decimal(f.type)
        else f"{prefix}{ident(f.name)}"
        for f in schema
    )


def copy_out(cur: Any, query: str, params: Sequence[Any] | dict[str, Any],
              schema: pa.Schema) -> pa.Table:
    """Run ``query`` (columns as ``select_out`` gives them) through ``COPY … TO STDOUT`` and
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
