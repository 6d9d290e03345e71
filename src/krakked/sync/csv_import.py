"""Kraken's downloadable CSV files into the market store: time and sales as trades, OHLCVT as
candles (``source='csv'``), from files, directories or zip archives, in constant memory.

How a file goes in:

1. **Checked whole, first.** Its rows are parsed (``csv_parse``: exact decimals, pyarrow's
   threaded reader) and checked; the clean batches wait in a spool (memory, then an Arrow file
   in the temporary directory: 40 bytes a trade, about 1.3 times the CSV's size, deleted
   when the file is done). A bad row stops the file
   with ``ImportFormatError`` (file, line, reason) before anything of it is written; with
   ``skip_bad`` bad rows are left out and counted, and the first few line numbers reported.
2. **Written in batches** of about ``batch_size`` rows, each in one store transaction with its
   ``data_sync_status`` row and the coverage it vouches for. A batch of trades never splits
   one second of the pair (its tail second goes to the next batch), because the store numbers
   id-less CSV trades by their position within their second in the batch: re-importing a file,
   or overlapping quarterly files, therefore stores nothing twice. So a batch may be a little
   shorter than ``batch_size`` or, when a single second holds more rows, longer.

Coverage (what the store may build candles from and what ``gaps`` reports): a trades batch
vouches for the seconds from its first to the next batch's first; the file's last batch stops
before the file's last second, which the file may hold only in part (a file cut inside a
second; the API backfill resumes inside it). An OHLCVT file vouches for every interval from its
first row's to its last row's (Kraken writes rows only for intervals with trades). Seconds
(intervals) next to a skipped bad row are left out of the coverage.

Trades from time-and-sales files carry no id (``id`` None, ``side`` None): the store
reconciles them with API trades (see ``store.duckdb``). The quarterly 7-column files carry
Kraken's trade ids, side and order type: stored as such.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from krakked.errors import ImportFormatError, UnknownPairError, UsageError
from krakked.market.candles import from_epoch_us, timeframe_name
from krakked.store.arrow import CANDLE_SCHEMA, TRADE_SCHEMA
from krakked.store.base import Coverage, MarketStore, SyncUpdate, TradeCoverage
from krakked.sync.csv_parse import (
    BadLine,
    FileScan,
    Layout,
    RowChecker,
    read_careful,
    read_fast,
    sniff,
)
from krakked.sync.csv_results import (
    FileResult,
    ImportProgress,
    ImportResult,
    ProgressCallback,
    SkippedFiles,
)
from krakked.sync.csv_sources import OHLCVT_INTERVALS, CsvSource, find_sources, parse_name

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FileResult",
    "ImportProgress",
    "ImportResult",
    "ProgressCallback",
    "SkippedFiles",
    "check_file",
    "import_csv",
    "import_file",
    "import_source",
]

log = logging.getLogger("krakked.sync.csv_import")

DEFAULT_BATCH_SIZE = 1_000_000
"""Rows per write transaction (``--batch-size``). Measured on a busy 2-core machine importing
5 M trades into DuckDB: 1 M-row batches 8.8 s at 0.54 GB peak RSS, 2 M 10.0 s at 0.87 GB, 5 M
8.4 s at 1.32 GB (a write holds a few copies of its batch): bigger batches buy little speed
and cost memory; 20 M trades at 1 M a batch peaked at 0.61 GB."""

_US = 1_000_000
_SPOOL_MEMORY = 64 << 20  # clean batches kept in memory up to this many bytes, then on disk


# -- the spool -----------------------------------------------------------------------------------


class Spool:
    """A checked file's clean batches, kept until the whole file has been checked: in memory
    up to ``memory_bytes``, past that in an Arrow stream file in the temporary directory
    (``TMPDIR``), deleted when closed."""

    def __init__(self, schema: pa.Schema, memory_bytes: int = _SPOOL_MEMORY) -> None:
        self.schema = schema
        self.memory_bytes = memory_bytes
        self.rows = 0
        self._tables: list[pa.Table] = []
        self._bytes = 0
        self._path: str | None = None
        self._writer: Any = None
        self._sink: Any = None

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self._writer is None:
            self._tables.append(table)
            self._bytes += table.nbytes
            if self._bytes <= self.memory_bytes:
                return
            fd, self._path = tempfile.mkstemp(prefix="krakked-csv-", suffix=".arrows")
            os.close(fd)
            self._sink = pa.OSFile(self._path, "wb")
            # uncompressed: LZ4 would halve the file but cost 0.2 s per 5 M rows
            self._writer = ipc.new_stream(self._sink, self.schema)
            tables, self._tables = self._tables, []
            for t in tables:
                self._writer.write_table(t)
            return
        self._writer.write_table(table)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The batches in the order added (once)."""
        if self._writer is None:
            tables, self._tables = self._tables, []
            for t in tables:
                yield from t.to_batches()
            return
        self._writer.close()
        self._sink.close()
        self._writer = None
        with pa.OSFile(self._path) as source:
            yield from ipc.open_stream(source)

    def close(self) -> None:
        self._tables = []
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading one file ----------------------------------------------------------------------------


