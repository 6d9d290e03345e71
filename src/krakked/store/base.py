"""The market store: one interface over DuckDB, Parquet/CSV files and PostgreSQL, and the query
API every backend shares.

A backend implements a handful of primitives (write Arrow tables with the volume rule, read one
interval's candles — stored where Kraken's own exist, else derived from the finest stored interval
that divides it — read trades, coverage, sync status). Everything users call (``get_candles``,
``get_ohlc``, ``replay_candles``, the original module's ``append_bars``/``get_bars``…) is written
once, here, on top of them. What every backend shares in Python lives here too: the
``SyncUpdate`` targets, a batch's coverage, URL redaction, error lines. (Arrow schemas and
conversion: ``store.arrow``; the SQL the backends share: ``store.sql``.)

Conventions: symbols are canonical (Kraken's altname, ``XBTUSD``; aliases are resolved by the
caller or by ``canonical``), timestamps are timezone-aware UTC, prices and volumes are exact
``Decimal`` (``DECIMAL(38,18)`` in the databases, ``decimal128(38, 18)`` in Arrow).
"""

from __future__ import annotations

import contextlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from krakked.errors import NoDataError, UsageError
from krakked.market.candles import (
    TIMEFRAMES,
    Candle,
    HistoricalTrade,
    SourceSegment,
    epoch_us,
    from_epoch_us,
    interval_minutes,
    plan_sources,
)
from krakked.store.arrow import (
    CANDLE_SCHEMA,
    TRADE_SCHEMA,
    TS,
    arrow_to_candles,
    candles_to_arrow,
    trades_to_arrow,
)
from krakked.store.coverage import (
    Coverage,
    TradeCoverage,
    batch_coverage,
    minutes_to_build,
    trade_coverage_ranges,
    whole_minutes,
)
from krakked.times import parse_utc

__all__ = [
    "ROLLUPS",
    "SCHEMA_VERSION",
    "Coverage",
    "MarketStore",
    "RetentionPolicy",
    "SyncUpdate",
    "TradeCoverage",
    "batch_coverage",
    "minutes_to_build",
    "redact_url",
    "sync_target",
    "whole_minutes",
]

SCHEMA_VERSION = 3

ROLLUPS: dict[int, str] = {
    5: "candles_5m", 15: "candles_15m", 30: "candles_30m", 60: "candles_1h",
    240: "candles_4h", 720: "candles_12h", 1440: "candles_1d", 10080: "candles_1w",
}
"""Interval -> rollup table/view name, derived from 1-minute candles."""


@dataclass(frozen=True)
class SyncUpdate:
    """A ``data_sync_status`` row to write in the same transaction as the data it describes.

    ``data_type`` is ``trades`` or ``candles_<tf>`` (``candles_1m``, ``candles_1h``…). The store
    fills ``oldest``/``newest``/``total_records`` from what it holds; the caller gives Kraken's
    cursor (``last_kraken_since``) — the point the next incremental run resumes from.
    """

    symbol: str
    data_type: str
    last_kraken_since: int | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """Opt-in retention (``[store.retention]``); ``None`` keeps everything (the default)."""

    trades_days: int | None = None
    candles_days: int | None = None


def sync_target(update: SyncUpdate, kind: str | None = None) -> tuple[str, int | None]:
    """``SyncUpdate.data_type`` -> (``trades`` | ``candles``, interval minutes or None); an
    ``UsageError`` naming it if it describes neither, or not ``kind`` when given."""
    target: tuple[str, int | None] | None = None
    if update.data_type == "trades":
        target = ("trades", None)
    elif update.data_type.startswith("candles_"):
        with contextlib.suppress(UsageError):
            target = ("candles", interval_minutes(update.data_type.removeprefix("candles_")))
    if target is None:
        raise UsageError(
            f"data_sync_status data_type must be trades or candles_<timeframe> "
            f"({', '.join(TIMEFRAMES)}), not {update.data_type!r}")
    if kind is not None and target[0] != kind:
        raise UsageError(
            f"sync status {update.data_type!r} does not describe the {kind} written")
    return target


