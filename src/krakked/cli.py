"""The ``krakked`` command: thin wrappers over the library, one clear line per error.

Every command that reports takes ``--json``. Errors print one line on stderr and exit with the
error class's code (see ``krakked.errors``); ``-v`` adds the traceback.
"""

from __future__ import annotations

import getpass
import json
import logging
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from krakked import __version__
from krakked.config import Settings, load_settings
from krakked.credentials import (
    PRODUCTS,
    SetupResult,
    describe_sources,
    load_key_pair,
    master_password,
    setup_credentials,
)
from krakked.errors import CredentialsError, KrakkedError, NoCredentialsError, UsageError
from krakked.logs import install_logging, redact

__all__ = ["app", "main"]

app = typer.Typer(
    name="krakked",
    help="Keep a complete, exact, queryable copy of your Kraken data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show the configuration krakked uses.", no_args_is_help=True)
creds_app = typer.Typer(help="Inspect stored credentials (keys masked).", no_args_is_help=True)
sim_app = typer.Typer(help="An offline Kraken (Spot + Futures REST) for tests, demos, bots.",
                      no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(creds_app, name="creds")
app.add_typer(sim_app, name="sim")
ohlc_app = typer.Typer(help="Kraken's OHLC candles into the market store.",
                       no_args_is_help=True)
store_app = typer.Typer(help="The market store: what it holds.", no_args_is_help=True)
app.add_typer(ohlc_app, name="ohlc")
account_app = typer.Typer(
    help="Your own history (Futures executions, account log, positions; Spot ledgers, trades, "
         "orders, deposits, withdrawals) into DuckDB or any dlt destination.",
    no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(store_app, name="store")

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", "--db-url",
                 help="Market store URL: duckdb:///file.duckdb, parquet:///dir, csv:///dir, "
                      "postgresql://… (default: KRAKKED_STORE, config store.url, DATABASE_URL, "
                      "else a DuckDB file in the data directory)."),
]

# Piped output gets a wide console: tables of prices should not be cut at 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


class _State:
    verbose: int = 0


def _settings() -> Settings:
    return load_settings()


def _emit_json(data: Any) -> None:
    typer.echo(redact(json.dumps(data, indent=2, default=str, sort_keys=False)))


