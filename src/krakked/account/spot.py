"""dlt source for Kraken Spot account history: balances (snapshot) and ledgers, trades, closed
orders, deposits and withdrawals (incremental, merged on Kraken's ids).

Every call goes through ``krakked.kraken.spot.SpotClient``, which signs each attempt afresh,
maps Kraken's HTTP-200 errors (rate limits included) and charges each call's cost — 4 for the
history endpoints by default — to the key's call counter before sending. ``KrakenSpotAuth`` signs
requests for users of dlt's own ``RESTClient`` / ``rest_api``.

Paging (Ledgers, TradesHistory, ClosedOrders): 50 entries a call, newest first, ``ofs`` 0, 50,
100… over the window ``start < time`` until ``count`` entries are seen. Entries arriving while
paging shift the offsets; a changed ``count`` between pages reveals it, and paging then goes on
backwards from the oldest time seen before that page with ``end`` (inclusive, so entries at that
time come back and are dropped by id). Deposits and withdrawals page with Kraken's cursor.

State per resource: ``last_timestamp`` (ISO, newest entry loaded; the next run asks for
``start = last_timestamp - overlap_seconds``) and ``last_error``. A run that fails part-way keeps
the rows it fetched (merged by id, so nothing doubles), leaves ``last_timestamp`` at the last good
value so the next run fetches the window again, and records the error in ``last_error`` (logged
as an ERROR; ``krakked.account.common.resource_errors`` lists them). With ``strict`` it fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration.specs.base_configuration import BaseConfiguration, configspec
from dlt.common.typing import TSecretStrValue
from dlt.sources.helpers.rest_client.auth import AuthConfigBase
from requests import PreparedRequest

from krakked.account.common import (
    ProgressCallback,
    SkipCounter,
    column_decimal,
    decimal_columns,
    iso,
    nonce_directory,
    parse_since,
    parse_timestamp,
    permission_guard,
    raw_data,
    report_progress,
    to_decimal,
    to_naive_utc,
)
from krakked.account.common import spot_client as _spot_client
from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import ConfigError, KrakenError, PermissionDeniedError
from krakked.kraken.auth import encode_form, nonce_source_for, spot_signature
from krakked.kraken.spot import SpotClient
from krakked.logs import mask_key, register_secret

__all__ = ["PAGE_SIZE", "KrakenSpotAuth", "kraken_spot_source"]

log = logging.getLogger("krakked.account.spot")

PAGE_SIZE = 50
"""Entries per Ledgers / TradesHistory / ClosedOrders call (fixed by Kraken)."""

TRADE_DECIMALS = ("price", "cost", "fee", "vol", "margin", "cprice", "ccost", "cfee", "cvol",
                  "cmargin", "net", "time")
LEDGER_DECIMALS = ("amount", "fee", "balance", "time")
ORDER_DECIMALS = ("vol", "vol_exec", "cost", "fee", "price", "stopprice", "limitprice",
                  "opentm", "closetm", "starttm", "expiretm", "descr_price", "descr_price2")
FUNDING_DECIMALS = ("amount", "fee", "time")
BALANCE_DECIMALS = ("balance", "hold_trade", "credit", "credit_used", "available")

Row = dict[str, Any]
State = MutableMapping[str, Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    opened = parse_timestamp(row.get("opentm"))
    row["opened_at"] = to_naive_utc(opened) if opened else None
    return _decimals(row, ORDER_DECIMALS)


def funding_row(ident: str, entry: Mapping[str, Any]) -> Row:
    """A DepositStatus / WithdrawStatus entry keyed ``refid``."""
    return _decimals({**entry, "refid": ident}, FUNDING_DECIMALS)


class _Kind:
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


LEDGERS = _Kind("ledgers", "ledger_id", "ledger", "time", ledger_row, LEDGER_DECIMALS)
TRADES = _Kind("trades_history", "txid", "trades", "time", trade_row, TRADE_DECIMALS)
ORDERS = _Kind("closed_orders", "txid", "closed", "closetm", order_row, ORDER_DECIMALS,
               {"closetime": "close"})
DEPOSITS = _Kind("deposits", "refid", "deposit", "time", funding_row, FUNDING_DECIMALS)
WITHDRAWALS = _Kind("withdrawals", "refid", "withdraw", "time", funding_row, FUNDING_DECIMALS)


# --- paging -------------------------------------------------------------------------------------


class _Run:
    """One resource run: ids seen, the newest and oldest times, skips, and the state; it reports
    each page to ``progress``."""

    def __init__(self, kind: _Kind, state: State, progress: ProgressCallback | None = None
                 ) -> None:
        self.kind = kind
        self.state = state
        self.progress = progress
        self.seen: set[str] = set()
        self.skips = SkipCounter(kind.resource)
        previous = parse_timestamp(state.get("last_timestamp"))
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
            kraken_time = to_decimal(entry.get(self.kind.time_field))
            when = parse_timestamp(entry.get(self.kind.time_field))
            if when is None or kraken_time is None:
                self.skips.skip({self.kind.key: ident})
                continue
            if self.oldest_time is None or kraken_time < self.oldest_time:
                self.oldest_time = kraken_time
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


def _start(state: State, seed: datetime | None, overlap: float) -> str | None:
    """``start`` (exclusive, Unix seconds) for this run: the newest time loaded minus
    ``overlap``, else ``since`` (first run), else None (all history)."""
    last = parse_timestamp(state.get("last_timestamp"))
    if last is not None:
        last -= timedelta(seconds=overlap)
    else:
        last = seed
    if last is None:
        return None
    return f"{last.timestamp():.6f}"


def _ofs_paged(run: _Run, fetch: Callable[..., Any], start: str | None) -> Iterator[list[Row]]:
    """Newest-first pages of ``start < time``, by ``ofs``, robust to entries arriving or going
    while paging (see the module docstring)."""
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


def _cursor_paged(run: _Run, fetch: Callable[..., Any], start: str | None) -> Iterator[list[Row]]:
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


def _incremental(kind: _Kind, fetch: Callable[..., Any], pager: Callable[..., Iterator[Any]],
                 seed: datetime | None, overlap: float, strict: bool,
                 progress: ProgressCallback | None = None) -> Iterator[list[Row]]:
    state = dlt.current.resource_state()
    run = _Run(kind, state, progress)
    with permission_guard(kind.resource, strict, state, progress):
        try:
            yield from pager(run, fetch, _start(state, seed, overlap))
        except PermissionDeniedError:
            raise
        except KrakenError as exc:
            if strict:
                raise
            log.error("%s: %s; keeping the %d row(s) fetched, the next run starts again from "
                      "last_timestamp %s", kind.resource, exc, run.rows,
                      state.get("last_timestamp"))
            state["last_error"] = {"message": str(exc), "at": iso(_utcnow()),
                                   "rows_kept": run.rows}
            run.report(done=True, error=str(exc))
            return
        run.finish()


# --- the source ---------------------------------------------------------------------------------


@configspec
class KrakenSpotSourceConfiguration(BaseConfiguration):
    """The options dlt may fill from its config (``sources.kraken_spot.<option>``); keys come
    from ``krakked.credentials``, never from dlt's injection of a ``credentials`` value."""

    since: str | datetime | None = None
    strict: bool = False
    overlap_seconds: float = 60.0


