"""The PostgreSQL market store (``postgresql://…``): psycopg 3 with a connection pool, Arrow in
and out through ``COPY`` (``store.pg_copy``), rollup tables kept current incrementally
(``store.pg_rollups``), the schema migrated on open (``store.pg_schema``). Every time-series key
holds ``timestamp``, so TimescaleDB is a one-line migration per table
(``SELECT create_hypertable('candles', 'timestamp', migrate_data => true)``); nothing here needs
TimescaleDB.

How it works:

- Writes COPY the Arrow rows (as CSV made by Arrow: exact decimal text, timestamps as Unix
  microseconds) into a temporary table, then upsert from it in one transaction, together with the
  ``data_sync_status`` rows. Candles follow the volume rule (a stored candle is replaced only by
  a version with volume >= its own; within one batch the largest volume, then the last row,
  wins).
- Rollups form a cascade: 5m from 1m candles, 15m from 5m, 30m from 15m, 1h from 30m, 4h from 1h,
  12h from 4h, 1d from 12h, 1w from 1d (all buckets nest exactly; weeks start Monday). A write of
  1m rows recomputes only the buckets those rows touch, level by level, in the same
  transaction; ``refresh_continuous_aggregates()`` rebuilds every level. Where 1m candles carry
  no quote volume it is taken as vwap × volume (rounded to 18 places at the 5m level).
- Trades without a Kraken id (Kraken's CSV files) get a deterministic negative id (a hash of
  symbol, time, price, volume and the occurrence number), so re-importing a file adds nothing;
  they read back with ``id = None``. A CSV trade is not stored when an API trade with the same
  symbol, price and volume exists in the same second, and storing such an API trade removes the
  CSV one — each trade is stored once.
- Writes to one symbol are serialized (a transaction-scoped advisory lock per symbol), so
  concurrent writers keep the rollups and the sync counters exact.
"""

# ruff: noqa: S608 - SQL is assembled from module constants; values always travel as parameters

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import StoreError, UsageError
from krakked.market.candles import (
    TIMEFRAMES,
    SourceSegment,
    bucket_ceil_us,
    epoch_us,
    from_epoch_us,
    merge_ranges,
    timeframe_name,
)
from krakked.store.arrow import CANDLE_SCHEMA, PAIR_SCHEMA, TRADE_SCHEMA
from krakked.store.base import (
    ROLLUPS,
    MarketStore,
    SyncUpdate,
    batch_coverage,
    minutes_to_build,
    redact_url,
    sync_target,
)
from krakked.store.pg_copy import copy_in, copy_out, ident, select_out, ts_in
from krakked.store.pg_rollups import (
    CANDLE_NAMES,
    CANDLE_UPDATE,
    CASCADE,
    agg_columns,
    apply_batch_rollups,
    batch_rollups,
    bucket_sql,
    maintain_rollups,
    rollup_rebuild_sql,
)
from krakked.store.pg_schema import migrate
from krakked.store.pg_trades import (
    candles_from_trades,
    insert_trades,
    merge_trade_coverage,
    trade_coverage_ranges,
    trade_id_holes,
    trades_summary,
)

__all__ = ["PostgresStore"]

_BATCH_ROLLUP_ROWS = 2_000  # 1m rows from which a write works out its whole buckets itself


# -- URLs and errors ----------------------------------------------------------------------------

