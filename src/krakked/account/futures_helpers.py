"""The helpers of the Kraken Futures source (``futures.py``): Kraken's payloads as warehouse rows,
and the paging walks — continuation tokens, account-log ids, and the capped walk back by
``before`` with the gaps it leaves for later runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Mapping, MutableMapping
from datetime import datetime
from typing import Any

import dlt

from krakked.account.common import (
    SkipCounter,
    coalesce_timestamp,
    column_decimal,
    decimal_hints,
    iso,
    kraken_time,
    numbers_to_decimal,
    raw_data,
    readable_time,
    snake_case,
    to_ms,
    to_naive_utc,
)
from krakked.account.futures_settings import (
    ACCOUNT_LOG_ITEMS,
    ACCOUNT_LOG_TIME_PATHS,
    EXECUTION_TIME_PATHS,
    POSITION_DECIMALS,
    POSITION_TIME_PATHS,
    TOKEN_KEYS,
)
from krakked.account.progress import ProgressCallback, report_progress
from krakked.errors import MalformedResponseError
from krakked.kraken.futures import FuturesClient

__all__ = [
    "ResourceRun",
    "account_log_row",
    "execution_row",
    "position_row",
    "snapshot",
    "start_time",
    "sync_account_log",
    "token_paged",
    "with_decimal_hints",
]

log = logging.getLogger("krakked.account.futures")

Row = dict[str, Any]
State = MutableMapping[str, Any]


# --- rows ---------------------------------------------------------------------------------------


def _items(payload: Mapping[str, Any], keys: tuple[str, ...]) -> list[Any]:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, list):
            return value
    return []


def _token(payload: Mapping[str, Any]) -> str | None:
    for key in TOKEN_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _event_body(element: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """``element.event.<name>`` matched case-insensitively (v3 ``Execution``, v2 ``execution``)."""
    event = element.get("event")
    if isinstance(event, Mapping):
        for key, value in event.items():
            if isinstance(key, str) and key.lower() == name.lower() and isinstance(value, Mapping):
                return value
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    """An identifier as text (Kraken's uids are strings; anything else is made one)."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else raw_data(value)


def execution_row(element: Mapping[str, Any], account_uid: str | None = None) -> Row | None:
    """One warehouse row for an execution element, or None if it has no usable time.

    The ``event.Execution.execution`` object's fields are promoted; ``uid`` is the element's uid
    (the natural key), ``execution_uid`` the execution's (what the account log's ``execution``
    names). Our side of the fill is the order whose ``accountUid`` is ours (else the side whose
    ``*OrderData.fee`` is set): its order fields, ``fee`` and ``position_size`` are promoted and
    ``liquidity`` says ``maker`` or ``taker``.
    """
    body = _event_body(element, "execution")
    if body is not None and isinstance(body.get("execution"), Mapping):
        ex: Mapping[str, Any] = body["execution"]
    else:
        ex = body if body is not None else element
    when = coalesce_timestamp(element, EXECUTION_TIME_PATHS) or coalesce_timestamp(
        ex, EXECUTION_TIME_PATHS)
    if when is None:
        return None
    maker, taker = _mapping(ex.get("makerOrder")), _mapping(ex.get("takerOrder"))
    maker_data, taker_data = _mapping(ex.get("makerOrderData")), _mapping(ex.get("takerOrderData"))
    side: str | None = None
    if account_uid:
        if maker.get("accountUid") == account_uid:
            side = "maker"
        elif taker.get("accountUid") == account_uid:
            side = "taker"
    if side is None:
        if maker_data.get("fee") is not None and taker_data.get("fee") is None:
            side = "maker"
        elif taker_data.get("fee") is not None and maker_data.get("fee") is None:
            side = "taker"
    order = maker if side == "maker" else taker if side == "taker" else {}
    data = maker_data if side == "maker" else taker_data if side == "taker" else {}
    uid = _text(element.get("uid")) or _text(ex.get("uid"))
    return {
        "uid": uid,
        "execution_uid": _text(ex.get("uid")) or uid,
        "timestamp": to_naive_utc(when),
        "tradeable": order.get("tradeable") or maker.get("tradeable") or taker.get("tradeable")
        or ex.get("tradeable"),
        "direction": order.get("direction"),
        "liquidity": side,
        "quantity": column_decimal(ex.get("quantity")),
        "price": column_decimal(ex.get("price")),
        "mark_price": column_decimal(ex.get("markPrice")),
        "usd_value": column_decimal(ex.get("usdValue")),
        "limit_filled": ex.get("limitFilled"),
        "fee": column_decimal(data.get("fee")),
        "position_size": column_decimal(data.get("positionSize")),
        "order_uid": order.get("uid"),
        "order_type": order.get("orderType"),
        "order_quantity": column_decimal(order.get("quantity")),
        "order_filled": column_decimal(order.get("filled")),
        "limit_price": column_decimal(order.get("limitPrice")),
        "client_id": order.get("clientId"),
        "reduce_only": order.get("reduceOnly"),
        "account_uid": order.get("accountUid") or account_uid,
        "maker_order_uid": maker.get("uid"),
        "taker_order_uid": taker.get("uid"),
        "taker_reduced_quantity": column_decimal((body or {}).get("takerReducedQuantity")),
        "raw_data": raw_data(element),
    }


def position_row(element: Mapping[str, Any], account_uid: str | None = None) -> Row | None:
    """One row for a position-history element (``event.PositionUpdate`` flattened, names in
    snake case), or None without a usable time. ``uid`` = the update's ``executionUid``, or the
    element's uid for updates without an execution (funding realisations)."""
    update = _event_body(element, "PositionUpdate")
    if update is None:
        update = element if "event" not in element else {}
    when = coalesce_timestamp(element, POSITION_TIME_PATHS) or coalesce_timestamp(
        update, POSITION_TIME_PATHS)
    if when is None:
        return None
    row: Row = {snake_case(str(k)): v for k, v in update.items()}
    for name in POSITION_DECIMALS:
        if name in row:
            row[name] = column_decimal(row[name])
    if "fill_time" in row:
        fill = kraken_time(row["fill_time"])
        row["fill_time"] = to_naive_utc(fill) if fill else None
    row["element_uid"] = _text(element.get("uid"))
    row["uid"] = _text(update.get("executionUid")) or row["element_uid"]
    row["timestamp"] = to_naive_utc(when)
    row["raw_data"] = raw_data(element)
    return row


def account_log_row(entry: Mapping[str, Any], account_uid: str | None = None) -> Row | None:
    """One row for an account-log entry (Kraken's fields, JSON numbers as exact decimals, ``id``
    kept an integer), or None without a usable time."""
    when = coalesce_timestamp(entry, ACCOUNT_LOG_TIME_PATHS)
    if when is None:
        return None
    row = numbers_to_decimal(entry, keep=("id",))
    if "booking_uid" in row:
        row["booking_uid"] = _text(row["booking_uid"])
    row["timestamp"] = to_naive_utc(when)
    row["raw_data"] = raw_data(entry)
    return row


def _snapshot_row(item: Mapping[str, Any], server_time: datetime | None,
                  time_fields: tuple[str, ...]) -> Row:
    row = numbers_to_decimal(item)
    for name in time_fields:
        if name in row:
            parsed = kraken_time(row[name])
            row[name] = to_naive_utc(parsed) if parsed else None
    row["server_time"] = to_naive_utc(server_time) if server_time else None
    row["raw_data"] = raw_data(item)
    return row


def with_decimal_hints(rows: list[Row], known: Mapping[str, Any]) -> Any:
    """``rows``, marked with ``DECIMAL(38,18)`` hints for the numeric fields ``known`` (the
    resource's column hints) does not name, so a field Kraken adds is stored exactly too."""
    extra = decimal_hints(rows, known)
    return dlt.mark.with_hints(rows, dlt.mark.make_hints(columns=extra)) if extra else rows


def snapshot(resource: str, payload: Mapping[str, Any], key: str, time_fields: tuple[str, ...],
             progress: ProgressCallback | None) -> Any:
    """One snapshot page as rows (amounts exact, hinted), reported to ``progress``."""
    server_time = kraken_time(payload.get("serverTime"))
    rows = [_snapshot_row(item, server_time, time_fields)
            for item in _items(payload, (key,)) if isinstance(item, Mapping)]
    report_progress(progress, resource, 1, len(rows), done=True)
    return with_decimal_hints(rows, {})


# --- paging -------------------------------------------------------------------------------------


class ResourceRun:
    """What one resource run keeps: ids seen (dedupe within the run), newest time, skips; it
    reports each page to ``progress``."""

    def __init__(self, resource: str, key: str, state: State,
                 progress: ProgressCallback | None = None) -> None:
        self.resource = resource
        self.key = key
        self.state = state
        self.progress = progress
        self.seen: set[Any] = set()
        self.skips = SkipCounter(resource)
        previous = readable_time(state.get("last_timestamp"))
        self.newest: datetime | None = to_naive_utc(previous) if previous else None
        self.rows = 0
        self.pages = 0

    def take(self, items: list[Any], build: Callable[[Mapping[str, Any], str | None], Row | None],
             account_uid: str | None = None) -> list[Row]:
        out: list[Row] = []
        for item in items:
            if not isinstance(item, Mapping):
                self.skips.skip(item, "not an object")
                continue
            row = build(item, account_uid)
            if row is None:
                self.skips.skip(item)
                continue
            ident = row.get(self.key)
            if ident is None:
                self.skips.skip(item, f"no {self.key}")
                continue
            if ident in self.seen:
                continue
            self.seen.add(ident)
            out.append(row)
            stamp = row["timestamp"]
            if self.newest is None or stamp > self.newest:
                self.newest = stamp
        self.rows += len(out)
        self.report()
        return out

    def report(self, done: bool = False) -> None:
        """Tell ``progress`` where this run stands (pages, rows, cursor)."""
        cursor = iso(self.newest) if self.newest is not None else None
        report_progress(self.progress, self.resource, self.pages, self.rows, cursor, done=done)

    def finish(self) -> None:
        self.skips.report()
        if self.newest is not None:
            self.state["last_timestamp"] = iso(self.newest)
        self.state.pop("last_error", None)  # it synced: an earlier denial no longer holds
        self.report(done=True)
        log.info("%s: %d new row(s) in %d page(s); last_timestamp %s", self.resource,
                 self.rows, self.pages, self.state.get("last_timestamp"))


def start_time(state: State, seed: datetime | None) -> datetime | None:
    """Where a run starts: the newest time loaded, else ``since`` (first run), else None."""
    return readable_time(state.get("last_timestamp")) or seed


def token_paged(run: ResourceRun, fetch: Callable[..., dict[str, Any]],
                item_keys: tuple[str, ...],
                build: Callable[[Mapping[str, Any], str | None], Row | None],
                start: datetime | None, page_size: int) -> Iterator[list[Row]]:
    """Ascending pages from ``start`` (inclusive) following Kraken's continuation token.

    A full page without a token (Kraken dropped it) continues from that page's newest time;
    rows already seen in this run are dropped, and a page bringing nothing new ends the walk.
    """
    since_ms = to_ms(start) if start is not None else None
    token: str | None = None
    while True:
        payload = fetch(since=since_ms, sort="asc", count=page_size, continuation_token=token)
        run.pages += 1
        items = _items(payload, item_keys)
        rows = run.take(items, build, payload.get("accountUid"))
        if rows:
            yield rows
        next_token = _advance_token(run, payload, token)
        if next_token:
            token = next_token
            continue
        if len(items) >= page_size and rows:
            newest = max(row["timestamp"] for row in rows)
            log.warning("%s: full page of %d without a continuation token; continuing from %s",
                        run.resource, len(items), iso(newest))
            since_ms, token = to_ms(newest), None
            continue
        return


def _note_ids(state: State, entries: list[Any]) -> None:
    """Keep the largest account-log entry id seen in ``state["last_id"]``."""
    numbered = [e["id"] for e in entries if isinstance(e, Mapping)
                and isinstance(e.get("id"), int) and not isinstance(e.get("id"), bool)]
    previous = state.get("last_id")
    if isinstance(previous, int):
        numbered.append(previous)
    if numbered:
        state["last_id"] = max(numbered)


def _has_ids(entries: list[Any]) -> bool:
    return all(isinstance(e, Mapping) and isinstance(e.get("id"), int)
               and not isinstance(e.get("id"), bool) for e in entries)


class _NoIds(Exception):
    """Account-log entries without ``id``: page by time instead."""


def _account_log_by_id(run: ResourceRun, client: FuturesClient, start: datetime | None,
                       count: int) -> Iterator[list[Row]]:
    """Ascending pages by entry id: ``from = last_id + 1`` (ids are dense and grow with time);
    a continuation token, where Kraken returns one, is followed."""
    last_id = run.state.get("last_id")
    params: dict[str, Any] = {"sort": "asc", "count": count}
    if isinstance(last_id, int):
        params["from_"] = last_id + 1
    elif start is not None:
        params["since"] = to_ms(start)
    token: str | None = None
    while True:
        payload = client.get_account_log(**params, continuation_token=token)
        run.pages += 1
        entries = _items(payload, ACCOUNT_LOG_ITEMS)
        if entries and not _has_ids(entries):
            raise _NoIds
        yield_rows = run.take(entries, account_log_row)
        ids = [e["id"] for e in entries]
        _note_ids(run.state, entries)
        if yield_rows:
            yield yield_rows
        next_token = _advance_token(run, payload, token)
        if next_token:
            token = next_token
            continue
        if len(entries) < count:
            return
        params = {"sort": "asc", "count": count, "from_": max(ids) + 1}
        token = None


def _advance_token(run: ResourceRun, payload: Mapping[str, Any], token: str | None) -> str | None:
    """The page's continuation token (kept in state for display and the staleness alert);
    a token equal to the one just sent would loop forever, so it is an error."""
    next_token = _token(payload)
    run.state["continuation_token"] = next_token
    if next_token and next_token == token:
        raise MalformedResponseError(
            f"{run.resource}: Kraken returned the same continuation token twice",
            endpoint=f"futures:{run.resource}")
    return next_token


def _walk_back(run: ResourceRun, client: FuturesClient, since_ms: int | None,
               before_ms: int | None, count: int, budget: list[int]
               ) -> Generator[list[Row], None, int | None]:
    """Descending pages of the window ``since <= t < before``; generator returning the ``before``
    where the walk stopped for lack of ``budget`` (fallback pages left), or None when complete.

    Kraken's token is followed where it gives one. A full page without one pages backwards with
    ``before = earliest timestamp in page + 1 ms``: ``before`` is exclusive and several entries
    share a millisecond (an execution's cash and position legs), so stepping to the earliest
    time itself would lose the rest of that millisecond; the entries of the boundary
    millisecond already seen come back and are dropped by ``booking_uid``. Only if a whole page
    is that one millisecond does the walk step past it (with a warning)."""
    token: str | None = None
    while True:
        payload = client.get_account_log(since=since_ms, before=before_ms, count=count,
                                          sort="desc", continuation_token=token)
        run.pages += 1
        entries = _items(payload, ACCOUNT_LOG_ITEMS)
        rows = run.take(entries, account_log_row)
        _note_ids(run.state, entries)
        if rows:
            yield rows
        next_token = _advance_token(run, payload, token)
        if next_token:
            token = next_token
            continue
        token = None
        if len(entries) < count:
            return None
        stamps = [coalesce_timestamp(e, ACCOUNT_LOG_TIME_PATHS) for e in entries
                  if isinstance(e, Mapping)]
        usable = [to_ms(s) for s in stamps if s is not None]
        if not usable:
            log.warning("account_log: a full page without continuation token or timestamps; "
                        "cannot page further back")
            return None
        earliest = min(usable)
        if rows:
            next_before = earliest + 1
        else:
            log.warning("account_log: more than %d entries share the millisecond %d; stepping "
                        "past it (raise account_log_count to keep them all)", count, earliest)
            next_before = earliest
        if budget[0] <= 0:
            return next_before
        budget[0] -= 1
        before_ms = next_before


def _account_log_by_time(run: ResourceRun, client: FuturesClient, start: datetime | None,
                         count: int, max_pages: int) -> Iterator[list[Row]]:
    """The new window (from ``start``) walked back from now, then the gaps earlier capped runs
    left, within one budget of ``max_pages`` fallback pages; what is left is kept in ``gaps``."""
    budget = [max_pages]
    old_gaps = [list(g) for g in run.state.get("gaps") or []]
    new_gaps: list[list[int | None]] = []
    since_ms = to_ms(start) if start is not None else None
    stopped = yield from _walk_back(run, client, since_ms, None, count, budget)
    if stopped is not None:
        new_gaps.append([since_ms, stopped])
    for gap_since, gap_before in old_gaps:
        if budget[0] <= 0:
            new_gaps.append([gap_since, gap_before])
            continue
        stopped = yield from _walk_back(run, client, gap_since, gap_before, count, budget)
        if stopped is not None:
            new_gaps.append([gap_since, stopped])
    if new_gaps:
        log.warning("account_log: fallback paging stopped after %d pages; %d window(s) left "
                    "for the next runs (state 'gaps')", max_pages, len(new_gaps))
    run.state["gaps"] = new_gaps


def sync_account_log(client: FuturesClient, state: State, seed: datetime | None, count: int,
                     paging: str, max_pages: int, progress: ProgressCallback | None = None
                     ) -> Iterator[list[Row]]:
    """The account log's pages for one run: by entry id (``paging="auto"``, time when Kraken
    sends no ids), else walked back by time within ``max_pages`` fallback pages."""
    run = ResourceRun("account_log", "booking_uid", state, progress)
    start = start_time(state, seed)
    if paging == "auto" and not state.get("gaps"):
        try:
            yield from _account_log_by_id(run, client, start, count)
        except _NoIds:
            log.info("account_log: entries carry no ids; paging by time")
        else:
            run.finish()
            return
    yield from _account_log_by_time(run, client, start, count, max_pages)
    run.finish()

