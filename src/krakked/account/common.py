"""Pieces shared by the account sources: timestamp coalescing, the ``raw_data`` column, value
normalisation for the warehouse, skip counting, the permission guard and client construction.

Nothing here talks to dlt except through plain dicts, so every function is testable on its own.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any

from krakked.config import Settings, load_settings, resolve_paths
from krakked.credentials import KeyPair, load_key_pair
from krakked.errors import ConfigError, KrakenError, PermissionDeniedError
from krakked.kraken.futures import FuturesClient
from krakked.kraken.spot import SpotClient

__all__ = [
    "DECIMAL_COLUMN",
    "PermissionGuard",
    "SkipCounter",
    "coalesce_timestamp",
    "decimal_columns",
    "futures_client",
    "get_path",
    "iso",
    "nonce_directory",
    "numbers_to_float",
    "parse_since",
    "parse_timestamp",
    "permission_guard",
    "raw_data",
    "resource_errors",
    "snake_case",
    "spot_client",
    "to_decimal",
    "to_ms",
    "to_naive_utc",
]

log = logging.getLogger("krakked.account")

DECIMAL_COLUMN: dict[str, Any] = {"data_type": "decimal", "precision": 38, "scale": 18}
"""Column hint for Kraken's decimal strings: dlt's default DECIMAL(38,9) would round crypto
amounts (10 places); 38 digits with 18 places keeps every value Kraken sends exactly."""

# Unix time in seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude:
# seconds stay below 1e11 until the year 5138, milliseconds below 1e14, microseconds below 1e17.
_SCALES: tuple[tuple[float, int], ...] = ((1e11, 1), (1e14, 1_000), (1e17, 1_000_000))
_NANOS = 1_000_000_000
_TOO_LARGE = Decimal("1e21")  # beyond year 9999 even as nanoseconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# --- timestamps -------------------------------------------------------------------------------


def get_path(record: Any, path: str) -> Any:
    """The value at dotted ``path`` in nested mappings (``"info.timestamp"``), else None."""
    value = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
        if value is None:
            return None
    return value


def _from_number(value: Decimal) -> datetime | None:
    if not value.is_finite() or value <= 0 or value >= _TOO_LARGE:
        return None
    divisor = _NANOS
    for limit, scale in _SCALES:
        if value < limit:
            divisor = scale
            break
    micros = int((value * 1_000_000 / divisor).to_integral_value())
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except (OverflowError, ValueError):
        return None


def parse_timestamp(value: Any) -> datetime | None:
    """``value`` as an aware UTC datetime, or None if it is not a usable time; never raises.

    Accepts datetimes (naive = UTC), ``date``, Unix numbers (int, float, Decimal or numeric
    strings) in seconds, milliseconds, microseconds or nanoseconds (told apart by magnitude)
    and ISO 8601 strings (``Z`` or an offset; none = UTC). Zero, negative, non-finite and
    out-of-range values are not usable.
    """
    try:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return value.replace(tzinfo=UTC)
            return value.astimezone(UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, int):
            return _from_number(Decimal(value))
        if isinstance(value, float):
            return _from_number(Decimal(repr(value))) if math.isfinite(value) else None
        if isinstance(value, Decimal):
            return _from_number(value)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            if _NUMERIC.match(text):
                return _from_number(Decimal(text))
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, ArithmeticError, InvalidOperation, OSError):
        return None
    return None


def coalesce_timestamp(record: Any, paths: Sequence[str]) -> datetime | None:
    """The first usable time among ``paths`` (dotted) of ``record``, as aware UTC; never raises.

    A path whose value is missing, blank or unreadable is passed over for the next one.
    """
    if isinstance(paths, str):
        paths = (paths,)
    for path in paths:
        found = parse_timestamp(get_path(record, path))
        if found is not None:
            return found
    return None


def to_naive_utc(dt: datetime) -> datetime:
    """``dt`` in UTC without tzinfo (naive datetimes are taken to be UTC already)."""
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def to_ms(dt: datetime) -> int:
    """Unix milliseconds of ``dt`` (naive = UTC), exactly (no float rounding)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def iso(dt: datetime) -> str:
    """``dt`` as ISO 8601 UTC with microseconds and ``+00:00`` (the form kept in dlt state)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def parse_since(since: datetime | str | None) -> datetime | None:
    """The ``since`` argument of a source as aware UTC; ``ConfigError`` if it is not a time."""
    if since is None or (isinstance(since, str) and not since.strip()):
        return None
    parsed = parse_timestamp(since)
    if parsed is None:
        raise ConfigError(
            f"since: cannot read {since!r} as a time; use ISO 8601 (2024-01-01T00:00:00Z) "
            "or Unix seconds"
        )
    return parsed


# --- values -----------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if value.is_finite():
            integral = value == value.to_integral_value() and "." not in str(value)
            return int(value) if integral else float(value)
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def raw_data(record: Any) -> str:
    """``record`` as deterministic JSON: sorted keys, fixed separators, Decimals written back
    as the JSON numbers Kraken sent, datetimes as ISO strings; the same record always gives
    the same text."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_json_default)


