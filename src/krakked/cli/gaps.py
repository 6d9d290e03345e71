"""``krakked gaps detect`` and ``krakked gaps fill``: holes in stored 1m candles and trades, and
filling them from Kraken (small recent candle gaps from OHLC, the rest from Trades), through
the front door."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt, StoreOpt
from krakked.errors import NoDataError

gaps_app = typer.Typer(
    help="Gaps in stored 1m candles and trades: find them (detect), fill them from Kraken "
         "(fill).",
    no_args_is_help=True)
common.app.add_typer(gaps_app, name="gaps")

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}

MinGapOpt = Annotated[str, typer.Option(
    "--min-gap", help="Report gaps longer than this: 90s, 2m, 1h, 1d (holes in Kraken's "
                      "trade-id sequence are always reported).")]
FillMinGapOpt = Annotated[str, typer.Option(
    "--min-gap", help="Fill gaps longer than this: 90s, 2m, 1h, 1d (holes in Kraken's "
                      "trade-id sequence are always filled).")]

def _names(ctx: typer.Context) -> list[str] | None:
    positionals, flagged = common.split_multi(list(ctx.args), "--symbols")
    return [*positionals, *flagged] or None


def _when(value: Any) -> str:
    return value.isoformat()[:19].replace("T", " ") if value is not None else "-"


def _require_history(scan: Any, url: str) -> None:
    """Nothing stored for any pair asked about: say so (a hole needs history around it)."""
    if scan.symbols and len(scan.empty) == len(scan.symbols):
        raise NoDataError(
            f"nothing stored for {', '.join(scan.empty)} in {url}: gaps are holes in stored "
            "history (store some first: krakked ohlc backfill PAIR --tf 1m, or a trades "
            "backfill or CSV import)")
    for symbol in scan.empty:
        common.err.print(f"[yellow]note:[/] {symbol}: nothing stored, so no gaps to find",
                         highlight=False)


@gaps_app.command("detect", context_settings=_EXTRA)
def gaps_detect(
    ctx: typer.Context,
    min_gap: MinGapOpt = "2m",
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Gaps in stored 1m candles and trades: krakked gaps detect XBTUSD --min-gap 2m

    A 1m candle gap is a range no recorded coverage vouches for: between covered ranges, or
    from the last one to the last closed minute. A trade gap is a hole between recorded trade
    ranges or in Kraken's trade-id sequence. A quiet minute (no trades) inside a covered range
    is no gap. The table says how `krakked gaps fill` would fill each: OHLC (under 12 h and
    within the 720 1m bars Kraken still serves) or Trades. Reads the store only. Exits 0
    whether or not gaps are found ("no gaps" when none).

    Pairs take any alias (XBTUSD, BTC/USD, XXBTZUSD), as arguments or the original gap
    filler's --symbols XRP/USDT BTC/USDT; with neither, its DEFAULT_SYMBOLS: XRP/USDT BTC/USDT
    XRP/BTC.
    """
    from krakked.market.gaps import fill_method, format_span, parse_span

    span = parse_span(min_gap, "--min-gap")
    names = _names(ctx)
    with common.open_market(store, read=True) as m:
        scan = m.detect_gaps(names, span)
        url = m.store.url
    if json_:
        _require_history(scan, url)
        common.emit_json(scan.to_dict())
        return
    _require_history(scan, url)
    checked = [s for s in scan.symbols if s not in scan.empty]
    if not scan.gaps:
        common.out.print(f"no gaps longer than {format_span(span)} in {', '.join(checked)} "
                         f"(up to {_when(scan.now)[:16]} UTC)", highlight=False)
        return
    table = Table(title=f"Gaps longer than {format_span(span)}: {len(scan.gaps)}")
    for col in ("pair", "type", "start (UTC)", "end (UTC)", "duration", "small?", "fill by",
                "what is missing"):
        table.add_column(col)
    for g in scan.gaps:
        table.add_row(g.symbol, g.data_type, _when(g.start_time), _when(g.end_time),
                      format_span(g.duration), "yes" if g.is_small else "no",
                      "OHLC" if fill_method(g, scan.now) == "ohlc" else "Trades",
                      escape(g.detail))
    common.out.print(table)