@dlt.source(name="kraken_spot", spec=KrakenSpotSourceConfiguration)
def kraken_spot_source(
    credentials: KeyPair | None = None,
    *,
    client: SpotClient | None = None,
    settings: Settings | None = None,
    since: datetime | str | None = None,
    strict: bool = False,
    overlap_seconds: float = 60.0,
    progress: ProgressCallback | None = None,
) -> Any:
    """Kraken Spot account history as six resources: ``balances`` (snapshot, ``replace``, key
    ``asset``), ``ledgers`` (key ``ledger_id``), ``trades_history`` and ``closed_orders`` (key
    ``txid``), ``deposits`` and ``withdrawals`` (key ``refid``) — the last five incremental,
    ``merge``. Rows carry Kraken's fields (amounts as exact decimals), a naive-UTC
    ``timestamp`` and ``raw_data``.

    ``credentials`` default to the Spot key pair ``krakked.credentials`` finds (a missing one
    raises ``NoCredentialsError`` saying how to set it); ``client`` replaces the client. ``since``
    seeds a resource's first run only (none = all history). Later runs ask for entries after
    ``last_timestamp - overlap_seconds`` (overlap is merged away). ``strict`` makes a permission
    denied or a failed call fail the run instead of being logged and recorded. ``progress``
    is told each resource's pages, rows and cursor after every page and at its end.
    """
    if overlap_seconds < 0:
        raise ConfigError("overlap_seconds must be >= 0")
    api = _spot_client(credentials, settings, client)
    seed = parse_since(since)

    @dlt.resource(name="balances", write_disposition="replace", primary_key="asset",
                  max_table_nesting=0, columns=decimal_columns(BALANCE_DECIMALS))
    def balances() -> Iterator[list[Row]]:
        """Balance per asset now (snapshot): ``balance`` and, where BalanceEx answers,
        ``hold_trade``, ``credit``, ``credit_used`` and ``available``."""
        with permission_guard("balances", strict, progress=progress):
            plain = api.get_balance() or {}
            extended: Mapping[str, Any] = {}
            try:
                extended = api.get_balance_ex() or {}
            except PermissionDeniedError:
                raise
            except KrakenError as exc:
                log.info("balances: BalanceEx unavailable (%s); plain balances only", exc)
            now = to_naive_utc(_utcnow())
            rows = []
            for asset in sorted(set(plain) | set(extended)):
                ex = extended.get(asset)
                ex = ex if isinstance(ex, Mapping) else {}
                balance = column_decimal(ex.get("balance", plain.get(asset)))
                row: Row = {"asset": asset, "balance": balance,
                            "hold_trade": column_decimal(ex.get("hold_trade")),
                            "credit": column_decimal(ex.get("credit")),
                            "credit_used": column_decimal(ex.get("credit_used"))}
                row["available"] = (None if balance is None else balance
                                    + (row["credit"] or 0) - (row["credit_used"] or 0)
                                    - (row["hold_trade"] or 0))
                row["timestamp"] = now
                row["raw_data"] = raw_data({"balance": plain.get(asset), "balance_ex": ex or None})
                rows.append(row)
            report_progress(progress, "balances", 1, len(rows), done=True)
            yield rows

    @dlt.resource(name="ledgers", write_disposition="merge", primary_key="ledger_id",
                  max_table_nesting=0, columns=decimal_columns(LEDGER_DECIMALS))
    def ledgers() -> Iterator[list[Row]]:
        """Ledger entries (every balance change). Key ``ledger_id``; ``refid`` links trades,
        deposits and withdrawals. Cursor ``last_timestamp`` (``start``)."""
        yield from _incremental(LEDGERS, api.get_ledgers, _ofs_paged, seed, overlap_seconds,
                                strict, progress)

    @dlt.resource(name="trades_history", write_disposition="merge", primary_key="txid",
                  max_table_nesting=0, columns=decimal_columns(TRADE_DECIMALS))
    def trades_history() -> Iterator[list[Row]]:
        """Own trades (TradesHistory). Key ``txid``. Cursor ``last_timestamp`` (``start``)."""
        yield from _incremental(TRADES, api.get_trades_history, _ofs_paged, seed,
                                overlap_seconds, strict, progress)

    @dlt.resource(name="closed_orders", write_disposition="merge", primary_key="txid",
                  max_table_nesting=0,
                  columns={**decimal_columns(ORDER_DECIMALS), "refid": {"data_type": "text"},
                           "reason": {"data_type": "text"}, "userref": {"data_type": "bigint"}})
    def closed_orders() -> Iterator[list[Row]]:
        """Closed and canceled orders by close time. Key ``txid``; ``timestamp`` = close time.
        Cursor ``last_timestamp`` (``start`` with ``closetime=close``)."""
        yield from _incremental(ORDERS, api.get_closed_orders, _ofs_paged, seed,
                                overlap_seconds, strict, progress)

    @dlt.resource(name="deposits", write_disposition="merge", primary_key="refid",
                  max_table_nesting=0, columns=decimal_columns(FUNDING_DECIMALS))
    def deposits() -> Iterator[list[Row]]:
        """Deposits (DepositStatus). Key ``refid``. Cursor ``last_timestamp`` (``start``)."""
        yield from _incremental(DEPOSITS, api.get_deposit_status, _cursor_paged, seed,
                                overlap_seconds, strict, progress)

    @dlt.resource(name="withdrawals", write_disposition="merge", primary_key="refid",
                  max_table_nesting=0, columns=decimal_columns(FUNDING_DECIMALS))
    def withdrawals() -> Iterator[list[Row]]:
        """Withdrawals (WithdrawStatus). Key ``refid``. Cursor ``last_timestamp``."""
        yield from _incremental(WITHDRAWALS, api.get_withdraw_status, _cursor_paged, seed,
                                overlap_seconds, strict, progress)

    return balances, ledgers, trades_history, closed_orders, deposits, withdrawals


