"""Reading one of Kraken's CSV files exactly, fast and in constant memory: the layout sniffed
from its first lines, rows parsed by pyarrow's multi-threaded CSV reader into exact types
(prices and volumes ``decimal128(38, 18)``: "0.1" stays 0.1), checked column-wise, and handed
on as clean Arrow batches in file order.

Layouts (``sniff``): OHLCVT ``timestamp,open,high,low,close,volume,trades`` (no header);
time and sales ``timestamp,price,volume`` (no header, Unix seconds, possibly fractional); the
quarterly variant with a header ``price,volume,timestamp,side,ordertype,misc,trade_id`` (side
``b``/``s``, ordertype ``m``/``l``, Kraken's trade ids kept as ids). A header naming these
columns in another order is read by name.

A row is bad when it cannot be parsed (wrong number of fields, not a number, more than 18
decimal places, out of ``DECIMAL(38,18)``), misses a value, has a non-positive price, a negative
volume or count, a timestamp that is not a Unix time in seconds from 2001 to now (for OHLCVT,
not the start of its interval), a side or order type Kraken does not write, or goes back in
time (trades: an earlier second than the previous row; OHLCVT: an open time not after the
previous row's). Blank lines at the end of a file are ignored. Line numbers are physical,
1-based (a header is line 1).

The fast path streams the file through ``pyarrow.csv.open_csv``; a row pyarrow cannot parse
stops that reader without saying where, so the file is then read again the careful way (chunks
of lines parsed with ``read_csv``, a failing chunk bisected down to its bad lines), which names
every bad line and can skip them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from krakked.errors import ImportFormatError
from krakked.market.candles import from_epoch_us, timeframe_name
from krakked.store.arrow import DECIMAL, TS

__all__ = [
    "BadLine",
    "FileScan",
    "Layout",
    "RowChecker",
    "read_careful",
    "read_fast",
    "sniff",
]

TRADE_CLEAN = pa.schema([("timestamp", TS), ("price", DECIMAL), ("volume", DECIMAL)])
TRADE_CLEAN_IDS = pa.schema([("timestamp", TS), ("price", DECIMAL), ("volume", DECIMAL),
                             ("id", pa.int64()), ("side", pa.string()),
                             ("order_type", pa.string()), ("misc", pa.string())])
CANDLE_CLEAN = pa.schema([("timestamp", TS), ("open", DECIMAL), ("high", DECIMAL),
                          ("low", DECIMAL), ("close", DECIMAL), ("volume", DECIMAL),
                          ("trade_count", pa.int64())])
"""The clean batches ``RowChecker`` hands on (timestamps as ``timestamp[us, UTC]``)."""

MIN_SECONDS = 1_000_000_000
"""2001-09-09: the earliest Unix time (seconds) taken as one. Kraken opened in 2013; a smaller
value is milliseconds' or garbage's."""

ALL_BAD = 1000
"""With ``skip_bad``, a file whose first this many rows are all bad is stopped all the same."""

_MAX_DECIMAL = Decimal("99999999999999999999.999999999999999999")  # DECIMAL(38,18)'s largest
_US = 1_000_000
_TS_DECIMAL = DECIMAL  # fractional Unix seconds, exact to 18 places, rounded to the µs

# Canonical column names, and how a file's header (or an error message) names them.
_FILE_NAMES = {"timestamp": "timestamp", "price": "price", "volume": "volume", "side": "side",
               "order_type": "ordertype", "misc": "misc", "id": "trade_id", "open": "open",
               "high": "high", "low": "low", "close": "close", "trade_count": "trades"}
_HEADER_ALIASES = {
    **{v: k for k, v in _FILE_NAMES.items()}, **{k: k for k in _FILE_NAMES},
    "time": "timestamp", "amount": "volume", "qty": "volume", "type": "order_type",
    "tradeid": "id", "count": "trade_count",
}
_TYPES: dict[str, pa.DataType] = {
    "price": DECIMAL, "volume": DECIMAL, "open": DECIMAL, "high": DECIMAL, "low": DECIMAL,
    "close": DECIMAL, "trade_count": pa.int64(), "id": pa.int64(), "side": pa.string(),
    "order_type": pa.string(), "misc": pa.string(),
}
_OHLCVT = ("timestamp", "open", "high", "low", "close", "volume", "trade_count")
_TRADES = ("timestamp", "price", "volume")
_TRADES_IDS = ("price", "volume", "timestamp", "side", "order_type", "misc", "id")
_STRINGS = frozenset({"side", "order_type", "misc"})
_PRICES = frozenset({"price", "open", "high", "low", "close"})
_SIDES = {"b": "buy", "s": "sell", "buy": "buy", "sell": "sell"}
_ORDER_TYPES = {"m": "market", "l": "limit", "market": "market", "limit": "limit"}


@dataclass(frozen=True)
class Layout:
    """How a file's columns read: ``columns`` holds the canonical name of each field in file
    order ("" for a field not used), ``header`` whether line 1 names them, ``fractional``
    whether timestamps may carry a fraction (parsed as exact decimals, not integers)."""

    kind: str  # "trades" | "candles"
    columns: tuple[str, ...]
    header: bool = False
    fractional: bool = False

    @property
    def has_ids(self) -> bool:
        return "id" in self.columns

    @property
    def name(self) -> str:
        if self.kind == "candles":
            return "ohlcvt"
        return "time-and-sales with ids" if self.has_ids else "time-and-sales"

    @property
    def used(self) -> list[str]:
        return [c for c in self.columns if c]

    def read_names(self) -> list[str]:
        """Column names for pyarrow (unique; unused fields get a placeholder)."""
        return [c or f"_unused{i}" for i, c in enumerate(self.columns)]

    def file_name(self, index: int) -> str:
        """How the file calls field ``index`` (0-based), for messages."""
        if 0 <= index < len(self.columns) and self.columns[index]:
            return _FILE_NAMES[self.columns[index]]
        return f"field {index + 1}"


def _looks_like_time(text: str) -> bool:
    try:
        return float(text) >= MIN_SECONDS
    except ValueError:
        return False


def sniff(first_lines: list[bytes], kind: str, display: str) -> Layout:
    """The layout of a file of ``kind`` (``trades`` or ``candles``) from its first lines (at
    most two, newline stripped); ``ImportFormatError`` naming line 1 when no layout fits."""
    text = first_lines[0].decode("utf-8", "replace").lstrip("\ufeff").strip()
    fields = [f.strip() for f in text.split(",")]
    names = [_HEADER_ALIASES.get(re.sub(r"\(.*\)$", "", f).strip().lower(), "")
             for f in fields]
    if any(names):  # a header
        if kind == "candles" and any(n in ("price", "side", "id") for n in names):
            raise ImportFormatError(f"the header {text[:120]!r} is a trades file's, but the "
                                    "name says OHLCVT (<PAIR>_<interval>.csv)",
                                    path=display, line=1)
        required = _TRADES if kind == "trades" else _OHLCVT[:-1]
        missing = [_FILE_NAMES[c] for c in required if c not in names]
        if missing:
            raise ImportFormatError(f"the header {text[:120]!r} lacks {', '.join(missing)}",
                                    path=display, line=1)
        doubled = sorted({_FILE_NAMES[n] for n in names if n and names.count(n) > 1})
        if doubled:
            raise ImportFormatError(f"the header names {', '.join(doubled)} twice",
                                    path=display, line=1)
        data = (first_lines[1].decode("utf-8", "replace").strip().split(",")
                if len(first_lines) > 1 else [])
        index = names.index("timestamp")
        return Layout(kind, tuple(names), header=True, fractional=kind == "trades" and (
            index < len(data) and not data[index].strip().isdigit()))
    if kind == "candles":
        if len(fields) != len(_OHLCVT):
            raise ImportFormatError(
                f"expected 7 fields (timestamp,open,high,low,close,volume,trades), got "
                f"{len(fields)}", path=display, line=1)
        return Layout("candles", _OHLCVT)
    if len(fields) == len(_TRADES):
        return Layout("trades", _TRADES, fractional=not fields[0].isdigit())
    if len(fields) == len(_TRADES_IDS) and _looks_like_time(fields[2]) \
            and not _looks_like_time(fields[0]):
        return Layout("trades", _TRADES_IDS, fractional=not fields[2].isdigit())
    raise ImportFormatError(
        f"expected 3 fields (timestamp,price,volume) or a header naming price,volume,"
        f"timestamp[,side,ordertype,misc,trade_id], got {len(fields)} fields",
        path=display, line=1)


# -- parsing -------------------------------------------------------------------------------------


def _options(layout: Layout, decimal_time: bool, *, block_size: int = 1 << 22,
             skip_header: bool = True) -> dict[str, object]:
    types = {name: _TYPES.get(name) for name in layout.used}
    types["timestamp"] = _TS_DECIMAL if decimal_time else pa.int64()
    return {
        "read_options": pcsv.ReadOptions(
            column_names=layout.read_names(), block_size=block_size, use_threads=True,
            skip_rows=1 if (layout.header and skip_header) else 0),
        "parse_options": pcsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
        "convert_options": pcsv.ConvertOptions(
            column_types=types, include_columns=layout.used, null_values=[""],
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    }


def read_fast(stream: BinaryIO, layout: Layout, decimal_time: bool
              ) -> Iterator[tuple[pa.Table, int]]:
    """The file's rows as (table, line of its first row), streamed by pyarrow's threaded
    reader; ``pa.ArrowInvalid`` (with no line) when a row cannot be parsed."""
    reader = pcsv.open_csv(stream, **_options(layout, decimal_time))  # type: ignore[arg-type]
    line = 2 if layout.header else 1
    for batch in reader:
        yield pa.Table.from_batches([batch]), line
        line += batch.num_rows


@dataclass(frozen=True)
class BadLine:
    """A line the careful reader could not parse, and why."""

    line: int
    reason: str


_COLUMN = re.compile(r"In CSV column #(\d+): (.*)", re.S)
_FIELDS = re.compile(r"Expected (\d+) columns, got (\d+)")
_VALUE = re.compile(r"'([^']*)'")


def parse_reason(exc: Exception, layout: Layout, text: bytes) -> str:
    """Arrow's error for one line -> a short reason naming the field and value."""
    message = str(exc).strip()
    shown = text.decode("utf-8", "replace").strip()
    excerpt = shown if len(shown) <= 80 else shown[:77] + "..."
    fields = _FIELDS.search(message)
    if fields:
        return f"expected {fields.group(1)} fields, got {fields.group(2)} ({excerpt!r})"
    column = _COLUMN.search(message)
    if column is None:
        return f"{message.splitlines()[0]} ({excerpt!r})"
    name, detail = layout.file_name(int(column.group(1))), column.group(2)
    value = _VALUE.search(detail)
    quoted = f" {value.group(1)!r}" if value else ""
    if "Rescaling" in detail:
        return f"{name} has more than 18 decimal places ({excerpt!r})"
    if "precision not supported" in detail:
        return f"{name}{quoted} does not fit DECIMAL(38,18) (at most 20 digits before the point)"
    if "decimal" in detail:
        return f"{name}{quoted} is not a decimal number"
    if "int64" in detail:
        return f"{name}{quoted} is not a whole number"
    return f"{name}: {detail.splitlines()[0]}"