def to_decimal(value: Any) -> Decimal | None:
    """A Kraken decimal (string, number or Decimal) as ``Decimal``; blank or unreadable -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            result = Decimal(text)
        except InvalidOperation:
            return None
        return result if result.is_finite() else None
    return None


def numbers_to_float(record: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of ``record`` whose JSON numbers (Decimal, int, float; not bool) are floats,
    except keys in ``keep``. For payloads where Kraken sends doubles (account log, tickers,
    open positions), so a column never flips between integer and double."""
    kept = set(keep)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key not in kept and isinstance(value, Decimal | int | float) and not isinstance(
                value, bool):
            out[key] = float(value)
        else:
            out[key] = value
    return out


_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_SNAKE_FIXES = {"realized_pn_l": "realized_pnl", "pn_l": "pnl", "unrealized_pn_l": "unrealized_pnl"}


def snake_case(name: str) -> str:
    """``markPrice`` -> ``mark_price``, ``realizedPnL`` -> ``realized_pnl``."""
    text = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name)).replace("-", "_").lower()
    return _SNAKE_FIXES.get(text, text)


def decimal_columns(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """dlt column hints declaring ``names`` exact decimals (``DECIMAL_COLUMN``)."""
    return {name: dict(DECIMAL_COLUMN) for name in names}


# --- skips, permissions, errors ---------------------------------------------------------------


class SkipCounter:
    """Counts records a resource had to skip and logs one line about them at the end."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.count = 0
        self.examples: list[str] = []

    def skip(self, record: Any, reason: str = "no usable timestamp") -> None:
        """Count ``record`` as skipped (the first three are named in the log line)."""
        self.count += 1
        if len(self.examples) < 3:
            ident = None
            if isinstance(record, Mapping):
                ident = next((record[k] for k in ("uid", "booking_uid", "id", "refid")
                              if record.get(k) is not None), None)
            self.examples.append(f"{ident or '?'} ({reason})")

    def report(self) -> None:
        """Log the skips, if any, as one WARNING."""
        if self.count:
            log.warning("%s: %d record(s) skipped without a usable timestamp, e.g. %s",
                        self.resource, self.count, ", ".join(self.examples))


class PermissionGuard:
    """Context manager for a resource body: a ``PermissionDeniedError`` inside it is logged as
    ``"<resource>: permission denied (<kraken error>); skipped"`` and swallowed, so the resource
    yields nothing more while the other resources load; with ``strict`` it propagates."""

    def __init__(self, resource: str, strict: bool = False) -> None:
        self.resource = resource
        self.strict = strict
        self.denied: PermissionDeniedError | None = None

    def __enter__(self) -> PermissionGuard:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not isinstance(exc, PermissionDeniedError) or self.strict:
            return False
        self.denied = exc
        log.warning("%s: permission denied (%s); skipped", self.resource, _kraken_text(exc))
        return True


def permission_guard(resource: str, strict: bool = False) -> PermissionGuard:
    """A ``PermissionGuard`` for ``resource`` (see there)."""
    return PermissionGuard(resource, strict)


def _kraken_text(exc: KrakenError) -> str:
    return ", ".join(exc.kraken_errors) if exc.kraken_errors else exc.message


def resource_errors(state: Mapping[str, Any]) -> dict[str, str]:
    """``{resource: message}`` for every resource whose last run stopped on an error it kept
    going past (``last_error`` in its state: Spot resources keep what they loaded and record
    the error instead of failing the run). ``state`` is ``pipeline.state``."""
    out: dict[str, str] = {}
    for source in (state.get("sources") or {}).values():
        for name, res in ((source or {}).get("resources") or {}).items():
            error = (res or {}).get("last_error")
            if error:
                out[name] = str(error.get("message") if isinstance(error, Mapping) else error)
    return out


# --- clients ----------------------------------------------------------------------------------


def futures_client(credentials: KeyPair | None = None, settings: Settings | None = None,
                   client: FuturesClient | None = None) -> FuturesClient:
    """``client`` if given, else a ``FuturesClient`` with ``credentials`` or the Futures key pair
    found by ``krakked.credentials.load_key_pair`` (``NoCredentialsError`` lists every way to
    set one)."""
    if client is not None:
        return client
    settings = settings or load_settings()
    pair = credentials if credentials is not None else load_key_pair("futures")
    return FuturesClient(pair, settings=settings)


def spot_client(credentials: KeyPair | None = None, settings: Settings | None = None,
                client: SpotClient | None = None) -> SpotClient:
    """``client`` if given, else a ``SpotClient`` with ``credentials`` or the Spot key pair found
    by ``krakked.credentials.load_key_pair`` (``NoCredentialsError`` lists every way to set
    one)."""
    if client is not None:
        return client
    settings = settings or load_settings()
    pair = credentials if credentials is not None else load_key_pair("spot")
    return SpotClient(pair, settings=settings)


def nonce_directory(nonce_dir: str | None, persist: bool = True) -> Path | None:
    """Where a REST-client auth keeps its key's nonce high-water mark: ``nonce_dir``, else
    krakked's (the one its own clients use, so the two never reuse a nonce), else none."""
    if nonce_dir:
        return Path(nonce_dir).expanduser()
    return resolve_paths().nonce_dir if persist else None