def _conninfo(url: str) -> str:
    """Accept ``postgres://`` and SQLAlchemy-style ``postgresql+psycopg://`` too."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url, count=1)


def _target(url: str) -> str:
    """``host=… port=… database=…`` for messages: where, never the password."""
    import psycopg.conninfo

    try:
        info = psycopg.conninfo.conninfo_to_dict(_conninfo(url))
    except Exception:  # an unparseable URL: show what it looks like, redacted
        return redact_url(url)
    host = info.get("host") or info.get("hostaddr") or "localhost (default socket)"
    return (f"host={host} port={info.get('port') or 5432} "
            f"database={info.get('dbname') or info.get('user') or '(default)'}")


def _secrets(url: str) -> list[str]:
    found = []
    with contextlib.suppress(Exception):
        import psycopg.conninfo

        password = psycopg.conninfo.conninfo_to_dict(_conninfo(url)).get("password")
        if password:
            found.append(str(password))
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
    return found


def _status_source(data_type: str) -> tuple[str, tuple[Any, ...]]:
    """(FROM … WHERE clause with a ``%s`` for the symbol, extra params) behind a data type."""
    kind, minutes = sync_target(SyncUpdate("", data_type))
    if kind == "trades":
        return "trades WHERE symbol = %s", ()
    return "candles WHERE symbol = %s AND interval_minutes = %s", (minutes,)


def _subtract_all(piece: tuple[int, int], ranges: Sequence[tuple[int, int]]
                  ) -> list[tuple[int, int]]:
    """The parts of ``piece`` outside every range of ``ranges`` (epoch µs)."""
    parts = [piece]
    for a, b in ranges:
        parts = [p for x, y in parts
                 for p in ((x, min(y, a)), (max(x, b), y)) if p[1] > p[0]]
    return parts


# -- the store ----------------------------------------------------------------------------------

class PostgresStore(MarketStore):
    """The market store in PostgreSQL (15+; TimescaleDB not needed)."""

    backend = "postgresql"

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10,
                 connect_timeout: float = 10.0) -> None:
        super().__init__()
        if not 1 <= min_size <= max_size:
            raise StoreError(f"pool sizes must satisfy 1 <= min_size <= max_size, got "
                             f"{min_size}..{max_size}")
        self.url = redact_url(url)
        self._target = _target(url)
        self._secrets = _secrets(url)
        conninfo = _conninfo(url)
        import psycopg
        import psycopg.conninfo
        from psycopg_pool import ConnectionPool

        try:
            with psycopg.connect(conninfo, connect_timeout=max(1, int(connect_timeout))) as conn:
                migrate(conn)
        except psycopg.Error as exc:
            raise self._error("cannot open the PostgreSQL store", exc) from None
        kwargs: dict[str, Any] = {"connect_timeout": max(1, int(connect_timeout))}
        if "application_name" not in psycopg.conninfo.conninfo_to_dict(conninfo):
            kwargs["application_name"] = "krakked"  # how an operator tells them apart
        self._pool = ConnectionPool(
            conninfo, min_size=min_size, max_size=max_size, open=False, kwargs=kwargs,
            configure=_configure, timeout=60.0, name="krakked-store")
        try:
            self._pool.open(wait=True, timeout=connect_timeout * 2)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._error("cannot open the PostgreSQL connection pool", exc) from None

    # -- plumbing --------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StoreError:
        message = str(exc).strip() or type(exc).__name__
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return StoreError(f"{what} at {self._target}: {message}")

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[Any]:
        """A pooled connection's cursor inside one transaction (committed at the end)."""
        import psycopg

        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise self._error(f"PostgreSQL store: {what} failed", exc) from None

    @staticmethod
    def _lock_symbols(cur: Any, symbols: set[str]) -> None:
        """Serialize writers of the same symbols (rollups and sync counters stay exact)."""
        for symbol in sorted(symbols):
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"krakked:{symbol}",))

    @staticmethod
    def _refresh_status(cur: Any, deltas: dict[tuple[str, str], int]) -> None:
        """Existing ``data_sync_status`` rows of the touched (symbol, data_type): oldest/newest
        from the table, ``total_records`` moved by the rows added or removed."""
        for (symbol, data_type), delta in sorted(deltas.items()):
            where, extra = _status_source(data_type)
            args = (symbol, *extra)
            cur.execute(
                f"""UPDATE data_sync_status SET
                    oldest_timestamp = (SELECT min("timestamp") FROM {where}),
                    newest_timestamp = (SELECT max("timestamp") FROM {where}),
                    total_records = total_records + %s
                    WHERE symbol = %s AND data_type = %s""",
                (*args, *args, delta, symbol, data_type))

    @staticmethod
    def _apply_sync(cur: Any, sync: Sequence[SyncUpdate]) -> None:
        for update in sync:
            cur.execute(
                """UPDATE data_sync_status SET last_sync_at = now(),
                   last_kraken_since = coalesce(%s, last_kraken_since)
                   WHERE symbol = %s AND data_type = %s""",
                (update.last_kraken_since, update.symbol, update.data_type))
            if cur.rowcount:
                continue
            where, extra = _status_source(update.data_type)
            stats = f'SELECT min("timestamp"), max("timestamp"), count(*) FROM {where}'
            args = (update.symbol, *extra)
            cur.execute(
                f"""INSERT INTO data_sync_status (symbol, data_type, oldest_timestamp,
                    newest_timestamp, total_records, last_sync_at, last_kraken_since)
                    SELECT %s, %s, x.*, now(), %s FROM ({stats}) x""",
                (update.symbol, update.data_type, update.last_kraken_since, *args))

    # -- writing ---------------------------------------------------------------------------

    def write_candles(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                      coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]] | None = None
                      ) -> int:
        for update in sync:
            sync_target(update, "candles")
        table = table.select(CANDLE_SCHEMA.names)
        if coverage is None:
            coverage = batch_coverage(table)
        symbols = set(pc.unique(table["symbol"]).to_pylist()) if table.num_rows else set()
        with self._transaction("writing candles") as cur:
            self._lock_symbols(cur, symbols | {s.symbol for s in sync}
                               | {symbol for symbol, _ in coverage})
            added = self._merge_coverage(cur, coverage)
            written = self._upsert_candles(cur, table) if table.num_rows else 0
            self._maintain_ends(cur, added)
            self._apply_sync(cur, sync)
        return written

    @staticmethod
    def _maintain_ends(cur: Any, added: Sequence[tuple[str, datetime]]) -> None:
        """A rollup bucket can become whole without a row of its own changing (coverage of a
        quiet stretch): recompute, at every level, the buckets holding the ends of each newly
        covered 1-minute range (``added``, from ``_merge_coverage``)."""
        if added:
            cur.execute("DROP TABLE IF EXISTS _kk_cover_ends")
            cur.execute('CREATE TEMP TABLE _kk_cover_ends (symbol text, '
                        '"timestamp" timestamptz) ON COMMIT DROP')
            cur.executemany("INSERT INTO _kk_cover_ends VALUES (%s, %s)", added)
            maintain_rollups(cur, "_kk_cover_ends", prune=False)

    @staticmethod
    def _merge_coverage(cur: Any, coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]]
                        ) -> list[tuple[str, datetime]]:
        """Merge ``coverage`` into ``candle_coverage`` (disjoint, non-touching ranges); return
        (symbol, instant) of the first and last minute of each newly covered 1-minute piece."""
        ends: list[tuple[str, datetime]] = []
        for (symbol, minutes), ranges in sorted(coverage.items()):
            if not ranges:
                continue
            lo = from_epoch_us(min(a for a, _ in ranges))
            hi = from_epoch_us(max(b for _, b in ranges))
            near = ("symbol = %s AND interval_minutes = %s AND covered_until >= %s "
                    "AND covered_from <= %s")
            args = (symbol, minutes, lo, hi)
            cur.execute(f"DELETE FROM candle_coverage WHERE {near} "
                        "RETURNING covered_from, covered_until", args)
            existing = [(epoch_us(a), epoch_us(b)) for a, b in cur.fetchall()]
            merged = merge_ranges([*ranges, *existing])
            cur.executemany("INSERT INTO candle_coverage VALUES (%s, %s, %s, %s)",
                            [(symbol, minutes, from_epoch_us(a), from_epoch_us(b))
                             for a, b in merged])
            if minutes == 1:
                for a, b in merge_ranges(ranges):
                    for x, y in _subtract_all((a, b), existing):
                        ends += [(symbol, from_epoch_us(x)),
                                 (symbol, from_epoch_us(y - 60_000_000))]
        return ends

    def _upsert_candles(self, cur: Any, table: pa.Table) -> int:
        cur.execute("SET LOCAL work_mem = '128MB'")
        with ThreadPoolExecutor(1) as pool:
            # A large batch's own rollups are worked out while the server upserts it (after
            # the COPY, whose encoding wants this process's cores); they are used if every 1m
            # row of the batch wins (see pg_rollups.apply_batch_rollups).
            copy_in(cur, "_kk_in_candles", table)
            ones = pc.sum(pc.equal(table["interval_minutes"], 1)).as_py() or 0
            batch = pool.submit(batch_rollups, table) if ones >= _BATCH_ROLLUP_ROWS else None
            cols = ", ".join(ts_in('"timestamp"') if n == "timestamp" else ident(n)
                             for n in CANDLE_SCHEMA.names)
            cur.execute(f"""
                WITH up AS (
                    INSERT INTO candles AS c ({CANDLE_NAMES})
                    SELECT {cols} FROM (
                        SELECT DISTINCT ON ("timestamp", symbol, interval_minutes) *
                        FROM _kk_in_candles
                        ORDER BY "timestamp", symbol, interval_minutes, volume DESC, _ord DESC) i
                    ON CONFLICT ("timestamp", symbol, interval_minutes) DO UPDATE
                    SET {CANDLE_UPDATE} WHERE excluded.volume >= c.volume
                    RETURNING c.symbol, c.interval_minutes, c.xmax = 0 AS inserted)
                SELECT symbol, interval_minutes, count(*) FILTER (WHERE inserted), count(*)
                FROM up GROUP BY symbol, interval_minutes""")
            groups = cur.fetchall()
            changed_minutes = sum(n for _, minutes, _, n in groups if minutes == 1)
            rollups = batch.result() if batch is not None else None
        if rollups is not None and changed_minutes == rollups.minutes:
            apply_batch_rollups(cur, rollups)
        elif changed_minutes:
            # the batch's minutes: those that lost to a stored fuller candle changed nothing,
            # and recomputing their buckets finds that
            cur.execute("ANALYZE _kk_in_candles")
            maintain_rollups(cur, f'(SELECT symbol, {ts_in(ident("timestamp"))} AS '
                                        '"timestamp" FROM _kk_in_candles '
                                        "WHERE interval_minutes = 1) AS changed")
        self._refresh_status(cur, {
            (symbol, f"candles_{timeframe_name(minutes)}"): inserted
            for symbol, minutes, inserted, _ in groups if minutes in TIMEFRAMES.values()})
        return sum(int(n) for *_, n in groups)

    def write_trades(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                     coverage: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                     build_candles: bool = False) -> int:
        """See ``MarketStore.write_trades`` (``store.pg_trades``), in one transaction."""
        for update in sync:
            sync_target(update, "trades")
        coverage = coverage or {}
        table = table.select(TRADE_SCHEMA.names)
        symbols = set(pc.unique(table["symbol"]).to_pylist()) if table.num_rows else set()
        with self._transaction("writing trades") as cur:
            self._lock_symbols(cur, symbols | {s.symbol for s in sync} | set(coverage))
            deltas: dict[str, int] = {}
            touched = {s: list(r) for s, r in coverage.items() if r}
            if table.num_rows:
                deltas, spans = insert_trades(cur, table)
                self._refresh_status(cur, {(s, "trades"): n for s, n in deltas.items()})
                for symbol, (a, b) in spans.items():
                    touched.setdefault(symbol, []).append((a, b + 1))
            merge_trade_coverage(cur, coverage)
            if build_candles:
                for symbol, ranges in sorted(touched.items()):
                    self._rebuild_trade_candles(
                        cur, symbol, (min(a for a, _ in ranges), max(b for _, b in ranges)))
            self._apply_sync(cur, sync)
        return sum(deltas.values())

    def _rebuild_trade_candles(self, cur: Any, symbol: str,
                               window: tuple[int, int] | None) -> int:
        lo, hi = window if window is not None else (None, None)
        minutes = minutes_to_build(trade_coverage_ranges(cur, symbol, lo, hi), window)
        added = self._merge_coverage(cur, {(symbol, 1): minutes} if minutes else {})
        written = 0
        for a, b in minutes:
            built = candles_from_trades(cur, symbol, a, b)
            if built.num_rows:
                written += self._upsert_candles(cur, built)
        self._maintain_ends(cur, added)
        return written

    def build_candles_from_trades(self, symbol: str, start: datetime | None = None,
                                  end: datetime | None = None) -> int:
        """See ``MarketStore.build_candles_from_trades`` (aggregated by the server)."""
        window = None
        if start is not None or end is not None:
            window = (epoch_us(start) if start else 0, epoch_us(end) if end else 2 ** 62)
        with self._transaction("building candles from trades") as cur:
            self._lock_symbols(cur, {symbol})
            return self._rebuild_trade_candles(cur, symbol, window)

    def read_trade_coverage(self, symbol: str) -> list[tuple[int, int]]:
        """See ``MarketStore.read_trade_coverage``."""
        with self._transaction("reading trade coverage") as cur:
            return trade_coverage_ranges(cur, symbol)

    def read_trade_candles(self, symbol: str, minutes: int, start: datetime,
                           end: datetime) -> pa.Table:
        """See ``MarketStore.read_trade_candles`` (aggregated by the server)."""
        with self._transaction("reading trades") as cur:
            return candles_from_trades(cur, symbol, epoch_us(start), epoch_us(end), minutes)

    def trade_id_holes(self, symbol: str, start: datetime | None = None,
                       end: datetime | None = None) -> list[dict[str, Any]]:
        """See ``MarketStore.trade_id_holes``."""
        with self._transaction("reading trades") as cur:
            return trade_id_holes(cur, symbol, start, end)

    def trades_summary(self, symbol: str) -> dict[str, Any] | None:
        """See ``MarketStore.trades_summary``."""
        with self._transaction("reading trades") as cur:
            return trades_summary(cur, symbol)

    def write_pairs(self, table: pa.Table) -> None:
        table = table.select(PAIR_SCHEMA.names).cast(PAIR_SCHEMA)
        names = ", ".join(ident(n) for n in PAIR_SCHEMA.names)
        cols = ", ".join(ts_in(ident(f.name)) if pa.types.is_timestamp(f.type) else ident(f.name)
                         for f in PAIR_SCHEMA)
        with self._transaction("writing pairs") as cur:
            copy_in(cur, "_kk_in_pairs", table)
            cur.execute("DELETE FROM pairs")
            cur.execute(f"""INSERT INTO pairs ({names})
                SELECT DISTINCT ON (canonical) {cols} FROM _kk_in_pairs
                ORDER BY canonical, _ord DESC""")

    # -- reading ---------------------------------------------------------------------------

    def read_coverage(self, symbol: str) -> dict[int, list[tuple[int, int]]]:
        """See ``MarketStore.read_coverage``."""
        with self._transaction("reading coverage") as cur:
            cur.execute("""SELECT interval_minutes, covered_from, covered_until
                           FROM candle_coverage WHERE symbol = %s
                           ORDER BY interval_minutes, covered_from""", (symbol,))
            rows = cur.fetchall()
        out: dict[int, list[tuple[int, int]]] = {}
        for minutes, a, b in rows:
            out.setdefault(int(minutes), []).append((epoch_us(a), epoch_us(b)))
        return out

    def read_segments(self, symbol: str, minutes: int,
                      segments: Sequence[SourceSegment]) -> pa.Table:
        """See ``MarketStore.read_segments``: Kraken's own candles as stored; buckets derived
        from 1-minute candles from the rollup tables (which hold exactly the buckets the
        1-minute coverage spans); from other intervals aggregated here."""
        by_source: dict[int, list[tuple[int, int]]] = {}
        for seg in segments:
            by_source.setdefault(seg.source_minutes, []).append((seg.start_us, seg.end_us))
        parts: list[str] = []
        params: list[Any] = []
        for source, ranges in sorted(by_source.items()):
            window = " OR ".join(['(s."timestamp" >= %s AND s."timestamp" < %s)'] * len(ranges))
            bounds = [from_epoch_us(x) for r in ranges for x in r]
            if source == minutes:
                parts.append(f"""SELECT {select_out(CANDLE_SCHEMA, 's')} FROM candles s
                    WHERE s.symbol = %s AND s.interval_minutes = %s AND ({window})""")
                params += [symbol, minutes, *bounds]
            elif source == 1 and minutes in ROLLUPS:
                parts.append(f"""SELECT {select_out(CANDLE_SCHEMA, 's')}
                    FROM {ROLLUPS[minutes]} s WHERE s.symbol = %s AND ({window})""")
                params += [symbol, *bounds]
            else:
                if source == 1:  # e.g. 15d: from the coarsest rollup that divides it
                    level = max(m for m in ROLLUPS if minutes % m == 0)
                    table, cond, extra = ROLLUPS[level], "", []
                else:
                    table, cond, extra = "candles", "AND s.interval_minutes = %s", [source]
                bucket = bucket_sql(minutes, 's."timestamp"')
                parts.append(f"""SELECT {select_out(CANDLE_SCHEMA, 's')} FROM (
                    SELECT {agg_columns(minutes, bucket)} FROM {table} s
                    WHERE s.symbol = %s {cond} AND ({window})
                    GROUP BY s.symbol, {bucket}) s""")
                params += [symbol, *extra, *bounds]
        if not parts:
            return CANDLE_SCHEMA.empty_table()
        query = " UNION ALL ".join(f"({p})" for p in parts)
        with self._transaction("reading candles") as cur:
            return copy_out(cur, query, params, CANDLE_SCHEMA)

    def last_closes(self, symbol: str, asks: Sequence[tuple[int, int, int]]
                    ) -> list[tuple[Any, str | None] | None]:
        """See ``MarketStore.last_closes``."""
        out: list[tuple[Any, str | None] | None] = []
        with self._transaction("reading candles") as cur:
            for minutes, a, b in asks:
                cur.execute("""SELECT trim_scale(close), source FROM candles
                               WHERE symbol = %s AND interval_minutes = %s
                                 AND "timestamp" >= %s AND "timestamp" < %s
                               ORDER BY "timestamp" DESC LIMIT 1""",
                            (symbol, minutes, from_epoch_us(a), from_epoch_us(b)))
                row = cur.fetchone()
                out.append((row[0], row[1]) if row else None)
        return out

    def read_trades(self, symbol: str, start: datetime | None = None,
                    end: datetime | None = None, limit: int | None = None) -> pa.Table:
        cols = select_out(TRADE_SCHEMA, "s").replace(
            's."id"', 'CASE WHEN s."id" < 0 THEN NULL ELSE s."id" END', 1)
        query = (f"SELECT {cols} FROM trades s WHERE s.symbol = %(symbol)s"
                 + (' AND s."timestamp" >= %(start)s' if start else "")
                 + (' AND s."timestamp" < %(end)s' if end else "")
                 + ' ORDER BY s."timestamp", abs(s.id)'
                 + (" LIMIT %(limit)s" if limit is not None else ""))
        params = {"symbol": symbol, "start": start, "end": end,
                  "limit": max(0, limit) if limit is not None else None}
        with self._transaction("reading trades") as cur:
            return copy_out(cur, query, params, TRADE_SCHEMA)

    def read_pairs(self) -> pa.Table:
        with self._transaction("reading pairs") as cur:
            return copy_out(cur, f"SELECT {select_out(PAIR_SCHEMA)} FROM pairs "
                             "ORDER BY canonical", (), PAIR_SCHEMA)

    def coverage(self, symbol: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE symbol = %(symbol)s" if symbol else ""
        params = {"symbol": symbol}
        with self._transaction("reading coverage") as cur:
            # missing/gaps: the holes between recorded coverage ranges, in buckets and runs
            cur.execute(f"""
                WITH c AS (SELECT symbol, interval_minutes, min("timestamp") AS first,
                                  max("timestamp") AS last, count(*) AS n
                           FROM candles {where} GROUP BY symbol, interval_minutes),
                h AS (SELECT symbol, interval_minutes,
                             sum(round(extract(epoch FROM next_from - covered_until)
                                       / 60 / interval_minutes))::bigint AS missing,
                             count(*) AS gaps
                      FROM (SELECT *, lead(covered_from) OVER (PARTITION BY symbol,
                                interval_minutes ORDER BY covered_from) AS next_from
                            FROM candle_coverage {where}) x
                      WHERE next_from IS NOT NULL GROUP BY symbol, interval_minutes)
                SELECT c.symbol, c.interval_minutes, first, last, n, coalesce(missing, 0),
                       coalesce(gaps, 0)
                FROM c LEFT JOIN h USING (symbol, interval_minutes)""", params)
            rows: list[dict[str, Any]] = [
                {"symbol": s, "interval_minutes": m, "first": first, "last": last,
                 "rows": int(n), "missing": int(missing), "gaps": int(gaps)}
                for s, m, first, last, n, missing, gaps in cur.fetchall()]
            cur.execute(f"""SELECT symbol, min("timestamp"), max("timestamp"), count(*)
                            FROM trades {where} GROUP BY symbol""", params)
            trades = [{"symbol": s, "interval_minutes": None, "first": first, "last": last,
                       "rows": int(n), "missing": None, "gaps": None}
                      for s, first, last, n in cur.fetchall()]
        for row in rows + trades:
            for key in ("first", "last"):
                row[key] = row[key].astimezone(UTC)
        rows.sort(key=lambda r: (r["symbol"], r["interval_minutes"]))
        return rows + sorted(trades, key=lambda r: r["symbol"])

    def read_sync_status(self, symbol: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE symbol = %s" if symbol else ""
        with self._transaction("reading sync status") as cur:
            cur.execute(f"""SELECT symbol, data_type, oldest_timestamp, newest_timestamp,
                            last_sync_at, last_kraken_since, total_records
                            FROM data_sync_status {where}
                            ORDER BY symbol, data_type""",
                        (symbol,) if symbol else ())
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for row in rows:
            for key in ("oldest_timestamp", "newest_timestamp", "last_sync_at"):
                if row[key] is not None:
                    row[key] = row[key].astimezone(UTC)
        return rows

    # -- maintenance -----------------------------------------------------------------------

    def delete_before(self, kind: Literal["trades", "candles"], cutoff: datetime) -> int:
        if kind not in ("trades", "candles"):
            raise UsageError(f"kind must be trades or candles, not {kind!r}")
        with self._transaction(f"deleting old {kind}") as cur:
            cur.execute(f"SELECT DISTINCT symbol FROM {kind}")
            self._lock_symbols(cur, {r[0] for r in cur.fetchall()})
            cur.execute(f'DELETE FROM {kind} WHERE "timestamp" < %s', (cutoff,))
            deleted = int(cur.rowcount)
            if kind == "candles":
                self._trim_coverage(cur, cutoff)
            if kind == "candles" and deleted:
                for name in ROLLUPS.values():
                    cur.execute(f'DELETE FROM {name} WHERE "timestamp" < %s',
                                (cutoff,))
                # the buckets holding the cutoff: rebuilt from the 1m rows that remain
                cur.execute("""CREATE TEMP TABLE _kk_touched_1 ON COMMIT DROP AS
                    SELECT DISTINCT symbol, %s::timestamptz AS "timestamp" FROM candles
                    WHERE interval_minutes = 1""", (cutoff,))
                maintain_rollups(cur, "_kk_touched_1", prune=False)
            if deleted:
                cur.execute("SELECT symbol, data_type FROM data_sync_status")
                for symbol, data_type in cur.fetchall():
                    with contextlib.suppress(UsageError):
                        if sync_target(SyncUpdate(symbol, data_type))[0] == kind:
                            self._recount_status(cur, symbol, data_type)
        return deleted

    @staticmethod
    def _trim_coverage(cur: Any, cutoff: datetime) -> None:
        """After deleting candles opening before ``cutoff``: coverage starts no earlier than each
        interval's first bucket at or after it."""
        cur.execute("DELETE FROM candle_coverage WHERE covered_until <= %s", (cutoff,))
        cur.execute("SELECT DISTINCT interval_minutes FROM candle_coverage "
                    "WHERE covered_from < %s", (cutoff,))
        for (minutes,) in cur.fetchall():
            first = from_epoch_us(bucket_ceil_us(epoch_us(cutoff), int(minutes)))
            cur.execute("UPDATE candle_coverage SET covered_from = %s "
                        "WHERE interval_minutes = %s AND covered_from < %s",
                        (first, minutes, first))
        cur.execute("DELETE FROM candle_coverage WHERE covered_from >= covered_until")

    @staticmethod
    def _recount_status(cur: Any, symbol: str, data_type: str) -> None:
        where, extra = _status_source(data_type)
        cur.execute(
            f"""UPDATE data_sync_status d SET (oldest_timestamp, newest_timestamp,
                total_records) = (SELECT min("timestamp"), max("timestamp"), count(*)
                FROM {where}) WHERE d.symbol = %s AND d.data_type = %s""",
            (symbol, *extra, symbol, data_type))

    def refresh_continuous_aggregates(self) -> None:
        """Rebuild every rollup table from the 1-minute candles (one transaction)."""
        with self._transaction("rebuilding rollups") as cur:
            cur.execute("SET LOCAL work_mem = '256MB'")
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('krakked:rollups', 0))")
            cur.execute("LOCK TABLE candles IN SHARE MODE")  # no 1m writes while rebuilding
            cur.execute("TRUNCATE " + ", ".join(ROLLUPS.values()))
            for minutes, finer in CASCADE:
                cur.execute(rollup_rebuild_sql(minutes, finer))

    def close(self) -> None:
        """Close the connection pool."""
        pool = getattr(self, "_pool", None)
        if pool is not None and not pool.closed:
            pool.close()


def _configure(conn: Any) -> None:
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle = 'ISO'")
    conn.commit()
