"""dlt source for Kraken Spot account history: balances (snapshot) and ledgers, trades, closed
orders, deposits and withdrawals (incremental, merged on Kraken's ids).

Every call goes through ``krakked.kraken.spot.SpotClient``, which signs each attempt afresh,
maps Kraken's HTTP-200 errors (rate limits included) and charges each call's cost — 4 for the
history endpoints by default — to the key's call counter before sending. ``KrakenSpotAuth``
(``krakked.account.auth``) signs requests for users of dlt's own ``RESTClient`` / ``rest_api``.
This module is the dlt wiring; the tables live in ``spot_settings``, rows, endpoints and paging
in ``spot_helpers`` (dlt verified-source style).

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

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import dlt
from dlt.common.configuration.specs.base_configuration import BaseConfiguration, configspec

from krakked.account.common import (
    column_decimal,
    decimal_columns,
    parse_since,
    permission_guard,
    raw_data,
    spot_client,
    to_naive_utc,
)
from krakked.account.progress import ProgressCallback, report_progress
from krakked.account.spot_helpers import (
    DEPOSITS,
    LEDGERS,
    ORDERS,
    TRADES,
    WITHDRAWALS,
    Row,
    cursor_paged,
    incremental,
    ofs_paged,
)
from krakked.account.spot_settings import (
    BALANCE_DECIMALS,
    FUNDING_DECIMALS,
    LEDGER_DECIMALS,
    ORDER_DECIMALS,
    TRADE_DECIMALS,
)
from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import ConfigError, KrakenError, PermissionDeniedError
from krakked.kraken.spot import SpotClient

__all__ = ["KrakenSpotSourceConfiguration", "kraken_spot_source"]

log = logging.getLogger("krakked.account.spot")


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
    api = spot_client(credentials, settings, client)
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
            now = to_naive_utc(datetime.now(UTC))
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
        yield from incremental(LEDGERS, api.get_ledgers, ofs_paged, seed, overlap_seconds,
                               strict, progress)

    @dlt.resource(name="trades_history", write_disposition="merge", primary_key="txid",
                  max_table_nesting=0, columns=decimal_columns(TRADE_DECIMALS))
    def trades_history() -> Iterator[list[Row]]:
        """Own trades (TradesHistory). Key ``txid``. Cursor ``last_timestamp`` (``start``)."""
        yield from incremental(TRADES, api.get_trades_history, ofs_paged, seed,
                               overlap_seconds, strict, progress)

    @dlt.resource(name="closed_orders", write_disposition="merge", primary_key="txid",
                  max_table_nesting=0,
                  columns={**decimal_columns(ORDER_DECIMALS), "refid": {"data_type": "text"},
                           "reason": {"data_type": "text"}, "userref": {"data_type": "bigint"}})
    def closed_orders() -> Iterator[list[Row]]:
        """Closed and canceled orders by close time. Key ``txid``; ``timestamp`` = close time.
        Cursor ``last_timestamp`` (``start`` with ``closetime=close``)."""
        yield from incremental(ORDERS, api.get_closed_orders, ofs_paged, seed,
                               overlap_seconds, strict, progress)

    @dlt.resource(name="deposits", write_disposition="merge", primary_key="refid",
                  max_table_nesting=0, columns=decimal_columns(FUNDING_DECIMALS))
    def deposits() -> Iterator[list[Row]]:
        """Deposits (DepositStatus). Key ``refid``. Cursor ``last_timestamp`` (``start``)."""
        yield from incremental(DEPOSITS, api.get_deposit_status, cursor_paged, seed,
                               overlap_seconds, strict, progress)

    @dlt.resource(name="withdrawals", write_disposition="merge", primary_key="refid",
                  max_table_nesting=0, columns=decimal_columns(FUNDING_DECIMALS))
    def withdrawals() -> Iterator[list[Row]]:
        """Withdrawals (WithdrawStatus). Key ``refid``. Cursor ``last_timestamp``."""
        yield from incremental(WITHDRAWALS, api.get_withdraw_status, cursor_paged, seed,
                               overlap_seconds, strict, progress)

    return balances, ledgers, trades_history, closed_orders, deposits, withdrawals
