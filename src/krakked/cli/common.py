"""What every command group of the ``krakked`` command shares: the typer apps, the consoles,
the common options, settings, keys and the front door on the chosen store."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from krakked import __version__
from krakked.config import Settings, load_settings
from krakked.credentials import (
    PRODUCTS,
    load_key_pair,
    master_password,
)
from krakked.errors import CredentialsError, NoCredentialsError
from krakked.logs import install_logging, redact

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


class DefaultCommandGroup(TyperGroup):
    """A command group that runs its default command (``show``) when the first word names none
    of its commands: ``krakked candles XBTUSD --tf 1h`` is ``krakked candles show XBTUSD --tf
    1h`` (and a bare ``krakked candles`` asks for the pair), ``krakked candles build …`` runs
    ``build``, ``krakked candles --help`` lists both."""

    default_command = "show"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


candles_app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Candles in the market store. `krakked candles PAIR [--tf 1h] [--last N] [--since] "
         "[--until] [--format]` reads them (the default command, `show`: "
         "`krakked candles show --help` lists its options); `krakked candles build PAIRS "
         "--from-trades` builds 1m candles from stored trades.",
)
app.add_typer(candles_app, name="candles")
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


class BarDisplay:
    """A progress display around a rich ``Progress`` (``self.bar``): entering the display
    starts the bar, leaving it stops it."""

    bar: Any

    def __enter__(self) -> Any:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


class State:
    verbose: int = 0


def current_settings() -> Settings:
    return load_settings()


def emit_json(data: Any) -> None:
    typer.echo(redact(json.dumps(data, indent=2, default=str, sort_keys=False)))


class PasswordPrompt:
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


def interactive() -> bool:
    return sys.stdin.isatty()


def load_keys(settings: Settings, prompt: PasswordPrompt
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


def open_market(store: str | None, *, read: bool = False) -> Any:
    """The front door on the chosen store. ``read``: for commands that only read it — the store
    is opened read-only (it must exist) and Kraken is never asked (names resolve through the
    stored pairs snapshot, else the offline tables)."""
    from krakked.market_data import Market
    from krakked.store import resolve_store_url

    settings = current_settings()
    url, _ = resolve_store_url(store, settings)
    return Market(url, settings=settings, offline=read, read_only=read)


def split_flags(args: list[str], flags: tuple[str, ...]
                ) -> tuple[list[str], dict[str, list[str]]]:
    """``XBTUSD ETH/USD --tf 1h 1d`` -> (positionals, values of each flag): click hands us the
    raw tail so that a flag can take several space-separated values, as the docs show.
    ``--flag=a,b`` and comma-separated positionals work too."""
    positionals: list[str] = []
    values: dict[str, list[str]] = {flag: [] for flag in flags}
    target = positionals
    for word in args:
        flag, eq, inline = word.partition("=")
        if flag in values:
            target = values[flag]
            if eq:
                target.extend(v for v in inline.split(",") if v)
        elif word.startswith("-"):
            raise typer.BadParameter(f"unknown option {word}")
        else:
            target.append(word)
    return positionals, values


def split_multi(args: list[str], flag: str) -> tuple[list[str], list[str]]:
    """``split_flags`` with one flag: (positionals, its values)."""
    positionals, values = split_flags(args, (flag,))
    return positionals, values[flag]


# -- the root options ---------------------------------------------------------------------------


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
    State.verbose = verbose
    install_logging(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
