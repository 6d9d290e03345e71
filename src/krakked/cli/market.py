"""``krakked universe``, ``ohlc backfill``, ``candles``, ``store info``, ``export``: market data,
through the front door (``krakked.market_data.Market``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from krakked.cli import common
from krakked.cli.common import JsonOpt, StoreOpt


@common.app.command()
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
    with common.open_market(store) as m:
        pairs = m.get_universe_metadata()
        stale, taken = m.universe_is_stale, m.universe_updated_at
    when = taken.isoformat() if taken else None
    if json_:
        common.emit_json([{**_pair_dict(p), "stale": stale, "updated_at": when} for p in pairs])
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
    common.out.print(table, highlight=False)


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


@common.ohlc_app.command(
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

    pairs, tfs = common.split_multi(list(ctx.args), "--tf")
    if not pairs:
        raise typer.BadParameter("give at least one pair, e.g. XBTUSD", param_hint="PAIRS")
    if not tfs:
        raise typer.BadParameter("give at least one timeframe, e.g. --tf 1h", param_hint="--tf")
    for tf in tfs:
        interval_minutes(tf)  # unsupported timeframe: a clear error before any call
    results = []
    with common.open_market(store) as m:
        jobs = _distinct_jobs([(m.resolve(p), tf) for p in pairs for tf in tfs])
        show = sys.stderr.isatty() and not json_
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                      console=common.err, disable=not show) as progress:
            task = progress.add_task("backfilling", total=len(jobs))
            for symbol, tf in jobs:
                progress.update(task, description=f"{symbol} {tf}")
                result = m.backfill_ohlc(symbol, tf, full=full)
                results.append(result)
                progress.advance(task)
                if not show and not json_:
                    common.err.print(f"{symbol} {tf}: {result.fetched} closed bars, "
                                     f"{result.stored} stored", highlight=False)
    if json_:
        common.emit_json([r.to_dict() for r in results])
        return
    table = Table(title="OHLC backfill")
    for col in ("pair", "tf", "closed bars", "stored", "first", "last"):
        table.add_column(col)
    for r in results:
        table.add_row(r.symbol, r.timeframe, str(r.fetched), str(r.stored),
                      r.first.isoformat()[:16] if r.first else "-",
                      r.last.isoformat()[:16] if r.last else "-")
    common.out.print(table)
    notes = sorted({n for r in results for n in r.notes})
    for note in notes:
        common.err.print(f"[yellow]note:[/] {note}", highlight=False)


def _distinct_jobs(jobs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One job per distinct (canonical pair, interval), first seen first: ``XBTUSD BTC/USD
    --tf 1h 60`` fetches XBTUSD 1h once."""
    from krakked.market.candles import interval_minutes

    seen: dict[tuple[str, int], tuple[str, str]] = {}
    for symbol, tf in jobs:
        seen.setdefault((symbol, interval_minutes(tf)), (symbol, tf))
    return list(seen.values())


@common.candles_app.command("show")
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
    """Closed candles from the store (no network) — the default of `krakked candles`, so
    `krakked candles XBTUSD` is `krakked candles show XBTUSD`. A timeframe whose own candles
    (Kraken's) do not cover a bucket is derived exactly from the coarsest finer stored series
    that covers the whole bucket (e.g. 4h from 1h, else 1m); a bucket nothing covers whole is
    left out, never partial.

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
    with common.open_market(store, read=True) as m:
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
        common.err.print(f"no {tf} candles stored for {symbol} (run `krakked ohlc backfill "
                         f"{symbol} --tf {tf}` first)", highlight=False)
        raise typer.Exit(code=21)
    view = Table(title=f"{symbol} {tf}: {len(rows)} candles")
    for col in ("open time (UTC)", "open", "high", "low", "close", "volume", "trades"):
        view.add_column(col, justify="right")
    for r in rows:
        view.add_row(r["timestamp"][:16].replace("T", " "), r["open"], r["high"], r["low"],
                     r["close"], r["volume"], str(r["trade_count"]))
    common.out.print(view)


@common.store_app.command("info")
def store_info(json_: JsonOpt = False, store: StoreOpt = None) -> None:
    """Per pair and timeframe: first and last candle, rows, missing buckets and gap runs."""
    from krakked.market.candles import timeframe_name
    from krakked.store import resolve_store_url

    url, source = resolve_store_url(store, common.current_settings())
    with common.open_market(store, read=True) as m:
        rows = m.store.info()

    def series(minutes: int | None) -> str:
        return timeframe_name(minutes) if minutes else "trades"

    if json_:
        common.emit_json({"store": url, "source": source, "series": [
            {**r, "timeframe": series(r.get("interval_minutes"))} for r in rows]})
        return
    table = Table(title=f"{url} ({source})")
    for col in ("pair", "series", "first", "last", "rows", "missing", "gaps"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["symbol"], series(r.get("interval_minutes")),
                      str(r["first"])[:16], str(r["last"])[:16], str(r["rows"]),
                      str(r.get("missing", "")), str(r.get("gaps", "")))
    common.out.print(table)


@common.app.command()
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

    settings = common.current_settings()
    with common.open_market(store, read=True) as m:
        report = export_market(
            m.store, destination, pipelines_dir=settings.paths.dlt_pipelines_dir, dataset=dataset,
            symbols=pairs, full=full,
            duckdb_path=settings.paths.data_dir / "krakked_export.duckdb",
        )
    if json_:
        common.emit_json(report)
        return
    rows = ", ".join(f"{t} {n}" for t, n in sorted(report["rows"].items())) or "nothing new"
    common.out.print(f"exported to {destination} (dataset {dataset}): {rows} in "
                     f"{report['seconds']} s", highlight=False)
