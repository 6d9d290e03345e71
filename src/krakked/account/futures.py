"""dlt source for Kraken Futures account history: executions, account log and position history
(incremental, merged on natural keys) and tickers / open positions (snapshots, replaced).

Every call goes through ``krakked.kraken.futures.FuturesClient``, which signs each attempt afresh,
retries by Kraken's rules and waits on the per-key rate limiters. ``KrakenFuturesAuth`` signs
requests for users of dlt's own ``RESTClient`` / ``rest_api``.

State per resource (``dlt.current.resource_state()``), committed by dlt only with a successful
load, so a failed run leaves the previous values and the next run overlaps and merges:

* ``executions``, ``position_history``: ``last_timestamp`` (ISO, newest row loaded) and
  ``continuation_token`` (the token of the last page of the last successful run: normally None).
* ``account_log``: ``last_timestamp``, ``last_id`` (largest entry id loaded),
  ``continuation_token`` and ``gaps`` (time windows a capped fallback walk left for later runs).

Fees: Futures fills carry no fee of their own in the account's books; every execution books two
account-log rows sharing its ``execution`` uid — the cash leg (``asset`` = the collateral, with
``fee`` and ``realized_pnl``) and the position leg (``asset`` = the contract, lower case, with the
old and new position in ``old_balance`` / ``new_balance``). Join them on
``account_log.execution = executions.execution_uid`` (see ``FEE_JOIN_SQL``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Mapping, MutableMapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration.specs.base_configuration import BaseConfiguration, configspec
from dlt.common.typing import TSecretStrValue
from dlt.sources.helpers.rest_client.auth import AuthConfigBase
from requests import PreparedRequest

from krakked.account.common import (
    ProgressCallback,
    SkipCounter,
    coalesce_timestamp,
    column_decimal,
    decimal_columns,
    decimal_hints,
    iso,
    nonce_directory,
    numbers_to_decimal,
    parse_since,
    parse_timestamp,
    permission_guard,
    raw_data,
    report_progress,
    snake_case,
    to_ms,
    to_naive_utc,
)
from krakked.account.common import futures_client as _futures_client
from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import ConfigError, MalformedResponseError
from krakked.kraken.auth import futures_signature, nonce_source_for
from krakked.kraken.futures import FuturesClient
from krakked.logs import mask_key, register_secret

__all__ = [
    "ACCOUNT_LOG_TIME_PATHS",
    "EXECUTION_TIME_PATHS",
    "FALLBACK_MAX_PAGES",
    "FEE_JOIN_SQL",
    "POSITION_TIME_PATHS",
    "KrakenFuturesAuth",
    "account_log_row",
    "execution_row",
    "kraken_futures_source",
    "position_row",
]

log = logging.getLogger("krakked.account.futures")

# --- Kraken knowledge as data ------------------------------------------------------------------

EXECUTION_TIME_PATHS = ("timestamp", "info.timestamp", "takerOrder.timestamp", "trade.timestamp")
"""Where an execution's time is looked for, first usable wins (element, then its execution)."""
ACCOUNT_LOG_TIME_PATHS = ("timestamp", "date")
POSITION_TIME_PATHS = ("timestamp",)

EXECUTION_ITEMS = ("elements", "executionEvents")
ACCOUNT_LOG_ITEMS = ("logs", "accountLog")
POSITION_ITEMS = ("elements",)
TOKEN_KEYS = ("continuationToken", "continuation_token")

FALLBACK_MAX_PAGES = 50
"""Most pages one run walks backwards by ``before`` when Kraken returns a full account-log page
without a continuation token (the rest is left to later runs as a ``gap``)."""

EXECUTION_DECIMALS = ("quantity", "price", "mark_price", "usd_value", "fee", "position_size",
                      "order_quantity", "order_filled", "limit_price", "taker_reduced_quantity")
POSITION_DECIMALS = ("old_position", "new_position", "old_average_entry_price",
                     "new_average_entry_price", "realized_pnl", "realized_funding", "fee",
                     "execution_price", "execution_size")

ACCOUNT_LOG_DECIMALS = ("fee", "funding_rate", "mark_price", "trade_price", "old_balance",
                        "new_balance", "old_average_entry_price", "new_average_entry_price",
                        "realized_pnl", "realized_funding", "conversion_spread_percentage",
                        "liquidation_fee")
"""Account-log amounts: Kraken sends them as JSON numbers, which the client decodes exactly as
``Decimal``; stored as ``DECIMAL(38,18)`` like every other amount (any other numeric field
Kraken adds is hinted the same way when it first appears)."""
ACCOUNT_LOG_TEXTS = ("date", "booking_uid", "info", "asset", "margin_account", "contract",
                     "execution", "collateral")