class _Stream:
    """A file's binary stream without its UTF-8 byte-order mark, counting the bytes read."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0
        self._start = True

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        if self._start and data:
            self._start = False
            if data.startswith(_BOM):
                data = data[len(_BOM):] or self.read(size)
        return data

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(self.stream.closed)

    def close(self) -> None:
        self.stream.close()


_BOM = b"\xef\xbb\xbf"
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _first_lines(source: CsvSource) -> list[bytes] | None:
    """The file's first two lines (``\r`` stripped), None for an empty file."""
    with source.open() as raw:
        head = _Stream(raw).read(1 << 16)
    if not head:
        return None
    return [line.rstrip(b"\r") for line in head.split(b"\n")[:2]]


def check_file(source: CsvSource, kind: str, interval: int | None, *, skip_bad: bool = False,
               max_seconds: int | None = None, on_bytes: Callable[[int], None] | None = None
               ) -> tuple[Layout, FileScan, Spool] | None:
    """Read and check the whole file (``kind`` ``trades`` or ``candles``): its layout, what
    the check found and the clean batches (the caller closes the spool); None for an empty
    file. A bad row raises ``ImportFormatError`` unless ``skip_bad``. Rows are read by the
    fast reader, once more with decimal timestamps if integer seconds did not parse, else
    by the careful one. ``max_seconds``: the latest Unix time accepted (default: now + 1
    day); ``on_bytes(n)``: bytes read so far."""
    try:
        lines = _first_lines(source)
    except _READ_ERRORS as exc:
        raise ImportFormatError(f"cannot be read ({exc})", path=source.display) from None
    if lines is None:
        return None
    if not lines[0].strip():
        raise ImportFormatError("empty line", path=source.display, line=1)
    layout = sniff(lines, kind, source.display)
    if max_seconds is None:
        max_seconds = int((datetime.now(UTC) + timedelta(days=1)).timestamp())
    attempts: list[tuple[str, bool]] = [("fast", layout.fractional)]
    if layout.kind == "trades" and not layout.fractional:
        attempts.append(("fast", True))
    attempts.append(("careful", True))
    for mode, decimal_time in attempts:
        checker = RowChecker(layout, source.display, interval=interval,
                             max_seconds=max_seconds, skip_bad=skip_bad)
        spool = Spool(_clean_schema(layout))
        try:
            with source.open() as raw:
                stream = _Stream(raw)
                pieces: Iterator[tuple[pa.Table, int] | BadLine] = (
                    read_fast(stream, layout, decimal_time) if mode == "fast"  # type: ignore[arg-type]
                    else read_careful(stream, layout))  # type: ignore[arg-type]
                while True:
                    try:  # only the reader's own errors mean "a row did not parse"
                        piece = next(pieces, None)
                    except pa.ArrowInvalid as exc:
                        log.debug("%s: the %s reader stopped (%s)", source.display, mode, exc)
                        break
                    if piece is None:
                        return layout, checker.finish(), spool
                    if isinstance(piece, BadLine):
                        checker.bad_line(piece)
                    else:
                        clean = checker.add(*piece)
                        if clean is not None:
                            spool.add(clean)
                    if on_bytes is not None:
                        on_bytes(stream.count)
            spool.close()
        except _READ_ERRORS as exc:
            spool.close()
            raise ImportFormatError(f"cannot be read ({exc})", path=source.display) from None
        except BaseException:
            spool.close()
            raise
    raise AssertionError("the careful reader does not raise ArrowInvalid")  # pragma: no cover


