"""Where Kraken's CSV files are: files, directories (searched recursively) and zip archives
(members read as streams, never extracted), and what a file's name says.

Kraken names its files ``<ALTNAME>_<interval>.csv`` (OHLCVT candles, intervals
``OHLCVT_INTERVALS``) and ``<ALTNAME>.csv`` (time and sales). Archives may keep members under a
folder (``TimeAndSales_Combined/XBTUSD.csv``, ``Kraken_OHLCVT_Q4_2020/XBTUSD_1.csv``): members
are matched by their base name, folders ignored.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from krakked.errors import ImportFormatError, UsageError

__all__ = ["OHLCVT_INTERVALS", "CsvName", "CsvSource", "find_sources", "parse_name"]

OHLCVT_INTERVALS: tuple[int, ...] = (1, 5, 15, 30, 60, 240, 720, 1440)
"""Minutes of the intervals Kraken publishes OHLCVT files for (720 = 12h included)."""

_NAME = re.compile(r"^(?P<stem>.+?)(?:_(?P<interval>\d+))?\.csv$", re.IGNORECASE)


@dataclass(frozen=True)
class CsvName:
    """What a Kraken CSV file's base name says: the pair's name as written (``stem``) and the
    OHLCVT interval in minutes (None for a time-and-sales file)."""

    stem: str
    interval: int | None


def parse_name(basename: str) -> CsvName | None:
    """``XBTUSD_60.csv`` -> (``XBTUSD``, 60); ``XBTUSD.csv`` -> (``XBTUSD``, None); None for a
    name that is not a ``.csv`` file (or is a macOS ``._`` resource fork)."""
    if basename.startswith("._"):
        return None
    match = _NAME.match(basename)
    if match is None:
        return None
    interval = match.group("interval")
    return CsvName(match.group("stem"), int(interval) if interval is not None else None)


class _ClosingStream(io.RawIOBase):
    """A zip member's stream that also closes its archive."""

    def __init__(self, stream: BinaryIO, archive: zipfile.ZipFile) -> None:
        self._stream = stream
        self._archive = archive

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:
        try:
            self._stream.close()
            self._archive.close()
        finally:
            super().close()


@dataclass(frozen=True)
class CsvSource:
    """One CSV file to import: a file on disk (``member`` None) or a member of the zip archive
    ``path``. ``size`` is its uncompressed size in bytes."""

    path: Path
    member: str | None
    size: int

    @property
    def basename(self) -> str:
        return PurePosixPath(self.member).name if self.member is not None else self.path.name

    @property
    def display(self) -> str:
        """How messages name it: the path, or ``archive.zip:member``."""
        return f"{self.path}:{self.member}" if self.member is not None else str(self.path)

    def open(self) -> BinaryIO:
        """A binary stream of the file's bytes (a zip member is decompressed as it is read);
        ``ImportFormatError`` naming the file when it cannot be read."""
        try:
            if self.member is None:
                return self.path.open("rb")
            archive = zipfile.ZipFile(self.path)
            try:
                stream = archive.open(self.member)
            except BaseException:
                archive.close()
                raise
            return _ClosingStream(stream, archive)  # type: ignore[return-value]
        except NotImplementedError as exc:  # e.g. Deflate64, which zipfile cannot inflate
            raise ImportFormatError(
                f"cannot decompress ({exc}); extract the archive and import the directory",
                path=self.display) from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise ImportFormatError(f"cannot be read ({exc})", path=self.display) from None


def _zip_members(path: Path) -> Iterator[CsvSource]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = sorted((i for i in archive.infolist() if not i.is_dir()),
                           key=lambda i: i.filename)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: not a readable zip archive ({exc})") from None
    for info in infos:
        if parse_name(PurePosixPath(info.filename).name) is not None:
            yield CsvSource(path, info.filename, info.file_size)


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def _from_path(path: Path) -> Iterator[CsvSource]:
    if _is_zip(path):
        yield from _zip_members(path)
    elif parse_name(path.name) is not None:
        yield CsvSource(path, None, path.stat().st_size)


def find_sources(paths: Iterable[str | Path] = (), directory: str | Path | None = None
                 ) -> list[CsvSource]:
    """Every CSV file under ``paths`` and ``directory``, in the order given: a ``.csv`` file
    itself, a ``.zip`` archive's ``.csv`` members (in name order), a directory's ``.csv`` files
    and ``.zip`` archives, searched recursively (in path order). ``UsageError`` for a path that
    does not exist or is neither a CSV file, a zip archive nor a directory."""
    roots = [Path(p).expanduser() for p in paths]
    if directory is not None:
        roots.append(Path(directory).expanduser())
    out: list[CsvSource] = []
    seen: set[tuple[Path, str | None]] = set()
    for root in roots:
        if root.is_dir():
            found = (p for p in sorted(root.rglob("*")) if p.is_file())
            sources = [s for p in found for s in _from_path(p)]
        elif root.is_file():
            if not _is_zip(root) and parse_name(root.name) is None:
                raise UsageError(f"{root}: not a .csv file, a .zip archive or a directory")
            sources = list(_from_path(root))
        else:
            raise UsageError(f"{root}: no such file or directory")
        for source in sources:
            key = (source.path.resolve(), source.member)
            if key not in seen:
                seen.add(key)
                out.append(source)
    return out
