"""The file store's trades beyond reading and writing rows: recorded trade coverage, 1-minute
candles built from a pair's trades file (the DuckDB store's SQL, run over the file), holes in
Kraken's trade-id sequence, a summary. A mixin of ``FileStore``.
"""

# SQL here is composed from our own identifiers and values quoted by ts_lit() or coerced by
# int(); nothing user-typed reaches it unquoted.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from krakked.market.candles import epoch_us, from_epoch_us
from krakked.store.arrow import CANDLE_SCHEMA, TRADE_SCHEMA, as_schema
from krakked.store.base import SyncUpdate, minutes_to_build
from krakked.store.sql import TRADE_READ_COLS, ts_lit
from krakked.store.trade_sql import (
    candles_from_trades_query,
    trade_id_holes_query,
    trades_summary_query,
)

__all__ = ["FileTrades"]


class FileTrades:
    """Trades operations of ``FileStore`` (which provides the file plumbing used here)."""

    if TYPE_CHECKING:  # provided by FileStore
        def trade_path(self, symbol: str) -> Path: ...
        def _rel(self, path: Path, schema: pa.Schema) -> str: ...
        def _arrow(self, sql: str, files: Sequence[Path]) -> pa.Table: ...
        def _read_recorded(self, path: Path) -> list[tuple[int, int]]: ...
        def _write(self, table: pa.Table, kind: Any, sync: Any, coverage: Any = None
                   ) -> int: ...
        def _dicts(self, sql: str, files: Sequence[Path]) -> list[dict[str, Any]]: ...

    def write_trades(self, table: pa.Table, sync: Sequence[SyncUpdate] = (),
                     coverage: Mapping[str, Sequence[tuple[int, int]]] | None = None,
                     build_candles: bool = False) -> int:
        """Merge trades into their files, once each (id-less rows: synthetic ids and their
        reconciliation with API rows, as the DuckDB store), their coverage into the file's
        record; then, with ``build_candles``, the 1-minute candles of the covered minutes
        touched (a second write: files are replaced one by one)."""
        coverage = coverage or {}
        written = self._write(table, "trades", sync,
                              {(s, None): r for s, r in coverage.items()})
        if build_candles:
            self.rebuild_touched(table, coverage)
        return written

    def read_trades(self, symbol: str, start: datetime | None = None,
                    end: datetime | None = None, limit: int | None = None) -> pa.Table:
        """Trades of ``symbol`` with start <= timestamp < end, oldest first (ties by id)."""
        path = self.trade_path(symbol)
        if not path.exists():
            return TRADE_SCHEMA.empty_table()
        where = ["TRUE"]
        if start is not None:
            where.append(f"timestamp >= {ts_lit(start)}")
        if end is not None:
            where.append(f"timestamp < {ts_lit(end)}")
        sql = (f"SELECT {TRADE_READ_COLS} FROM {self._rel(path, TRADE_SCHEMA)} "
               f"WHERE {' AND '.join(where)} ORDER BY timestamp, abs(id)")
        if limit is not None:
            sql += f" LIMIT {max(0, int(limit))}"
        return as_schema(self._arrow(sql, [path]), TRADE_SCHEMA)

    def read_trade_coverage(self, symbol: str) -> list[tuple[int, int]]:
        """See ``MarketStore.read_trade_coverage``: the trades file's recorded coverage."""
        path = self.trade_path(symbol)
        return self._read_recorded(path) if path.exists() else []

    def build_candles_from_trades(self, symbol: str, start: datetime | None = None,
                                  end: datetime | None = None) -> int:
        """See ``MarketStore.build_candles_from_trades`` (DuckDB SQL over the trades file)."""
        window = None
        if start is not None or end is not None:
            window = (epoch_us(start) if start else 0, epoch_us(end) if end else 2 ** 62)
        return self._rebuild(symbol, window)

    def rebuild_touched(self, table: pa.Table, coverage: Mapping[str, Sequence[tuple[int, int]]]
                        ) -> None:
        """Rebuild the candles of the covered minutes a trades write touched."""
        touched = {s: list(r) for s, r in coverage.items() if r}
        if table.num_rows:
            spans = table.group_by("symbol").aggregate([("timestamp", "min"),
                                                        ("timestamp", "max")])
            for row in spans.to_pylist():
                touched.setdefault(row["symbol"], []).append(
                    (epoch_us(row["timestamp_min"]), epoch_us(row["timestamp_max"]) + 1))
        for symbol, ranges in sorted(touched.items()):
            self._rebuild(symbol, (min(a for a, _ in ranges), max(b for _, b in ranges)))

    def _rebuild(self, symbol: str, window: tuple[int, int] | None) -> int:
        path = self.trade_path(symbol)
        if not path.exists():
            return 0
        minutes = minutes_to_build(self._read_recorded(path), window)
        parts = []
        for a, b in minutes:
            where = (f"timestamp >= {ts_lit(from_epoch_us(a))} AND "
                     f"timestamp < {ts_lit(from_epoch_us(b))}")
            parts.append(self._arrow(candles_from_trades_query(
                self._rel(path, TRADE_SCHEMA), where), [path]))
        if not minutes:
            return 0
        built = as_schema(pa.concat_tables(parts), CANDLE_SCHEMA)
        return self._write(built, "candles", (), {(symbol, 1): minutes})

    def read_trade_candles(self, symbol: str, minutes: int, start: datetime,
                           end: datetime) -> pa.Table:
        """See ``MarketStore.read_trade_candles``."""
        path = self.trade_path(symbol)
        if not path.exists():
            return CANDLE_SCHEMA.empty_table()
        where = f"timestamp >= {ts_lit(start)} AND timestamp < {ts_lit(end)}"
        return as_schema(self._arrow(candles_from_trades_query(
            self._rel(path, TRADE_SCHEMA), where, minutes) + " ORDER BY timestamp", [path]),
            CANDLE_SCHEMA)

    def trade_id_holes(self, symbol: str, start: datetime | None = None,
                       end: datetime | None = None) -> list[dict[str, Any]]:
        """See ``MarketStore.trade_id_holes``."""
        path = self.trade_path(symbol)
        if not path.exists():
            return []
        where = "TRUE"
        if start is not None:
            where += f" AND timestamp >= {ts_lit(start)}"
        if end is not None:
            where += f" AND timestamp < {ts_lit(end)}"
        return self._dicts(trade_id_holes_query(self._rel(path, TRADE_SCHEMA), where), [path])

    def trades_summary(self, symbol: str) -> dict[str, Any] | None:
        """See ``MarketStore.trades_summary``."""
        path = self.trade_path(symbol)
        if not path.exists():
            return None
        rows = self._dicts(trades_summary_query(self._rel(path, TRADE_SCHEMA), symbol), [path])
        return rows[0] if rows and rows[0]["rows"] else None