# -- writing -------------------------------------------------------------------------------------


def _minus(start: int, end: int, holes: Sequence[tuple[int | None, int | None]]
           ) -> list[tuple[int, int]]:
    """``[start, end)`` without the ``holes`` (None = unbounded), as ranges."""
    pieces = [(start, end)] if start < end else []
    for lo, hi in holes:
        lo = start if lo is None else lo
        hi = end if hi is None else hi
        out = []
        for a, b in pieces:
            if hi <= a or lo >= b:
                out.append((a, b))
                continue
            if a < lo:
                out.append((a, lo))
            if hi < b:
                out.append((hi, b))
        pieces = out
    return pieces


def _seconds(table: pa.Table) -> pa.Array:
    return pc.divide(pc.cast(table["timestamp"], pa.int64()), _US).combine_chunks()


def _trade_batches(batches: Iterable[pa.RecordBatch], size: int
                   ) -> Iterator[tuple[pa.Table, int | None]]:
    """Write batches of about ``size`` rows, cut between seconds, each with the first second
    (epoch µs) of the next one (None for the last)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows > size:
            table = pa.Table.from_batches(pending)
            seconds = _seconds(table)
            cut_second = seconds[size].as_py()
            cut = pc.sum(pc.less(seconds, cut_second)).as_py() or 0
            if cut == 0:  # one second holds more than ``size`` rows: it goes whole
                cut = pc.sum(pc.less_equal(seconds, cut_second)).as_py() or 0
                if cut >= rows:
                    break  # the second may go on in the next batch
            yield table.slice(0, cut), seconds[cut].as_py() * _US
            rest = table.slice(cut)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending), None


def _trades_table(clean: pa.Table, symbol: str) -> pa.Table:
    n = clean.num_rows
    names = clean.column_names

    def col(name: str, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
        return clean[name] if name in names else pa.nulls(n, kind)

    return pa.table([
        col("id", pa.int64()), pa.repeat(pa.scalar(symbol), n), clean["timestamp"],
        clean["price"], clean["volume"], col("side", pa.string()),
        col("order_type", pa.string()), col("misc", pa.string()), pa.repeat(pa.scalar("csv"), n),
    ], schema=TRADE_SCHEMA)


def _write_trades(store: MarketStore, symbol: str, spool: Spool, scan: FileScan,
                  batch_size: int, build_candles: bool, on_rows: Callable[[int, int], None]
                  ) -> int:
    stored = written = 0
    last_second = (scan.last_us // _US * _US) if scan.last_us is not None else 0
    for table, next_first in _trade_batches(spool.batches(), batch_size):
        start = pc.min(table["timestamp"]).cast(pa.int64()).as_py() // _US * _US
        end = next_first if next_first is not None else last_second
        coverage = [TradeCoverage(symbol, from_epoch_us(a), from_epoch_us(b))
                    for a, b in _minus(start, end, scan.holes)]
        stored += store.upsert_trades(_trades_table(table, symbol),
                                      sync=[SyncUpdate(symbol, "trades")],
                                      coverage=coverage, build_candles=build_candles)
        written += table.num_rows
        on_rows(written, stored)
    return stored


def _candles_table(clean: pa.Table, symbol: str, minutes: int) -> pa.Table:
    n = clean.num_rows
    return pa.table([
        pa.repeat(pa.scalar(symbol), n), clean["timestamp"],
        pa.repeat(pa.scalar(minutes, pa.int32()), n), clean["open"], clean["high"],
        clean["low"], clean["close"], clean["volume"], pa.nulls(n, CANDLE_SCHEMA.field(
            "quote_volume").type), clean["trade_count"],
        pa.nulls(n, CANDLE_SCHEMA.field("vwap").type), pa.repeat(pa.scalar("csv"), n),
    ], schema=CANDLE_SCHEMA)


def _candle_batches(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)


def _write_candles(store: MarketStore, symbol: str, minutes: int, spool: Spool,
                   scan: FileScan, batch_size: int, on_rows: Callable[[int, int], None]) -> int:
    """Each batch vouches from where the previous one's coverage ended (the file's first
    open time for the first) to its last row's interval end: together, the file's range."""
    stored = written = 0
    width = minutes * 60 * _US
    sync = [SyncUpdate(symbol, f"candles_{timeframe_name(minutes)}")]
    start: int | None = None
    for table in _candle_batches(spool.batches(), batch_size):
        stamps = table["timestamp"]
        if start is None:
            start = stamps[0].cast(pa.int64()).as_py()
        end = stamps[table.num_rows - 1].cast(pa.int64()).as_py() + width
        coverage = [Coverage(symbol, minutes, from_epoch_us(a), from_epoch_us(b))
                    for a, b in _minus(start, end, scan.holes)]
        stored += store.upsert_candles(_candles_table(table, symbol, minutes), sync=sync,
                                       coverage=coverage)
        written += table.num_rows
        on_rows(written, stored)
        start = end
    return stored


# -- one file, many files ------------------------------------------------------------------------


def import_source(store: MarketStore, source: CsvSource, symbol: str,
                  interval: int | None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                  skip_bad: bool = False, build_candles: bool = True,
                  on_progress: Callable[[str, int, int], None] | None = None) -> FileResult:
    """Import one file as ``symbol``'s trades (``interval`` None) or ``interval``-minute
    candles. A bad row (without ``skip_bad``) or an unreadable file is returned as the
    result's ``error``, with nothing of the file stored. ``on_progress(phase, done, stored)``:
    ``reading`` with bytes read, ``writing`` with rows written, as it goes."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    kind = "trades" if interval is None else "candles"
    result = FileResult(source.display, symbol, kind, interval)
    started = time.perf_counter()
    report = on_progress or (lambda phase, done, stored: None)
    try:
        checked = check_file(source, kind, interval, skip_bad=skip_bad,
                             on_bytes=lambda n: report("reading", n, 0))
        if checked is None:
            return result
        layout, scan, spool = checked
        result.layout = layout.name
        with spool:
            result.rows_read, result.bad_rows = scan.rows, scan.bad
            result.bad_lines = [(b.line, b.reason) for b in scan.samples]
            if scan.first_us is not None and scan.last_us is not None:
                result.first, result.last = from_epoch_us(scan.first_us), from_epoch_us(
                    scan.last_us)

            def on_rows(written: int, stored: int) -> None:
                report("writing", written * 1_000_000 // max(1, spool.rows), stored)

            if interval is None:
                result.rows_stored = _write_trades(store, symbol, spool, scan, batch_size,
                                                   build_candles, on_rows)
            else:
                result.rows_stored = _write_candles(store, symbol, interval, spool, scan,
                                                    batch_size, on_rows)
    except ImportFormatError as exc:  # the file's failure is the result's to report
        result.error = exc
        log.info("%s", exc)
    except _READ_ERRORS as exc:
        result.error = ImportFormatError(f"cannot be read ({exc})", path=source.display)
        log.info("%s", result.error)
    finally:
        result.seconds = time.perf_counter() - started
    return result


def _clean_schema(layout: Layout) -> pa.Schema:
    from krakked.sync.csv_parse import CANDLE_CLEAN, TRADE_CLEAN, TRADE_CLEAN_IDS

    if layout.kind == "candles":
        return CANDLE_CLEAN
    return TRADE_CLEAN_IDS if layout.has_ids else TRADE_CLEAN


def import_csv(
    store: MarketStore,
    paths: Iterable[str | Path] = (),
    directory: str | Path | None = None,
    *,
    resolve: Callable[[str], str],
    pairs: Sequence[str] | None = None,
    all_intervals: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip_bad: bool = False,
    build_candles: bool = True,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import Kraken's CSV files found in ``paths`` and ``directory`` (files, directories
    searched recursively, zip archives read in place) into ``store``.

    A file's pair comes from its name through ``resolve`` (any alias -> canonical; names it
    does not know are skipped and counted); ``pairs`` (any aliases) keeps only those pairs.
    OHLCVT files of intervals other than 1 minute are imported only with ``all_intervals``.
    A file a bad row stops is reported in the result (``failed``) and stores nothing; the
    other files go on. ``UsageError`` when a path does not exist or nothing is found to
    import."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    wanted = {resolve(p) for p in pairs} if pairs else None
    sources = find_sources(paths, directory)
    result = ImportResult()
    plan: list[tuple[CsvSource, str, int | None]] = []
    for source in sources:
        name = parse_name(source.basename)
        if name is None:  # pragma: no cover - find_sources keeps only CSV names
            continue
        if name.interval is not None and name.interval not in OHLCVT_INTERVALS:
            result.skip("interval", "not one of Kraken's OHLCVT intervals "
                        f"({', '.join(map(str, OHLCVT_INTERVALS))} minutes)", source.display)
            continue
        if name.interval not in (None, 1) and not all_intervals:
            result.skip("not-1m", "OHLCVT of an interval other than 1 minute (--all imports "
                        "every interval)", source.display)
            continue
        try:
            symbol = resolve(name.stem)
        except UnknownPairError:
            result.skip("unknown-pair", "file name is no known pair", source.display)
            continue
        if wanted is not None and symbol not in wanted:
            result.skip("not-wanted", "pair not in --pairs", source.display)
            continue
        plan.append((source, symbol, name.interval))
    if not plan:
        looked = ", ".join(str(p) for p in [*paths, *([directory] if directory else [])])
        why = "; ".join(f"{s.count} {s.reason}" for s in result.skipped.values())
        raise UsageError(f"no Kraken CSV file to import in {looked or 'nothing given'}"
                         + (f" (left out: {why})" if why else ""))
    total = sum(s.size for s, _, _ in plan)
    done = 0
    stored_before = 0
    for source, symbol, interval in plan:
        size = source.size

        def on_progress(phase: str, value: int, stored: int, *, size: int = size,
                        name: str = source.display, done: int = done,
                        stored_before: int = stored_before) -> None:
            if progress is None:
                return
            part = (min(value, size) // 2 if phase == "reading"
                    else size // 2 + size * value // 2_000_000)
            progress(ImportProgress(done + part, total, name, phase, stored_before + stored))

        file_result = import_source(store, source, symbol, interval, batch_size=batch_size,
                                    skip_bad=skip_bad, build_candles=build_candles,
                                    on_progress=on_progress)
        result.files.append(file_result)
        done += size
        stored_before += file_result.rows_stored
        if progress is not None:
            progress(ImportProgress(done, total, source.display, "done", stored_before))
    result.seconds = time.perf_counter() - started
    return result


def import_file(store: MarketStore, path: str | Path, symbol: str, interval: int | None, *,
                resolve: Callable[[str], str], batch_size: int = DEFAULT_BATCH_SIZE,
                skip_bad: bool = False, build_candles: bool = True) -> list[FileResult]:
    """Import one file as ``symbol``'s ``interval``-minute candles (``interval`` None: its
    trades), whatever its name; for a zip archive, its members named for that pair (through
    ``resolve``) and interval. ``UsageError`` when the path is missing or the archive holds no
    such member."""
    given = Path(path).expanduser()
    if not given.is_file():
        raise UsageError(f"{given}: no such file")
    if given.suffix.lower() == ".zip":
        sources = []
        for source in find_sources([given]):
            name = parse_name(source.basename)
            if name is None or name.interval != interval:
                continue
            try:
                if resolve(name.stem) == symbol:
                    sources.append(source)
            except UnknownPairError:
                continue
        if not sources:
            what = f"{timeframe_name(interval)} OHLCVT" if interval else "time-and-sales"
            raise UsageError(f"{given}: no {what} member for {symbol}")
    else:
        sources = [CsvSource(given, None, given.stat().st_size)]
    return [import_source(store, s, symbol, interval, batch_size=batch_size, skip_bad=skip_bad,
                          build_candles=build_candles) for s in sources]
