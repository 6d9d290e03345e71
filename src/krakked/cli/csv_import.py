"""``krakked import-csv``: Kraken's downloadable CSV files (time and sales, OHLCVT) into the
market store, through the front door (``Market.import_csv``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt, StoreOpt
from krakked.sync.csv_import import DEFAULT_BATCH_SIZE, ImportProgress, ImportResult


def _split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(paths, pairs) from the raw tail: ``PATHS... --pairs P...``; after ``--pairs`` a word
    naming an existing file or ending in .csv/.zip is still a path."""
    paths, pairs = common.split_multi(args, "--pairs")
    keep: list[str] = []
    for word in pairs:
        if word.lower().endswith((".csv", ".zip")) or os.path.exists(word):
            paths.append(word)
        else:
            keep.append(word)
    return paths, keep


class _ProgressLines:
    """Progress as plain lines on stderr (no terminal): one every ``interval`` seconds."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.last = 0.0
        self.started = time.monotonic()

    def __call__(self, event: ImportProgress) -> None:
        now = time.monotonic()
        if event.phase != "done" and now - self.last < self.interval:
            return
        self.last = now
        share = event.bytes_done / event.bytes_total if event.bytes_total else 1.0
        rate = event.bytes_done / max(now - self.started, 1e-9)
        common.err.print(f"{share:6.1%} of {_size(event.bytes_total)} ({_size(rate)}/s), "
                         f"{event.rows_stored:,} rows stored; {event.phase} {event.file}",
                         highlight=False, markup=False)


def _size(n: float) -> str:
    """Bytes as ``512 B``, ``1.5 MB``, ``2.7 GB``."""
    if n < 1000:
        return f"{n:,.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:,.1f} {unit}"


@common.app.command(
    "import-csv",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    options_metavar="[PATHS]... [--pairs PAIR...] [OPTIONS]",
)
def import_csv(
    ctx: typer.Context,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="A directory of Kraken CSV files and/or zip archives (searched "
                      "recursively).")] = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="Import OHLCVT files of every interval (1, 5, 15, 30, 60, 240, 720 = 12h, "
                      "1440 minutes), not only the 1-minute ones.")] = False,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1,
        help="Rows per write transaction (a batch of trades is cut between seconds, so it may "
             "be a little shorter, or longer when one second holds more rows).")
                          ] = DEFAULT_BATCH_SIZE,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Skip and count malformed rows instead of stopping the file.")
                        ] = False,
    no_candles: Annotated[bool, typer.Option(
        "--no-candles", help="Do not build 1m candles from the imported trades.")] = False,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Import Kraken's CSV files: time and sales (<PAIR>.csv) as trades, OHLCVT
    (<PAIR>_<interval>.csv) as candles. Zip archives are read in place (members matched by
    name, folders ignored).

    krakked import-csv ~/Downloads/Kraken_Trading_History.zip --pairs XBTUSD ETHUSD

    PATHS are CSV files, zip archives or directories (searched recursively). --pairs keeps only
    these pairs (any alias: XBTUSD, BTC/USD, XXBTZUSD).

    Each file is checked whole before any of it is written: a malformed row stops that file
    (file, line and reason named; nothing of it stored) and the others go on; the command then
    exits with code 22. Re-importing a file, or overlapping quarterly files, stores nothing
    twice. Pairs come from the file names (Kraken's AssetPairs, else the stored snapshot, else
    the built-in tables); names no table knows are skipped and counted. 1m candles are built
    from the imported trades (--no-candles to skip).
    """
    paths, pairs = _split_args(list(ctx.args))
    if not paths and directory is None:
        raise typer.BadParameter("give CSV files, zip archives or --dir DIR",
                                 param_hint="PATHS")
    show = sys.stderr.isatty() and not json_
    with common.open_market(store) as m:
        if show:
            result = _with_bar(m, paths, directory, pairs, all_, batch_size, skip_bad,
                               not no_candles)
        else:
            result = m.import_csv(paths, pairs or None, all_, batch_size, skip_bad,
                                  not no_candles, None if json_ else _ProgressLines(),
                                  directory=directory)
    if json_:
        common.emit_json(result.to_dict())
    else:
        _summary(result)
    result.raise_for_errors()


def _with_bar(m: Any, paths: list[str], directory: Path | None, pairs: list[str],
              all_: bool, batch_size: int, skip_bad: bool, candles: bool) -> ImportResult:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=common.err) as bar:
        task = bar.add_task("importing", total=None)

        def update(event: ImportProgress) -> None:
            name = Path(event.file.rsplit(":", 1)[-1]).name
            bar.update(task, total=event.bytes_total, completed=event.bytes_done,
                       description=f"{name} ({event.phase})")

        return m.import_csv(paths, pairs or None, all_, batch_size, skip_bad, candles, update,
                            directory=directory)


def _when(value: Any) -> str:
    return value.isoformat()[:19].replace("T", " ") if value else "-"


def _summary(result: ImportResult) -> None:
    table = Table(title=f"CSV import: {result.rows_stored:,} rows stored in "
                        f"{result.seconds:.1f} s")
    for col in ("pair", "series", "files", "rows read", "rows stored", "first (UTC)",
                "last (UTC)", "bad rows"):
        table.add_column(col, justify="right" if col.startswith(("rows", "bad", "files"))
                         else "left")
    for s in result.series():
        series = "trades" if s["kind"] == "trades" else f"candles {s['timeframe']}"
        files = str(s["files"]) + (f" ({s['failed_files']} failed)" if s["failed_files"] else "")
        table.add_row(s["symbol"], series, files, f"{s['rows_read']:,}",
                      f"{s['rows_stored']:,}", _when(s["first"]), _when(s["last"]),
                      f"{s['bad_rows']:,}")
    common.out.print(table)
    from rich.markup import escape

    for f in result.files:
        if f.bad_rows:
            lines = ", ".join(str(line) for line, _ in f.bad_lines)
            more = ", …" if f.bad_rows > len(f.bad_lines) else ""
            common.err.print(
                f"[yellow]note:[/] {escape(f.file)}: {f.bad_rows:,} bad row(s) skipped, "
                f"line(s) {lines}{more} (first: {escape(f.bad_lines[0][1])})", highlight=False)
    for s in result.skipped.values():
        common.err.print(f"[yellow]note:[/] {s.count:,} file(s) skipped: {s.reason} (e.g. "
                         f"{escape(', '.join(s.examples))})", highlight=False)
    for f in result.failed:
        common.err.print(f"[red]failed:[/] {escape(str(f.error))}", highlight=False)