def read_careful(stream: BinaryIO, layout: Layout, *, chunk_bytes: int = 1 << 22
                 ) -> Iterator[tuple[pa.Table, int] | BadLine]:
    """The file's rows as (table, line of its first row) in file order, with a ``BadLine`` in
    place of each line that cannot be parsed (timestamps read as decimals)."""
    options = _options(layout, True, skip_header=False)
    line = 1
    rest = b""
    if layout.header:
        while b"\n" not in rest:
            more = stream.read(chunk_bytes)
            if not more:
                break
            rest += more
        rest = rest.split(b"\n", 1)[1] if b"\n" in rest else b""
        line = 2
    while True:
        more = stream.read(chunk_bytes)
        if more:
            data = rest + more
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
        else:
            data, rest = rest, b""
            if data and not data.endswith(b"\n"):
                data += b"\n"
        if data:
            yield from _parse_lines(data, line, layout, options)
            line += data.count(b"\n")
        if not more:
            return


def _parse_lines(data: bytes, line: int, layout: Layout, options: dict[str, object]
                 ) -> Iterator[tuple[pa.Table, int] | BadLine]:
    """Parse ``data`` (whole lines) as one table, else bisect it down to its bad lines."""
    try:
        yield pcsv.read_csv(pa.py_buffer(data), **options), line  # type: ignore[arg-type]
        return
    except pa.ArrowInvalid as exc:
        lines = data.split(b"\n")[:-1]
        if len(lines) == 1:
            yield BadLine(line, parse_reason(exc, layout, lines[0]))
            return
    half = len(lines) // 2
    yield from _parse_lines(b"\n".join(lines[:half]) + b"\n", line, layout, options)
    yield from _parse_lines(b"\n".join(lines[half:]) + b"\n", line + half, layout, options)