class _PasswordPrompt:
    """Asks for the master password at most once per command, only if a file needs it."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.value: str | None = None

    def __call__(self) -> str:
        if self.value is None:
            self.value = master_password(
                prompt=lambda: getpass.getpass("Master password for the secrets file: "),
                interactive=self.interactive)
        return self.value


def _interactive() -> bool:
    return sys.stdin.isatty()


def _load_keys(settings: Settings, prompt: _PasswordPrompt
               ) -> tuple[dict[str, Any], dict[str, CredentialsError]]:
    """product -> KeyPair | None, and product -> the error that kept present keys from loading
    (wrong master password, malformed or locked credentials; never "no keys")."""
    keys: dict[str, Any] = {}
    errors: dict[str, CredentialsError] = {}
    for product in PRODUCTS:
        try:
            keys[product] = load_key_pair(product, paths=settings.paths, password=prompt)
        except NoCredentialsError:
            keys[product] = None
        except CredentialsError as exc:
            keys[product] = None
            errors[product] = exc
    return keys, errors


# -- status ------------------------------------------------------------------------------------


@app.command()
def status(json_: JsonOpt = False) -> None:
    """Is Kraken (Spot and Futures REST) reachable? Are credentials present, and do they work?

    Also shows the region profile, the rate-limit tier and the store krakked would use.
    A private read-only call (Spot Balance, Futures accounts) is made for each key pair found.
    Exits 0 only when every check that applies passed; otherwise with the exit code of the
    first failed check in the order Spot REST, Futures REST, Spot credentials, Futures
    credentials (the report, --json included, is printed in full first). No keys is not a
    failure; Futures REST counts only where the region supports futures or Futures keys exist.
    """
    from krakked.kraken.health import check_futures, check_spot, status_failures

    settings = _settings()
    keys, load_errors = _load_keys(settings, _PasswordPrompt(_interactive() and not json_))
    report: dict[str, Any] = {
        "version": __version__,
        "spot": check_spot(settings, keys["spot"]),
        "futures": check_futures(settings, keys["futures"]),
        "region": settings.to_dict()["region"],
        "tier": settings.tier,
        "store": {"url": settings.store_url, "source": settings.store_url_source},
        "config_file": str(settings.source_file) if settings.source_file else None,
    }
    for product in PRODUCTS:
        if report[product]["credentials"] is None:
            problem = load_errors.get(product)
            report[product]["credentials"] = {
                "present": False,
                "problem": str(problem) if problem is not None else None,
            }
    if settings.region.supports_futures is False and keys["futures"] is not None:
        report["futures"]["warning"] = (
            f"region {settings.region.code} does not list futures support; "
            "account history still syncs because keys exist"
        )
    failures = status_failures(
        report["spot"], report["futures"], load_errors,
        futures_rest_applies=bool(settings.region.supports_futures or keys["futures"] is not None
                                  or "futures" in load_errors),
    )
    code = failures[0]["exit_code"] if failures else 0
    report.update(ok=not failures, exit_code=code, failures=failures)
    if json_:
        _emit_json(report)
        if code:
            raise typer.Exit(code=code)
        return
    table = Table(title=f"krakked {__version__} status", show_lines=False)
    table.add_column("")
    table.add_column("Spot")
    table.add_column("Futures")
    s, f = report["spot"], report["futures"]
    table.add_row("REST", _reach(s), _reach(f))
    table.add_row("credentials", _cred(s["credentials"]), _cred(f["credentials"]))
    out.print(table)
    region = settings.region
    out.print(
        f"region [bold]{region.code}[/] (quote {region.default_quote}; margin "
        f"{_yn(region.supports_margin)}, futures {_yn(region.supports_futures)}, staking "
        f"{_yn(region.supports_staking)}) · tier [bold]{settings.tier}[/]"
    )
    out.print(f"store {settings.store_url} ({settings.store_url_source})")
    out.print(f"config {settings.source_file or '(defaults: no config.toml)'}")
    for product in PRODUCTS:
        if report[product].get("warning"):
            err.print(f"[yellow]warning:[/] {report[product]['warning']}")
    for failure in failures:
        err.print(f"[red]failed:[/] {failure['check'].replace('.', ' ')}: "
                  f"{redact(str(failure['error']))} (exit code {failure['exit_code']})",
                  highlight=False)
    if code:
        raise typer.Exit(code=code)


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def _reach(part: dict[str, Any]) -> str:
    if part["reachable"]:
        extra = f" ({part['system_status']})" if part.get("system_status") else ""
        return f"[green]reachable[/]{extra} {part['url']}"
    return f"[red]unreachable[/] {part['url']}: {part['error']}"


def _cred(c: dict[str, Any]) -> str:
    if not c.get("present"):
        return f"[red]{c['problem']}[/]" if c.get("problem") else "[dim]none[/]"
    state = "[green]works[/]" if c["private_call_ok"] else (
        "[red]rejected by Kraken[/]" if c["auth_problem"] else "[yellow]not checked[/]"
    )
    text = f"{c['key']} from {c['source']}: {state}"
    if c.get("error"):
        text += f" ({c['error']})"
    return text


# -- setup -------------------------------------------------------------------------------------


@app.command()
def setup(
    product: Annotated[
        str | None, typer.Option(help="spot, futures or both (asked when omitted).")
    ] = None,
    save_unvalidated: Annotated[
        bool,
        typer.Option(help="If Kraken cannot be reached, save the keys marked unvalidated."),
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Save even if Kraken rejects the keys (marked unvalidated).")
    ] = False,
) -> None:
    """Enter Spot and/or Futures API keys; each pair is checked with a private read-only call
    (Spot Balance, Futures accounts) and stored encrypted in the secrets file.

    Keys Kraken rejects are not saved (unless --force). If Kraken cannot be reached, that is not
    reported as a key problem: retry, or save them marked unvalidated. The master password comes
    from KRAKKED_MASTER_PASSWORD or a prompt. When a key pair is not saved, the command exits
    with its error's code (11 rejected, 12 permission, 16 unreachable, 15 unavailable; the
    first product that failed decides).
    """
    from krakked.kraken.health import key_pair_validator

    settings = _settings()
    interactive = _interactive()
    choice = product or typer.prompt("Which keys? (spot, futures, both)", default="spot")
    products = list(PRODUCTS) if choice == "both" else [choice]
    for p in products:
        if p not in PRODUCTS:
            raise typer.BadParameter(f"{p!r} is not spot, futures or both", param_hint="--product")
    password = _setup_password(settings)
    validator = key_pair_validator(settings)
    code = 0
    for p in products:
        key = typer.prompt(f"{p} API key", hide_input=True).strip()
        secret = typer.prompt(f"{p} API secret", hide_input=True).strip()
        while True:
            result = setup_credentials(
                p, key, secret, password=password, validator=validator, paths=settings.paths,
                save_unvalidated=save_unvalidated, force=force,
            )
            if result.status == "unreachable" and not result.saved and interactive:
                action = typer.prompt(
                    "Kraken could not be reached (this is not a key problem). "
                    "[r]etry, [s]ave unvalidated, [a]bort", default="r",
                )
                if action.startswith("r"):
                    continue
                if action.startswith("s"):
                    # one more try; if Kraken is still unreachable the keys are saved unvalidated
                    result = setup_credentials(
                        p, key, secret, password=password, validator=validator,
                        paths=settings.paths, save_unvalidated=True, force=force,
                    )
            break
        _report_setup(result)
        if not result.saved and not code:
            code = _setup_exit_code(result)
    if code:
        raise typer.Exit(code=code)


def _setup_exit_code(result: SetupResult) -> int:
    """The exit code of the error that kept a key pair from being saved: the auth error's
    (``AuthError`` 11, ``PermissionDeniedError`` 12) for rejected keys, the network or service
    error's (``NetworkError`` 16, ``ServiceUnavailableError`` 15, …) when Kraken was not
    reached."""
    from krakked import errors

    cls = getattr(errors, result.error_type or "", None)
    if isinstance(cls, type) and issubclass(cls, KrakkedError):
        return cls.exit_code
    return errors.AuthError.exit_code if result.auth_problem else errors.KrakenError.exit_code


def _setup_password(settings: Settings) -> str:
    def prompt() -> str:
        if settings.paths.secrets_file.exists():
            return typer.prompt("Master password of the existing secrets file", hide_input=True)
        return typer.prompt(
            "Choose a master password for the secrets file", hide_input=True,
            confirmation_prompt=True,
        )

    return master_password(prompt=prompt, interactive=True)  # setup reads its answers from stdin


def _report_setup(result: SetupResult) -> None:
    if result.status == "validated":
        out.print(f"[green]{result.product}: keys validated and saved[/]")
    elif result.saved:
        out.print(f"[yellow]{result.product}: saved UNVALIDATED[/] ({result.error})")
    elif result.status == "auth_failed":
        err.print(f"[red]{result.product}: Kraken rejected the keys; nothing saved[/]: "
                  f"{result.error}")
    else:
        err.print(f"[red]{result.product}: Kraken could not be reached (not a key problem); "
                  f"nothing saved[/]: {result.error}. Retry, or use --save-unvalidated.")


# -- config / creds ----------------------------------------------------------------------------


@config_app.command("show")
def config_show(json_: JsonOpt = False) -> None:
    """Print the effective settings (file values over defaults, environment over both)."""
    data = _settings().to_dict()
    if json_:
        _emit_json(data)
        return
    out.print_json(json.dumps(data, default=str))


@creds_app.command("show")
def creds_show(json_: JsonOpt = False) -> None:
    """Which key pairs krakked would use, from where, and whether they were validated.

    Keys show only their first 4 characters; secrets are never shown.
    """
    settings = _settings()
    prompt = _PasswordPrompt(_interactive() and not json_)
    keys, problems = _load_keys(settings, prompt)
    report: dict[str, Any] = {}
    for product in PRODUCTS:
        kp = keys[product]
        report[product] = {
            "present": kp is not None,
            "source": kp.source if kp else None,
            "key": kp.masked_key if kp else None,
            "validated": kp.validated if kp else None,
            "validated_at": kp.validated_at.isoformat() if kp and kp.validated_at else None,
            "problem": str(problems[product]) if product in problems else None,
            "sources_found": describe_sources(product, paths=settings.paths),
        }
    if json_:
        _emit_json(report)
        return
    table = Table(title="credentials")
    for col in ("product", "key", "source", "validated", "note"):
        table.add_column(col)
    for product, r in report.items():
        validated = "-" if r["validated"] is None else (
            f"yes {r['validated_at'] or ''}" if r["validated"] else "no")
        table.add_row(product, r["key"] or "-", r["source"] or "-", validated,
                      r["problem"] or ("" if r["present"] else "not configured"))
    out.print(table)


# -- market data -------------------------------------------------------------------------------


def _market(store: str | None, *, read: bool = False) -> Any:
    """The front door on the chosen store. ``read``: for commands that only read it — the store
    is opened read-only (it must exist) and Kraken is never asked (names resolve through the
    stored pairs snapshot, else the offline tables)."""
    from krakked.market_data import Market
    from krakked.store import resolve_store_url

    settings = _settings()
    url, _ = resolve_store_url(store, settings)
    return Market(url, settings=settings, offline=read, read_only=read)


@app.command()
def universe(
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """The spot universe: online pairs quoted in the region's currency (USD by default) —
    including spot pairs that also offer margin (their leverage is used only where the region
    supports margin; [universe] exclude_leveraged_pairs drops them) — with [universe]
    include/exclude and the optional liquidity floor applied. Fetched from Kraken's AssetPairs
    (and Ticker); if Kraken cannot be reached, the last stored snapshot is shown, marked stale,
    and without one the command fails with the network error's exit code."""
    with _market(store) as m:
        pairs = m.get_universe_metadata()
        stale, taken = m.universe_is_stale, m.universe_updated_at
    when = taken.isoformat() if taken else None
    if json_:
        _emit_json([{**_pair_dict(p), "stale": stale, "updated_at": when} for p in pairs])
        return
    title = f"Universe: {len(pairs)} pairs"
    if stale:
        title += f" (stale snapshot taken {when or 'at an unknown time'})"
    table = Table(title=title)
    for col in ("pair", "ws (v2)", "Kraken id", "base", "quote", "price dp", "volume dp",
                "ordermin", "costmin", "tick"):
        table.add_column(col)
    for p in pairs:
        table.add_row(p.canonical, p.ws_symbol, p.raw_name, p.base, p.quote,
                      str(p.price_decimals), str(p.volume_decimals), _plain(p.ordermin),
                      _plain(p.costmin), _plain(p.tick_size))
    out.print(table, highlight=False)


