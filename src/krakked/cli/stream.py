"""``krakked stream``: Kraken's live WS v2 data in the terminal, and into the store with --store."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt
from krakked.errors import DataStaleError, InvalidRequestError, KrakkedError, UsageError


def _fmt(value: Any) -> str:
    return "-" if value is None else format(value, "f") if not isinstance(value, str) else value


def _row(live: Any, pair: str, tf: int) -> dict[str, Any]:
    """What the view shows of ``pair``: each value, or why it is missing (stale / none yet)."""
    out: dict[str, Any] = {"pair": pair}
    for key, read in (("last", lambda: live.get_latest_price(pair)),
                      ("bid_ask", lambda: live.get_best_bid_ask(pair)),
                      ("candle", lambda: live.get_live_ohlc(pair, tf)),
                      ("book", lambda: live.get_book(pair, 1))):
        try:
            out[key] = read()
        except KrakkedError as exc:
            out[key] = exc
    return out


def _table(live: Any, tf: int, channels: tuple[str, ...]) -> Table:
    table = Table(title=f"krakked stream · {', '.join(channels)} · "
                        f"{'connected' if live.ws.connected else 'reconnecting…'}")
    for col in ("pair", "last", "bid", "ask", f"{tf}m open", "high", "low", "close", "volume",
                "book bid", "book ask"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    for pair in sorted(live.pairs):
        r = _row(live, pair, tf)

        def cell(v: Any) -> str:
            return "[dim]stale[/]" if isinstance(v, DataStaleError) \
                else "[dim]…[/]" if isinstance(v, KrakkedError) else _fmt(v)
        ba = r["bid_ask"]
        bid, ask = (ba if isinstance(ba, tuple) else (ba, ba))
        c = r["candle"]
        ohlc = [c.open, c.high, c.low, c.close, c.volume] if not isinstance(c, KrakkedError) \
            else [c] * 5
        b = r["book"]
        top = [b.bids[0][0] if b.bids else None, b.asks[0][0] if b.asks else None] \
            if not isinstance(b, KrakkedError) else [b, b]
        table.add_row(pair, cell(r["last"]), cell(bid), cell(ask), *map(cell, ohlc),
                      *map(cell, top))
    return table


def _snapshot(live: Any, tf: int) -> dict[str, Any]:
    """The JSON the non-terminal view prints at each interval."""
    values: dict[str, Any] = {}
    for pair in sorted(live.pairs):
        r = _row(live, pair, tf)
        entry: dict[str, Any] = {}
        for key, value in r.items():
            if key == "pair":
                continue
            if isinstance(value, KrakkedError):
                entry[key] = {"error": str(value)}
            elif key == "bid_ask":
                entry["bid"], entry["ask"] = str(value[0]), str(value[1])
            elif key == "candle":
                entry["candle"] = {"timestamp": value.timestamp.isoformat(),
                                   "open": str(value.open), "high": str(value.high),
                                   "low": str(value.low), "close": str(value.close),
                                   "volume": str(value.volume), "closed": value.closed}
            elif key == "book":
                entry["book"] = {"bid": str(value.bids[0][0]) if value.bids else None,
                                 "ask": str(value.asks[0][0]) if value.asks else None}
            else:
                entry[key] = str(value)
        values[pair] = entry
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pairs": values,
            "status": live.get_data_status()}


@common.app.command(
    "stream",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def stream(
    ctx: typer.Context,
    universe: Annotated[bool, typer.Option("--universe",
                                           help="Stream every pair of the universe.")] = False,
    depth: Annotated[int, typer.Option(help="Book depth: 10, 25, 100, 500 or 1000.")] = 10,
    store: Annotated[str | None, typer.Option(
        "--store", "--db-url",
        help="Persist trades and closed candles into this store as they stream "
             "(duckdb:///…, postgresql://…; --persist uses the configured store).")] = None,
    persist: Annotated[bool, typer.Option(
        help="Persist into the configured store (KRAKKED_STORE, config.toml, the default).")
    ] = False,
    duration: Annotated[float | None, typer.Option(
        help="Stop after this many seconds (default: until Ctrl-C or SIGTERM).")] = None,
    interval: Annotated[float, typer.Option(
        help="Seconds between printed updates when not on a terminal (or with --json).")
    ] = 10.0,
    json_: JsonOpt = False,
) -> None:
    """Live ticker, trades, candles and books: krakked stream XBTUSD --channels ticker book

    Example: krakked stream XBTUSD ETH/USD --channels ticker ohlc trade book --tf 1m

    Pairs take any alias (XBTUSD, BTC/USD, XXBTZUSD). --channels: ticker (default), trade, ohlc,
    book; --tf: the ohlc timeframes (1m 5m 15m 30m 1h 4h 1d 1w 15d; default 1m). On a terminal a
    table refreshes in place (a value older than market_data.ws.stale_tolerance_seconds shows
    as stale); otherwise, or with --json, a snapshot is printed every --interval seconds. With
    --store/--persist, trades (each once; holes in Kraken's trade ids filled over REST) and
    closed candles are written as they stream, and the store stays readable meanwhile.
    Ctrl-C or SIGTERM stops cleanly: buffers flushed, the last closed candles written, exit 0.
    The endpoint is KRAKKED_WS_URL / ws_url in config.toml's kraken table (`krakked sim serve`
    prints one).
    """
    pairs, values = common.split_flags(list(ctx.args), ("--channels", "--tf"))
    channels = tuple(values["--channels"]) or ("ticker",)
    tfs = tuple(values["--tf"]) or ("1m",)
    if not pairs and not universe:
        raise UsageError("name the pairs to stream (e.g. XBTUSD ETH/USD) or pass --universe")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be > 0 seconds")
    if interval <= 0:
        raise UsageError("--interval must be > 0 seconds")
    # without persisting, nothing is written anywhere: the universe lives in memory
    market = common.open_market(store if (store or persist) else "duckdb:///:memory:")
    try:
        live = market.live(pairs or None, channels=channels, tf=tfs, book_depth=depth,
                           persist=bool(store or persist))
        code = asyncio.run(_run(live, tfs[0], duration, interval, json_))
    finally:
        market.close()
    raise typer.Exit(code)


async def _run(live: Any, tf_name: str, duration: float | None, interval: float,
               json_: bool) -> int:
    from krakked.market.candles import interval_minutes

    tf = interval_minutes(tf_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await live.start()
        if live.rejected and len(live.rejected) >= len(live.pairs):
            first = next(iter(live.rejected.items()))
            raise InvalidRequestError(f"Kraken refused every subscription ({first[0]}: "
                                      f"{first[1]})")
        for pair, error in live.rejected.items():
            common.err.print(f"[yellow]warning:[/] {pair}: {error}", highlight=False)
        deadline = None if duration is None else loop.time() + duration
        tty = sys.stdout.isatty() and not json_
        if tty:
            with Live(_table(live, tf, live.channels), console=common.out,
                      refresh_per_second=4) as view:
                while not await _wait(stop, 0.25, deadline, loop):
                    view.update(_table(live, tf, live.channels))
        else:
            while not await _wait(stop, interval, deadline, loop):
                common.emit_json(_snapshot(live, tf)) if json_ else _log(live, tf)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await live.stop()
    status = live.get_data_status()
    if json_:
        common.emit_json({"stopped": True, "status": status})
    else:
        writer = status.get("writer") or {}
        common.err.print(
            f"stopped: {status['reconnects']} reconnects, "
            f"{sum(status['checksum_failures'].values())} checksum failures"
            + (f", {writer.get('trades_written', 0)} trades and "
               f"{writer.get('candles_written', 0)} candles written" if writer else ""),
            highlight=False)
    return 0


async def _wait(stop: asyncio.Event, seconds: float, deadline: float | None,
                loop: asyncio.AbstractEventLoop) -> bool:
    """Sleep ``seconds`` (less if the deadline comes first); True when it is time to stop."""
    if deadline is not None:
        seconds = min(seconds, max(0.0, deadline - loop.time()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set() or (deadline is not None and loop.time() >= deadline)


def _log(live: Any, tf: int) -> None:
    for pair in sorted(live.pairs):
        r = _row(live, pair, tf)
        parts = [pair]
        for key in ("last", "bid_ask", "candle"):
            v = r[key]
            if isinstance(v, KrakkedError):
                parts.append(f"{key}=({v})")
            elif key == "bid_ask":
                parts.append(f"bid={_fmt(v[0])} ask={_fmt(v[1])}")
            elif key == "candle":
                parts.append(f"{tf}m={_fmt(v.open)}/{_fmt(v.high)}/{_fmt(v.low)}/"
                             f"{_fmt(v.close)} v={_fmt(v.volume)}")
            else:
                parts.append(f"last={_fmt(v)}")
        common.out.print(" ".join(parts), highlight=False, markup=False)