# --- auth for dlt's RESTClient ------------------------------------------------------------------


@configspec
class KrakenSpotAuth(AuthConfigBase):
    """Signs Kraken Spot private requests for dlt's ``RESTClient`` / ``rest_api``: adds a fresh
    ``nonce`` to the body (form-encoded, or JSON when the request is JSON) and sets ``API-Key``
    and ``API-Sign`` over exactly the bytes sent, when the request is prepared. Nonces come from
    the key's process-wide source (shared with krakked's ``SpotClient``, persisted under
    ``nonce_dir``, default krakked's data directory).

    Disable dlt's own retry for Kraken: dlt's retrying session re-sends the *same* prepared
    request, whose nonce Kraken has already seen (``EAPI:Invalid nonce``), and it retries on
    HTTP status only, while Spot rate limits (``EAPI:Rate limit exceeded``) arrive with HTTP 200.
    Give ``RESTClient(session=requests.Session())`` and check the body's ``error`` yourself —
    or use krakked's clients, which re-sign every attempt and wait on Kraken's call counter.
    ``repr`` and ``str`` never show the secret.
    """

    api_key: str = None
    api_secret: TSecretStrValue = None
    otp: TSecretStrValue | None = None
    nonce_format: str = "ms_counter"
    nonce_dir: str | None = None
    persist_nonce: bool = True

    @classmethod
    def from_key_pair(cls, pair: KeyPair, **options: Any) -> KrakenSpotAuth:
        """An auth for ``pair`` (a Spot ``KeyPair``); ``options`` set the other fields."""
        return cls(api_key=pair.api_key, api_secret=pair.api_secret.reveal(), **options)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        secret = str(self.api_secret)
        register_secret(secret)
        register_secret(self.api_key, kind="key")
        directory = nonce_directory(self.nonce_dir, self.persist_nonce)
        nonce = nonce_source_for(self.api_key, self.nonce_format, directory).next()
        body = request.body or b""
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            data = json.loads(text or "{}")
            data["nonce"] = nonce
            if self.otp:
                data["otp"] = str(self.otp)
            text = json.dumps(data, separators=(",", ":"))
        else:
            extra = {"nonce": nonce, "otp": str(self.otp) if self.otp else None}
            text = encode_form(extra) + (f"&{text}" if text else "")
            request.headers["Content-Type"] = "application/x-www-form-urlencoded"
        payload = text.encode("utf-8")
        parts = urlsplit(request.url or "")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request.body = payload
        request.headers["Content-Length"] = str(len(payload))
        request.headers["API-Key"] = self.api_key
        request.headers["API-Sign"] = spot_signature(path, nonce, payload, secret)
        return request

    def __repr__(self) -> str:
        return f"KrakenSpotAuth(api_key={mask_key(self.api_key or '')!r}, api_secret=REDACTED)"

    __str__ = __repr__