def _plain(value: Any) -> str:
    """A Decimal as a plain decimal string (``0.0000000001``, never ``1E-10``); "" for None."""
    if value is None:
        return ""
    return format(value, "f") if hasattr(value, "as_tuple") else str(value)


def _pair_dict(p: Any) -> dict[str, Any]:
    """A pair as JSON: the ``pairs`` columns (decimals as plain strings) + ``margin_available``."""
    row = p.to_row()
    out = {k: (_plain(v) if hasattr(v, "as_tuple") else v) for k, v in row.items()
           if k != "updated_at"}
    out["margin_available"] = p.margin_available
    return out


def _split_multi(args: list[str], flag: str) -> tuple[list[str], list[str]]:
    """``XBTUSD ETH/USD --tf 1h 1d`` -> (positionals, values of ``--tf``): click hands us the
    raw tail so that a flag can take several space-separated values, as the docs show."""
    positionals: list[str] = []
    values: list[str] = []
    target = positionals
    for word in args:
        if word == flag:
            target = values
        elif word.startswith(f"{flag}="):
            values.extend(v for v in word.split("=", 1)[1].split(",") if v)
        elif word.startswith("-"):
            raise typer.BadParameter(f"unknown option {word}")
        else:
            target.append(word)
    return positionals, values


@ohlc_app.command(
    "backfill",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def ohlc_backfill(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option(help="Re-fetch all Kraken serves, ignoring cursors.")
                    ] = False,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Closed candles into the store: krakked ohlc backfill XBTUSD ETH/USD --tf 1h 1d

    Pairs take any alias (XBTUSD, BTC/USD, XXBTZUSD); --tf takes one or more of
    1m 5m 15m 30m 1h 4h 1d 1w 15d (12h is derived from 1h/4h when read: Kraken's API has none).
    Each distinct pair/timeframe is fetched once, however many aliases name it (first seen first).
    Kraken serves only the latest 720 bars per interval; deeper history comes from trades and
    Kraken's CSV files. Each pair/timeframe is committed on its own with Kraken's cursor, so an
    interrupted run simply resumes; re-running only fetches what is new.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from krakked.market.candles import interval_minutes

    pairs, tfs = _split_multi(list(ctx.args), "--tf")
    if not pairs:
        raise typer.BadParameter("give at least one pair, e.g. XBTUSD", param_hint="PAIRS")
    if not tfs:
        raise typer.BadParameter("give at least one timeframe, e.g. --tf 1h", param_hint="--tf")
    for tf in tfs:
        interval_minutes(tf)  # unsupported timeframe: a clear error before any call
    results = []
    with _market(store) as m:
        jobs = _distinct_jobs([(m.resolve(p), tf) for p in pairs for tf in tfs])
        show = sys.stderr.isatty() and not json_
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                      console=err, disable=not show) as progress:
            task = progress.add_task("backfilling", total=len(jobs))
            for symbol, tf in jobs:
                progress.update(task, description=f"{symbol} {tf}")
                result = m.backfill_ohlc(symbol, tf, full=full)
                results.append(result)
                progress.advance(task)
                if not show and not json_:
                    err.print(f"{symbol} {tf}: {result.fetched} closed bars, "
                              f"{result.stored} stored", highlight=False)
    if json_:
        _emit_json([r.to_dict() for r in results])
        return
    table = Table(title="OHLC backfill")
    for col in ("pair", "tf", "closed bars", "stored", "first", "last"):
        table.add_column(col)
    for r in results:
        table.add_row(r.symbol, r.timeframe, str(r.fetched), str(r.stored),
                      r.first.isoformat()[:16] if r.first else "-",
                      r.last.isoformat()[:16] if r.last else "-")
    out.print(table)
    notes = sorted({n for r in results for n in r.notes})
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)


