"""``krakked verify`` (our candles against Kraken's) and ``krakked history`` (one command to a
complete history of a pair)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt, StoreOpt
from krakked.errors import MismatchError

__all__ = ["verify"]

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
