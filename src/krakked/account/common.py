"""What the account sources and the runner share: reading Kraken's times (``kraken_time``, over
``krakked.times.parse_utc``), the ``raw_data`` column, exact decimals for the warehouse, skip
counting, the permission guard and the key pair and client of a product; and, for every dlt
pipeline krakked runs (account history and ``krakked export``), the translation of dlt's
failures into krakked's errors and the telemetry default.

Only those last two reach into dlt; everything else works on plain dicts, testable on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any

from krakked.account.progress import ProgressCallback, report_progress
from krakked.config import Paths, Settings, load_settings, resolve_paths
from krakked.credentials import KeyPair, load_key_pair
from krakked.errors import (
    ConfigError,
    KrakenError,
    KrakkedError,
    NoCredentialsError,
    PermissionDeniedError,
    StoreError,
    StoreLockedError,
    UsageError,
    first_line,
)
from krakked.kraken.futures import FuturesClient
from krakked.kraken.spot import SpotClient
from krakked.times import parse_utc

__all__ = [
    "CLIENTS",
    "DECIMAL_COLUMN",
    "PermissionGuard",
    "SkipCounter",
    "account_key_pair",
    "coalesce_timestamp",
    "column_decimal",
    "decimal_columns",
    "decimal_hints",
    "destination_error",
    "destination_errors",
    "dlt_telemetry_off_unless_chosen",
    "exception_chain",
    "futures_client",
    "get_path",
    "iso",
    "kraken_time",
    "krakked_cause",
    "make_client",
    "nonce_directory",
    "now_of",
    "numbers_to_decimal",
    "parse_since",
    "permission_guard",
    "raw_data",
    "readable_time",
    "resource_errors",
    "short_error",
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


def _unix_number(value: Any) -> Decimal | None:
    """``value`` as a Decimal when it is a Unix time given as a number (int, float, Decimal;
    not bool) or as numeric text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))  # the float as written, not its binary expansion
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        return Decimal(value.strip())
    return None


def _from_unix(value: Decimal) -> datetime | None:
    """Unix seconds, milliseconds, microseconds or nanoseconds (told apart by magnitude) as an
    exact aware UTC datetime; None for zero, negative, non-finite or out-of-range values."""
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


def readable_time(value: Any) -> datetime | None:
    """``value`` read by ``krakked.times.parse_utc`` (a datetime, ISO 8601 text, Unix seconds),
    or None where it is missing or not a time: for the times krakked keeps itself (a cursor's
    ``last_timestamp``, a run record's stamps), where an unreadable value means "not known" and
    must not stop a sync."""
    try:
        return parse_utc(value, "time")
    except (UsageError, ValueError, OverflowError, OSError):
        return None


def kraken_time(value: Any) -> datetime | None:
    """A time field of a Kraken record as aware UTC, or None if it is not a usable time; never
    raises. Kraken's Unix numbers (int, float, Decimal or numeric text: Futures sends
    milliseconds, some payload shapes seconds, Spot decimal seconds) are converted exactly,
    seconds to nanoseconds told apart by magnitude; zero, negative, non-finite and out-of-range
    ones are not usable. Anything else is read by ``readable_time`` (ISO 8601, datetimes)."""
    number = _unix_number(value)
    if number is not None:
        return _from_unix(number)
    return readable_time(value) if isinstance(value, str | datetime) else None


def coalesce_timestamp(record: Any, paths: Sequence[str]) -> datetime | None:
    """The first usable time among ``paths`` (dotted) of ``record``, as aware UTC; never raises.

    A path whose value is missing, blank or unreadable is passed over for the next one.
    """
    if isinstance(paths, str):
        paths = (paths,)
    for path in paths:
        found = kraken_time(get_path(record, path))
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


def parse_since(since: datetime | str | int | float | None, name: str = "since"
                ) -> datetime | None:
    """A ``since`` argument (``name`` is what the user called it: ``--since``, ``since``) as
    aware UTC; None or blank is None. ISO 8601 text and datetimes are read by
    ``krakked.times.parse_utc`` (no offset = UTC); a Unix time (a number, or numeric text as
    dlt's config gives it; seconds to nanoseconds, told apart by magnitude) is converted
    exactly. Anything else is a ``UsageError`` naming ``name``."""
    if since is None or (isinstance(since, str) and not since.strip()):
        return None
    number = _unix_number(since)
    found = _from_unix(number) if number is not None else readable_time(since)
    if found is None:
        raise UsageError(f"{name}: {since!r} is not an ISO 8601 time "
                         "(e.g. 2024-01-01T00:00:00Z) or a Unix time")
    return found


