"""``krakked sim serve`` and ``krakked demo``: the offline Kraken, and krakked at work against
it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt
from krakked.cli.connection import describe_credentials, describe_reach

# -- simulator and demo ------------------------------------------------------------------------


@common.sim_app.command("serve")
def sim_serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback only by default).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8787,
    seed: Annotated[int, typer.Option(help="Seed of the market and the demo accounts.")] = 7,
    tier: Annotated[str, typer.Option(help="Spot rate-limit tier: starter, intermediate, pro.")
                    ] = "starter",
    faults: Annotated[
        str | None,
        typer.Option(help="Faults to inject, kind[:endpoint]=probability,... e.g. "
                          "http500=0.05,unavailable=0.02,permission:Ledgers=1. Kinds: "
                          "http500 http502 timeout unavailable busy toomany ratelimit "
                          "malformed notoken permission."),
    ] = None,
    allow_remote: Annotated[bool, typer.Option(help="Allow a non-loopback --host.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Serve an offline Kraken on 127.0.0.1 until interrupted.

    Once listening it prints the URLs and the demo key pairs (one JSON line with --json:
    spot_url, futures_url, ws_url, api_key, api_secret, futures_api_key, futures_api_secret).
    Point krakked (or any Kraken client) at it with KRAKKED_SPOT_URL / KRAKKED_FUTURES_URL.
    """
    from krakked.errors import ConfigError
    from krakked.sim import SimConfig, Simulator, parse_faults
    from krakked.sim.server import connection_info, open_socket, serve

    try:
        config = SimConfig(seed=seed, tier=tier, faults=parse_faults(faults))
        sock = open_socket(host, port, allow_remote=allow_remote)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sim = Simulator(config)
    info = connection_info(sim, sock)
    if json_:
        typer.echo(json.dumps(info), nl=True)
    else:
        common.out.print(f"Kraken simulator listening on [bold]{info['spot_url']}[/] "
                         f"(seed {seed}, tier {tier}{', faults ' + faults if faults else ''}). "
                         "Ctrl-C stops it.", highlight=False)
        common.out.print("Point krakked at it:", highlight=False)
        for line in (
            f"export KRAKKED_SPOT_URL={info['spot_url']}",
            f"export KRAKKED_FUTURES_URL={info['futures_url']}",
            f"export KRAKEN_API_KEY={info['api_key']}",
            f"export KRAKEN_API_SECRET={info['api_secret']}",
            f"export KRAKEN_FUTURES__API_KEY={info['futures_api_key']}",
            f"export KRAKEN_FUTURES__API_SECRET={info['futures_api_secret']}",
        ):
            typer.echo(f"  {line}")
    sys.stdout.flush()
    try:
        serve(sim, sock)
    finally:
        sock.close()


@common.app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the simulated market and account.")] = 7,
    json_: JsonOpt = False,
) -> None:
    """Show krakked at work against an in-process Kraken simulator: no keys, no network.

    Spot and Futures status, a ticker table, a balance, a few closed candles and the Futures
    account, all fetched through the same clients you point at api.kraken.com.
    """
    from krakked.demo import run_demo

    if json_:
        common.emit_json(run_demo(seed=seed).to_dict())
        return
    with common.out.status("starting the simulator…") as spinner:
        report = run_demo(seed=seed, progress=lambda s: spinner.update(f"{s}…"))
    common.out.print(f"[bold]krakked demo[/] — ran against krakked's offline Kraken simulator "
                     f"(seed {report.seed}, simulated now {report.sim_time}); nothing reached "
                     "Kraken.", highlight=False)
    status = Table(title="Status")
    for col in ("", "Spot", "Futures"):
        status.add_column(col)
    s, f = report.spot_status, report.futures_status
    status.add_row("REST", describe_reach(s), describe_reach(f))
    status.add_row("credentials", describe_credentials(s["credentials"]),
                   describe_credentials(f["credentials"]))
    common.out.print(status)
    tickers = Table(title="Ticker")
    for col in ("pair", "last", "bid", "ask", "24h volume", "24h trades"):
        tickers.add_column(col, justify="right" if col != "pair" else "left")
    for t in report.tickers:
        tickers.add_row(t["pair"], t["last"], t["bid"], t["ask"], t["volume_24h"],
                        str(t["trades_24h"]))
    common.out.print(tickers)
    balance = Table(title="Spot balance")
    balance.add_column("asset")
    balance.add_column("balance", justify="right")
    for asset, amount in sorted(report.balance.items()):
        balance.add_row(asset, amount)
    common.out.print(balance)
    candles = Table(title="XBTUSD 1h — last closed candles")
    for col in ("open time (UTC)", "open", "high", "low", "close", "volume", "trades"):
        candles.add_column(col, justify="right")
    for c in report.candles:
        candles.add_row(c["open_time"][:16].replace("T", " "), c["open"], c["high"], c["low"],
                        c["close"], c["volume"], str(c["trades"]))
    common.out.print(candles)
    fa = report.futures_account
    common.out.print(f"Futures: accounts {', '.join(fa['accounts'])}; open positions "
                     f"{fa['open_positions']}; {fa['recent_executions']} recent executions.",
                     highlight=False)
    total = sum(t for _, t in report.steps)
    common.out.print(f"[dim]{len(report.steps)} calls in {total:.2f} s. Try `krakked sim serve` to "
                     "run the simulator for your own tools.[/]")