# -- checking ------------------------------------------------------------------------------------


@dataclass
class FileScan:
    """What checking a file found: rows read (bad ones included, blank lines at the end not),
    bad rows (their count and the first few lines and reasons), the first and last good
    timestamps (epoch µs) and the holes the bad rows leave (``[from, until)`` epoch µs, None
    for an open end) that coverage must leave out."""

    rows: int = 0
    bad: int = 0
    samples: list[BadLine] = field(default_factory=list)
    first_us: int | None = None
    last_us: int | None = None
    holes: list[tuple[int | None, int | None]] = field(default_factory=list)

    SAMPLES = 10


Check = tuple[pa.Array, Callable[[int], str]]


class RowChecker:
    """Checks parsed rows in file order and converts the good ones to clean batches
    (``TRADE_CLEAN``, ``TRADE_CLEAN_IDS`` or ``CANDLE_CLEAN``). With ``skip_bad`` bad rows are
    counted (``scan``) and left out; without, the first one raises ``ImportFormatError``
    naming the file, line and reason."""

    def __init__(self, layout: Layout, display: str, *, interval: int | None,
                 max_seconds: int, skip_bad: bool) -> None:
        self.layout = layout
        self.display = display
        self.interval = interval
        self.max_seconds = max_seconds
        self.skip_bad = skip_bad
        self.scan = FileScan()
        self._prev = -1  # the last good row's second (trades) or open time (candles)
        self._hole_open = False
        self._hole_from: int | None = None
        self._blank: list[int] = []  # blank lines not yet known to be followed by a row

    def add(self, table: pa.Table, line: int) -> pa.Table | None:
        """Check ``table`` (its first row on ``line``); its good rows, clean, or None."""
        n = table.num_rows
        if n == 0:
            return None
        quick = self._all_good(table)
        if quick is not None:  # the usual case: column aggregates say every row is good
            micros, key = quick
            self.scan.rows += n
            if self._blank or self._hole_open:
                self._good_row(key[0].as_py())
            self._prev = key[n - 1].as_py()
            return self._finish_clean(self._clean(table, micros))
        micros, key, blank, checks = self._checks(table)
        other = pc.or_(blank, _any([mask for mask, _ in checks]))
        running = pc.cumulative_max(pc.if_else(other, pa.scalar(self._prev, pa.int64()), key))
        before = pa.concat_arrays([pa.array([self._prev], pa.int64()),
                                   running.slice(0, n - 1)])
        back = (pc.less(key, before) if self.layout.kind == "trades"
                else pc.less_equal(key, before))
        back = pc.and_(pc.invert(other), pc.fill_null(back, False))
        checks.append((back, lambda i: self._back_reason(key[i].as_py(), before[i].as_py())))
        bad = pc.or_(other, back)
        skipped = pc.or_(bad, blank)
        any_skipped = pc.any(skipped).as_py()
        self.scan.rows += n
        if any_skipped:
            self._note(pc.indices_nonzero(skipped).to_pylist(), n, line, blank, checks, key,
                       before)
        elif self._blank or self._hole_open:
            self._good_row(key[0].as_py())
        self._prev = max(self._prev, running[n - 1].as_py())
        clean = self._clean(table, micros)
        if any_skipped:
            clean = clean.filter(pc.invert(skipped))
        return self._finish_clean(clean)

    def _finish_clean(self, clean: pa.Table) -> pa.Table | None:
        if clean.num_rows == 0:
            return None
        stamps = clean["timestamp"]
        if self.scan.first_us is None:
            self.scan.first_us = _us(stamps[0])
        self.scan.last_us = _us(stamps[clean.num_rows - 1])
        return clean

    def _all_good(self, table: pa.Table) -> tuple[pa.Array, pa.Array] | None:
        """(µs, keys) when every row of ``table`` is good, judged from a few column
        aggregates (no per-row mask); None when a row may be bad."""
        cols = {name: _array(table[name]) for name in table.column_names}
        if any(col.null_count for col in cols.values()):
            return None
        ts = cols["timestamp"]
        if pa.types.is_decimal(ts.type):  # fractional seconds, rounded to the µs
            micros, in_range = self._micros(ts)
            if not pc.all(in_range).as_py():
                return None
            key = pc.divide(micros, _US)
        else:
            span = pc.min_max(ts).as_py()
            if span["min"] < MIN_SECONDS or span["max"] > self.max_seconds:
                return None
            micros, key = pc.multiply(ts, _US), ts
        n = len(key)
        first = key[0].as_py()
        if first < self._prev or (self.layout.kind == "candles" and first == self._prev):
            return None
        if n > 1:
            least = pc.min(pc.subtract(key.slice(1), key.slice(0, n - 1))).as_py()
            if least < 0 or (self.layout.kind == "candles" and least == 0):
                return None
        if self.layout.kind == "candles":
            width = self.interval * 60  # type: ignore[operator]
            whole = pc.equal(pc.multiply(key, _US), micros)
            aligned = pc.equal(pc.multiply(pc.divide(key, width), width), key)
            if not pc.all(pc.and_(whole, aligned)).as_py():
                return None
        for name, col in cols.items():
            if name == "timestamp" or name in _STRINGS:
                continue
            bounds = pc.min_max(col).as_py()
            low = bounds["min"]
            if (low <= 0) if name in _PRICES else (low < 0):
                return None
            if pa.types.is_decimal(col.type) and bounds["max"] > _MAX_DECIMAL:
                return None
        for name, allowed in (("side", _SIDES), ("order_type", _ORDER_TYPES)):
            if name in cols and not pc.all(
                    pc.is_in(cols[name], value_set=pa.array(list(allowed)))).as_py():
                return None
        return micros, key

    def bad_line(self, bad: BadLine) -> None:
        """A line the careful reader could not parse."""
        self.scan.rows += 1
        self._bad(bad.line, bad.reason, self._prev)

    def finish(self) -> FileScan:
        """End of file: blank lines still pending were trailing ones (not rows); a hole still
        open runs to the end."""
        self.scan.rows -= len(self._blank)
        self._blank = []
        if self._hole_open:
            self.scan.holes.append((self._hole_from, None))
            self._hole_open = False
        return self.scan

    # bad rows and the holes they leave ------------------------------------------------------

    def _note(self, indices: list[int], n: int, line: int, blank: pa.Array,
              checks: list[Check], key: pa.Array, before: pa.Array) -> None:
        previous = -1
        for i in indices:
            if i > previous + 1:  # good rows came in between
                self._good_row(key[previous + 1].as_py())
            previous = i
            if blank[i].as_py():
                self._blank.append(line + i)
                continue
            reason = next(why(i) for mask, why in checks if mask[i].as_py())
            self._bad(line + i, reason, before[i].as_py())
        if previous < n - 1:
            self._good_row(key[previous + 1].as_py())

    def _good_row(self, key: int) -> None:
        """A good row (``key``) follows: pending blank lines were bad, an open hole ends."""
        self._flush_blank()
        if self._hole_open:
            end = (key + 1) * _US if self.layout.kind == "trades" else key * _US
            start = self._hole_from
            self._hole_open = False
            if start is None or start < end:
                self.scan.holes.append((start, end))

    def _bad(self, line: int, reason: str, prev: int) -> None:
        self._flush_blank()
        self._record(line, reason)
        if not self._hole_open:  # the bad row's trade lies after the last good one
            self._hole_open = True
            if prev < 0:
                self._hole_from = None
            elif self.layout.kind == "trades":
                self._hole_from = prev * _US
            else:
                self._hole_from = (prev + self.interval * 60) * _US  # type: ignore[operator]

    def _flush_blank(self) -> None:
        pending, self._blank = self._blank, []
        for line in pending:
            self._record(line, "empty line")

    def _record(self, line: int, reason: str) -> None:
        if not self.skip_bad:
            raise ImportFormatError(f"{reason} (--skip-bad skips and counts bad rows)",
                                    path=self.display, line=line)
        self.scan.bad += 1
        if len(self.scan.samples) < FileScan.SAMPLES:
            self.scan.samples.append(BadLine(line, reason))
        if self.scan.bad >= ALL_BAD and self.scan.first_us is None and self._prev < 0:
            raise ImportFormatError(
                f"the first {ALL_BAD} rows are all bad (the first: line "
                f"{self.scan.samples[0].line}, {self.scan.samples[0].reason}): is this a "
                f"Kraken {'OHLCVT' if self.layout.kind == 'candles' else 'time-and-sales'} "
                "file?", path=self.display, line=line)

    def _back_reason(self, key: int, before: int) -> str:
        was = from_epoch_us(before * _US).isoformat()
        now = from_epoch_us(key * _US).isoformat()
        if self.layout.kind == "trades":
            return f"time goes back: second {now} after {was}"
        return f"open time {now} is not after the previous row's {was}"

    # the checks -------------------------------------------------------------------------------

    def _checks(self, table: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array, list[Check]]:
        """(timestamps in µs, key seconds, blank-line mask, [(mask, reason of row i)...] in
        order of precedence); masks hold no nulls; µs and keys are only meaningful where
        no mask is set."""
        cols = {name: _array(table[name]) for name in table.column_names}
        numeric = [c for c in cols if c not in _STRINGS]
        blank = _all([pc.is_null(cols[c]) for c in numeric]
                     + [pc.equal(pc.binary_length(cols[c]), 0) for c in cols if c in _STRINGS])
        checks: list[Check] = [
            (pc.and_(pc.is_null(cols[c]), pc.invert(blank)),
             lambda i, c=c: f"no {_FILE_NAMES[c]} value") for c in numeric]
        ts = cols["timestamp"]
        micros, in_range = self._micros(ts)
        checks.append((pc.and_(pc.is_valid(ts), pc.invert(in_range)), lambda i: (
            f"timestamp {_text(ts[i])} is not a Unix time in seconds between 2001 and now")))
        key = pc.divide(micros, _US)
        if self.layout.kind == "candles":
            width = self.interval * 60  # type: ignore[operator]
            exact = pc.equal(pc.multiply(key, _US), micros)
            aligned = pc.and_(exact, pc.equal(pc.multiply(pc.divide(key, width), width), key))
            checks.append((pc.and_(in_range, pc.invert(aligned)), lambda i: (
                f"timestamp {_text(ts[i])} is not the start of a "
                f"{timeframe_name(self.interval)} interval")))  # type: ignore[arg-type]
        zero = pa.scalar(Decimal(0), DECIMAL)
        for c in numeric:
            col = cols[c]
            if c == "timestamp":
                continue
            if c in _PRICES:
                checks.append((pc.fill_null(pc.less_equal(col, zero), False),
                               lambda i, c=c, v=col: f"{_FILE_NAMES[c]} {_text(v[i])} is not "
                                                     "positive"))
            else:
                low = zero if pa.types.is_decimal(col.type) else 0
                checks.append((pc.fill_null(pc.less(col, low), False),
                               lambda i, c=c, v=col: f"{_FILE_NAMES[c]} {_text(v[i])} is "
                                                     "negative"))
            if pa.types.is_decimal(col.type):
                too_big = pc.greater(col, pa.scalar(_MAX_DECIMAL, DECIMAL))
                checks.append((pc.fill_null(too_big, False), lambda i, c=c, v=col: (
                    f"{_FILE_NAMES[c]} {_text(v[i])} does not fit DECIMAL(38,18) (at most 20 "
                    "digits before the point)")))
        for c, allowed in (("side", _SIDES), ("order_type", _ORDER_TYPES)):
            if c in cols:
                wrong = pc.invert(pc.is_in(cols[c], value_set=pa.array(list(allowed))))
                codes = " or ".join(k for k in allowed if len(k) == 1)
                checks.append((pc.and_(wrong, pc.invert(blank)), lambda i, c=c, codes=codes: (
                    f"{_FILE_NAMES[c]} {cols[c][i].as_py()!r} is not {codes}")))
        return micros, key, blank, checks

    def _micros(self, ts: pa.Array) -> tuple[pa.Array, pa.Array]:
        """Unix seconds (integer or decimal) -> (epoch µs, rounded half-even; in-range mask)."""
        low, high = MIN_SECONDS, self.max_seconds
        if pa.types.is_decimal(ts.type):
            lo, hi = pa.scalar(Decimal(low), DECIMAL), pa.scalar(Decimal(high), DECIMAL)
            in_range = pc.fill_null(pc.and_(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)),
                                    False)
            safe = pc.if_else(in_range, ts, lo)  # in range: at most 10 digits before the point
            rounded = pc.round(safe, 6).cast(pa.decimal128(20, 6))
            scaled = pc.multiply(rounded, pa.scalar(Decimal(_US), pa.decimal128(7, 0)))
            return pc.cast(scaled, pa.int64()), in_range
        in_range = pc.fill_null(pc.and_(pc.greater_equal(ts, low), pc.less_equal(ts, high)),
                                False)
        return pc.multiply(pc.if_else(in_range, ts, low), _US), in_range

    def _clean(self, table: pa.Table, micros: pa.Array) -> pa.Table:
        stamps = micros.cast(TS)
        if self.layout.kind == "candles":
            return pa.table([stamps, *(_array(table[c]) for c in _OHLCVT[1:])],
                            schema=CANDLE_CLEAN)
        price, volume = _array(table["price"]), _array(table["volume"])
        if not self.layout.has_ids:
            return pa.table([stamps, price, volume], schema=TRADE_CLEAN)
        n, names = table.num_rows, table.column_names
        side = _mapped(table["side"], _SIDES) if "side" in names else pa.nulls(n, pa.string())
        order = (_mapped(table["order_type"], _ORDER_TYPES) if "order_type" in names
                 else pa.nulls(n, pa.string()))
        misc = _array(table["misc"]) if "misc" in names else pa.nulls(n, pa.string())
        return pa.table([stamps, price, volume, _array(table["id"]), side, order, misc],
                        schema=TRADE_CLEAN_IDS)


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _any(masks: list[pa.Array]) -> pa.Array:
    out = masks[0]
    for m in masks[1:]:
        out = pc.or_(out, m)
    return out


def _all(masks: list[pa.Array]) -> pa.Array:
    out = masks[0]
    for m in masks[1:]:
        out = pc.and_(out, m)
    return out


def _mapped(column: pa.ChunkedArray, mapping: dict[str, str]) -> pa.Array:
    values = _array(column)
    keys = pa.array(list(mapping))
    return pc.take(pa.array(list(mapping.values())), pc.index_in(values, value_set=keys))


def _text(scalar: pa.Scalar) -> str:
    value = scalar.as_py()
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _us(scalar: pa.Scalar) -> int:
    return int(scalar.cast(pa.int64()).as_py())
