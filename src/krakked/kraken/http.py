"""One HTTP core for Kraken: retries with backoff, error mapping to the krakked tree, redaction.

What is retried is data (the tables below), not ``if`` chains:

* network errors, timeouts, HTTP 5xx, a malformed or truncated body, ``EService:*`` — up to 3
  retries (4 attempts) waiting 2, 4, 8 s ±10 % jitter;
* rate limits — the caller's limiter is told (so it waits for Kraken's counter to decay), then
  retried within the same attempt budget;
* ``EAPI:Invalid nonce`` / ``nonceBelowThreshold`` — retried once, with a fresh nonce;
* auth and bad-request errors — never.

Every attempt is built (and so signed) afresh by the caller's ``build`` function. Error messages
name the endpoint and carry Kraken's error strings, never a key, secret, signature or body.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

import httpx
import tenacity

from krakked._version import __version__
from krakked.errors import (
    AuthError,
    InvalidNonceError,
    InvalidRequestError,
    KrakenError,
    MalformedResponseError,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnknownPairError,
)

__all__ = [
    "FUTURES_ERRORS",
    "SPOT_ERRORS",
    "USER_AGENT",
    "CallStats",
    "ClientStats",
    "HttpCore",
    "Retry",
    "RetryPolicy",
    "classify_futures_error",
    "classify_spot_errors",
    "parse_json",
]

log = logging.getLogger("krakked.kraken.http")

USER_AGENT = f"krakked/{__version__} (+https://github.com/krakked/krakked)"


class Retry(Enum):
    """How an error is retried."""

    NEVER = "never"
    BACKOFF = "backoff"  # exponential backoff with jitter
    RATE = "rate"  # let the limiter wait for Kraken's counter, then retry
    NONCE = "nonce"  # once, with a fresh nonce


# Spot error strings, matched by prefix; first match wins, so longer prefixes first. Kraken lists
# them at https://docs.kraken.com/api/docs/guides/spot-errors and
# https://support.kraken.com/articles/360001491786-api-error-messages; the rate-limit ones at
# https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits.
SPOT_ERRORS: tuple[tuple[str, type[KrakenError], Retry], ...] = (
    ("EAPI:Invalid nonce", InvalidNonceError, Retry.NONCE),
    ("EAPI:Invalid key", AuthError, Retry.NEVER),
    ("EAPI:Invalid signature", AuthError, Retry.NEVER),
    ("EAPI:Permission denied", PermissionDeniedError, Retry.NEVER),
    ("EGeneral:Permission denied", PermissionDeniedError, Retry.NEVER),
    ("EGeneral:Temporary lockout", AuthError, Retry.NEVER),
    ("EAuth:", AuthError, Retry.NEVER),
    ("ETrade:User Locked", AuthError, Retry.NEVER),
    ("ETrade:Locked", AuthError, Retry.NEVER),
    ("EAPI:Rate limit exceeded", RateLimitError, Retry.RATE),
    ("EGeneral:Too many requests", RateLimitError, Retry.RATE),
    ("EService:Throttled", RateLimitError, Retry.RATE),
    ("EOrder:Rate limit exceeded", RateLimitError, Retry.RATE),
    ("EOrder:Domain rate limit exceeded", RateLimitError, Retry.RATE),
    ("EService:Market in cancel_only mode", ServiceUnavailableError, Retry.NEVER),
    ("EService:Market in post_only mode", ServiceUnavailableError, Retry.NEVER),
    ("EService:", ServiceUnavailableError, Retry.BACKOFF),
    ("EGeneral:Internal error", ServiceUnavailableError, Retry.BACKOFF),
    ("EDatabase:Internal error", ServiceUnavailableError, Retry.BACKOFF),
    ("EQuery:Unknown asset pair", UnknownPairError, Retry.NEVER),
    ("EQuery:Invalid asset pair", UnknownPairError, Retry.NEVER),
    ("EGeneral:Invalid arguments", InvalidRequestError, Retry.NEVER),
    ("EGeneral:Unknown method", InvalidRequestError, Retry.NEVER),
    ("EQuery:", InvalidRequestError, Retry.NEVER),
    ("EOrder:", InvalidRequestError, Retry.NEVER),
    ("EFunding:", InvalidRequestError, Retry.NEVER),
    ("EBM:", InvalidRequestError, Retry.NEVER),
)

# Futures `error` values, matched exactly (case-insensitive); unknown -> bad request. Kraken lists
# them in every endpoint's error schema, e.g.
# https://docs.kraken.com/api/docs/futures-api/trading/get-accounts.
FUTURES_ERRORS: Mapping[str, tuple[type[KrakenError], Retry]] = {
    "apilimitexceeded": (RateLimitError, Retry.RATE),
    "authenticationerror": (AuthError, Retry.NEVER),
    "permissiondenied": (PermissionDeniedError, Retry.NEVER),
    "permission denied": (PermissionDeniedError, Retry.NEVER),
    "noncebelowthreshold": (InvalidNonceError, Retry.NONCE),
    "nonceduplicate": (InvalidNonceError, Retry.NONCE),
    "server error": (ServiceUnavailableError, Retry.BACKOFF),
    "unavailable": (ServiceUnavailableError, Retry.BACKOFF),
    "unknownerror": (ServiceUnavailableError, Retry.BACKOFF),
    "marketunavailable": (ServiceUnavailableError, Retry.BACKOFF),
    "accountinactive": (AuthError, Retry.NEVER),
}

_RETRY_BY_CLASS: tuple[tuple[type[KrakenError], Retry], ...] = (
    (InvalidNonceError, Retry.NONCE),
    (RateLimitError, Retry.RATE),
    (NetworkError, Retry.BACKOFF),
    (MalformedResponseError, Retry.BACKOFF),
    (ServiceUnavailableError, Retry.BACKOFF),
)


def _retry_of(exc: BaseException) -> Retry:
    kind = getattr(exc, "retry_kind", None)
    if isinstance(kind, Retry):
        return kind
    for cls, retry in _RETRY_BY_CLASS:
        if isinstance(exc, cls):
            return retry
    return Retry.NEVER


def _make(cls: type[KrakenError], message: str, retry: Retry, **kw: Any) -> KrakenError:
    exc = cls(message, **kw)
    exc.retry_kind = retry  # type: ignore[attr-defined]
    return exc


def classify_spot_errors(
    errors: list[str],
    *,
    endpoint: str,
    status_code: int | None = None,
    pair: str | None = None,
    now: float | None = None,
) -> KrakenError | None:
    """Map a Spot ``error`` array to one exception (``None`` if it holds only warnings)."""
    failures = [e for e in errors if isinstance(e, str) and e.startswith("E")]
    if not failures:
        return None
    first = failures[0]
    for prefix, cls, retry in SPOT_ERRORS:
        if not first.startswith(prefix):
            continue
        if cls is UnknownPairError:
            exc: KrakenError = UnknownPairError(
                pair or first, endpoint=endpoint, kraken_errors=failures
            )
            exc.retry_kind = retry  # type: ignore[attr-defined]
            return exc
        retry_after = _throttled_until(first, now) if prefix == "EService:Throttled" else None
        return _make(cls, ", ".join(failures), retry, endpoint=endpoint, kraken_errors=failures,
                     status_code=status_code, retry_after=retry_after)
    return _make(KrakenError, ", ".join(failures), Retry.NEVER, endpoint=endpoint,
                 kraken_errors=failures, status_code=status_code)


def _throttled_until(text: str, now: float | None) -> float | None:
    """``EService:Throttled: 1688670000`` -> seconds from now until that time (>= 0)."""
    tail = text.rsplit(":", 1)[-1].strip()
    try:
        until = float(tail)
    except ValueError:
        return None
    return max(0.0, until - (time.time() if now is None else now))


def classify_futures_error(
    error: str, *, endpoint: str, status_code: int | None = None
) -> KrakenError:
    """Map a Futures ``error`` value (or ``errors[0].message``) to one exception."""
    cls, retry = FUTURES_ERRORS.get(error.strip().lower(), (None, None))
    if cls is None:
        if "permission" in error.lower():
            cls, retry = PermissionDeniedError, Retry.NEVER
        else:
            cls, retry = InvalidRequestError, Retry.NEVER
    assert retry is not None
    return _make(cls, error, retry, endpoint=endpoint, kraken_errors=[error],
                 status_code=status_code)


def classify_status(
    response: httpx.Response, *, endpoint: str
) -> KrakenError | None:
    """Errors told by the HTTP status alone (transport level); ``None`` when the body decides."""
    status = response.status_code
    if status == 429:
        reset = response.headers.get("rate-limit-reset") or response.headers.get("retry-after")
        try:
            retry_after = float(reset) if reset is not None else None
        except ValueError:
            retry_after = None
        return _make(RateLimitError, "HTTP 429 Too Many Requests", Retry.RATE,
                     endpoint=endpoint, status_code=429, retry_after=retry_after)
    if status >= 500:
        return _make(ServiceUnavailableError, f"HTTP {status}", Retry.BACKOFF,
                     endpoint=endpoint, status_code=status)
    return None


def parse_json(response: httpx.Response, *, endpoint: str) -> Any:
    """Decode a body exactly (JSON floats become ``Decimal``); malformed -> retryable error."""
    body = response.content
    if not body:
        raise _make(MalformedResponseError, f"empty body (HTTP {response.status_code})",
                    Retry.BACKOFF, endpoint=endpoint, status_code=response.status_code)
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise _make(
            MalformedResponseError,
            f"body is not valid JSON (HTTP {response.status_code}, {len(body)} bytes)",
            Retry.BACKOFF, endpoint=endpoint, status_code=response.status_code,
        ) from None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and waits: 4 attempts in all, waits base·2^(n-1) ±jitter (2, 4, 8 s)."""

    max_attempts: int = 4
    base_wait: float = 2.0
    jitter: float = 0.10
    nonce_retries: int = 1

    def backoff(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        base = self.base_wait * 2 ** (retry_number - 1)
        return base * (1 + self.jitter * (2 * rng() - 1))


@dataclass
class CallStats:
    """Counters a run reports: requests sent, retries by kind, rate-limit waits, failures.

    ``rate_limited`` counts Kraken's rate-limit answers; ``rate_limit_waits`` counts the attempts
    the client's own limiters held back (any wait > 0) so that Kraken had no reason to answer
    so, and ``rate_limit_wait_seconds`` is the time they waited in all. ``waited_seconds`` is
    the time slept between retries.
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    nonce_retries: int = 0
    failures: int = 0
    waited_seconds: float = 0.0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    by_error: dict[str, int] = field(default_factory=dict)

    def record_limiter_wait(self, seconds: float | None) -> None:
        """Count a limiter's wait before an attempt (nothing if it did not wait)."""
        if seconds is not None and seconds > 0:
            self.rate_limit_waits += 1
            self.rate_limit_wait_seconds += seconds

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (seconds rounded to the millisecond)."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "nonce_retries": self.nonce_retries,
            "failures": self.failures,
            "waited_seconds": round(self.waited_seconds, 3),
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
            "by_error": dict(self.by_error),
        }


