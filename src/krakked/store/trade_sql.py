"""The SQL of trades the DuckDB and file backends share (DuckDB's dialect): the key the writer
keeps instead of an index, the reconciliation of Kraken's CSV rows with API rows, the 1-minute
candles built from trades, and the holes in Kraken's trade-id sequence.

**The trades key is the writer's rule** (DESIGN.md): ``trades`` has no PRIMARY KEY (an ART index
costs 2.5 GB for 20 M rows); a write inserts only the rows the store lacks on (timestamp,
symbol, id), looking only at the stored rows inside the batch's own time range (an anti-join
that the table's time-ordered row groups make cheap).

**CSV rows and API rows are one trade once.** Kraken's CSV files carry no trade id and whole
seconds; a CSV row is stored under the synthetic id ``-(epoch µs × 1000 + n)`` (``n`` its position
among the CSV rows of its pair and second, in file order — ``store.sql.with_trade_ids``). Within
one (pair, second, price, volume) group holding ``k`` API rows, the first ``k`` CSV rows (in file
order) are the same trades seen twice and are removed, whichever arrived first: so a CSV import
followed by an API backfill that starts inside the file's last second, or the reverse, stores
each trade once, and two identical trades in one second stay two.

**Sequence.** Trades are ordered by (timestamp, |id|): Kraken's id order for API rows (its ids
grow with time), file order for CSV rows of one second. Open and close follow that order,
never the timestamp alone (many trades share one).
"""

# SQL here is composed from our own identifiers and values quoted by lit()/ts_lit() or
# coerced by int(); nothing user-typed reaches it unquoted.
# ruff: noqa: S608

from __future__ import annotations

from krakked.store.sql import DEC, TRADE_COLS, bucket_us, exact_div, lit

__all__ = [
    "QUOTE_DEC",
    "candles_from_trades_query",
    "insert_missing_trades",
    "reconcile_csv_rows",
    "sequence_key",
    "trade_id_holes_query",
    "trades_summary_query",
]

QUOTE_DEC = "DECIMAL(38,12)"
"""Prices and volumes are multiplied at 12 decimals (Kraken's have at most 10), so a trade's
quote amount is exact; a minute's quote volume is exact below 10^14."""


def sequence_key(alias: str = "") -> str:
    """SQL: a HUGEINT ordering trades by (timestamp, |id|) — their sequence."""
    p = f"{alias}." if alias else ""
    return f"((epoch_us({p}timestamp)::HUGEINT << 64) + abs({p}id)::HUGEINT)"


def insert_missing_trades(table: str, batch: str, near: str, *, ordered: bool) -> str:
    """SQL: insert the rows of ``batch`` (``TRADE_SCHEMA`` columns, ids already synthetic for
    CSV rows, no key twice) that ``table`` lacks on (timestamp, symbol, id), looking at the
    stored rows matching ``near`` (a condition on alias ``t`` spanning the batch's time range).
    ``ordered``: the batch is already in (symbol, timestamp, |id|) order."""
    cols = ", ".join(TRADE_COLS)
    order = "" if ordered else " ORDER BY b.symbol, b.timestamp, abs(b.id)"
    return (f"INSERT INTO {table} ({cols}) SELECT {', '.join('b.' + c for c in TRADE_COLS)} "
            f"FROM {batch} AS b ANTI JOIN (SELECT timestamp, symbol, id FROM {table} AS t "
            f"WHERE {near}) AS s ON s.timestamp = b.timestamp AND s.symbol = b.symbol "
            f"AND s.id = b.id{order}")


def reconcile_csv_rows(table: str, near: str) -> str:
    """SQL: delete the CSV rows of ``table`` (alias ``t`` in ``near``) that API rows stored in
    the same range already stand for (module docstring: the first ``k`` of each group)."""
    cols = "symbol, epoch_us(timestamp) // 1000000 AS s, price, volume"
    group = "symbol, epoch_us(timestamp) // 1000000, price, volume"
    return (
        f"DELETE FROM {table} WHERE id IN (SELECT c.id FROM (SELECT id, {cols}, "
        f"row_number() OVER (PARTITION BY {group} ORDER BY id DESC) AS r "
        f"FROM {table} AS t WHERE t.id < 0 AND {near}) AS c JOIN (SELECT {cols}, "
        f"count(*) AS k FROM {table} AS t WHERE t.id >= 0 AND {near} GROUP BY ALL) AS a "
        "ON c.symbol = a.symbol AND c.s = a.s AND c.price = a.price AND c.volume = a.volume "
        "WHERE c.r <= a.k) AND id < 0")


def candles_from_trades_query(relation: str, where: str = "TRUE", minutes: int = 1) -> str:
    """SQL: ``minutes`` candles (``CANDLE_SCHEMA`` columns) of the trades in ``relation``
    matching ``where`` — one per (symbol, bucket) with trades: open and close by sequence
    (``sequence_key``), high, low, volume and trade count, quote volume = Σ price × volume and
    vwap = quote volume / volume (exact, rounded half-even to 18 places), source ``trades``.
    Which minutes are complete is the caller's business (the recorded trade coverage)."""
    seq = sequence_key()
    grouped = (
        f"SELECT symbol, {bucket_us('epoch_us(timestamp)', minutes)} AS __m, "
        f"arg_min(price, {seq}) AS open, max(price) AS high, min(price) AS low, "
        f"arg_max(price, {seq}) AS close, sum(volume) AS volume, "
        f"sum(price::{QUOTE_DEC} * volume::{QUOTE_DEC})::{DEC} AS quote_volume, "
        f"count(*)::BIGINT AS trade_count FROM {relation} WHERE {where} GROUP BY ALL")
    with_vwap = exact_div(f"({grouped})", "quote_volume", "volume", "vwap")
    return (f"SELECT symbol, make_timestamptz(__m) AS timestamp, {int(minutes)}::INTEGER AS "
            f"interval_minutes, open, high, low, close, volume, quote_volume, trade_count, "
            f"vwap, 'trades' AS source FROM ({with_vwap})")


def trade_id_holes_query(relation: str, where: str = "TRUE") -> str:
    """SQL: the holes in Kraken's trade-id sequence among the API rows (``id >= 0``) of
    ``relation`` matching ``where``: ``symbol, after_id, after_time, before_id, before_time,
    missing``, in order."""
    return (
        "SELECT symbol, id AS after_id, timestamp AS after_time, __next AS before_id, "
        "__next_time AS before_time, (__next - id - 1)::BIGINT AS missing FROM ("
        "SELECT symbol, id, timestamp, lead(id) OVER w AS __next, lead(timestamp) OVER w "
        f"AS __next_time FROM {relation} WHERE id >= 0 AND {where} "
        "WINDOW w AS (PARTITION BY symbol ORDER BY id)) WHERE __next > id + 1 "
        "ORDER BY symbol, after_id")


def trades_summary_query(relation: str, symbol: str) -> str:
    """SQL: one row for ``symbol``'s trades in ``relation``: ``first``, ``last``, ``rows``,
    ``last_id`` (the newest Kraken id) and ``last_api_time`` (the newest API row's time)."""
    return ("SELECT min(timestamp) AS first, max(timestamp) AS last, count(*) AS rows, "
            "max(id) FILTER (WHERE id >= 0) AS last_id, max(timestamp) FILTER (WHERE id >= 0) "
            f"AS last_api_time FROM {relation} WHERE symbol = {lit(symbol)}")
