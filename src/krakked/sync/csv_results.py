"""What a CSV import reports: progress while it runs (``ImportProgress``), per file
(``FileResult``), files left out by reason (``SkippedFiles``), and the whole
(``ImportResult``: per-series summary, JSON form, the first failure raised on demand)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from krakked.errors import ImportFormatError
from krakked.market.candles import timeframe_name

__all__ = ["FileResult", "ImportProgress", "ImportResult", "ProgressCallback", "SkippedFiles"]


@dataclass(frozen=True)
class ImportProgress:
    """Where an import stands: ``bytes_done`` of ``bytes_total`` (each file's bytes count once:
    half as they are read and checked, half as its rows are written), the file at hand,
    ``rows_stored`` so far."""

    bytes_done: int
    bytes_total: int
    file: str
    phase: str  # "reading" | "writing" | "done"
    rows_stored: int


ProgressCallback = Callable[[ImportProgress], None]


@dataclass
class FileResult:
    """One imported (or failed) file: its pair, kind (``trades`` | ``candles``), interval
    (candles), layout, rows read (bad ones included), rows stored (new or replaced), bad rows
    skipped with the first few ``(line, reason)``, first and last timestamps, and the error
    that stopped it (then nothing of it was stored)."""

    file: str
    symbol: str
    kind: str
    interval_minutes: int | None
    layout: str | None = None
    rows_read: int = 0
    rows_stored: int = 0
    bad_rows: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None
    error: ImportFormatError | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "symbol": self.symbol, "kind": self.kind,
            "interval_minutes": self.interval_minutes, "layout": self.layout,
            "rows_read": self.rows_read, "rows_stored": self.rows_stored,
            "bad_rows": self.bad_rows,
            "bad_lines": [{"line": line, "reason": why} for line, why in self.bad_lines],
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "error": str(self.error) if self.error else None,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SkippedFiles:
    """Files left out for one reason: how many, and the first few names."""

    reason: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(name)


@dataclass
class ImportResult:
    """What an import did: per file (``files``), the files left out by reason (``skipped``),
    and ``series()`` — per (pair, kind, interval) rows read and stored, first, last, bad rows.
    ``failed`` lists files a bad row stopped; ``raise_for_errors()`` raises the first one's
    ``ImportFormatError``."""

    files: list[FileResult] = field(default_factory=list)
    skipped: dict[str, SkippedFiles] = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, key: str, reason: str, name: str) -> None:
        self.skipped.setdefault(key, SkippedFiles(reason)).add(name)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.error is not None]

    @property
    def rows_stored(self) -> int:
        return sum(f.rows_stored for f in self.files)

    def raise_for_errors(self) -> None:
        """Raise the first failed file's ``ImportFormatError`` (saying how many more failed)."""
        failed = self.failed
        if not failed:
            return
        first = failed[0].error
        assert first is not None
        if len(failed) == 1:
            raise first
        more = f" (and {len(failed) - 1} more file{'s' if len(failed) > 2 else ''} failed)"
        raise ImportFormatError(first.reason + more, path=first.path, line=first.line)

    def series(self) -> list[dict[str, Any]]:
        """Per (pair, kind, interval): files, rows read, rows stored, first, last, bad rows,
        failed files."""
        out: dict[tuple[str, str, int], dict[str, Any]] = {}
        for f in self.files:
            key = (f.symbol, f.kind, f.interval_minutes or 0)
            row = out.setdefault(key, {
                "symbol": f.symbol, "kind": f.kind, "interval_minutes": f.interval_minutes,
                "timeframe": timeframe_name(f.interval_minutes) if f.interval_minutes
                else None, "files": 0, "rows_read": 0, "rows_stored": 0, "bad_rows": 0,
                "failed_files": 0, "first": None, "last": None})
            row["files"] += 1
            row["failed_files"] += f.error is not None
            if f.error is not None:
                continue
            row["rows_read"] += f.rows_read
            row["rows_stored"] += f.rows_stored
            row["bad_rows"] += f.bad_rows
            if f.first and (row["first"] is None or f.first < row["first"]):
                row["first"] = f.first
            if f.last and (row["last"] is None or f.last > row["last"]):
                row["last"] = f.last
        return [out[k] for k in sorted(out)]

    def to_dict(self) -> dict[str, Any]:
        series = [{**s, "first": s["first"].isoformat() if s["first"] else None,
                   "last": s["last"].isoformat() if s["last"] else None}
                  for s in self.series()]
        return {
            "ok": not self.failed,
            "rows_stored": self.rows_stored,
            "series": series,
            "files": [f.to_dict() for f in self.files],
            "failed": [str(f.error) for f in self.failed],
            "skipped": [{"reason": s.reason, "files": s.count, "examples": s.examples}
                        for s in self.skipped.values()],
            "seconds": round(self.seconds, 3),
        }
