"""Is Kraken reachable, and do the configured keys work? Used by ``krakked status`` and set-up.

Checks use one attempt and a short timeout: a status report must answer in seconds, not retry
for half a minute. Results are plain dicts (JSON-ready); errors are reported, never raised, and
never contain a secret (the error tree guarantees that). A failed check carries its error's
``exit_code``; ``status_failures`` orders them so that ``status`` can exit with one code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import AuthError, KrakenError, KrakkedError
from krakked.kraken.futures import FuturesClient
from krakked.kraken.http import RetryPolicy
from krakked.kraken.spot import SpotClient

__all__ = [
    "STATUS_CHECKS",
    "check_futures",
    "check_spot",
    "key_pair_validator",
    "status_failures",
]

_ONE_ATTEMPT = RetryPolicy(max_attempts=1, nonce_retries=1)


def _outcome(call: Callable[[], Any]) -> tuple[bool, Any, KrakenError | None, str | None]:
    """Run ``call``: (ok, value, the error, its message)."""
    try:
        return True, call(), None, None
    except KrakenError as exc:
        return False, None, exc, str(exc)


def check_spot(
    settings: Settings,
    keys: KeyPair | None,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Spot: public reachability (SystemStatus) and, with keys, a private ``Balance`` call."""
    client = SpotClient(keys, settings=settings, transport=transport, retry=_ONE_ATTEMPT,
                        timeout=timeout)
    with client:
        ok, status, exc, err = _outcome(client.get_system_status)
        report: dict[str, Any] = {
            "url": client.base_url,
            "reachable": ok,
            "system_status": status.get("status") if ok and isinstance(status, dict) else None,
            "error": err,
            "exit_code": exc.exit_code if exc is not None else None,
            "credentials": None,
        }
        if keys is not None:
            report["credentials"] = _private_check(keys, client.get_balance)
    return report


def check_futures(
    settings: Settings,
    keys: KeyPair | None,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Futures: public reachability (tickers) and, with keys, a private ``accounts`` call."""
    client = FuturesClient(keys, settings=settings, transport=transport, retry=_ONE_ATTEMPT,
                           timeout=timeout)
    with client:
        ok, _, exc, err = _outcome(client.get_tickers)
        report: dict[str, Any] = {
            "url": client.base_url,
            "reachable": ok,
            "error": err,
            "exit_code": exc.exit_code if exc is not None else None,
            "credentials": None,
        }
        if keys is not None:
            report["credentials"] = _private_check(keys, client.get_accounts)
    return report


def _private_check(keys: KeyPair, call: Callable[[], Any]) -> dict[str, Any]:
    ok, _, exc, err = _outcome(call)
    return {
        "present": True,
        "source": keys.source,
        "key": keys.masked_key,
        "validated": keys.validated,
        "validated_at": keys.validated_at.isoformat() if keys.validated_at else None,
        "private_call_ok": ok,
        "auth_problem": isinstance(exc, AuthError),
        "error": err,
        "exit_code": exc.exit_code if exc is not None else None,
    }


STATUS_CHECKS: tuple[str, ...] = (
    "spot.rest", "futures.rest", "spot.credentials", "futures.credentials")
"""The checks of ``krakked status``, in the order that decides its exit code."""


def status_failures(
    spot: Mapping[str, Any],
    futures: Mapping[str, Any],
    credential_errors: Mapping[str, KrakkedError],
    *,
    futures_rest_applies: bool,
) -> list[dict[str, Any]]:
    """The failed checks of a status report, in ``STATUS_CHECKS`` order: each
    ``{"check", "exit_code", "error"}``; the first one's code is the command's exit code.

    ``spot``/``futures`` are ``check_spot``/``check_futures`` results; ``credential_errors``
    maps a product to the error that kept its keys from loading (wrong master password,
    malformed or locked credentials — never "no keys"). Spot REST always applies; Futures REST
    only when ``futures_rest_applies`` (the region supports futures, or Futures keys exist).
    A product's credentials fail when its keys could not be loaded, or its private call did
    not succeed; a product without keys has nothing to check.
    """
    parts = {"spot": spot, "futures": futures}
    failures: list[dict[str, Any]] = []
    for check in STATUS_CHECKS:
        product, kind = check.split(".")
        part = parts[product]
        if kind == "rest":
            if part["reachable"] or (product == "futures" and not futures_rest_applies):
                continue
            failures.append({"check": check, "exit_code": part["exit_code"],
                             "error": part["error"]})
        elif product in credential_errors:
            exc = credential_errors[product]
            failures.append({"check": check, "exit_code": exc.exit_code, "error": str(exc)})
        else:
            creds = part.get("credentials") or {}
            if creds.get("present") and not creds.get("private_call_ok"):
                failures.append({"check": check, "exit_code": creds["exit_code"],
                                 "error": creds["error"]})
    return failures


def key_pair_validator(
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 10.0,
) -> Callable[[KeyPair], None]:
    """A validator for ``credentials.setup_credentials``: Spot ``Balance`` or Futures ``accounts``.

    Raises ``AuthError`` (incl. permission) for key problems and other ``KrakenError`` classes
    for network or service problems, so the set-up flow can tell them apart.
    """

    def validate(keys: KeyPair) -> None:
        if keys.product == "spot":
            with SpotClient(keys, settings=settings, transport=transport,
                            retry=RetryPolicy(max_attempts=2), timeout=timeout) as client:
                client.get_balance()
        else:
            with FuturesClient(keys, settings=settings, transport=transport,
                               retry=RetryPolicy(max_attempts=2), timeout=timeout) as client:
                client.get_accounts()

    return validate

