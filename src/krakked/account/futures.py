"""dlt source for Kraken Futures account history: executions, account log and position history
(incremental, merged on natural keys) and tickers / open positions (snapshots, replaced). This
module is the dlt wiring; the tables live in ``futures_settings``, rows and paging in
``futures_helpers`` (dlt verified-source style).

Every call goes through ``krakked.kraken.futures.FuturesClient``, which signs each attempt afresh,
retries by Kraken's rules and waits on the per-key rate limiters. ``KrakenFuturesAuth``
(``krakked.account.auth``) signs requests for users of dlt's own ``RESTClient`` / ``rest_api``.

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

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import dlt
from dlt.common.configuration.specs.base_configuration import BaseConfiguration, configspec

from krakked.account.common import futures_client, parse_since, permission_guard
from krakked.account.futures_helpers import (
    ResourceRun,
    Row,
    execution_row,
    position_row,
    snapshot,
    start_time,
    sync_account_log,
    token_paged,
    with_decimal_hints,
)
from krakked.account.futures_settings import (
    ACCOUNT_LOG_COLUMNS,
    EXECUTION_COLUMNS,
    EXECUTION_ITEMS,
    FALLBACK_MAX_PAGES,
    FEE_JOIN_SQL,
    POSITION_COLUMNS,
    POSITION_ITEMS,
)
from krakked.account.progress import ProgressCallback
from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import ConfigError
from krakked.kraken.futures import FuturesClient

__all__ = ["FEE_JOIN_SQL", "KrakenFuturesSourceConfiguration", "kraken_futures_source"]


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
    api = futures_client(credentials, settings, client)
    seed = parse_since(since)

    @dlt.resource(name="executions", write_disposition="merge", primary_key="uid",
                  max_table_nesting=0, columns=EXECUTION_COLUMNS)
    def executions() -> Iterator[list[Row]]:
        """Own fills, ascending by time. Key ``uid`` (history element); ``execution_uid`` is
        what the account log's ``execution`` names. Cursor: ``last_timestamp`` (inclusive
        ``since``) + ``continuation_token``."""
        state = dlt.current.resource_state()
        with permission_guard("executions", strict, state, progress):
            run = ResourceRun("executions", "uid", state, progress)
            yield from token_paged(run, api.get_executions, EXECUTION_ITEMS, execution_row,
                                   start_time(state, seed), page_size)
            run.finish()

    @dlt.resource(name="account_log", write_disposition="merge", primary_key="booking_uid",
                  max_table_nesting=0, columns=ACCOUNT_LOG_COLUMNS)
    def account_log() -> Iterator[Any]:
        """Account-log entries (trades' cash and position legs, funding, transfers...). Key
        ``booking_uid``. Cursor: ``last_id`` (``from``), ``last_timestamp``, ``gaps``."""
        state = dlt.current.resource_state()
        with permission_guard("account_log", strict, state, progress):
            for rows in sync_account_log(api, state, seed, account_log_count,
                                         account_log_paging, fallback_max_pages, progress):
                yield with_decimal_hints(rows, ACCOUNT_LOG_COLUMNS)

    @dlt.resource(name="position_history", write_disposition="merge", primary_key="uid",
                  max_table_nesting=0, columns=POSITION_COLUMNS)
    def position_history() -> Iterator[list[Row]]:
        """Position updates (``event.PositionUpdate`` flattened). Key ``uid`` = the update's
        ``execution_uid``, else the element uid. Cursor as ``executions``."""
        state = dlt.current.resource_state()
        with permission_guard("position_history", strict, state, progress):
            run = ResourceRun("position_history", "uid", state, progress)
            yield from token_paged(run, api.get_position_history, POSITION_ITEMS,
                                   position_row, start_time(state, seed), page_size)
            run.finish()

    @dlt.resource(name="tickers", write_disposition="replace", primary_key="symbol",
                  max_table_nesting=0)
    def tickers() -> Iterator[Any]:
        """Every Futures ticker now (snapshot, replaced each run); key ``symbol``; prices,
        sizes and rates as exact decimals."""
        with permission_guard("tickers", strict, progress=progress):
            payload = api.get_tickers()
            yield snapshot("tickers", payload, "tickers", ("lastTime",), progress)

    @dlt.resource(name="open_positions", write_disposition="replace", max_table_nesting=0)
    def open_positions() -> Iterator[Any]:
        """Open positions now (snapshot, replaced each run): side, symbol, price, size...
        (amounts as exact decimals)."""
        with permission_guard("open_positions", strict, progress=progress):
            payload = api.get_open_positions()
            yield snapshot("open_positions", payload, "openPositions", ("fillTime",),
                           progress)

    return executions, account_log, position_history, tickers, open_positions