ClientStats = CallStats
"""The name run reports know the client's ``stats`` by."""


class HttpCore:
    """Sends requests built by a client, retrying by the rules above; one per client."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.rng = rng
        self.stats = CallStats()
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        endpoint: str,
        build: Callable[[httpx.Client], httpx.Request],
        interpret: Callable[[httpx.Response], Any],
        *,
        lock: AbstractContextManager[Any] | None = None,
        before_send: Callable[[], float | None] | None = None,
        after_send: Callable[[], None] | None = None,
        on_rate_limit: Callable[[RateLimitError], None] | None = None,
    ) -> Any:
        """Send the request ``build`` makes and return what ``interpret`` makes of the response.

        ``build`` is called for every attempt (so it signs with a fresh nonce); ``lock`` is held
        from build to response (serializing a key's nonces); ``before_send`` waits on limiters
        and returns the seconds it waited (counted in ``stats``); ``after_send`` settles them
        once the response is in; ``on_rate_limit`` tells them Kraken said stop.
        """
        nonce_failures = 0

        def should_retry(state: tenacity.RetryCallState) -> bool:
            nonlocal nonce_failures
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return False
            kind = _retry_of(exc)
            if kind is Retry.NEVER:
                return False
            if kind is Retry.NONCE:
                nonce_failures += 1
                if nonce_failures > self.retry.nonce_retries:
                    return False
            return state.attempt_number < self.retry.max_attempts

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            kind = _retry_of(exc) if exc else Retry.NEVER
            if kind is Retry.NONCE:
                seconds = 0.0
            elif kind is Retry.RATE:
                assert isinstance(exc, RateLimitError)
                self.stats.rate_limited += 1
                if on_rate_limit is not None:
                    on_rate_limit(exc)
                seconds = exc.retry_after or 0.0
            else:
                seconds = self.retry.backoff(state.attempt_number, self.rng)
            self.stats.retries += 1
            if kind is Retry.NONCE:
                self.stats.nonce_retries += 1
            self.stats.waited_seconds += seconds
            log.warning(
                "%s: %s; retry %d/%d in %.1f s",
                endpoint, _short(exc), state.attempt_number, self.retry.max_attempts - 1, seconds,
            )
            return seconds

        retrying = tenacity.Retrying(
            retry=should_retry,
            wait=wait,
            stop=tenacity.stop_never,  # should_retry decides, with the attempt budget
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, endpoint, build, interpret, lock, before_send,
                            after_send)
        except KrakenError as exc:
            self.stats.failures += 1
            key = type(exc).__name__
            self.stats.by_error[key] = self.stats.by_error.get(key, 0) + 1
            raise

    def _attempt(
        self,
        endpoint: str,
        build: Callable[[httpx.Client], httpx.Request],
        interpret: Callable[[httpx.Response], Any],
        lock: AbstractContextManager[Any] | None,
        before_send: Callable[[], float | None] | None,
        after_send: Callable[[], None] | None,
    ) -> Any:
        with lock if lock is not None else nullcontext():
            if before_send is not None:
                self.stats.record_limiter_wait(before_send())
            request = build(self._client)
            self.stats.requests += 1
            try:
                response = self._client.send(request)
            except httpx.TimeoutException:
                raise _make(NetworkError, "timed out", Retry.BACKOFF, endpoint=endpoint) from None
            except httpx.TransportError as exc:
                raise _make(NetworkError, f"cannot connect ({type(exc).__name__})",
                            Retry.BACKOFF, endpoint=endpoint) from None
            finally:
                if after_send is not None:
                    after_send()
            try:
                return interpret(response)
            finally:
                response.close()


def _short(exc: BaseException | None) -> str:
    if isinstance(exc, KrakenError):
        return exc.message
    return type(exc).__name__ if exc else "error"
