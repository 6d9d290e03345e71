"""What only the PostgreSQL store promises: its pool, its incrementally maintained rollup tables,
its migrations, its keys, and errors that name the server but never the password. (The promises
every backend shares are in test_store.py.)"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from krakked.errors import StoreError, UsageError
from krakked.market.candles import Candle, resample
from krakked.store.arrow import DECIMAL, candles_to_arrow
from krakked.store.base import ROLLUPS, SCHEMA_VERSION, Coverage, SyncUpdate, redact_url
from krakked.store.postgres import PostgresStore

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)
Q18 = Decimal(1).scaleb(-18)


@pytest.fixture
def pg(postgres_db_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_db_url) as store:
        yield store


def minutes(n: int, *, start: datetime = MONDAY, first: int = 0, volume: str = "0.12345678",
            symbol: str = "XBTUSD") -> list[Candle]:
    """``n`` 1m candles from minute ``first``; every third carries only a vwap (like REST)."""
    out = []
    for i in range(first, first + n):
        o = Decimal("42000.1") + Decimal(i % 17) / 10
        c = o + Decimal(i % 5 - 2) / 10
        vol = Decimal(volume) + Decimal(i % 7) / 1000
        vwap = ((o + c) / 2).quantize(Decimal("0.01"))
        quote = None if i % 3 == 0 else vwap * vol
        out.append(Candle(symbol, start + timedelta(minutes=i), 1, o, max(o, c) + 1,
                          min(o, c) - 1, c, vol, quote, 1 + i % 4, vwap, "rest"))
    return out


def stored18(c: Candle) -> Candle:
    """``c`` as a store keeps it: decimals to 18 places."""
    return dataclasses.replace(c, **{
        k: getattr(c, k).quantize(Q18) for k in ("quote_volume", "vwap")
        if getattr(c, k) is not None})


def rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def rollup_contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: rows(url, f'SELECT * FROM {name} ORDER BY symbol, "timestamp"')  # noqa: S608
            for name in ROLLUPS.values()}


def connections(url: str) -> int:
    dbname = url.split("?")[0].rsplit("/", 1)[1]
    return rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", (dbname,))[0][0]


# -- the pool ------------------------------------------------------------------------------------

def test_the_pool_keeps_at_least_two_and_never_more_than_ten_connections(
        pg: PostgresStore, postgres_db_url: str) -> None:
    assert connections(postgres_db_url) >= 2
    peak, stop = [0], threading.Event()

    def watch() -> None:
        # the pool's own connections (named "krakked"): on a loaded machine the backends of
        # other, closed connections can still be listed while they exit
        dbname = postgres_db_url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(postgres_db_url, autocommit=True) as conn:
            while not stop.is_set():
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = 'krakked'", (dbname,)).fetchone()
                peak[0] = max(peak[0], count)
                time.sleep(0.02)

    def hold() -> None:
        with pg._pool.connection() as conn:
            conn.execute("SELECT pg_sleep(1.0)")  # long enough for the pool to grow under load

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=hold) for _ in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert 2 < peak[0] <= 10


def test_impossible_pool_sizes_are_refused(postgres_db_url: str) -> None:
    with pytest.raises(StoreError, match="min_size"):
        PostgresStore(postgres_db_url, min_size=5, max_size=2)


# -- rollups -------------------------------------------------------------------------------------

def test_rollup_tables_follow_writes_bucket_by_bucket_and_a_rebuild_agrees(
        pg: PostgresStore, postgres_db_url: str) -> None:
    url = postgres_db_url
    pg.upsert_candles([c for c in minutes(120) if c.timestamp != MONDAY + timedelta(minutes=30)])
    hours = rows(url, 'SELECT "timestamp", volume, xmin::text FROM candles_1h ORDER BY 1')
    assert [h[0] for h in hours] == [MONDAY + timedelta(hours=1)]  # a hole: absent, not partial

    late = minutes(1, first=30)  # the late minute of the first hour
    assert pg.upsert_candles(late) == 1
    after = rows(url, 'SELECT "timestamp", volume, xmin::text FROM candles_1h ORDER BY 1')
    assert [h[0] for h in after] == [MONDAY, MONDAY + timedelta(hours=1)]  # the first hour…
    assert after[0][1] == sum((c.volume for c in minutes(60)), Decimal(0))
    assert after[1] == hours[0]  # …the second was not even rewritten

    assert pg.get_candles("XBTUSD", "1h") == [stored18(c) for c in resample(minutes(120), 60)]

    before = rollup_contents(url)
    pg.refresh_continuous_aggregates()
    assert rollup_contents(url) == before
    assert len(before["candles_5m"]) == 24 and len(before["candles_1h"]) == 2
    assert before["candles_4h"] == [] and before["candles_1w"] == []  # not whole yet


def test_a_large_write_maintains_rollups_in_one_pass_with_the_same_result(
        pg: PostgresStore, postgres_db_url: str) -> None:
    pg.upsert_candles(minutes(3 * 24 * 60))  # 864 buckets of 5m… then 12,960 more minutes
    pg.upsert_candles(minutes(9 * 24 * 60, first=3 * 24 * 60))
    pg.upsert_candles(minutes(2 * 24 * 60, first=24 * 60, volume="1"))  # replaces two days
    incremental = rollup_contents(postgres_db_url)
    pg.refresh_continuous_aggregates()
    assert rollup_contents(postgres_db_url) == incremental
    assert len(incremental["candles_5m"]) == 12 * 24 * 12
    assert [r[1] for r in incremental["candles_1w"]] == [MONDAY]  # the second week is running


def test_large_writes_keep_rollups_as_a_rebuild_would_whatever_wins_or_overlaps(
        pg: PostgresStore, postgres_db_url: str) -> None:
    def agrees() -> None:
        incremental = rollup_contents(postgres_db_url)
        pg.refresh_continuous_aggregates()
        assert rollup_contents(postgres_db_url) == incremental

    pg.upsert_candles(minutes(3000))  # a large batch: it aggregates its whole buckets itself
    agrees()
    # overlapping, and the overlap has less volume than what is stored: those minutes lose, so
    # the batch's own aggregates would be wrong there
    lower = minutes(4000, first=2000, volume="0.01")
    assert pg.upsert_candles(lower) == 3000
    agrees()
    # two runs with a hole between them, the hole later filled by a small write
    gap = [c for c in minutes(5000, first=6000, volume="5")
           if not 8000 <= (c.timestamp - MONDAY).total_seconds() // 60 < 8100]
    pg.upsert_candles(gap)
    agrees()
    assert len(rows(postgres_db_url, "SELECT 1 FROM candles_4h WHERE \"timestamp\" >= %s "
                    "AND \"timestamp\" < %s", (MONDAY + timedelta(minutes=7920),
                                                 MONDAY + timedelta(minutes=8160)))) == 0
    pg.upsert_candles(minutes(100, first=8000, volume="5"))
    agrees()
    stored = minutes(3000) + lower[1000:] + minutes(5000, first=6000, volume="5")
    assert pg.get_candles("XBTUSD", "4h") == [
        stored18(c) for c in resample(stored, 240)
        if c.close_time <= MONDAY + timedelta(minutes=11000)]


def test_many_scattered_minutes_maintain_rollups_with_the_same_result(
        pg: PostgresStore, postgres_db_url: str) -> None:
    pg.upsert_candles(minutes(2 * 24 * 60))
    later = minutes(40 * 24 * 60, first=24 * 60, volume="2")
    pg.upsert_candles([c for c in later if c.timestamp.minute % 10 == 3
                       and c.timestamp.hour % 3 == 0])  # 1 in 6 of 2880 5m buckets: each
    pg.upsert_candles([c for c in later if c.timestamp.minute % 10 == 7])  # half: one pass
    incremental = rollup_contents(postgres_db_url)
    pg.refresh_continuous_aggregates()
    assert rollup_contents(postgres_db_url) == incremental


def test_fifteen_day_candles_come_from_the_daily_rollup_and_only_when_complete(
        pg: PostgresStore) -> None:
    # Trades only in the first minute of each hour, as Kraken's OHLCVT files give them (rows
    # only for intervals with trades), with the range the importer vouches for.
    hourly = [c for c in minutes(40 * 24 * 60) if c.timestamp.minute == 0]
    end = MONDAY + timedelta(days=40)
    pg.upsert_candles(hourly, coverage=[Coverage("XBTUSD", 1, MONDAY, end)])
    expected = [stored18(c) for c in resample(hourly, 21600)
                if c.timestamp >= MONDAY and c.timestamp + timedelta(days=15) <= end]
    got = pg.get_candles("XBTUSD", "15d")
    assert got == expected and len(got) == 2  # the 15d bucket opening before MONDAY: absent
    assert pg.get_candles("XBTUSD", "15d", start=expected[1].timestamp) == expected[1:]


def test_concurrent_writers_of_one_symbol_keep_rollups_exact(
        pg: PostgresStore, postgres_db_url: str) -> None:
    batches = [[c for c in minutes(240) if c.timestamp.minute % 4 == k] for k in range(4)]
    errors: list[BaseException] = []

    def write(batch: list[Candle]) -> None:
        try:
            pg.upsert_candles(batch, sync=[SyncUpdate("XBTUSD", "candles_1m")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    incremental = rollup_contents(postgres_db_url)
    pg.refresh_continuous_aggregates()
    assert rollup_contents(postgres_db_url) == incremental
    (status,) = pg.read_sync_status("XBTUSD")
    assert status["total_records"] == 240
    assert pg.upsert_candles(batches[0], sync=[SyncUpdate("XBTUSD", "candles_1m")]) == 60
    (status,) = pg.read_sync_status("XBTUSD")
    assert status["total_records"] == 240  # replaced, not added


def test_retention_cutting_through_a_bucket_leaves_rollups_as_a_rebuild_would(
        pg: PostgresStore, postgres_db_url: str) -> None:
    pg.upsert_candles(minutes(180), sync=[SyncUpdate("XBTUSD", "candles_1m")])
    assert pg.apply_retention() == {"trades": 0, "candles": 0}  # off by default
    assert pg.delete_before("candles", MONDAY + timedelta(minutes=90)) == 90
    after = rollup_contents(postgres_db_url)
    pg.refresh_continuous_aggregates()
    assert rollup_contents(postgres_db_url) == after
    (status,) = pg.read_sync_status()
    assert status["total_records"] == 90
    assert status["oldest_timestamp"] == MONDAY + timedelta(minutes=90)


def test_stored_kraken_hours_win_over_the_rollup_in_reads(pg: PostgresStore) -> None:
    pg.upsert_candles(minutes(120))
    kraken = Candle("XBTUSD", MONDAY, 60, Decimal("1"), Decimal("2"), Decimal("0.5"),
                    Decimal("1.5"), Decimal("99"), None, 7, Decimal("1.2"), "rest")
    pg.upsert_candles([kraken])
    first, second = pg.get_candles("XBTUSD", "1h")
    assert first == kraken
    assert second == stored18(resample(minutes(120)[60:], 60)[0])
    assert pg.get_candles("XBTUSD", "4h") == []  # the 4h bucket is still running


# -- writes are atomic ---------------------------------------------------------------------------

def test_a_failed_write_leaves_neither_rows_nor_sync_status(pg: PostgresStore) -> None:
    table = candles_to_arrow(minutes(3))
    volume = pa.array([Decimal("1"), None, Decimal("1")], DECIMAL)
    broken = table.set_column(7, pa.field("volume", DECIMAL), volume)  # NOT NULL in the table
    with pytest.raises(StoreError, match="volume"):
        pg.write_candles(broken, [SyncUpdate("XBTUSD", "candles_1m", 5)])
    assert pg.read_sync_status() == []
    assert pg.read_candles("XBTUSD", 1).num_rows == 0
    assert pg.get_candles("XBTUSD", "5m") == []


def test_a_sync_status_of_the_wrong_kind_is_refused_before_writing(pg: PostgresStore) -> None:
    with pytest.raises(UsageError, match="trades"):
        pg.upsert_candles(minutes(2), sync=[SyncUpdate("XBTUSD", "trades")])
    assert pg.read_candles("XBTUSD", 1).num_rows == 0


# -- schema --------------------------------------------------------------------------------------

def test_concurrent_openers_apply_the_migrations_once(postgres_db_url: str) -> None:
    barrier, opened, errors = threading.Barrier(4), [], []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStore(postgres_db_url, min_size=1, max_size=2))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in opened:
        store.close()
    assert not errors and len(opened) == 4
    assert rows(postgres_db_url, "SELECT version FROM schema_version ORDER BY 1") == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_a_version_1_database_is_migrated_to_cover_its_runs_and_rebuild_its_rollups(
        postgres_db_url: str) -> None:
    from krakked.store.pg_schema import MIGRATIONS as _MIGRATIONS

    kept = [c for c in minutes(300) if c.timestamp != MONDAY + timedelta(minutes=70)]
    with psycopg.connect(postgres_db_url) as conn:  # what version 1 left: no coverage record,
        conn.execute("""CREATE TABLE schema_version (version integer PRIMARY KEY,
            description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        for statement in _MIGRATIONS[0][2]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, description) VALUES (1, 'v1')")
        with conn.cursor().copy("COPY candles FROM STDIN") as copy:
            for c in kept:
                copy.write_row((c.symbol, c.timestamp, 1, c.open, c.high, c.low, c.close,
                                c.volume, c.quote_volume, c.trade_count, c.vwap, c.source))
        # and a rollup of the hour with a hole, as version 1 kept it: partial
        conn.execute("""INSERT INTO candles_1h SELECT symbol, date_trunc('hour', "timestamp"),
            60, min(open), max(high), min(low), max(close), sum(volume), NULL, 0, NULL, 'rest'
            FROM candles GROUP BY 1, 2""")
    with PostgresStore(postgres_db_url) as pg:
        assert [h.timestamp.hour for h in pg.get_candles("XBTUSD", "1h")] == [0, 2, 3, 4]
        hours = rows(postgres_db_url, 'SELECT "timestamp" FROM candles_1h ORDER BY 1')
        assert [h[0].hour for h in hours] == [0, 2, 3, 4]  # the partial hour is gone
        incremental = rollup_contents(postgres_db_url)
        pg.refresh_continuous_aggregates()
        assert rollup_contents(postgres_db_url) == incremental
        assert rows(postgres_db_url, "SELECT count(*) FROM candle_coverage") == [(2,)]


