"""One exception tree for everything krakked raises; each error says what and where, never a secret.

::

    KrakkedError
    ├── UsageError                       a bad argument of ours: timeframe, date, flag (exit 2)
    ├── ConfigError                      bad or unreadable config (file and key named)
    ├── CredentialsError                 credentials unusable (the value is never shown)
    │   ├── NoCredentialsError           no key pair anywhere (callers detect it to run set-up)
    │   └── SecretsDecryptionError       "Wrong password or corrupted secrets file"
    ├── KrakenError                      Kraken answered an error, or could not be reached
    │   ├── AuthError                    invalid key / signature / permission / lockout
    │   │   └── PermissionDeniedError    the key lacks the permission this endpoint needs
    │   ├── InvalidNonceError            nonce not above the key's last one
    │   ├── RateLimitError               Kraken's counter, IP throttle or history token pool
    │   ├── ServiceUnavailableError      EService:*, HTTP 5xx, maintenance
    │   ├── NetworkError                 timeouts, connection failures
    │   ├── MalformedResponseError       a truncated or non-JSON body (never treated as "no data")
    │   ├── InvalidRequestError          bad arguments, unknown method, order/funding errors
    │   └── UnknownPairError             a pair name that resolves to nothing (close matches listed)
    ├── DataStaleError                   live data older than the staleness tolerance
    ├── NoDataError                      nothing stored / served for the request
    ├── ImportFormatError                a bad row in an imported file (file and line named)
    ├── MismatchError                    our candles disagree with Kraken's (krakked verify)
    ├── IngestBusyError                  an ingest run is already active (the service's 409)
    └── StoreError                       the market store failed
        ├── StoreLockedError             another process holds the DuckDB file (past the retries)
        └── StoreNotFoundError           a read named a store that does not exist (nothing created)

Every class has an ``exit_code`` the CLI uses, distinct per class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "AuthError",
    "ConfigError",
    "CredentialsError",
    "DataStaleError",
    "ImportFormatError",
    "InvalidNonceError",
    "InvalidRequestError",
    "KrakenError",
    "KrakkedError",
    "MalformedResponseError",
    "MismatchError",
    "NetworkError",
    "NoCredentialsError",
    "NoDataError",
    "PermissionDeniedError",
    "RateLimitError",
    "SecretsDecryptionError",
    "ServiceUnavailableError",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnknownPairError",
    "UsageError",
    "first_line",
]


class KrakkedError(Exception):
    """Root of every error krakked raises on purpose."""

    exit_code: int = 1


class UsageError(KrakkedError):
    """A bad argument given to krakked itself (a timeframe, a date, a flag, a value out of
    range), found before anything was asked of Kraken or the store. Exit code 2, as command-line
    conventions have it for bad usage."""

    exit_code = 2


class ConfigError(KrakkedError):
    """The configuration is invalid or unreadable; the message names the file and the key."""

    exit_code = 3


class CredentialsError(KrakkedError):
    """Credentials exist but cannot be used (malformed, locked, unreadable)."""

    exit_code = 4


class NoCredentialsError(CredentialsError):
    """No key pair was found in the environment, `.dlt/secrets.toml` or the secrets file."""

    exit_code = 5


class SecretsDecryptionError(CredentialsError):
    """The secrets file could not be decrypted: wrong master password or a damaged file."""

    exit_code = 6

    def __init__(self, message: str = "Wrong password or corrupted secrets file") -> None:
        super().__init__(message)


class KrakenError(KrakkedError):
    """Kraken reported an error or could not be reached.

    ``endpoint`` names the call (``spot:Balance``, ``futures:/api/history/v3/executions``);
    ``kraken_errors`` holds Kraken's own error strings, if any; ``status_code`` the HTTP status.
    ``retry_after`` (seconds), when known, says how long Kraken asked us to wait.
    """

    exit_code = 10

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        kraken_errors: Sequence[str] = (),
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.kraken_errors = tuple(kraken_errors)
        self.status_code = status_code
        self.retry_after = retry_after
        self.message = message
        text = f"{endpoint}: {message}" if endpoint else message
        super().__init__(text)


class AuthError(KrakenError):
    """Invalid key, invalid signature, missing permission, locked account: never retried."""

    exit_code = 11


class PermissionDeniedError(AuthError):
    """The key is valid but lacks the permission this endpoint needs."""

    exit_code = 12


class InvalidNonceError(KrakenError):
    """Kraken rejected the nonce (not above the key's last one); retried once with a fresh one."""

    exit_code = 13


class RateLimitError(KrakenError):
    """A rate limit was hit; the limiter waits and retries, so callers rarely see this."""

    exit_code = 14


class ServiceUnavailableError(KrakenError):
    """Kraken is unavailable, busy or returned a 5xx; retried with backoff."""

    exit_code = 15


class NetworkError(KrakenError):
    """Kraken could not be reached (timeout, DNS, connection refused); retried with backoff."""

    exit_code = 16


class MalformedResponseError(KrakenError):
    """The body was truncated or not the JSON Kraken sends; retried, never read as empty."""

    exit_code = 17


class InvalidRequestError(KrakenError):
    """Kraken refused the request's arguments (bad symbol, bad parameter, unknown method)."""

    exit_code = 18


class UnknownPairError(KrakenError):
    """A pair name resolved to nothing; ``close_matches`` lists the nearest known names."""

    exit_code = 19

    def __init__(
        self,
        pair: str,
        close_matches: Sequence[str] = (),
        *,
        endpoint: str | None = None,
        kraken_errors: Sequence[str] = (),
    ) -> None:
        self.pair = pair
        self.close_matches = tuple(close_matches)
        hint = f" (did you mean {', '.join(self.close_matches)}?)" if self.close_matches else ""
        super().__init__(
            f"unknown pair {pair!r}{hint}", endpoint=endpoint, kraken_errors=kraken_errors
        )


class DataStaleError(KrakkedError):
    """Live data is older than the configured staleness tolerance."""

    exit_code = 20


class NoDataError(KrakkedError):
    """Nothing is stored or served for what was asked."""

    exit_code = 21


class ImportFormatError(KrakkedError):
    """A row of an imported file is not in the expected format; names the file (a zip member
    as ``archive.zip:member``), the 1-based line and the reason: ``path:line: reason``.
    ``reason`` holds the reason alone."""

    exit_code = 22

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = f"{path}:{line}: " if path and line is not None else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class MismatchError(KrakkedError):
    """Candles built from stored trades disagree with Kraken's own (``krakked verify``)."""

    exit_code = 26


class IngestBusyError(KrakkedError):
    """An ingest run was asked for while another one is still running (the API answers 409)."""

    exit_code = 27


class StoreError(KrakkedError):
    """The market store failed (unreachable, unwritable, corrupted)."""

    exit_code = 23


class StoreLockedError(StoreError):
    """Another process holds the store's write lock; the message names the file."""

    exit_code = 24


class StoreNotFoundError(StoreError):
    """A read named a store that does not exist; reads never create one (the message names the
    file or directory)."""

    exit_code = 25


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message (its type name when it has none), with any
    ``user:password@`` of a URL in it masked: what an error of ours quotes of a driver's or a
    library's error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return _URL_PASSWORD.sub(r"\1:***@", lines[0]) if lines else type(exc).__name__