_PASSWORD_PARAM = re.compile(r"(?i)(^|&)([^&=#]*password)=[^&#]*")


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***`` — the user info's and that of any
    ``password``-like query parameter (``?password=``, ``&sslpassword=``) — and otherwise
    unchanged: safe to print."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostinfo}"
    path, mark, query = tail.partition("?")
    if mark:
        tail = path + mark + _PASSWORD_PARAM.sub(r"\1\2=***", query)
    return f"{scheme}{sep}{netloc}{tail}"



def _reversed(table: pa.Table) -> pa.Table:
    """Rows in reverse order (also for an empty table, which ``take([])`` rejects)."""
    return table.take(pa.array(range(table.num_rows - 1, -1, -1), pa.int64()))


def _sorted(table: pa.Table) -> pa.Table:
    """``table`` ordered by ``timestamp`` (cheap when it already is)."""
    n = table.num_rows
    if n < 2:
        return table
    ts = pc.cast(table["timestamp"].cast(TS), pa.int64()).combine_chunks()
    if pc.all(pc.greater(ts.slice(1), ts.slice(0, n - 1))).as_py():
        return table
    return table.take(pc.sort_indices(ts))


def _counts(stamps: pa.Array, segments: Sequence[SourceSegment]) -> list[int]:
    """Rows of each (disjoint, ordered) segment in the sorted epoch-µs ``stamps``."""
    if len(segments) == 1:
        return [len(stamps)]
    if len(segments) <= 16:
        return [pc.sum(pc.and_(pc.greater_equal(stamps, s.start_us),
                               pc.less(stamps, s.end_us))).as_py() or 0 for s in segments]
    import bisect

    values = stamps.to_pylist()
    return [bisect.bisect_left(values, s.end_us) - bisect.bisect_left(values, s.start_us)
            for s in segments]


def _take_buckets(segments: Sequence[SourceSegment], wanted: int, newest: bool
                  ) -> tuple[list[SourceSegment], bool]:
    """The segments (trimmed) holding the newest (else oldest) ``wanted`` buckets, and whether
    any bucket was left out."""
    picked: list[SourceSegment] = []
    ordered = list(reversed(segments)) if newest else list(segments)
    for seg in ordered:
        if wanted <= 0:
            return sorted(picked, key=lambda s: s.start_us), True
        if seg.buckets > wanted:
            width = seg.minutes * 60_000_000
            if newest:
                seg = SourceSegment(seg.source_minutes, seg.minutes, seg.end_us - wanted * width,
                                    seg.end_us, seg.covered_from_us)
            else:
                seg = SourceSegment(seg.source_minutes, seg.minutes, seg.start_us,
                                    seg.start_us + wanted * width, seg.covered_from_us)
            picked.append(seg)
            return sorted(picked, key=lambda s: s.start_us), True
        picked.append(seg)
        wanted -= seg.buckets
    return sorted(picked, key=lambda s: s.start_us), False


AsKind = Literal["candles", "arrow", "polars", "pandas"]


def _convert(table: pa.Table, as_: AsKind) -> Any:
    if as_ == "candles":
        return arrow_to_candles(table)
    if as_ == "arrow":
        return table
    if as_ == "polars":
        try:
            import polars
        except ImportError:
            raise UsageError(
                "as_='polars' needs polars installed (pip install polars)") from None
        return polars.from_arrow(table)
    if as_ == "pandas":
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise UsageError(
                "as_='pandas' needs pandas installed (pip install pandas)") from None
        return table.to_pandas()
    raise UsageError(f"as_ must be candles, arrow, polars or pandas, not {as_!r}")


def _window(start: datetime | int | str | None, end: datetime | int | str | None
            ) -> tuple[datetime | None, datetime | None]:
    s, e = parse_utc(start, "start"), parse_utc(end, "end")
    if s and e and e <= s:
        raise UsageError(f"end {e.isoformat()} is not after start {s.isoformat()}")
    return s, e


