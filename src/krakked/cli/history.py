"""``krakked verify`` (our candles against Kraken's) and ``krakked history`` (one command to a
complete history of a pair)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt, StoreOpt
from krakked.errors import MismatchError, NoDataError

__all__ = ["history", "verify"]

_SHOWN = 50  # mismatching fields listed in the table (all of them with --json)


@common.app.command()
def verify(
    pair: Annotated[str, typer.Argument(help="Any alias: XBTUSD, BTC/USD, XXBTZUSD…")],
    tf: Annotated[str, typer.Option("--tf", help="1m 5m 15m 30m 1h 4h 1d 1w 15d")] = "1m",
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Our candles built from stored trades vs Kraken's own OHLC.

    Kraken serves its latest 720 candles of an interval; every one whose whole bucket the
    stored trades cover is compared: open, high, low, close, volume and trade count exactly,
    vwap to the decimals Kraken sends. Every mismatching candle is reported (field, ours,
    Kraken's) and the exit code is 26; 0 when all agree. Nothing compared (no stored trades
    in Kraken's window) is an error (exit 21), not a success.
    """
    with common.open_market(store) as market:
        result = market.verify(pair, tf)
    if json_:
        common.emit_json(result.to_dict())
    else:
        span = (f"{result.kraken_from.isoformat()[:16]} .. "
                f"{result.kraken_until.isoformat()[:16]}")
        common.out.print(f"{result.symbol} {result.timeframe}: {result.compared} candles "
                         f"compared with Kraken's ({span})", highlight=False)
        if result.mismatches:
            table = Table(title=f"{len(result.mismatches)} mismatching fields")
            for col in ("open time", "field", "ours", "Kraken's"):
                table.add_column(col)
            for m in result.mismatches[:_SHOWN]:
                table.add_row(m.timestamp.isoformat()[:16], m.field,
                              "-" if m.ours is None else str(m.ours),
                              "-" if m.kraken is None else str(m.kraken))
            common.out.print(table)
            if len(result.mismatches) > _SHOWN:
                common.out.print(f"… and {len(result.mismatches) - _SHOWN} more (--json lists "
                                 "them all)")
        for note in result.notes:
            common.err.print(f"[yellow]note:[/] {note}", highlight=False)
    if result.mismatches:
        times = sorted({m.timestamp for m in result.mismatches})
        raise MismatchError(
            f"{result.symbol} {result.timeframe}: {len(times)} of {result.compared} candles "
            f"differ from Kraken's (first at {times[0].isoformat()})")


@common.app.command()
def history(
    pair: Annotated[str, typer.Argument(help="Any alias: XBTUSD, BTC/USD, XXBTZUSD…")],
    csv: Annotated[list[Path] | None, typer.Option(
        "--csv", help="Kraken's CSV files to import first: Kraken_Trading_History.zip, a "
                      "quarterly zip, a directory or a <PAIR>.csv (repeat for several).")] = None,
    since: Annotated[str | None, typer.Option(
        help="Without --csv or stored trades: start the API backfill here (ISO date/time); "
             "by default at Kraken's first trade.")] = None,
    min_gap: Annotated[str, typer.Option("--min-gap", help="Gaps longer than this are "
                                         "filled: 90s, 2m, 1h, 1d.")] = "2m",
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """A pair's complete history in one command: krakked history XBTUSD --csv <zip>

    1. imports the pair's trades from Kraken's CSV files (if given; straight from the zip);
    2. backfills the tail from Kraken's Trades API, starting inside the last second the stored
    trades cover (each trade stored once across the seam); 3. builds exact 1m candles from the
    trades on the way (5m … 1w derive from them when read); 4. detects and fills gaps; and
    ends with a coverage report: first and last trade, rows, gaps left and why.

    Every phase is resumable: interrupt it and run the same command again. Without --csv, a
    pair with nothing stored is backfilled from Kraken's first trade (or --since) through the
    API: about 1000 trades a second at Kraken's pacing, so days for XBTUSD — import the CSV
    first. Exits non-zero when gaps are left open (they are listed with their reason).
    """
    from krakked.cli.csv_import import _ProgressLines
    from krakked.cli.trades import _Display

    show = sys.stderr.isatty() and not json_
    with common.open_market(store) as market, _Display(show, json_) as display:
        report = market.complete_history(
            pair, list(csv or ()), since=since, min_gap=min_gap,
            import_progress=None if json_ else _ProgressLines(),
            trades_progress=display)
    if json_:
        common.emit_json(report)
    else:
        _print_report(report)
    if report["gaps_left"]:
        first = report["gaps_left"][0]
        raise NoDataError(
            f"{report['symbol']}: {len(report['gaps_left'])} gap(s) left open, first "
            f"{first['start_time']} .. {first['end_time']} ({first['reason']})")


def _print_report(report: dict[str, Any]) -> None:
    def when(value: str | None) -> str:
        return value.replace("T", " ")[:19] if value else "-"

    table = Table(title=f"{report['symbol']}: history")
    table.add_column("")
    table.add_column("")
    table.add_row("first trade", when(report["first_trade"]))
    table.add_row("last trade", when(report["last_trade"]))
    table.add_row("trades stored", f"{report['rows']:,}")
    for span in report["trade_coverage"]:
        table.add_row("covered", f"{when(span['from'])} .. {when(span['until'])}")
    for item in report.get("import", []):
        table.add_row(f"imported ({item['kind']})", f"{item['rows_stored']:,} rows")
    tail = report["api_tail"]
    table.add_row("API tail", f"{tail['pages']} pages, {tail['stored']:,} new trades")
    gaps = report["gaps"]
    table.add_row("gaps", f"{gaps['gaps_detected']} found, {gaps['gaps_filled']} filled")
    for name, seconds in report["timings"].items():
        table.add_row(name.replace("_seconds", "").replace("_", " "), f"{seconds:.1f} s")
    common.out.print(table)
    for gap in report["gaps_left"]:
        common.out.print(f"gap left: {gap['data_type']} {gap['start_time']} .. "
                         f"{gap['end_time']}: {gap['reason']}", highlight=False)