class _Display(common.BarDisplay):
    """Per pair: a rich progress bar on a terminal (gaps done, pages and trades of the gap in
    hand), else a line per gap done (at most every ``interval`` seconds while paging)."""

    def __init__(self, totals: dict[str, int], show_bar: bool, quiet: bool,
                 interval: float = 5.0) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet, self.show_bar, self.interval = quiet, show_bar, interval
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total} gaps · {task.fields[now]}"),
                            TimeElapsedColumn(), console=common.err, disable=not show_bar)
        self.tasks = {s: self.bar.add_task(s, total=n, now="") for s, n in totals.items()}
        self.logged: dict[str, float] = {}

    def __call__(self, event: Any) -> None:
        gap = event.gap
        what = f"{gap.data_type} {_when(gap.start_time)[:16]}"
        task = self.tasks.get(event.symbol)
        if event.outcome is None:
            now = f"{what}: {event.pages} pages, {event.trades:,} trades" if event.pages \
                else what
            if task is not None:
                self.bar.update(task, now=now)
            clock = time.monotonic()
            if event.pages and not self.show_bar and not self.quiet and \
                    clock - self.logged.get(event.symbol, -1e9) >= self.interval:
                self.logged[event.symbol] = clock
                common.err.print(f"{event.symbol} {now}", highlight=False)
            return
        if task is not None:
            self.bar.update(task, advance=1, now=f"{what}: {event.outcome}")
        if not self.show_bar and not self.quiet:
            common.err.print(f"{event.symbol} {what} .. {_when(gap.end_time)[:16]}: "
                             f"{event.outcome}", highlight=False)


@gaps_app.command("fill", context_settings=_EXTRA)
def gaps_fill(
    ctx: typer.Context,
    min_gap: FillMinGapOpt = "2m",
    max_concurrent: Annotated[int, typer.Option(
        "--max-concurrent", min=1, help="Pairs filled at the same time (each pair's gaps one "
                                        "after the other; Kraken's pacing is shared).")] = 3,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Fill the gaps from Kraken: krakked gaps fill XBTUSD

    A 1m candle gap is built from stored trades where the trade coverage holds it; one under
    12 h that Kraken's 1m OHLC still serves (its latest 720 bars) comes from OHLC; the rest,
    and every trade gap, from Kraken's Trades over exactly the gap (each page stored with the
    range it vouches for, its 1m candles built). Each gap is tried once. A range Kraken has no
    trades for is recorded as quiet and reported (it is not reported again). Ends with a
    summary (--json: the original gap filler's gaps_detected, gaps_filled, candles_inserted,
    trades_processed, errors, plus unfillable with reasons and remaining); exits non-zero,
    naming them, when gaps are left open.

    Pairs take any alias (XBTUSD, BTC/USD, XXBTZUSD), as arguments or the original gap
    filler's --symbols XRP/USDT BTC/USDT; with neither, its DEFAULT_SYMBOLS: XRP/USDT BTC/USDT
    XRP/BTC.
    """
    from krakked.market.gaps import parse_span

    span = parse_span(min_gap, "--min-gap")
    names = _names(ctx)
    with common.open_market(store) as m:
        scan = m.detect_gaps(names, span)
        _require_history(scan, m.store.url)
        totals = {s: sum(1 for g in scan.gaps if g.symbol == s)
                  for s in scan.symbols if s not in scan.empty}
        show = sys.stderr.isatty() and not json_
        with _Display(totals, show, quiet=json_) as display:
            report = m.fill_gaps(scan=scan, max_concurrent=max_concurrent, progress=display)
    summary = report.to_dict()
    if json_:
        common.emit_json(summary)
    else:
        _print_summary(report, summary)
    remaining = report.remaining
    if remaining:
        reasons = {(g.symbol, g.data_type, g.start_time): why
                   for p in report.pairs for g, why, _ in p.unfillable}
        named = "; ".join(
            f"{g.symbol} {g.data_type} {_when(g.start_time)} .. {_when(g.end_time)}"
            + (f" ({reasons[(g.symbol, g.data_type, g.start_time)]})"
               if (g.symbol, g.data_type, g.start_time) in reasons else "")
            for g in remaining)
        common.err.print(f"[red]error:[/] {len(remaining)} gap"
                         f"{'s' if len(remaining) != 1 else ''} left open: {escape(named)}",
                         highlight=False)
        codes = [c for p in report.pairs for c in p.codes]
        raise typer.Exit(code=codes[0] if codes else NoDataError.exit_code)


def _print_summary(report: Any, summary: dict[str, Any]) -> None:
    table = Table(title="Gaps filled")
    for col in ("pair", "gaps", "filled", "unfillable", "left open", "candles", "trades",
                "new trades"):
        table.add_column(col)
    for p in report.pairs:
        table.add_row(p.symbol, str(len(p.detected)), str(len(p.filled)),
                      str(len(p.unfillable)), str(len(p.remaining)),
                      f"{p.candles_inserted:,}", f"{p.trades_processed:,}",
                      f"{p.trades_inserted:,}")
    common.out.print(table)
    for item in summary["unfillable"]:
        common.err.print(
            f"[yellow]unfillable:[/] {item['symbol']} {item['data_type']} "
            f"{_when_text(item['start_time'])} .. {_when_text(item['end_time'])}: "
            f"{escape(item['reason'])}", highlight=False)
    for line in summary["errors"]:
        common.err.print(f"[red]error:[/] {escape(line)}", highlight=False)


def _when_text(iso: str) -> str:
    return iso[:19].replace("T", " ")
