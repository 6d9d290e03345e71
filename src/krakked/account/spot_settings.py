"""Kraken Spot account history as data (the tables ``spot.py`` wires into its dlt source, dlt
verified-source style): its resources, the page size Kraken fixes, and the amount columns of
each endpoint."""

from __future__ import annotations

__all__ = [
    "BALANCE_DECIMALS",
    "FUNDING_DECIMALS",
    "INCREMENTAL_RESOURCES",
    "LEDGER_DECIMALS",
    "ORDER_DECIMALS",
    "PAGE_SIZE",
    "PUBLIC_RESOURCES",
    "RESOURCES",
    "TRADE_DECIMALS",
]

RESOURCES: tuple[str, ...] = (
    "balances", "ledgers", "trades_history", "closed_orders", "deposits", "withdrawals")
"""The source's resources, in load order."""
INCREMENTAL_RESOURCES: frozenset[str] = frozenset(
    {"ledgers", "trades_history", "closed_orders", "deposits", "withdrawals"})
"""Resources with a cursor (merged on Kraken's ids); ``balances`` is a snapshot (replaced)."""
PUBLIC_RESOURCES: frozenset[str] = frozenset()
"""Resources that need no key pair (none: every Spot resource is private)."""

PAGE_SIZE = 50
"""Entries per Ledgers / TradesHistory / ClosedOrders call (fixed by Kraken)."""

TRADE_DECIMALS = ("price", "cost", "fee", "vol", "margin", "cprice", "ccost", "cfee", "cvol",
                  "cmargin", "net", "time")
LEDGER_DECIMALS = ("amount", "fee", "balance", "time")
ORDER_DECIMALS = ("vol", "vol_exec", "cost", "fee", "price", "stopprice", "limitprice",
                  "opentm", "closetm", "starttm", "expiretm", "descr_price", "descr_price2")
FUNDING_DECIMALS = ("amount", "fee", "time")
BALANCE_DECIMALS = ("balance", "hold_trade", "credit", "credit_used", "available")