def _distinct_jobs(jobs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One job per distinct (canonical pair, interval), first seen first: ``XBTUSD BTC/USD
    --tf 1h 60`` fetches XBTUSD 1h once."""
    from krakked.market.candles import interval_minutes

    seen: dict[tuple[str, int], tuple[str, str]] = {}
    for symbol, tf in jobs:
        seen.setdefault((symbol, interval_minutes(tf)), (symbol, tf))
    return list(seen.values())


@app.command()
def candles(
    pair: Annotated[str, typer.Argument(help="Any alias: XBTUSD, BTC/USD, XXBTZUSD…")],
    tf: Annotated[str, typer.Option("--tf", help="1m 5m 15m 30m 1h 4h 12h 1d 1w 15d")] = "1h",
    last: Annotated[int | None, typer.Option(
        min=0, help="Only the newest N candles (of those inside --since/--until, if given).")
                    ] = None,
    since: Annotated[str | None, typer.Option(help="From this UTC date/time (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this UTC date/time (ISO).")] = None,
    format_: Annotated[str, typer.Option("--format",
                                         help="table, csv, json or parquet (to stdout).")
                       ] = "table",
    store: StoreOpt = None,
) -> None:
    """Closed candles from the store (no network). A timeframe whose own candles (Kraken's) do
    not cover a bucket is derived exactly from the coarsest finer stored series that covers the
    whole bucket (e.g. 4h from 1h, else 1m); a bucket nothing covers whole is left out, never
    partial.

    krakked candles XBTUSD --tf 1h --since 2024-01-01 --format csv > xbt.csv
    """
    import pyarrow as pa

    from krakked.store.arrow import arrow_to_candles

    if format_ not in ("table", "csv", "json", "parquet"):
        raise typer.BadParameter(f"{format_!r} is not table, csv, json or parquet",
                                 param_hint="--format")
    from krakked.market.candles import interval_minutes
    from krakked.times import parse_utc

    interval_minutes(tf)  # bad arguments are found before the store is opened
    parse_utc(since, "--since")
    parse_utc(until, "--until")
    with _market(store, read=True) as m:
        s, symbol = m.store, m.resolve(pair)
        if last is not None:  # the newest N inside the window, if one is given
            table: pa.Table = s.get_latest_candles(symbol, tf, last, as_="arrow", start=since,
                                                   end=until)
        elif since is not None and until is None:
            table = s.get_ohlc_since(symbol, tf, since, as_="arrow")
        else:
            table = s.get_candles(symbol, tf, since, until, as_="arrow")
    if format_ == "parquet":
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        sys.stdout.buffer.write(sink.getvalue().to_pybytes())
        sys.stdout.buffer.flush()
        return
    rows = [c.to_dict() for c in arrow_to_candles(table)]
    if format_ == "json":
        typer.echo(json.dumps(rows, indent=1))
        return
    if format_ == "csv":
        import csv

        fields = ["timestamp", "open", "high", "low", "close", "volume", "quote_volume",
                  "trade_count", "vwap", "source"]
        writer = csv.DictWriter(sys.stdout, fieldnames=["symbol", "interval_minutes", *fields],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    if not rows:
        err.print(f"no {tf} candles stored for {symbol} (run `krakked ohlc backfill {symbol} "
                  f"--tf {tf}` first)", highlight=False)
        raise typer.Exit(code=21)
    view = Table(title=f"{symbol} {tf}: {len(rows)} candles")
    for col in ("open time (UTC)", "open", "high", "low", "close", "volume", "trades"):
        view.add_column(col, justify="right")
    for r in rows:
        view.add_row(r["timestamp"][:16].replace("T", " "), r["open"], r["high"], r["low"],
                     r["close"], r["volume"], str(r["trade_count"]))
    out.print(view)


@store_app.command("info")
def store_info(json_: JsonOpt = False, store: StoreOpt = None) -> None:
    """Per pair and timeframe: first and last candle, rows, missing buckets and gap runs."""
    from krakked.market.candles import timeframe_name
    from krakked.store import resolve_store_url

    url, source = resolve_store_url(store, _settings())
    with _market(store, read=True) as m:
        rows = m.store.info()

    def series(minutes: int | None) -> str:
        return timeframe_name(minutes) if minutes else "trades"

    if json_:
        _emit_json({"store": url, "source": source, "series": [
            {**r, "timeframe": series(r.get("interval_minutes"))} for r in rows]})
        return
    table = Table(title=f"{url} ({source})")
    for col in ("pair", "series", "first", "last", "rows", "missing", "gaps"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["symbol"], series(r.get("interval_minutes")),
                      str(r["first"])[:16], str(r["last"])[:16], str(r["rows"]),
                      str(r.get("missing", "")), str(r.get("gaps", "")))
    out.print(table)


@app.command()
def export(
    destination: Annotated[str, typer.Option(
        help="Any dlt destination: duckdb, postgres, bigquery, snowflake, clickhouse, "
             "motherduck… configured the dlt way (.dlt/secrets.toml or "
             "DESTINATION__<NAME>__CREDENTIALS).")],
    dataset: Annotated[str, typer.Option(help="Dataset (schema) at the destination.")
                       ] = "kraken_market",
    pairs: Annotated[list[str] | None, typer.Option("--pair", help="Only these pairs "
                                                    "(repeatable); default all stored.")
                     ] = None,
    full: Annotated[bool, typer.Option(help="Drop the exported tables and state, send all.")
                    ] = False,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Candles and trades from the market store into a warehouse, incrementally, via dlt.

    Each run sends what is new since the last (with a day of overlap, merged on the natural
    keys, so nothing is duplicated). Pipeline `krakked_market`, state kept with the data at the
    destination; with --destination duckdb the file is krakked_export.duckdb in the data dir.
    """
    from krakked.sync.export import export_market

    settings = _settings()
    with _market(store, read=True) as m:
        report = export_market(
            m.store, destination, pipelines_dir=settings.paths.dlt_pipelines_dir, dataset=dataset,
            symbols=pairs, full=full,
            duckdb_path=settings.paths.data_dir / "krakked_export.duckdb",
        )
    if json_:
        _emit_json(report)
        return
    rows = ", ".join(f"{t} {n}" for t, n in sorted(report["rows"].items())) or "nothing new"
    out.print(f"exported to {destination} (dataset {dataset}): {rows} in "
              f"{report['seconds']} s", highlight=False)


# -- account history ---------------------------------------------------------------------------

SourceOpt = Annotated[str, typer.Option(
    "--source", help="futures, spot or all (default futures, as the original pipeline had it).")]
DestinationOpt = Annotated[str | None, typer.Option(
    help="A dlt destination: duckdb (default: kraken_<source>_account.duckdb in the data dir), "
         "postgres, bigquery, snowflake, clickhouse… configured the dlt way.")]


class _SyncProgressDisplay:
    """An account sync's progress on a terminal: one live line per resource on stderr (pages,
    rows, rate-limit waits, cursor), ticked off when the resource ends."""

    def __init__(self, console: Console) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}", markup=False),
            TextColumn("{task.fields[pages]} pages", markup=False),
            TextColumn("{task.completed} rows", markup=False),
            TextColumn("{task.fields[waits]} rate-limit waits", markup=False),
            TextColumn("cursor {task.fields[cursor]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}", markup=False),
            console=console, redirect_stdout=False, redirect_stderr=False,
        )
        self.tasks: dict[tuple[str | None, str], Any] = {}

    def __enter__(self) -> _SyncProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        key = (event.pipeline, event.resource)
        if key not in self.tasks:
            name = f"{event.pipeline}.{event.resource}" if event.pipeline else event.resource
            self.tasks[key] = self.progress.add_task(name, total=None, pages=0, waits=0,
                                                     cursor="-", note="")
        task = self.tasks[key]
        self.progress.update(task, completed=event.rows, pages=event.pages,
                             waits=event.rate_limit_waits, cursor=event.cursor or "-",
                             note=f"stopped: {event.error}" if event.error else "")
        if event.done:
            self.progress.update(task, total=event.rows)