class MarketStore(ABC):
    """The market store. Get one with ``krakked.store.open_store(url)``."""

    url: str
    backend: str

    def __init__(self) -> None:
        self.retention = RetentionPolicy()
        self._resolver: Callable[[str], str] | None = None

    # -- primitives a backend implements ---------------------------------------------------

    @abstractmethod
    def write_candles(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                      coverage: Mapping[tuple[str, int], Sequence[tuple[int, int]]] | None = None
                      ) -> int:
        """Upsert ``table`` (``CANDLE_SCHEMA``) on (timestamp, symbol, interval_minutes): a stored
        candle is replaced only by one with volume >= its own. ``coverage`` ((symbol, interval)
        -> ``[from, until)`` epoch-µs ranges, ``batch_coverage`` of the batch when None) is merged
        into the recorded coverage and ``sync`` rows are written, in the same transaction.
        Returns the number of rows inserted or replaced."""

    @abstractmethod
    def write_trades(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                     coverage: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                     build_candles: bool = False) -> int:
        """Insert ``table`` (``TRADE_SCHEMA``) on (timestamp, symbol, id), ignoring rows already
        stored; rows of Kraken's CSV files (id None) get synthetic ids by their position in
        their (symbol, second) in the batch and are reconciled with API rows of the same trade
        (``store.trade_sql``). ``coverage`` (symbol -> epoch-µs ranges) is merged into the
        recorded trade coverage; with ``build_candles`` the 1-minute candles of the whole
        covered minutes the batch or the coverage touch are rebuilt from the stored trades;
        ``sync`` rows — all in the same transaction where the backend has them. Returns the
        change in stored trades."""

    @abstractmethod
    def read_trade_coverage(self, symbol: str) -> list[tuple[int, int]]:
        """``symbol``'s recorded trade coverage: merged ``[from, until)`` epoch-µs ranges."""

    @abstractmethod
    def build_candles_from_trades(self, symbol: str, start: datetime | None = None,
                                  end: datetime | None = None) -> int:
        """(Re)build ``symbol``'s 1-minute candles (source ``trades``) from its stored trades,
        in the engine, for every whole minute in ``[start, end)`` that the recorded trade
        coverage spans, with the volume rule; those minutes become 1m coverage. Returns the
        candles written."""

    @abstractmethod
    def read_trade_candles(self, symbol: str, minutes: int, start: datetime,
                           end: datetime) -> pa.Table:
        """``minutes`` candles (``CANDLE_SCHEMA``, by time) aggregated in the engine from
        ``symbol``'s stored trades with ``start <= time < end``, by the rules of
        ``build_candles_from_trades``; nothing is written. Which buckets are complete is the
        caller's business (``read_trade_coverage``)."""

    @abstractmethod
    def trade_id_holes(self, symbol: str, start: datetime | None = None,
                       end: datetime | None = None) -> list[dict[str, Any]]:
        """Holes in Kraken's trade-id sequence among ``symbol``'s API rows with ``start <=
        time < end``: ``symbol, after_id, after_time, before_id, before_time, missing``."""

    @abstractmethod
    def trades_summary(self, symbol: str) -> dict[str, Any] | None:
        """``first``, ``last``, ``rows``, ``last_id`` (newest Kraken id), ``last_api_time``
        (newest API row) of ``symbol``'s trades, or None when there are none."""

    @abstractmethod
    def write_pairs(self, table: pa.Table) -> None:
        """Replace the universe snapshot with ``table`` (``PAIR_SCHEMA``)."""

    @abstractmethod
    def read_coverage(self, symbol: str) -> dict[int, list[tuple[int, int]]]:
        """``symbol``'s recorded candle coverage: interval -> merged ``[from, until)`` ranges
        (epoch µs), in order. Every interval opening inside a range is stored or had no
        trades."""

    @abstractmethod
    def read_segments(self, symbol: str, minutes: int,
                      segments: Sequence[SourceSegment]) -> pa.Table:
        """For each segment, the ``minutes`` buckets of ``symbol`` in it that have source rows:
        the stored candles themselves where ``source_minutes == minutes``, else aggregated from
        the ``source_minutes`` candles by the rule of ``store.sql.aggregate_query``
        (``CANDLE_SCHEMA``, any order)."""

    @abstractmethod
    def last_closes(self, symbol: str, asks: Sequence[tuple[int, int, int]]
                    ) -> list[tuple[Decimal, str | None] | None]:
        """For each ``(interval, from_us, before_us)``: the close and source of ``symbol``'s
        newest stored candle of that interval opening in ``[from_us, before_us)``, or None."""

    @abstractmethod
    def read_trades(self, symbol: str, start: datetime | None = None,
                    end: datetime | None = None, limit: int | None = None) -> pa.Table:
        """Trades (``TRADE_SCHEMA``) with ``start <= timestamp < end``, oldest first."""

    @abstractmethod
    def read_pairs(self) -> pa.Table:
        """The stored universe snapshot (``PAIR_SCHEMA``)."""

    @abstractmethod
    def coverage(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Per stored (symbol, interval_minutes): ``first``, ``last``, ``rows``, ``missing``
        (buckets absent between first and last) and ``gaps`` (runs of absent buckets); plus
        ``interval_minutes = None`` rows for trades (first, last, rows)."""

    @abstractmethod
    def read_sync_status(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``data_sync_status`` rows (all columns, dicts)."""

    @abstractmethod
    def delete_before(self, kind: Literal["trades", "candles"], cutoff: datetime) -> int:
        """Delete rows older than ``cutoff`` (retention). Returns rows deleted."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections and files."""

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """Hold what the backend opens per operation (a DuckDB file) across the operations of
        a ``with`` block; a no-op where nothing is opened per operation."""
        return contextlib.nullcontext()

    def refresh_continuous_aggregates(self) -> None:  # noqa: B027
        """Rebuild derived rollups where a backend materializes them (PostgreSQL)."""

    def __enter__(self) -> MarketStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- symbols ---------------------------------------------------------------------------

    def set_resolver(self, resolver: Callable[[str], str] | None) -> None:
        """Use ``resolver`` (alias -> canonical) for symbols given to the query API."""
        self._resolver = resolver

    def canonical(self, pair: str) -> str:
        """``BTC/USD``/``XXBTZUSD``/``XBTUSD`` -> ``XBTUSD`` (offline tables if no resolver)."""
        if self._resolver is not None:
            return self._resolver(pair)
        from krakked.market.pairs import resolve_offline

        return resolve_offline(pair)

    # -- writing ---------------------------------------------------------------------------

    def upsert_candles(self, candles: Iterable[Candle] | pa.Table,
                       sync: Sequence[SyncUpdate] = (),
                       coverage: Iterable[Coverage] = ()) -> int:
        """Upsert candles (objects or an Arrow table) with the volume rule. The runs of
        consecutive candles in the batch, and any ``coverage`` the writer vouches for, are
        recorded with them (see ``Coverage``)."""
        table = candles if isinstance(candles, pa.Table) else candles_to_arrow(candles)
        table = table.cast(CANDLE_SCHEMA)
        return self.write_candles(table, sync, batch_coverage(table, coverage))

    def upsert_trades(self, trades: Iterable[HistoricalTrade] | pa.Table,
                      sync: Sequence[SyncUpdate] = (), coverage: Iterable[TradeCoverage] = (),
                      build_candles: bool = True) -> int:
        """Insert trades (objects or an Arrow table), once each, with the ranges the writer
        vouches for (``TradeCoverage``); with ``build_candles`` the 1-minute candles of the
        whole minutes those ranges span are rebuilt in the same write
        (``write_trades``)."""
        table = trades if isinstance(trades, pa.Table) else trades_to_arrow(trades)
        return self.write_trades(table.cast(TRADE_SCHEMA), sync,
                                 trade_coverage_ranges(coverage), build_candles)

    def append_bars(self, pair: str, tf: str | int, bars: Iterable[Candle]) -> int:
        """The original module's write: store ``bars`` of ``pair``/``tf`` (idempotent)."""
        symbol, minutes = self.canonical(pair), interval_minutes(tf)
        fixed = [
            b if (b.symbol == symbol and b.interval_minutes == minutes) else Candle(
                symbol, b.timestamp, minutes, b.open, b.high, b.low, b.close, b.volume,
                b.quote_volume, b.trade_count, b.vwap, b.source)
            for b in bars
        ]
        return self.upsert_candles(fixed)

    def apply_retention(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what the (opt-in) retention policy says is too old; nothing by default."""
        now = now or datetime.now(UTC)
        deleted = {"trades": 0, "candles": 0}
        if self.retention.trades_days:
            deleted["trades"] = self.delete_before(
                "trades", now - timedelta(days=self.retention.trades_days))
        if self.retention.candles_days:
            deleted["candles"] = self.delete_before(
                "candles", now - timedelta(days=self.retention.candles_days))
        return deleted

    # -- the query API ---------------------------------------------------------------------

    def read_candles(
        self,
        symbol: str,
        minutes: int,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> pa.Table:
        """``symbol``'s closed ``minutes`` candles with ``start <= timestamp < end``, ordered by
        time (newest first if asked; ``limit`` then keeps the newest), as ``CANDLE_SCHEMA``.

        Each bucket comes from a stored series whose recorded coverage spans all of it: Kraken's
        own candles of ``minutes`` where they cover it, else the coarsest finer series that does
        (``plan_sources``), aggregated exactly. A covered bucket without rows (no trades) is a
        zero-volume candle at the carried close — absent when that close is not known within
        the coverage. A bucket no series covers is absent: a derived candle is never partial.
        """
        with self.session():
            segments = plan_sources(minutes, self.read_coverage(symbol),
                                    epoch_us(start) if start else None,
                                    epoch_us(end) if end else None)
            if limit is not None and limit <= 0:
                segments = []
            if not segments:
                return CANDLE_SCHEMA.empty_table()
            if limit is None:
                table = self._read_filled(symbol, minutes, segments)
            else:
                wanted = limit
                while True:  # the segments of the newest (oldest) ``wanted`` buckets, widened
                    part, rest = _take_buckets(segments, wanted, newest_first)  # if some are
                    table = self._read_filled(symbol, minutes, part)  # absent
                    if table.num_rows >= limit or not rest:
                        break
                    wanted *= 4
        if newest_first:
            table = _reversed(table)
        return table.slice(0, limit) if limit is not None else table

    def read_stored_candles(self, symbol: str, minutes: int, start: datetime,
                            end: datetime) -> pa.Table:
        """The candles of ``minutes`` stored for ``symbol`` with ``start <= timestamp < end``,
        as they are (nothing derived or filled), oldest first."""
        a, b = epoch_us(start), epoch_us(end)
        if b <= a:
            return CANDLE_SCHEMA.empty_table()
        segment = SourceSegment(minutes, minutes, a, b, a)
        return _sorted(self.read_segments(symbol, minutes, [segment]))

    def _read_filled(self, symbol: str, minutes: int,
                     segments: Sequence[SourceSegment]) -> pa.Table:
        """The rows of ``segments``, oldest first, with covered buckets that have no rows
        filled as zero-volume candles at the carried close."""
        table = _sorted(self.read_segments(symbol, minutes, segments))
        stamps = pc.cast(table["timestamp"].cast(TS), pa.int64()).combine_chunks()
        counts = _counts(stamps, segments)
        short = [k for k, seg in enumerate(segments) if counts[k] < seg.buckets]
        if not short:
            return table
        offsets = [0]
        for n in counts:
            offsets.append(offsets[-1] + n)
        # The carried close entering a segment whose first bucket has no rows.
        asks = [k for k in short
                if not counts[k] or stamps[offsets[k]].as_py() != segments[k].start_us]
        seeds = dict(zip(asks, self.last_closes(symbol, [
            (segments[k].source_minutes, segments[k].covered_from_us, segments[k].start_us)
            for k in asks]), strict=True))
        filler: dict[str, list[Any]] = {name: [] for name in CANDLE_SCHEMA.names}
        width = minutes * 60_000_000
        for k in short:
            seg, lo, n = segments[k], offsets[k], counts[k]
            present = stamps.slice(lo, n).to_pylist()
            closes = table["close"].slice(lo, n).to_pylist()
            sources = table["source"].slice(lo, n).to_pylist()
            carry = seeds.get(k)
            j = 0
            for bucket in range(seg.start_us, seg.end_us, width):
                if j < n and present[j] == bucket:
                    carry = (closes[j], sources[j])
                    j += 1
                    continue
                if carry is None:
                    continue  # no trades here, but the price they left is not known
                close, source = carry
                for name, value in (("symbol", symbol), ("timestamp", from_epoch_us(bucket)),
                                    ("interval_minutes", minutes), ("open", close),
                                    ("high", close), ("low", close), ("close", close),
                                    ("volume", Decimal(0)), ("quote_volume", Decimal(0)),
                                    ("trade_count", 0), ("vwap", None), ("source", source)):
                    filler[name].append(value)
        if not filler["timestamp"]:
            return table
        return _sorted(pa.concat_tables([table, pa.table(filler, schema=CANDLE_SCHEMA)]))


    def get_candles(
        self,
        pair: str,
        tf: str | int,
        start: datetime | int | str | None = None,
        end: datetime | int | str | None = None,
        limit: int | None = None,
        as_: AsKind = "candles",
    ) -> Any:
        """Closed candles of ``pair``/``tf`` with ``start <= open time < end``, oldest first.

        Higher timeframes come from Kraken's own stored candles where they cover a bucket, else
        are derived exactly from the coarsest finer stored series that covers it (never a partial
        bucket: see ``read_candles``); ``limit`` keeps the oldest. ``as_``: ``candles``
        (objects), ``arrow``, ``polars`` or ``pandas`` (the last two only if installed).
        """
        symbol, minutes = self.canonical(pair), interval_minutes(tf)
        s, e = _window(start, end)
        table = self.read_candles(symbol, minutes, s, e,
                                  None if limit is None else max(0, limit), False)
        return _convert(table, as_)

    def get_latest_candles(self, pair: str, tf: str | int, count: int,
                           as_: AsKind = "candles", *,
                           start: datetime | int | str | None = None,
                           end: datetime | int | str | None = None) -> Any:
        """The newest ``count`` closed candles, oldest first; with ``start``/``end``, the newest
        ``count`` of those with ``start <= open time < end``."""
        if count < 0:
            raise UsageError(f"count must be >= 0, got {count}")
        symbol, minutes = self.canonical(pair), interval_minutes(tf)
        s, e = _window(start, end)
        table = self.read_candles(symbol, minutes, s, e, count, True)
        return _convert(_reversed(table), as_)

    def get_ohlc(self, pair: str, tf: str | int, lookback: int | None = None,
                 as_: AsKind = "candles") -> Any:
        """The original module's read: the last ``lookback`` closed candles (all if None)."""
        if lookback is None:
            return self.get_candles(pair, tf, as_=as_)
        return self.get_latest_candles(pair, tf, lookback, as_=as_)

    def get_ohlc_since(self, pair: str, tf: str | int, since: datetime | int | str,
                       as_: AsKind = "candles") -> Any:
        """Closed candles with open time >= ``since`` (a datetime, Unix seconds or ISO)."""
        s = parse_utc(since, "since")
        if s is not None and s > datetime.now(UTC):
            raise UsageError(f"since {s.isoformat()} is in the future")
        return self.get_candles(pair, tf, start=s, as_=as_)

    def get_bars(self, pair: str, tf: str | int, lookback: int | None = None,
                 since: datetime | int | str | None = None) -> list[Candle]:
        """The original module's interface: by ``lookback`` count and/or ``since``."""
        if since is not None:
            bars = self.get_ohlc_since(pair, tf, since)
            return bars[-lookback:] if lookback else bars
        return self.get_ohlc(pair, tf, lookback)

    def get_warmup_data(self, pair: str, tf: str | int, periods: int,
                        as_: AsKind = "candles") -> Any:
        """The ``periods`` most recent closed candles (indicator warm-up)."""
        return self.get_latest_candles(pair, tf, periods, as_=as_)

    def get_multi_timeframe_candles(
        self,
        pair: str,
        end_time: datetime | int | str | None = None,
        timeframes: Sequence[str | int] | None = None,
        lookback: int = 100,
    ) -> dict[int, list[Candle]]:
        """For each timeframe, the ``lookback`` closed candles opening before ``end_time``."""
        e = parse_utc(end_time, "end_time")
        symbol = self.canonical(pair)
        out: dict[int, list[Candle]] = {}
        for tf in timeframes or (1, 5, 15, 60, 240, 1440):
            minutes = interval_minutes(tf)
            table = self.read_candles(symbol, minutes, None, e, lookback, True)
            out[minutes] = arrow_to_candles(_reversed(table))
        return out

    def get_data_range(self, pair: str) -> dict[str, Any]:
        """``{'oldest', 'newest', 'total_candles'}`` of the 1-minute (else finest) candles."""
        symbol = self.canonical(pair)
        rows = [r for r in self.coverage(symbol) if r.get("interval_minutes")]
        if not rows:
            return {"oldest": None, "newest": None, "total_candles": 0}
        finest = min(rows, key=lambda r: r["interval_minutes"])
        return {"oldest": finest["first"], "newest": finest["last"],
                "total_candles": finest["rows"], "interval_minutes": finest["interval_minutes"]}

    def replay_candles(
        self,
        pair: str,
        tf: str | int,
        start: datetime | int | str | None = None,
        end: datetime | int | str | None = None,
        speed: float = 0.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[Candle]:
        """Yield candles in time order; ``speed`` > 0 paces them (1.0 = real time, 60 = a minute
        per second), 0 = as fast as possible."""
        if speed < 0:
            raise UsageError(f"speed must be >= 0, got {speed}")
        previous: Candle | None = None
        for candle in self.get_candles(pair, tf, start, end):
            if speed and previous is not None:
                sleep((candle.timestamp - previous.timestamp).total_seconds() / speed)
            previous = candle
            yield candle

    def get_symbols(self) -> list[str]:
        """Symbols with any stored candles or trades, sorted."""
        return sorted({r["symbol"] for r in self.coverage()})

    def get_sync_status(self, pair: str | None = None) -> list[dict[str, Any]]:
        """``data_sync_status`` rows, for one pair or all."""
        return self.read_sync_status(self.canonical(pair) if pair else None)

    def info(self) -> list[dict[str, Any]]:
        """Per pair/timeframe: first, last, rows, missing buckets and gap runs."""
        return self.coverage()

    def health_check(self) -> dict[str, Any]:
        """``{'ok', 'backend', 'url', 'symbols', 'latency_ms', 'error'}`` — never raises."""
        started = time.perf_counter()
        try:
            symbols = self.get_symbols()
            return {"ok": True, "backend": self.backend, "url": self.url,
                    "symbols": len(symbols),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "error": None}
        except Exception as exc:  # a health check reports, it does not raise
            return {"ok": False, "backend": self.backend, "url": self.url, "symbols": None,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "error": f"{type(exc).__name__}: {exc}"}

    def require_candles(self, pair: str, tf: str | int) -> None:
        """Raise ``NoDataError`` naming pair and timeframe if nothing can serve them."""
        if not self.get_latest_candles(pair, tf, 1, as_="arrow").num_rows:
            raise NoDataError(f"no {tf} candles stored for {self.canonical(pair)} in {self.url}")