def _columns(decimals: tuple[str, ...] = (), texts: tuple[str, ...] = (),
             bools: tuple[str, ...] = (), times: tuple[str, ...] = ("timestamp",),
             bigints: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Column hints, so a column exists with its type even when a load has only nulls in it."""
    hints: dict[str, dict[str, Any]] = decimal_columns(decimals)
    for names, data_type in ((texts, "text"), (bools, "bool"), (times, "timestamp"),
                             (bigints, "bigint")):
        hints.update({name: {"data_type": data_type} for name in names})
    return hints


EXECUTION_COLUMNS = _columns(
    EXECUTION_DECIMALS,
    texts=("uid", "execution_uid", "tradeable", "direction", "liquidity", "order_uid",
           "order_type", "client_id", "account_uid", "maker_order_uid", "taker_order_uid",
           "raw_data"),
    bools=("limit_filled", "reduce_only"))
POSITION_COLUMNS = _columns(
    POSITION_DECIMALS,
    texts=("uid", "element_uid", "execution_uid", "account_uid", "tradeable", "position_change",
           "update_reason", "fee_currency", "raw_data"),
    times=("timestamp", "fill_time"))
ACCOUNT_LOG_COLUMNS = _columns(ACCOUNT_LOG_DECIMALS, texts=(*ACCOUNT_LOG_TEXTS, "raw_data"),
                               bigints=("id",))

FEE_JOIN_SQL = """\
SELECT e.uid, e.execution_uid, e.timestamp, e.tradeable, e.direction, e.quantity, e.price,
       cash.fee, cash.realized_pnl, cash.new_balance AS cash_after,
       pos.new_balance AS position_after
FROM executions AS e
JOIN account_log AS cash
  ON cash.execution = e.execution_uid AND cash.asset <> lower(cash.contract)
JOIN account_log AS pos
  ON pos.execution = e.execution_uid AND pos.asset = lower(pos.contract)
ORDER BY e.timestamp, e.uid"""
"""How a user puts each fill's fee (and its position change) next to the fill."""

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
        fill = parse_timestamp(row["fill_time"])
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
            parsed = parse_timestamp(row[name])
            row[name] = to_naive_utc(parsed) if parsed else None
    row["server_time"] = to_naive_utc(server_time) if server_time else None
    row["raw_data"] = raw_data(item)
    return row


def _with_decimal_hints(rows: list[Row], known: Mapping[str, Any]) -> Any:
    """``rows``, marked with ``DECIMAL(38,18)`` hints for the numeric fields ``known`` (the
    resource's column hints) does not name, so a field Kraken adds is stored exactly too."""
    extra = decimal_hints(rows, known)
    return dlt.mark.with_hints(rows, dlt.mark.make_hints(columns=extra)) if extra else rows


def _snapshot(resource: str, payload: Mapping[str, Any], key: str, time_fields: tuple[str, ...],
              progress: ProgressCallback | None) -> Any:
    """One snapshot page as rows (amounts exact, hinted), reported to ``progress``."""
    server_time = parse_timestamp(payload.get("serverTime"))
    rows = [_snapshot_row(item, server_time, time_fields)
            for item in _items(payload, (key,)) if isinstance(item, Mapping)]
    report_progress(progress, resource, 1, len(rows), done=True)
    return _with_decimal_hints(rows, {})


# --- paging -------------------------------------------------------------------------------------


class _Run:
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
        previous = parse_timestamp(state.get("last_timestamp"))
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


def _start(state: State, seed: datetime | None) -> datetime | None:
    """Where a run starts: the newest time loaded, else ``since`` (first run), else None."""
    return parse_timestamp(state.get("last_timestamp")) or seed


def _token_paged(run: _Run, fetch: Callable[..., dict[str, Any]], item_keys: tuple[str, ...],
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


def _account_log_by_id(run: _Run, client: FuturesClient, start: datetime | None, count: int
                       ) -> Iterator[list[Row]]:
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


def _advance_token(run: _Run, payload: Mapping[str, Any], token: str | None) -> str | None:
    """The page's continuation token (kept in state for display and the staleness alert);
    a token equal to the one just sent would loop forever, so it is an error."""
    next_token = _token(payload)
    run.state["continuation_token"] = next_token
    if next_token and next_token == token:
        raise MalformedResponseError(
            f"{run.resource}: Kraken returned the same continuation token twice",
            endpoint=f"futures:{run.resource}")
    return next_token


def _walk_back(run: _Run, client: FuturesClient, since_ms: int | None, before_ms: int | None,
               count: int, budget: list[int]) -> Generator[list[Row], None, int | None]:
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


def _account_log_by_time(run: _Run, client: FuturesClient, start: datetime | None, count: int,
                         max_pages: int) -> Iterator[list[Row]]:
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


def _sync_account_log(client: FuturesClient, state: State, seed: datetime | None, count: int,
                      paging: str, max_pages: int, progress: ProgressCallback | None = None
                      ) -> Iterator[list[Row]]:
    run = _Run("account_log", "booking_uid", state, progress)
    start = _start(state, seed)
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


# --- the source ---------------------------------------------------------------------------------


@configspec
class KrakenFuturesSourceConfiguration(BaseConfiguration):
    """The options dlt may fill from its config (``sources.kraken_futures.<option>``, e.g.
    ``SOURCES__KRAKEN_FUTURES__SINCE``). ``credentials``, ``client`` and ``settings`` are left
    out on purpose: keys come from ``krakked.credentials`` (which reads ``[kraken_futures]`` in
    ``.dlt/secrets.toml`` too), never from dlt's injection of a ``credentials`` value."""

    since: str | datetime | None = None
    strict: bool = False
    page_size: int = 1000
    account_log_count: int = 500
    account_log_paging: str = "auto"
    fallback_max_pages: int = FALLBACK_MAX_PAGES


@dlt.source(name="kraken_futures", spec=KrakenFuturesSourceConfiguration)
def kraken_futures_source(
    credentials: KeyPair | None = None,
    *,
    client: FuturesClient | None = None,
    settings: Settings | None = None,
    since: datetime | str | None = None,
    strict: bool = False,
    page_size: int = 1000,
    account_log_count: int = 500,
    account_log_paging: Literal["auto", "time"] = "auto",
    fallback_max_pages: int = FALLBACK_MAX_PAGES,
    progress: ProgressCallback | None = None,
) -> Any:
    """Kraken Futures account history as five resources: ``executions``, ``account_log``,
    ``position_history`` (incremental, ``merge`` on ``uid`` / ``booking_uid`` / ``uid``) and
    ``tickers``, ``open_positions`` (snapshots, ``replace``). Every row has ``raw_data``
    (Kraken's record as sorted-key JSON) and the incremental ones a naive-UTC ``timestamp``.

    ``credentials`` default to the Futures key pair ``krakked.credentials`` finds (a missing
    one raises ``NoCredentialsError`` saying how to set it); ``client`` replaces the client
    altogether. ``since`` seeds a resource's first run only (none = all the history Kraken
    serves). ``strict`` turns a permission-denied resource from a warning into a failure.
    ``page_size`` is the executions / positions ``count``; ``account_log_count`` the account-log
    page. ``account_log_paging``: ``auto`` pages by entry id (time when Kraken sends no ids),
    ``time`` walks back by ``before`` (at most ``fallback_max_pages`` pages a run).
    ``progress`` is told each resource's pages, rows and cursor after every page and at its end.
    """
    if page_size < 1 or account_log_count < 1 or fallback_max_pages < 0:
        raise ConfigError("page_size and account_log_count must be >= 1, "
                          "fallback_max_pages >= 0")
    if account_log_paging not in ("auto", "time"):
        raise ConfigError(f"account_log_paging must be 'auto' or 'time', not "
                          f"{account_log_paging!r}")
    api = _futures_client(credentials, settings, client)
    seed = parse_since(since)

    @dlt.resource(name="executions", write_disposition="merge", primary_key="uid",
                  max_table_nesting=0, columns=EXECUTION_COLUMNS)
    def executions() -> Iterator[list[Row]]:
        """Own fills, ascending by time. Key ``uid`` (history element); ``execution_uid`` is
        what the account log's ``execution`` names. Cursor: ``last_timestamp`` (inclusive
        ``since``) + ``continuation_token``."""
        state = dlt.current.resource_state()
        with permission_guard("executions", strict, state, progress):
            run = _Run("executions", "uid", state, progress)
            yield from _token_paged(run, api.get_executions, EXECUTION_ITEMS, execution_row,
                                    _start(state, seed), page_size)
            run.finish()

    @dlt.resource(name="account_log", write_disposition="merge", primary_key="booking_uid",
                  max_table_nesting=0, columns=ACCOUNT_LOG_COLUMNS)
    def account_log() -> Iterator[Any]:
        """Account-log entries (trades' cash and position legs, funding, transfers...). Key
        ``booking_uid``. Cursor: ``last_id`` (``from``), ``last_timestamp``, ``gaps``."""
        state = dlt.current.resource_state()
        with permission_guard("account_log", strict, state, progress):
            for rows in _sync_account_log(api, state, seed, account_log_count,
                                          account_log_paging, fallback_max_pages, progress):
                yield _with_decimal_hints(rows, ACCOUNT_LOG_COLUMNS)

    @dlt.resource(name="position_history", write_disposition="merge", primary_key="uid",
                  max_table_nesting=0, columns=POSITION_COLUMNS)
    def position_history() -> Iterator[list[Row]]:
        """Position updates (``event.PositionUpdate`` flattened). Key ``uid`` = the update's
        ``execution_uid``, else the element uid. Cursor as ``executions``."""
        state = dlt.current.resource_state()
        with permission_guard("position_history", strict, state, progress):
            run = _Run("position_history", "uid", state, progress)
            yield from _token_paged(run, api.get_position_history, POSITION_ITEMS,
                                    position_row, _start(state, seed), page_size)
            run.finish()

    @dlt.resource(name="tickers", write_disposition="replace", primary_key="symbol",
                  max_table_nesting=0)
    def tickers() -> Iterator[Any]:
        """Every Futures ticker now (snapshot, replaced each run); key ``symbol``; prices,
        sizes and rates as exact decimals."""
        with permission_guard("tickers", strict, progress=progress):
            payload = api.get_tickers()
            yield _snapshot("tickers", payload, "tickers", ("lastTime",), progress)

    @dlt.resource(name="open_positions", write_disposition="replace", max_table_nesting=0)
    def open_positions() -> Iterator[Any]:
        """Open positions now (snapshot, replaced each run): side, symbol, price, size...
        (amounts as exact decimals)."""
        with permission_guard("open_positions", strict, progress=progress):
            payload = api.get_open_positions()
            yield _snapshot("open_positions", payload, "openPositions", ("fillTime",),
                            progress)

    return executions, account_log, position_history, tickers, open_positions


# --- auth for dlt's RESTClient ------------------------------------------------------------------


@configspec
class KrakenFuturesAuth(AuthConfigBase):
    """Signs Kraken Futures requests for dlt's ``RESTClient`` / ``rest_api``: ``APIKey``,
    ``Nonce`` and ``Authent`` over the exact query string (or form body) and the path without
    ``/derivatives``, computed when the request is prepared, with a fresh nonce from the key's
    process-wide nonce source (shared with krakked's own clients, persisted under
    ``nonce_dir``, default krakked's data directory).

    Disable dlt's own retry for Kraken: dlt's retrying session re-sends the *same* prepared
    request, so the retry carries a used nonce (Kraken answers ``nonceBelowThreshold`` /
    ``EAPI:Invalid nonce``), and it retries on HTTP status only, never seeing Spot rate limits,
    which arrive with HTTP 200. Give ``RESTClient(session=requests.Session())`` (or
    ``dlt.sources.helpers.requests.Client(request_max_attempts=1, raise_for_status=False).session``)
    and retry by re-sending the request from scratch — or use krakked's clients, which re-sign
    every attempt. ``repr`` and ``str`` never show the secret.
    """

    api_key: str = None
    api_secret: TSecretStrValue = None
    nonce_format: str = "ms_counter"
    nonce_dir: str | None = None
    persist_nonce: bool = True

    @classmethod
    def from_key_pair(cls, pair: KeyPair, **options: Any) -> KrakenFuturesAuth:
        """An auth for ``pair`` (a Futures ``KeyPair``); ``options`` set the other fields."""
        return cls(api_key=pair.api_key, api_secret=pair.api_secret.reveal(), **options)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        secret = str(self.api_secret)
        register_secret(secret)
        register_secret(self.api_key, kind="key")
        parts = urlsplit(request.url or "")
        body = request.body
        if body:
            postdata = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        else:
            postdata = parts.query
        source = nonce_source_for(self.api_key, self.nonce_format,
                                  nonce_directory(self.nonce_dir, self.persist_nonce))
        nonce = str(source.next())
        request.headers["APIKey"] = self.api_key
        request.headers["Nonce"] = nonce
        request.headers["Authent"] = futures_signature(parts.path, postdata, nonce, secret)
        return request

    def __repr__(self) -> str:
        return f"KrakenFuturesAuth(api_key={mask_key(self.api_key or '')!r}, api_secret=REDACTED)"

    __str__ = __repr__