class _ProgressLines:
    """While the command runs, shows the runner's progress lines (``krakked.account.progress``,
    INFO) on stderr whatever the log level."""

    def __enter__(self) -> _ProgressLines:
        self.logger = logging.getLogger("krakked.account.progress")
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


def _sync_progress(json_: bool) -> tuple[Any, Any]:
    """(context, progress callback) for an account sync: a live display on a terminal, else
    None (the runner's log lines on ``krakked.account.progress``, shown on stderr)."""
    if err.is_terminal and not json_:
        display = _SyncProgressDisplay(err)
        return display, display
    return _ProgressLines(), None


@account_app.command(
    "sync", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def account_sync(
    ctx: typer.Context,
    source: SourceOpt = "futures",
    since: Annotated[str | None, typer.Option(
        help="ISO time (e.g. 2024-01-01T00:00:00Z) that seeds the FIRST incremental run of each "
             "resource only; later runs resume from the saved cursors. Without it the first run "
             "fetches all the history Kraken serves.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail if any resource or load job fails "
                                              "(default: log it, load the rest).")] = False,
    destination: DestinationOpt = None,
    dev_mode: Annotated[bool, typer.Option(help="dlt dev mode: a fresh dataset and state each "
                                                "run.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Sync account history incrementally: krakked account sync --resources executions account_log

    --resources takes one or more of — futures: executions account_log position_history tickers
    open_positions; spot: balances ledgers trades_history closed_orders deposits withdrawals
    (default: all of the source's). Each run resumes from the cursors stored with the data, merges
    on natural keys (re-runs never duplicate), and logs rows, duration, cursors and API retries.
    Progress per resource (pages, rows, rate-limit waits, cursor) shows live on a terminal and as
    log lines on stderr otherwise. Pipelines kraken_futures / kraken_spot; dataset of the same
    name.
    """
    from rich.markup import escape

    from krakked.account.progress import rate_limit_waits
    from krakked.account.runner import run_syncs

    _, resources = _split_multi(list(ctx.args), "--resources")
    display, progress = _sync_progress(json_)
    with display:
        reports = run_syncs(source, resources=resources or None, since=since, strict=strict,
                            destination=destination, dev_mode=dev_mode, settings=_settings(),
                            progress=progress)
    if json_:
        _emit_json([r.to_dict() for r in reports])
        return
    for report in reports:
        data = report.to_dict()
        table = Table(title=f"{data['pipeline']} → {data['destination']} "
                            f"({data['duration_seconds']} s)")
        for col in ("resource", "rows", "last_timestamp", "continuation token"):
            table.add_column(col)
        for name, r in data["resources"].items():
            table.add_row(name, str(r.get("rows", 0)), str(r.get("last_timestamp") or "-"),
                          str(r.get("continuation_token") or "-"))
        out.print(table)
        api = data.get("api") or {}
        out.print(f"API: {api.get('requests', 0)} requests, {api.get('retries', 0)} retries, "
                  f"{rate_limit_waits(api)} rate-limit waits", highlight=False)
        for alert in data.get("alerts", []):
            err.print(f"[yellow]{alert['level']}[/] {alert['code']}: {escape(alert['message'])}",
                      highlight=False)


@account_app.command("state")
def account_state_cmd(
    source: SourceOpt = "futures",
    destination: DestinationOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Cursor per resource (last_timestamp, continuation token, rows at the destination), the
    alerts that hold now, and the last runs."""
    from rich.markup import escape

    from krakked.account.sources import expand_source_kind
    from krakked.account.state import account_state

    settings = _settings()
    states = {kind: account_state(kind, settings, destination)
              for kind in expand_source_kind(source)}
    if json_:
        _emit_json(states)
        return
    for kind, state in states.items():
        table = Table(title=f"{kind}: {state.get('pipeline', '')}")
        for col in ("resource", "last_timestamp", "continuation token", "rows"):
            table.add_column(col)
        for name, r in (state.get("resources") or {}).items():
            table.add_row(name, str(r.get("last_timestamp") or "-"),
                          str(r.get("continuation_token") or "-"), str(r.get("rows", "-")))
        out.print(table)
        for alert in state.get("alerts", []):
            err.print(f"[yellow]{alert['level']}[/] {alert['code']}: {escape(alert['message'])}",
                      highlight=False)


def _confirm_reset_all(kinds: tuple[str, ...], destination: str | None,
                       settings: Settings) -> None:
    """Ask before ``account reset --all`` drops everything; refuse (exit 2) when nobody can
    be asked."""
    from krakked.account.destinations import destination_label
    from krakked.account.sources import PIPELINES
    from krakked.errors import UsageError

    what = " and ".join(f"{PIPELINES[k][0]} at {destination_label(k, destination, settings)}"
                        for k in kinds)
    if not _interactive():
        raise UsageError(f"account reset --all would drop every table and all sync state of "
                         f"{what}; pass --yes to confirm (stdin is not a terminal, so krakked "
                         "cannot ask)")
    if not typer.confirm(f"Drop every table and all sync state of {what}?", default=False,
                         err=True):
        err.print("Nothing dropped.", highlight=False)
        raise typer.Exit(1)


@account_app.command("reset")
def account_reset(
    resource: Annotated[str | None, typer.Argument(help="The resource to reset.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Drop all data and state of the source "
                                                     "(like dlt pipeline … drop --drop-all); "
                                                     "asks first unless --yes.")
                    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --all drops "
                                                          "everything (needed without a "
                                                          "terminal).")] = False,
    source: SourceOpt = "futures",
    destination: DestinationOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Forget one resource (its table and cursor: the next sync starts over), or --all."""
    from krakked.account.sources import expand_source_kind
    from krakked.account.state import reset_all, reset_resource
    from krakked.errors import UsageError

    settings = _settings()
    if all_ == (resource is not None):
        raise UsageError("account reset: give one resource, or --all")
    if not all_:
        result: Any = reset_resource(source, resource or "", settings, destination=destination)
    else:
        kinds = expand_source_kind(source)
        if not yes:
            _confirm_reset_all(kinds, destination, settings)
        results = [reset_all(kind, settings, destination=destination) for kind in kinds]
        result = results[0] if len(results) == 1 else results
    if json_:
        _emit_json(result)
        return
    out.print(f"reset: {json.dumps(result, default=str)}", highlight=False)


# -- simulator and demo ------------------------------------------------------------------------


@sim_app.command("serve")
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
        out.print(f"Kraken simulator listening on [bold]{info['spot_url']}[/] "
                  f"(seed {seed}, tier {tier}{', faults ' + faults if faults else ''}). "
                  "Ctrl-C stops it.", highlight=False)
        out.print("Point krakked at it:", highlight=False)
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


@app.command()
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
        _emit_json(run_demo(seed=seed).to_dict())
        return
    with out.status("starting the simulator…") as spinner:
        report = run_demo(seed=seed, progress=lambda s: spinner.update(f"{s}…"))
    out.print(f"[bold]krakked demo[/] — ran against krakked's offline Kraken simulator "
              f"(seed {report.seed}, simulated now {report.sim_time}); nothing reached Kraken.",
              highlight=False)
    status = Table(title="Status")
    for col in ("", "Spot", "Futures"):
        status.add_column(col)
    s, f = report.spot_status, report.futures_status
    status.add_row("REST", _reach(s), _reach(f))
    status.add_row("credentials", _cred(s["credentials"]), _cred(f["credentials"]))
    out.print(status)
    tickers = Table(title="Ticker")
    for col in ("pair", "last", "bid", "ask", "24h volume", "24h trades"):
        tickers.add_column(col, justify="right" if col != "pair" else "left")
    for t in report.tickers:
        tickers.add_row(t["pair"], t["last"], t["bid"], t["ask"], t["volume_24h"],
                        str(t["trades_24h"]))
    out.print(tickers)
    balance = Table(title="Spot balance")
    balance.add_column("asset")
    balance.add_column("balance", justify="right")
    for asset, amount in sorted(report.balance.items()):
        balance.add_row(asset, amount)
    out.print(balance)
    candles = Table(title="XBTUSD 1h — last closed candles")
    for col in ("open time (UTC)", "open", "high", "low", "close", "volume", "trades"):
        candles.add_column(col, justify="right")
    for c in report.candles:
        candles.add_row(c["open_time"][:16].replace("T", " "), c["open"], c["high"], c["low"],
                        c["close"], c["volume"], str(c["trades"]))
    out.print(candles)
    fa = report.futures_account
    out.print(f"Futures: accounts {', '.join(fa['accounts'])}; open positions "
              f"{fa['open_positions']}; {fa['recent_executions']} recent executions.",
              highlight=False)
    total = sum(t for _, t in report.steps)
    out.print(f"[dim]{len(report.steps)} calls in {total:.2f} s. Try `krakked sim serve` to "
              "run the simulator for your own tools.[/]")


# -- entry point -------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"krakked {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More log output (-vv for debug).")] = 0,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    _State.verbose = verbose
    install_logging(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


def _one_line(text: str) -> str:
    return " ".join(redact(text).split())


def _fail(message: str, code: int, exc: BaseException | None = None) -> NoReturn:
    from rich.markup import escape

    # escaped: "[limits]" or "[kraken_futures]" in a message is text, not a rich style
    err.print(f"[red]error:[/] {escape(_one_line(message))}", highlight=False)
    if exc is not None and _State.verbose:
        import traceback

        err.print(redact("".join(traceback.format_exception(exc))), highlight=False)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every error ends as one line on stderr and a distinct exit code: a
    ``KrakkedError`` its class's code, bad usage (unknown flag, bad value) 2, an interrupt 130;
    ``-v`` adds the traceback."""
    try:
        code = app(args=argv, prog_name="krakked", standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 1)
    except typer.TyperException as exc:  # click's own errors (typer ships click inside)
        if type(exc).__name__ == "NoArgsIsHelpError":
            ctx = getattr(exc, "ctx", None)
            typer.echo(ctx.get_help() if ctx else exc.format_message())
            sys.exit(0)
        code = int(getattr(exc, "exit_code", 1))
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if code == UsageError.exit_code and ctx \
            else ""
        _fail(exc.format_message() + hint, code)
    except KrakkedError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still one line (-v shows where)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback; "
              "please report it)", 1, exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

