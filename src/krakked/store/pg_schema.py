"""The PostgreSQL store's schema and its migrations, applied on open under an advisory lock.

Version 1: ``trades``, ``candles``, the rollup tables ``candles_5m`` … ``candles_1w``,
``data_sync_status``, ``pairs`` (and ``schema_version``); version 2: ``candle_coverage``;
version 3: ``trade_coverage``, nullable ``side``.
Every time-series key holds ``timestamp``, so TimescaleDB is a one-line migration per table.
"""

# ruff: noqa: S608 - SQL is assembled from module constants; no values in it

from __future__ import annotations

import logging
from typing import Any

from krakked.errors import StoreError
from krakked.store.base import ROLLUPS, SCHEMA_VERSION
from krakked.store.pg_copy import NUM
from krakked.store.pg_rollups import CASCADE, rollup_rebuild_sql

__all__ = ["MIGRATIONS", "migrate"]

log = logging.getLogger("krakked.store.postgres")  # the PostgreSQL store's log, as before

_MIGRATION_LOCK = 0x6B72616B6B6564  # "krakked": serializes schema migrations across openers

_CANDLE_COLUMNS_DDL = f"""
    symbol text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    interval_minutes integer NOT NULL,
    open {NUM} NOT NULL,
    high {NUM} NOT NULL,
    low {NUM} NOT NULL,
    close {NUM} NOT NULL,
    volume {NUM} NOT NULL,
    quote_volume {NUM},
    trade_count bigint,
    vwap {NUM},
    source text"""


def _schema_v1() -> tuple[str, ...]:
    rollups = tuple(
        f"""CREATE TABLE {name} ({_CANDLE_COLUMNS_DDL},
            CHECK (interval_minutes = {minutes}),
            PRIMARY KEY (symbol, "timestamp"))"""
        for minutes, name in ROLLUPS.items()
    )
    return (
        f"""CREATE TABLE trades (
            id bigint NOT NULL,
            symbol text NOT NULL,
            "timestamp" timestamptz NOT NULL,
            price {NUM} NOT NULL,
            volume {NUM} NOT NULL,
            side text NOT NULL,
            order_type text,
            misc text,
            source text,
            PRIMARY KEY ("timestamp", symbol, id))""",
        'CREATE INDEX trades_symbol_time ON trades (symbol, "timestamp", id)',
        # rows from Kraken's CSV files (no Kraken id): small, and what reconciliation probes
        'CREATE INDEX trades_without_kraken_id ON trades (symbol, "timestamp") WHERE id < 0',
        f"""CREATE TABLE candles ({_CANDLE_COLUMNS_DDL},
            PRIMARY KEY ("timestamp", symbol, interval_minutes))""",
        "CREATE INDEX candles_symbol_interval_time ON candles "
        '(symbol, interval_minutes, "timestamp")',
        *rollups,
        """CREATE TABLE data_sync_status (
            symbol text NOT NULL,
            data_type text NOT NULL,
            oldest_timestamp timestamptz,
            newest_timestamp timestamptz,
            last_sync_at timestamptz NOT NULL,
            last_kraken_since bigint,
            total_records bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (symbol, data_type))""",
        f"""CREATE TABLE pairs (
            canonical text PRIMARY KEY,
            base text, quote text, rest_symbol text, ws_symbol text, wsname text, raw_name text,
            price_decimals integer, volume_decimals integer,
            lot_size {NUM}, ordermin {NUM}, costmin {NUM}, tick_size {NUM},
            status text, updated_at timestamptz)""",
    )
def _schema_v2() -> tuple[str, ...]:
    run = ('extract(epoch FROM "timestamp")::bigint / (interval_minutes * 60) - row_number() '
           'OVER (PARTITION BY symbol, interval_minutes ORDER BY "timestamp")')
    return (
        """CREATE TABLE candle_coverage (
            symbol text NOT NULL,
            interval_minutes integer NOT NULL,
            covered_from timestamptz NOT NULL,
            covered_until timestamptz NOT NULL,
            PRIMARY KEY (symbol, interval_minutes, covered_from))""",
        # What a store of version 1 holds vouches for the runs of consecutive candles it has.
        f"""INSERT INTO candle_coverage
            SELECT symbol, interval_minutes, min("timestamp"),
                   max("timestamp") + make_interval(mins => interval_minutes)
            FROM (SELECT symbol, interval_minutes, "timestamp", {run} AS run FROM candles) r
            GROUP BY symbol, interval_minutes, run""",
        # Rollups rebuilt: only buckets the 1-minute coverage spans, zero-volume rule.
        "TRUNCATE " + ", ".join(ROLLUPS.values()),
        *(rollup_rebuild_sql(minutes, finer) for minutes, finer in CASCADE),
    )


def _schema_v3() -> tuple[str, ...]:
    return (
        "ALTER TABLE trades ALTER COLUMN side DROP NOT NULL",  # unknown in Kraken's CSV files
        # CSV rows' synthetic ids become -(epoch µs × 1000 + n), as in the other backends
        """UPDATE trades t SET id = -(x.us * 1000 + x.n) FROM (
                SELECT ctid AS row, (extract(epoch FROM "timestamp") * 1000000)::bigint AS us,
                       row_number() OVER (PARTITION BY symbol, "timestamp" ORDER BY ctid) AS n
                FROM trades WHERE id < 0) x WHERE t.ctid = x.row""",
        # One index on trades instead of three: the key, ordered for the reads and the
        # writer's range probes (pair, then time). 20 M-row imports spent most of their time
        # maintaining the old primary key, its (symbol, time, id) twin and the id < 0 index.
        "DROP INDEX trades_without_kraken_id",
        "DROP INDEX trades_symbol_time",
        "ALTER TABLE trades DROP CONSTRAINT trades_pkey",
        'ALTER TABLE trades ADD PRIMARY KEY (symbol, "timestamp", id)',
        """CREATE TABLE trade_coverage (
            symbol text NOT NULL,
            covered_from timestamptz NOT NULL,
            covered_until timestamptz NOT NULL,
            PRIMARY KEY (symbol, covered_from))""",
    )


MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "market store: trades, candles, rollups, data_sync_status, pairs", _schema_v1()),
    (2, "candle_coverage (recorded coverage per candle series, filled with the runs of "
        "consecutive candles stored); rollups rebuilt with only the buckets it spans",
     _schema_v2()),
    (3, "trades: side nullable (Kraken's CSV files have none), CSV rows' ids by position, "
        "one index (the key, pair first); trade_coverage (ranges in which every trade is "
        "stored)", _schema_v3()),
]
"""(version, what it does, statements). Append a step to change the schema; never edit one."""
assert MIGRATIONS[-1][0] == SCHEMA_VERSION


def migrate(conn: Any) -> None:
    """Bring the database to ``SCHEMA_VERSION``: the missing steps of ``MIGRATIONS`` in order,
    all in one transaction under an advisory lock (openers racing to migrate wait for each
    other). A database of a newer version is a ``StoreError``."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_version (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(row[0])
        if current > SCHEMA_VERSION:
            raise StoreError(f"the database schema is version {current}, newer than this "
                             f"krakked understands ({SCHEMA_VERSION}); upgrade krakked")
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                         (version, description))
            log.info("PostgreSQL store: applied schema version %d (%s)", version,
                     description)