def now_of(now: Callable[[], datetime] | datetime | None) -> datetime:
    """The time a clock argument says (a datetime, or a callable returning one); the current
    time for None or an unreadable value."""
    value = now() if callable(now) else now
    return readable_time(value) or datetime.now(UTC)


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


_PLACES = Decimal(1).scaleb(-int(DECIMAL_COLUMN["scale"]))
_FINEST = -int(DECIMAL_COLUMN["scale"])  # the smallest exponent the column holds
_TOO_BIG = Decimal(10) ** (int(DECIMAL_COLUMN["precision"]) - int(DECIMAL_COLUMN["scale"]))


def column_decimal(value: Any) -> Decimal | None:
    """A Kraken amount as the exact ``Decimal`` a ``DECIMAL_COLUMN`` stores: every value with
    up to 18 decimal places unchanged; one with more (a double such as ``1.2345678901234567E-9``)
    rounded half-even at the 18th place, so a load never fails on it (``raw_data`` keeps what
    Kraken sent). Blank or unreadable -> None; beyond the column's 20 integer digits -> None
    with a warning (no amount Kraken sends comes near)."""
    number = to_decimal(value)
    if number is None:
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < _FINEST:
        number = number.quantize(_PLACES)
    if abs(number) >= _TOO_BIG:
        log.warning("amount %s does not fit DECIMAL(38,18); stored as null (raw_data keeps it)",
                    number)
        return None
    return number


def _is_number(value: Any) -> bool:
    return isinstance(value, Decimal | int | float) and not isinstance(value, bool)


