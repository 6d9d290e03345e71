"""``krakked account sync / state / reset``: your own history into DuckDB or any dlt destination,
with progress per resource."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt
from krakked.config import Settings

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
    if common.err.is_terminal and not json_:
        display = _SyncProgressDisplay(common.err)
        return display, display
    return _ProgressLines(), None


@common.account_app.command(
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

    _, resources = common.split_multi(list(ctx.args), "--resources")
    display, progress = _sync_progress(json_)
    with display:
        reports = run_syncs(source, resources=resources or None, since=since, strict=strict,
                            destination=destination, dev_mode=dev_mode,
                            settings=common.current_settings(), progress=progress)
    if json_:
        common.emit_json([r.to_dict() for r in reports])
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
        common.out.print(table)
        api = data.get("api") or {}
        common.out.print(f"API: {api.get('requests', 0)} requests, {api.get('retries', 0)} "
                         f"retries, {rate_limit_waits(api)} rate-limit waits", highlight=False)
        for alert in data.get("alerts", []):
            common.err.print(f"[yellow]{alert['level']}[/] {alert['code']}: "
                             f"{escape(alert['message'])}", highlight=False)


@common.account_app.command("state")
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

    settings = common.current_settings()
    states = {kind: account_state(kind, settings, destination)
              for kind in expand_source_kind(source)}
    if json_:
        common.emit_json(states)
        return
    for kind, state in states.items():
        table = Table(title=f"{kind}: {state.get('pipeline', '')}")
        for col in ("resource", "last_timestamp", "continuation token", "rows"):
            table.add_column(col)
        for name, r in (state.get("resources") or {}).items():
            table.add_row(name, str(r.get("last_timestamp") or "-"),
                          str(r.get("continuation_token") or "-"), str(r.get("rows", "-")))
        common.out.print(table)
        for alert in state.get("alerts", []):
            common.err.print(f"[yellow]{alert['level']}[/] {alert['code']}: "
                             f"{escape(alert['message'])}", highlight=False)


def _confirm_reset_all(kinds: tuple[str, ...], destination: str | None,
                       settings: Settings) -> None:
    """Ask before ``account reset --all`` drops everything; refuse (exit 2) when nobody can
    be asked."""
    from krakked.account.destinations import destination_label
    from krakked.account.sources import PIPELINES
    from krakked.errors import UsageError

    what = " and ".join(f"{PIPELINES[k][0]} at {destination_label(k, destination, settings)}"
                        for k in kinds)
    if not common.interactive():
        raise UsageError(f"account reset --all would drop every table and all sync state of "
                         f"{what}; pass --yes to confirm (stdin is not a terminal, so krakked "
                         "cannot ask)")
    if not typer.confirm(f"Drop every table and all sync state of {what}?", default=False,
                         err=True):
        common.err.print("Nothing dropped.", highlight=False)
        raise typer.Exit(1)


@common.account_app.command("reset")
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

    settings = common.current_settings()
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
        common.emit_json(result)
        return
    common.out.print(f"reset: {json.dumps(result, default=str)}", highlight=False)
