"""Kraken Futures account history as data (the tables ``futures.py`` wires into its dlt source,
dlt verified-source style): its resources, where Kraken puts times, items and tokens in a
payload, the amount columns, and ``FEE_JOIN_SQL``."""

from __future__ import annotations

from typing import Any

from krakked.account.common import decimal_columns

__all__ = [
    "ACCOUNT_LOG_COLUMNS",
    "ACCOUNT_LOG_DECIMALS",
    "ACCOUNT_LOG_ITEMS",
    "ACCOUNT_LOG_TEXTS",
    "ACCOUNT_LOG_TIME_PATHS",
    "EXECUTION_COLUMNS",
    "EXECUTION_DECIMALS",
    "EXECUTION_ITEMS",
    "EXECUTION_TIME_PATHS",
    "FALLBACK_MAX_PAGES",
    "FEE_JOIN_SQL",
    "INCREMENTAL_RESOURCES",
    "POSITION_COLUMNS",
    "POSITION_DECIMALS",
    "POSITION_ITEMS",
    "POSITION_TIME_PATHS",
    "PUBLIC_RESOURCES",
    "RESOURCES",
    "TOKEN_KEYS",
]

RESOURCES: tuple[str, ...] = (
    "executions", "account_log", "position_history", "tickers", "open_positions")
"""The source's resources, in load order."""
INCREMENTAL_RESOURCES: frozenset[str] = frozenset(
    {"executions", "account_log", "position_history"})
"""Resources with a cursor (merged on their key); the others are snapshots (replaced)."""
PUBLIC_RESOURCES: frozenset[str] = frozenset({"tickers"})
"""Resources that need no key pair."""

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
