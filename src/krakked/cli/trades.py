"""``krakked trades backfill`` (Kraken's trades into the store, resumable) and ``krakked candles
build --from-trades`` (1m candles from stored trades), through the front door."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt, StoreOpt
from krakked.errors import KrakkedError, NoDataError, UsageError
from krakked.logs import redact

trades_app = typer.Typer(help="Kraken's trades (time and sales) into the market store.",
                         no_args_is_help=True)
common.app.add_typer(trades_app, name="trades")

INTERRUPTED = 130
"""Exit code of a backfill stopped by Ctrl-C before it was done (rerun continues)."""


def _error_line(name: str, exc: BaseException) -> None:
    text = " ".join(redact(f"{name}: {exc}").split())
    common.err.print(f"[red]error:[/] {escape(text)}", highlight=False)


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """While inside: the first Ctrl-C sets ``stop`` (the write in flight is finished and
    committed, then the run ends with its summary); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        common.err.print("stopping after the write in flight (Ctrl-C again to abort now)",
                         highlight=False)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Display(common.BarDisplay):
    """Per pair: a rich progress bar on a terminal (pages, trades, rate, ETA to real time),
    else a log line at most every ``interval`` seconds and one when the pair ends."""

    def __init__(self, show_bar: bool, quiet: bool, interval: float = 5.0) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.quiet = quiet
        self.interval = interval
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=16),
            TextColumn("{task.fields[pages]} · {task.fields[trades]} trades · "
                       "{task.fields[rate]}/s · {task.fields[newest]}"),
            TimeRemainingColumn(), console=common.err, disable=not show_bar)
        self.show_bar = show_bar
        self._tasks: dict[str, Any] = {}
        self._began: dict[str, float] = {}
        self._origin: dict[str, datetime] = {}
        self._logged: dict[str, float] = {}

    def __call__(self, event: Any) -> None:
        symbol = event.symbol
        now = time.monotonic()
        began = self._began.setdefault(symbol, now)
        origin = self._origin.setdefault(symbol, event.started or event.newest
                                         or datetime.now(UTC))
        rate = event.fetched / (now - began) if now > began else 0.0
        newest = _short(event.newest)
        if event.waiting:
            newest += " (polling)"
        span = max(1.0, (datetime.now(UTC) - origin).total_seconds())
        done = ((event.newest - origin).total_seconds() if event.newest else 0.0)
        fields = {"pages": _pages(event.pages), "trades": event.fetched, "rate": f"{rate:,.0f}",
                  "newest": newest}
        if symbol not in self._tasks:
            self._tasks[symbol] = self.bar.add_task(symbol, total=span, **fields)
        self.bar.update(self._tasks[symbol], total=span,
                        completed=span if event.waiting else min(span, max(0.0, done)),
                        **fields)
        if not self.show_bar and not self.quiet and (
                now - self._logged.get(symbol, -1e9) >= self.interval):
            self._logged[symbol] = now
            common.err.print(f"{symbol}: {_pages(event.pages)}, {event.fetched} trades "
                             f"({event.stored} new), up to {newest} UTC", highlight=False)

    def finished(self, result: Any) -> None:
        if symbol_task := self._tasks.get(result.symbol):
            self.bar.update(symbol_task, completed=self.bar.tasks[symbol_task].total)
        if not self.show_bar and not self.quiet:
            common.err.print(
                f"{result.symbol}: {_pages(result.pages)}, {result.fetched} trades "
                f"({result.stored} new), stopped: {result.stopped_because}", highlight=False)


def _merged(before: Any, after: Any) -> Any:
    """Two runs of one pair (``--no-auto-stop`` rounds) as one result."""
    if before is None:
        return after
    firsts = [t for t in (before.first, after.first) if t is not None]
    lasts = [t for t in (before.last, after.last) if t is not None]
    notes = tuple(dict.fromkeys((*before.notes, *after.notes)))
    return replace(after, pages=before.pages + after.pages,
                   fetched=before.fetched + after.fetched, stored=before.stored + after.stored,
                   first=min(firsts, default=None), last=max(lasts, default=None), notes=notes,
                   cursor=after.cursor if after.cursor is not None else before.cursor)


