"""The helpers of the Kraken Spot source (``spot.py``): Kraken's entries as warehouse rows, the
incremental endpoints as data (``Endpoint``), and the paging walks — by ``ofs`` (robust to
entries arriving while paging) and by Kraken's cursor — with the error handling that keeps
what a failed run fetched."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import dlt

from krakked.account.common import (
    SkipCounter,
    column_decimal,
    iso,
    kraken_time,
    permission_guard,
    raw_data,
    readable_time,
    to_decimal,
    to_naive_utc,
)
from krakked.account.progress import ProgressCallback, report_progress
from krakked.account.spot_settings import (
    FUNDING_DECIMALS,
    LEDGER_DECIMALS,
    ORDER_DECIMALS,
    TRADE_DECIMALS,
)
from krakked.errors import KrakenError, PermissionDeniedError

__all__ = [
    "DEPOSITS",
    "LEDGERS",
    "ORDERS",
    "TRADES",
    "WITHDRAWALS",
    "Endpoint",
    "ResourceRun",
    "cursor_paged",
    "funding_row",
    "incremental",
    "ledger_row",
    "ofs_paged",
    "order_row",
    "trade_row",
]

log = logging.getLogger("krakked.account.spot")

Row = dict[str, Any]
State = MutableMapping[str, Any]


# --- rows ---------------------------------------------------------------------------------------


def _decimals(row: Row, names: tuple[str, ...]) -> Row:
    for name in names:
        if name in row:
            row[name] = column_decimal(row[name])
    return row


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def ledger_row(ident: str, entry: Mapping[str, Any]) -> Row:
    """A Ledgers entry keyed ``ledger_id`` (amounts exact decimals)."""
    return _decimals({"ledger_id": ident, **entry}, LEDGER_DECIMALS)


def trade_row(ident: str, entry: Mapping[str, Any]) -> Row:
    """A TradesHistory entry keyed ``txid`` (amounts exact decimals)."""
    row = _decimals({"txid": ident, **entry}, TRADE_DECIMALS)
    if "trade_id" in row:
        row["trade_id"] = _int_or_none(row["trade_id"])
    return row


def order_row(ident: str, entry: Mapping[str, Any]) -> Row:
    """A ClosedOrders entry keyed ``txid``; ``descr`` promoted to ``descr_*`` columns."""
    row: Row = {"txid": ident, **entry}
    descr = row.get("descr")
    if isinstance(descr, Mapping):
        for key, value in descr.items():
            row[f"descr_{key}"] = value
        del row["descr"]
    if "userref" in row:
        row["userref"] = _int_or_none(row["userref"])
    opened = kraken_time(row.get("opentm"))
    row["opened_at"] = to_naive_utc(opened) if opened else None
    return _decimals(row, ORDER_DECIMALS)


def funding_row(ident: str, entry: Mapping[str, Any]) -> Row:
    """A DepositStatus / WithdrawStatus entry keyed ``refid``."""
    return _decimals({**entry, "refid": ident}, FUNDING_DECIMALS)


class Endpoint:
    """One incremental Spot endpoint: how to call it, where its entries are, their time."""

    def __init__(self, resource: str, key: str, result_key: str, time_field: str,
                 build: Callable[[str, Mapping[str, Any]], Row],
                 decimals: tuple[str, ...], params: Mapping[str, Any] | None = None) -> None:
        self.resource = resource
        self.key = key
        self.result_key = result_key
        self.time_field = time_field
        self.build = build
        self.decimals = decimals
        self.params = dict(params or {})


LEDGERS = Endpoint("ledgers", "ledger_id", "ledger", "time", ledger_row, LEDGER_DECIMALS)
TRADES = Endpoint("trades_history", "txid", "trades", "time", trade_row, TRADE_DECIMALS)
ORDERS = Endpoint("closed_orders", "txid", "closed", "closetm", order_row, ORDER_DECIMALS,
                  {"closetime": "close"})
DEPOSITS = Endpoint("deposits", "refid", "deposit", "time", funding_row, FUNDING_DECIMALS)
WITHDRAWALS = Endpoint("withdrawals", "refid", "withdraw", "time", funding_row, FUNDING_DECIMALS)


# --- paging -------------------------------------------------------------------------------------


class ResourceRun:
    """One resource run: ids seen, the newest and oldest times, skips, and the state; it reports
    each page to ``progress``."""

    def __init__(self, kind: Endpoint, state: State, progress: ProgressCallback | None = None
                 ) -> None:
        self.kind = kind
        self.state = state
        self.progress = progress
        self.seen: set[str] = set()
        self.skips = SkipCounter(kind.resource)
        previous = readable_time(state.get("last_timestamp"))
        self.newest: datetime | None = to_naive_utc(previous) if previous else None
        self.oldest_time: Decimal | None = None  # Kraken's own time value, for ``end``
        self.rows = 0
        self.pages = 0

    def take(self, entries: list[tuple[str, Any]]) -> list[Row]:
        out: list[Row] = []
        for ident, entry in entries:
            if not isinstance(entry, Mapping) or not ident:
                self.skips.skip(entry, "not an entry")
                continue
            if ident in self.seen:
                continue
            self.seen.add(ident)
            raw_time = to_decimal(entry.get(self.kind.time_field))
            when = kraken_time(entry.get(self.kind.time_field))
            if when is None or raw_time is None:
                self.skips.skip({self.kind.key: ident})
                continue
            if self.oldest_time is None or raw_time < self.oldest_time:
                self.oldest_time = raw_time
            row = self.kind.build(ident, entry)
            row["timestamp"] = to_naive_utc(when)
            row["raw_data"] = raw_data({ident: entry})
            if self.newest is None or row["timestamp"] > self.newest:
                self.newest = row["timestamp"]
            out.append(row)
        self.rows += len(out)
        self.report()
        return out

    def report(self, done: bool = False, error: str | None = None) -> None:
        """Tell ``progress`` where this run stands (pages, rows, cursor)."""
        cursor = iso(self.newest) if self.newest is not None else None
        report_progress(self.progress, self.kind.resource, self.pages, self.rows, cursor,
                        done=done, error=error)

    def finish(self) -> None:
        self.skips.report()
        if self.newest is not None:
            self.state["last_timestamp"] = iso(self.newest)
        self.state["last_error"] = None
        self.report(done=True)
        log.info("%s: %d new row(s) in %d page(s); last_timestamp %s", self.kind.resource,
                 self.rows, self.pages, self.state.get("last_timestamp"))


def start_param(state: State, seed: datetime | None, overlap: float) -> str | None:
    """``start`` (exclusive, Unix seconds) for this run: the newest time loaded minus
    ``overlap``, else ``since`` (first run), else None (all history)."""
    last = readable_time(state.get("last_timestamp"))
    if last is not None:
        last -= timedelta(seconds=overlap)
    else:
        last = seed
    if last is None:
        return None
    return f"{last.timestamp():.6f}"


def ofs_paged(run: ResourceRun, fetch: Callable[..., Any], start: str | None
              ) -> Iterator[list[Row]]:
    """Newest-first pages of ``start < time``, by ``ofs``, robust to entries arriving or going
    while paging (see ``krakked.account.spot``)."""
    end: str | None = None
    ofs = 0
    expected: int | None = None
    kind = run.kind
    while True:
        oldest_before = run.oldest_time
        result = fetch(**kind.params, start=start, end=end, ofs=ofs)
        run.pages += 1
        entries = result.get(kind.result_key) or {}
        if not isinstance(entries, Mapping):
            entries = {}
        count = result.get("count")
        rows = run.take(list(entries.items()))
        if rows:
            yield rows
        if not isinstance(count, int) or isinstance(count, bool):
            # No count (``without_count``): anchor every page on the oldest time seen.
            if not rows or run.oldest_time is None:
                return
            end, ofs = format(run.oldest_time, "f"), 0
            continue
        if expected is not None and count != expected:
            anchor = oldest_before if oldest_before is not None else run.oldest_time
            log.info("%s: %d entries became %d while paging; continuing back from %s with end",
                     kind.resource, expected, count, anchor)
            end, ofs, expected = (format(anchor, "f") if anchor is not None else None), 0, None
            continue
        expected = count
        ofs += len(entries)
        if not entries or ofs >= count:
            return


def cursor_paged(run: ResourceRun, fetch: Callable[..., Any], start: str | None
                 ) -> Iterator[list[Row]]:
    """DepositStatus / WithdrawStatus pages: Kraken's ``cursor`` until ``next_cursor`` is null
    (a plain list answer is one page)."""
    cursor: Any = True
    seen_cursors: set[str] = set()
    while True:
        result = fetch(start=start, cursor=cursor)
        run.pages += 1
        if isinstance(result, Mapping):
            entries = result.get(run.kind.result_key)
            if not isinstance(entries, list):
                entries = next((v for v in result.values() if isinstance(v, list)), [])
            next_cursor = result.get("next_cursor")
        else:
            entries, next_cursor = (result if isinstance(result, list) else []), None
        pairs = [(str(e.get("refid") or ""), e) if isinstance(e, Mapping) else ("", e)
                 for e in entries]
        rows = run.take(pairs)
        if rows:
            yield rows
        if not next_cursor or not isinstance(next_cursor, str) or next_cursor in seen_cursors:
            return
        seen_cursors.add(next_cursor)
        cursor = next_cursor


def incremental(kind: Endpoint, fetch: Callable[..., Any], pager: Callable[..., Iterator[Any]],
                seed: datetime | None, overlap: float, strict: bool,
                progress: ProgressCallback | None = None) -> Iterator[list[Row]]:
    """One incremental resource's run: ``pager`` over ``fetch`` from the cursor, within the
    permission guard. A Kraken error ends it keeping the rows fetched and recording
    ``last_error`` (the cursor stays, so the next run fetches the window again), unless
    ``strict``."""
    state = dlt.current.resource_state()
    run = ResourceRun(kind, state, progress)
    with permission_guard(kind.resource, strict, state, progress):
        try:
            yield from pager(run, fetch, start_param(state, seed, overlap))
        except PermissionDeniedError:
            raise
        except KrakenError as exc:
            if strict:
                raise
            log.error("%s: %s; keeping the %d row(s) fetched, the next run starts again from "
                      "last_timestamp %s", kind.resource, exc, run.rows,
                      state.get("last_timestamp"))
            state["last_error"] = {"message": str(exc), "at": iso(datetime.now(UTC)),
                                   "rows_kept": run.rows}
            run.report(done=True, error=str(exc))
            return
        run.finish()