def numbers_to_decimal(record: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of ``record`` whose JSON numbers (Decimal, int, float; not bool) are exact
    ``column_decimal`` values, except keys in ``keep``. For payloads where Kraken sends amounts
    as JSON numbers (account log, tickers, open positions): the client decodes them as
    ``Decimal``, and an integer-looking ``0`` becomes ``Decimal(0)``, so a column never flips
    between integer and decimal."""
    kept = set(keep)
    return {key: column_decimal(value) if key not in kept and _is_number(value) else value
            for key, value in record.items()}


def decimal_hints(rows: Iterable[Mapping[str, Any]], known: Iterable[str] = ()
                  ) -> dict[str, dict[str, Any]]:
    """``DECIMAL_COLUMN`` hints for every key holding a ``Decimal`` in ``rows`` and not in
    ``known``: a field Kraken adds later is stored exactly too, not in dlt's default
    DECIMAL(38,9) (which rounds at the 9th place)."""
    hinted = set(known)
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in hinted and key not in found and isinstance(value, Decimal):
                found[key] = dict(DECIMAL_COLUMN)
    return found


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
    yields nothing more while the other resources load; with ``strict`` it propagates. The
    denial is recorded as ``last_error`` in the resource's ``state`` (when given: the resource
    did not sync, which ``account state`` and the cursor-lag alert see) and reported to
    ``progress`` as the resource's end."""

    def __init__(self, resource: str, strict: bool = False,
                 state: MutableMapping[str, Any] | None = None,
                 progress: ProgressCallback | None = None) -> None:
        self.resource = resource
        self.strict = strict
        self.state = state
        self.progress = progress
        self.denied: PermissionDeniedError | None = None

    def __enter__(self) -> PermissionGuard:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not isinstance(exc, PermissionDeniedError) or self.strict:
            return False
        self.denied = exc
        text = f"permission denied ({_kraken_text(exc)})"
        log.warning("%s: %s; skipped", self.resource, text)
        if self.state is not None:
            self.state["last_error"] = {"message": text, "at": iso(datetime.now(UTC))}
        report_progress(self.progress, self.resource, 0, 0, done=True, error=text)
        return True


def permission_guard(resource: str, strict: bool = False,
                     state: MutableMapping[str, Any] | None = None,
                     progress: ProgressCallback | None = None) -> PermissionGuard:
    """A ``PermissionGuard`` for ``resource`` (see there)."""
    return PermissionGuard(resource, strict, state, progress)


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

CLIENTS: dict[str, type[FuturesClient] | type[SpotClient]] = {
    "futures": FuturesClient,
    "spot": SpotClient,
}
"""Product -> the krakked client that reads its account history."""


def account_key_pair(product: str, credentials: KeyPair | None = None,
                     paths: Paths | None = None, *, public_only: bool = False
                     ) -> KeyPair | None:
    """``credentials`` if given, else ``product``'s key pair found by
    ``krakked.credentials.load_key_pair`` (in ``paths``); ``NoCredentialsError`` lists every way
    to set one, unless ``public_only`` (every resource wanted needs no key): then None."""
    if credentials is not None:
        return credentials
    try:
        return load_key_pair(product, paths=paths)
    except NoCredentialsError:
        if public_only:
            return None
        raise


def make_client(product: str, credentials: KeyPair | None, settings: Settings
                ) -> FuturesClient | SpotClient:
    """A new ``FuturesClient`` / ``SpotClient`` with ``credentials`` (None: public calls only)."""
    return CLIENTS[product](credentials, settings=settings)


def futures_client(credentials: KeyPair | None = None, settings: Settings | None = None,
                   client: FuturesClient | None = None) -> FuturesClient:
    """``client`` if given, else a ``FuturesClient`` with ``credentials`` or the Futures key pair
    (``account_key_pair``)."""
    if client is not None:
        return client
    settings = settings or load_settings()
    return FuturesClient(account_key_pair("futures", credentials), settings=settings)


def spot_client(credentials: KeyPair | None = None, settings: Settings | None = None,
                client: SpotClient | None = None) -> SpotClient:
    """``client`` if given, else a ``SpotClient`` with ``credentials`` or the Spot key pair
    (``account_key_pair``)."""
    if client is not None:
        return client
    settings = settings or load_settings()
    return SpotClient(account_key_pair("spot", credentials), settings=settings)


def nonce_directory(nonce_dir: str | None, persist: bool = True) -> Path | None:
    """Where a REST-client auth keeps its key's nonce high-water mark: ``nonce_dir``, else
    krakked's (the one its own clients use, so the two never reuse a nonce), else none."""
    if nonce_dir:
        return Path(nonce_dir).expanduser()
    return resolve_paths().nonce_dir if persist else None


# --- dlt at the edges -------------------------------------------------------------------------

TELEMETRY_KEY = "runtime.dlthub_telemetry"
_CONNECT_ERRORS = frozenset({"OperationalError", "InterfaceError", "DestinationConnectionError",
                             "LoadClientNotConnected"})
_DRIVER_MODULES = ("psycopg2", "psycopg", "duckdb", "sqlalchemy", "pyodbc", "snowflake",
                   "google", "clickhouse")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def dlt_telemetry_off_unless_chosen() -> bool:
    """Keep dlt's anonymous usage telemetry off unless the user turned it on the dlt way
    (``RUNTIME__DLTHUB_TELEMETRY=true``, ``dlthub_telemetry = true`` under ``runtime`` in
    ``.dlt/config.toml`` or dlt's global config, ``dlt telemetry enable``): a tool holding
    people's financial records does not report on them by default. Returns whether telemetry
    stays on. Call it before a pipeline runs."""
    import dlt
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
    from dlt.common.runtime.anon_tracker import disable_anon_tracker

    runtime = Container()[PluggableRunContext].context.runtime_config
    try:
        chosen = dlt.config.get(TELEMETRY_KEY)
    except Exception as exc:  # an unreadable config is dlt's to report; keep telemetry off
        log.debug("dlt config %s unreadable: %s", TELEMETRY_KEY, exc)
        chosen = None
    if chosen is not None:
        return bool(runtime.dlthub_telemetry)
    if runtime.dlthub_telemetry:
        runtime.dlthub_telemetry = False
        disable_anon_tracker()
    return False


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc``, what dlt wrapped in it (``PipelineStepFailed.exception``) and its causes and
    contexts, each once, outermost first."""
    from dlt.pipeline.exceptions import PipelineStepFailed

    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, PipelineStepFailed):
            stack.append(current.exception)
        stack.extend([current.__cause__, current.__context__])
    return seen


def krakked_cause(exc: BaseException) -> KrakkedError | None:
    """The first krakked error in ``exc``'s chain (``exception_chain``), or None."""
    return next((e for e in exception_chain(exc) if isinstance(e, KrakkedError)), None)


def short_error(exc: BaseException) -> str:
    """``exc`` as ``"<Type>: <first line>"``, naming the krakked error inside it when there is
    one, else what dlt wrapped (``PipelineStepFailed.exception``)."""
    from dlt.pipeline.exceptions import PipelineStepFailed

    cause = krakked_cause(exc)
    target = cause if cause is not None else (
        exc.exception if isinstance(exc, PipelineStepFailed) else exc)
    text = str(target).strip().splitlines()
    return f"{type(target).__name__}: {text[0] if text else ''}".strip().rstrip(":")



def _reason(exc: BaseException) -> str:
    """The first line of ``exc`` without dlt's boilerplate around a connection failure."""
    text = first_line(exc)
    marker = "The actual reason given is: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.split(" See also http", 1)[0].strip()


def _missing_config(exc: Any, destination: str) -> str:
    fields = ", ".join(getattr(exc, "fields", None) or ["a value"])
    name = destination.strip().lower()
    if not re.fullmatch(r"[a-z0-9_]+", name):
        return f"destination {destination}: {fields} not configured ({first_line(exc)})"
    first = (getattr(exc, "fields", None) or ["credentials"])[0]
    example = " (e.g. postgresql://user:password@host:5432/database)" if (
        name == "postgres" and first == "credentials") else ""
    return (f"destination {name}: {fields} not configured; set "
            f"DESTINATION__{name.upper()}__{first.upper()}{example} or "
            f"destination.{name}.{first} in .dlt/secrets.toml")


def destination_error(exc: BaseException, destination: str) -> KrakkedError:
    """The krakked error for a dlt pipeline's failure ``exc`` with ``destination`` (its name as
    the user gave it), one line naming what was wrong: a krakked error inside it as it is; an
    unknown destination ``UsageError``; missing configuration or a missing driver
    ``ConfigError``; a locked DuckDB file ``StoreLockedError``; a database that cannot be
    reached, refuses the login or does not exist ``StoreError``, like every other failure of
    the destination; anything else ``KrakkedError``. The cause stays attached (``-v`` shows
    it); no password of a connection URL is repeated."""
    from dlt.common.configuration.exceptions import (
        ConfigFieldMissingException,
        ConfigurationException,
    )
    from dlt.common.destination.exceptions import (
        DestinationException,
        InvalidDestinationReference,
        UnknownDestinationModule,
    )
    from dlt.common.exceptions import MissingDependencyException
    from dlt.pipeline.exceptions import PipelineStepFailed

    chain = exception_chain(exc)
    for error in chain:
        if isinstance(error, KrakkedError):
            return error
    for error in chain:
        if isinstance(error, UnknownDestinationModule | InvalidDestinationReference):
            return UsageError(
                f"unknown destination {destination!r}: give a dlt destination (duckdb, "
                "postgres, bigquery, snowflake, clickhouse, motherduck …) or one named in "
                "dlt's config")
        if isinstance(error, ConfigFieldMissingException):
            return ConfigError(_missing_config(error, destination))
        if isinstance(error, MissingDependencyException):
            return ConfigError(f"destination {destination}: {first_line(error)}")
    for error in chain:
        if "could not set lock" in str(error).lower():
            return StoreLockedError(f"destination {destination} is locked by another process: "
                                    f"{_reason(error)}")
    for error in chain:
        module = type(error).__module__.split(".")[0]
        if type(error).__name__ in _CONNECT_ERRORS and module in ("dlt", *_DRIVER_MODULES):
            return StoreError(f"destination {destination}: cannot connect: {_reason(error)}")
    innermost = chain[-1]
    step = next((e.step for e in chain if isinstance(e, PipelineStepFailed)), None)
    for error in chain:
        if isinstance(error, ConfigurationException):
            return ConfigError(f"destination {destination}: {first_line(error)}")
    if step in ("sync", "load") or any(
            isinstance(e, DestinationException) or type(e).__module__.split(".")[0]
            in _DRIVER_MODULES for e in chain):
        return StoreError(f"destination {destination}: {type(innermost).__name__}: "
                          f"{first_line(innermost)}")
    where = f"dlt {step} step" if step else "dlt"
    return KrakkedError(f"{where} failed: {type(innermost).__name__}: {first_line(innermost)}")


@contextlib.contextmanager
def destination_errors(destination: str) -> Iterator[None]:
    """Within it, an exception from dlt, or from a database under it, leaves as
    ``destination_error(exc, destination)`` (raised from it); krakked's own errors and
    everything else pass unchanged."""
    try:
        yield
    except KrakkedError:
        raise
    except Exception as exc:
        if not _from_dlt(exc):
            raise
        raise destination_error(exc, destination) from exc


def _from_dlt(exc: BaseException) -> bool:
    return any(type(e).__module__.split(".")[0] in ("dlt", *_DRIVER_MODULES)
               for e in exception_chain(exc))