@trades_app.command(
    "backfill",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def trades_backfill(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        "--since", help="Start here (UTC date/time, ISO): trades at or after it. Re-running "
             "the same command continues where the stored history from there ends.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Stop before this UTC date/time (ISO).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the stored cursor (or inside the last second of "
             "stored Kraken CSV trades, whichever is later).")] = False,
    no_candles: Annotated[bool, typer.Option(
        "--no-candles", help="Store trades only; build 1m candles later with "
             "`krakked candles build PAIR --from-trades`.")] = False,
    no_auto_stop: Annotated[bool, typer.Option(
        "--no-auto-stop", help="At real time keep polling for new trades (every "
             "--poll-seconds) until Ctrl-C.")] = False,
    poll_seconds: Annotated[float, typer.Option(
        "--poll-seconds", min=0.01, help="Poll interval with --no-auto-stop.")] = 60.0,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Kraken's trades into the store: krakked trades backfill XBTUSD ETH/USD --since 2024-01-01

    Pairs take any alias (XBTUSD, BTC/USD, XXBTZUSD), as arguments or the original tool's
    --symbols XRP/USDT BTC/USDT (default without either: XRP/USDT BTC/USDT XRP/BTC). Pages of up
    to 1000 trades follow Kraken's cursor, paced by krakked's public rate limiter. Pages are
    committed with their cursor, so Ctrl-C (or kill -9) loses nothing: rerun the command, or use
    --resume, and it continues. Without --since or --resume a pair continues from what is
    stored, else starts at Kraken's first trade. It stops at real time (unless --no-auto-stop)
    and builds the 1m candles of every minute whose trades are all stored (unless
    --no-candles). A pair that fails is reported on one line and the others continue; the exit
    code is then non-zero. Ctrl-C ends the run after the write in flight (exit 130; with
    --no-auto-stop, where Ctrl-C is how a run ends, 0).
    """
    from krakked.market.pairs import DEFAULT_SYMBOLS
    from krakked.times import parse_utc

    positionals, flagged = common.split_multi(list(ctx.args), "--symbols")
    names = [*positionals, *flagged] or list(DEFAULT_SYMBOLS)
    since_dt = parse_utc(since, "--since")
    until_dt = parse_utc(until, "--until")
    if since_dt and until_dt and until_dt <= since_dt:
        raise UsageError(f"--until {until_dt.isoformat()} is not after --since "
                         f"{since_dt.isoformat()}")
    stop = threading.Event()
    results: dict[str, Any] = {}
    failures: list[tuple[str, KrakkedError]] = []
    show = sys.stderr.isatty() and not json_
    with common.open_market(store) as m, _ctrl_c_sets(stop), \
            _Display(show, quiet=json_) as display:
        symbols: list[str] = []
        for name in names:
            try:
                symbol = m.resolve(name)
            except KrakkedError as exc:
                failures.append((name, exc))
                _error_line(name, exc)
                continue
            if symbol not in symbols:
                symbols.append(symbol)
        first_round = True
        while symbols and not stop.is_set():
            for symbol in list(symbols):
                if stop.is_set():
                    break
                try:
                    result = m.backfill_trades(
                        symbol, since_dt if first_round else None, until_dt,
                        resume=resume or not first_round, auto_stop=True,
                        build_candles=not no_candles, progress=display, stop=stop)
                except KrakkedError as exc:
                    failures.append((symbol, exc))
                    _error_line(symbol, exc)
                    symbols.remove(symbol)
                    continue
                results[symbol] = _merged(results.get(symbol), result)
                display.finished(result)
            first_round = False
            ended = all(results.get(s) is not None and results[s].stopped_because == "until"
                        for s in symbols)
            if not no_auto_stop or ended or stop.wait(poll_seconds):
                break
    interrupted = stop.is_set()
    if interrupted and no_auto_stop:  # followed real time until Ctrl-C
        results = {k: replace(r, stopped_because="interrupted") for k, r in results.items()}
    _report(list(results.values()), failures, json_)
    if failures:
        raise typer.Exit(code=failures[0][1].exit_code)
    if interrupted and not no_auto_stop:
        raise typer.Exit(code=INTERRUPTED)


def _report(results: list[Any], failures: list[tuple[str, KrakkedError]], json_: bool) -> None:
    if json_:
        common.emit_json([r.to_dict() for r in results] + [
            {"symbol": name, "error": str(exc), "exit_code": exc.exit_code}
            for name, exc in failures])
        return
    table = Table(title="Trades backfill")
    for col in ("pair", "pages", "trades", "new", "first (UTC)", "last (UTC)", "stopped"):
        table.add_column(col)
    for r in results:
        table.add_row(r.symbol, str(r.pages), str(r.fetched), str(r.stored), _short(r.first),
                      _short(r.last), r.stopped_because)
    for name, _exc in failures:
        table.add_row(name, "-", "-", "-", "-", "-", "failed")
    common.out.print(table)
    for note in sorted({n for r in results for n in r.notes}):
        common.err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


@common.candles_app.command("build")
def candles_build(
    pairs: Annotated[list[str] | None, typer.Argument(
        help="Any alias: XBTUSD, BTC/USD, XXBTZUSD…", show_default=False)] = None,
    from_trades: Annotated[bool, typer.Option(
        "--from-trades", help="Build from the trades in the store (required: the only "
             "source built from today).")] = False,
    tf: Annotated[str, typer.Option("--tf", help="Only 1m is built; 5m … 1w derive from 1m "
                                    "when read.")] = "1m",
    since: Annotated[str | None, typer.Option(help="From this UTC date/time (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this UTC date/time (ISO).")] = None,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Exact 1m candles from stored trades: krakked candles build XBTUSD --from-trades

    Open and close follow the trades' sequence (Kraken's trade id; file order for CSV trades),
    computed in the database; a minute is built only when the recorded trade coverage holds
    all of it, and minutes without trades get no candle. Only --tf 1m is built: 5m, 15m, 1h …
    1w derive exactly from 1m when read (`krakked candles XBTUSD --tf 5m`). Rebuilding is
    idempotent; `krakked trades backfill` already builds them unless run with --no-candles.
    Kraken's own candles are not built but fetched (`krakked ohlc backfill`) or imported from
    its OHLCVT files (`krakked import-csv`), hence --from-trades is required. No network.
    """
    from krakked.market.candles import interval_minutes, timeframe_name
    from krakked.market_data import Market
    from krakked.store import resolve_store_url
    from krakked.times import parse_utc

    if not from_trades:
        raise UsageError("candles build needs --from-trades: 1m candles are built from the "
                         "trades in the store; Kraken's own candles come from `krakked ohlc "
                         "backfill` or `krakked import-csv`")
    if interval_minutes(tf) != 1:
        raise UsageError(f"--tf {tf}: only 1m candles are built from trades; "
                         f"{timeframe_name(interval_minutes(tf))} derives from them when read "
                         f"(krakked candles PAIR --tf {tf})")
    if not pairs:
        raise typer.BadParameter("give at least one pair, e.g. XBTUSD", param_hint="PAIRS")
    start, end = parse_utc(since, "--since"), parse_utc(until, "--until")
    if start and end and end <= start:
        raise UsageError(f"--until {end.isoformat()} is not after --since {start.isoformat()}")
    settings = common.current_settings()
    url, _ = resolve_store_url(store, settings)
    built: list[dict[str, Any]] = []
    failures: list[tuple[str, KrakkedError]] = []
    with Market(url, settings=settings, offline=True) as m:
        done: set[str] = set()
        for name in pairs:
            try:
                symbol = m.resolve(name)
                if symbol in done:
                    continue
                done.add(symbol)
                summary = m.store.trades_summary(symbol)
                if not summary or not summary.get("rows"):
                    raise NoDataError(f"no trades stored for {symbol} (run `krakked trades "
                                      f"backfill {symbol}` first)")
                count = m.build_candles_from_trades(symbol, start, end)
                if not count:
                    raise NoDataError(
                        f"no 1m candle built for {symbol}: no minute with trades "
                        f"{'in that window ' if start or end else ''}lies wholly inside the "
                        "recorded trade coverage")
            except KrakkedError as exc:
                failures.append((name, exc))
                _error_line(name, exc)
                continue
            built.append({"symbol": symbol, "timeframe": "1m", "candles": count,
                          "start": start.isoformat() if start else None,
                          "end": end.isoformat() if end else None,
                          "trades_first": _iso(summary.get("first")),
                          "trades_last": _iso(summary.get("last"))})
    if json_:
        common.emit_json(built + [{"symbol": n, "error": str(e), "exit_code": e.exit_code}
                                  for n, e in failures])
    else:
        table = Table(title="1m candles from trades")
        for col in ("pair", "candles", "trades from", "trades to"):
            table.add_column(col)
        for b in built:
            table.add_row(b["symbol"], str(b["candles"]), (b["trades_first"] or "-")[:19],
                          (b["trades_last"] or "-")[:19])
        common.out.print(table)
    if failures:
        raise typer.Exit(code=failures[0][1].exit_code)


def _pages(n: int) -> str:
    return f"{n} page{'' if n == 1 else 's'}"


def _short(moment: datetime | None) -> str:
    """``2026-12-01 00:00`` (UTC), or ``-``."""
    return moment.isoformat(" ")[:16] if moment else "-"


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