def test_a_database_from_a_newer_krakked_is_refused(postgres_db_url: str) -> None:
    PostgresStore(postgres_db_url).close()
    with psycopg.connect(postgres_db_url) as conn:
        conn.execute("INSERT INTO schema_version (version, description) VALUES (99, 'future')")
    with pytest.raises(StoreError, match="99"):
        PostgresStore(postgres_db_url)


def test_every_time_series_key_holds_the_time_column(pg: PostgresStore,
                                                     postgres_db_url: str) -> None:
    keys = dict(rows(postgres_db_url, """
        SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE (i.indisprimary OR i.indisunique) AND n.nspname = 'public'
        GROUP BY c.relname, i.indexrelid"""))
    series = {"trades", "candles", *ROLLUPS.values()}
    assert series <= set(keys)
    for name in series:
        assert "timestamp" in keys[name], name
    assert sorted(keys["candles"]) == ["interval_minutes", "symbol", "timestamp"]
    assert sorted(keys["trades"]) == ["id", "symbol", "timestamp"]


def test_a_read_parsed_in_many_pieces_equals_the_read_in_one(
        pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from krakked.store import pg_copy

    bars = minutes(300)
    bars[5] = dataclasses.replace(bars[5], source=None, trade_count=None)  # type: ignore[arg-type]
    pg.upsert_candles(bars)
    whole = pg.get_candles("XBTUSD", "1m", as_="arrow")
    monkeypatch.setattr(pg_copy, "_PARSE_BYTES", 150)  # a piece every row or two
    pieces = pg.get_candles("XBTUSD", "1m", as_="arrow")
    assert pieces.num_rows == 300 and pieces.equals(whole)
    assert pieces["source"][5].as_py() is None and pieces["trade_count"][5].as_py() is None
    assert pg.get_candles("XBTUSD", "1m") == [stored18(c) for c in bars]
    assert pg.get_candles("XBTUSD", "1m", MONDAY + timedelta(days=9)) == []


# -- errors --------------------------------------------------------------------------------------

def test_a_password_in_the_url_never_appears_in_errors() -> None:
    url = "postgresql://krakked:hunter2-secret@127.0.0.1:1/marketdb?password=hunter2-secret"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url, connect_timeout=2)
    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "127.0.0.1" in message and "marketdb" in message
    assert "hunter2-secret" not in redact_url(url)
    assert redact_url(url).startswith("postgresql://krakked:***@127.0.0.1:1/marketdb")
