"""FuturesClient: Kraken Futures REST (``/derivatives/api/v3`` and history), signed with Authent.

``/derivatives`` answers ``{"result": "success"|"error", ...}``; the history API answers plain
JSON and signals rate limits with HTTP 429 + ``rate-limit-reset``. The history API version is
configurable (``kraken.futures_history_version``, default ``v3``; ``positions`` exists in v3 only).
Docs: https://docs.kraken.com/api/docs/guides/futures-rest (authentication) and one page per
endpoint, e.g. https://docs.kraken.com/api/docs/futures-api/trading/get-accounts and
https://docs.kraken.com/api/docs/futures-api/history/get-execution-events.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import MalformedResponseError, RateLimitError
from krakked.kraken.auth import encode_form, futures_signature
from krakked.kraken.client import KrakenClient, LimiterRegistry
from krakked.kraken.http import (
    FUTURES_ERRORS,
    RetryPolicy,
    classify_futures_error,
    classify_status,
    parse_json,
)
from krakked.kraken.limits import FuturesLimiter

__all__ = ["FuturesClient"]

_BUDGETS: LimiterRegistry[FuturesLimiter] = LimiterRegistry()
"""One pair of budgets per Futures key (and state directory): Kraken budgets per key."""


def _error_text(payload: Any) -> str | None:
    """The error of a Futures body: ``error``, else ``errors[0].message``; None on success."""
    if not isinstance(payload, dict):
        return None
    if payload.get("result") not in (None, "success") or payload.get("error"):
        if payload.get("error"):
            return str(payload["error"])
        errors = payload.get("errors") or []
        if errors and isinstance(errors[0], dict):
            return str(errors[0].get("message") or errors[0].get("code") or "unknownError")
        return "unknownError"
    errors = payload.get("errors")
    if errors and isinstance(errors, list) and isinstance(errors[0], dict):
        return str(errors[0].get("message") or "unknownError")
    return None


class FuturesClient(KrakenClient):
    """Kraken Futures REST. ``tickers`` is public; everything else needs a Futures KeyPair."""

    product: ClassVar[str] = "futures"
    key_variables: ClassVar[str] = "KRAKEN_FUTURES__API_KEY + KRAKEN_FUTURES__API_SECRET"

    def __init__(
        self,
        credentials: KeyPair | None = None,
        *,
        settings: Settings | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        limiter: FuturesLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        timeout: float | None = None,
        history_version: str | None = None,
        persist_nonce: bool = True,
    ) -> None:
        super().__init__(credentials, settings=settings, base_url=base_url, transport=transport,
                         retry=retry, sleep=sleep, rng=rng, timeout=timeout,
                         persist_nonce=persist_nonce)
        self.history_version = history_version or self.settings.kraken.futures_history_version
        # Kraken budgets per key: shared by the key's clients here and, unless
        # ``persist_nonce=False``, by its processes on this machine (beside its nonce state).
        self.limiter = limiter or self._key_limiter(
            _BUDGETS, credentials.api_key if credentials else None,
            lambda state: FuturesLimiter(state=state))

    @classmethod
    def _default_url(cls, settings: Settings) -> str:
        return settings.kraken.futures_url

    # -- reading Kraken's answers --------------------------------------------------------------

    def _interpret(self, endpoint: str) -> Callable[[httpx.Response], Any]:
        def interpret(response: httpx.Response) -> Any:
            status_error = classify_status(response, endpoint=endpoint)
            if status_error is not None:
                raise status_error
            if response.status_code in (401, 403):
                text = response.text.strip()[:80] if response.content else ""
                try:
                    body = parse_json(response, endpoint=endpoint)
                    text = _error_text(body) or text
                except MalformedResponseError:
                    pass
                default = "authenticationError" if response.status_code == 401 else (
                    "permissionDenied")
                raise classify_futures_error(text if _known(text) else default,
                                             endpoint=endpoint, status_code=response.status_code)
            if response.status_code >= 400 and not _is_json(response):
                raise classify_futures_error(
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                    endpoint=endpoint, status_code=response.status_code)
            payload = parse_json(response, endpoint=endpoint)
            error = _error_text(payload)
            if error is not None:
                raise classify_futures_error(error, endpoint=endpoint,
                                             status_code=response.status_code)
            if response.status_code >= 400:
                raise classify_futures_error(f"HTTP {response.status_code}", endpoint=endpoint,
                                             status_code=response.status_code)
            if not isinstance(payload, dict):
                raise MalformedResponseError("response is not a JSON object", endpoint=endpoint)
            return payload

        return interpret

    # -- calls ---------------------------------------------------------------------------------

    def request(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        private: bool = True,
        cost: Callable[[], float] | None = None,
    ) -> dict[str, Any]:
        """GET ``path`` (``/derivatives/api/v3/...`` or ``/api/history/...``) and return the body.

        Private calls carry ``APIKey``, ``Nonce`` and ``Authent`` computed over the exact query
        string sent; history paths draw on the history token pool, the rest on the 500/10 s budget.
        """
        endpoint = f"futures:{path}"
        query = encode_form({k: v for k, v in (params or {}).items() if v is not None})
        url = f"{path}?{query}" if query else path
        is_history = path.startswith("/api/history/")
        name = path.rstrip("/").rsplit("/", 1)[-1]

        def before() -> float:
            if is_history:
                return self.limiter.acquire_history(name, (params or {}).get("count"))
            if private:
                return self.limiter.acquire_derivatives(name)
            return 0.0

        def on_rate_limit(exc: RateLimitError) -> None:
            seconds = exc.retry_after if exc.retry_after is not None else 10.0
            if is_history:
                self.limiter.block_history(seconds, name, (params or {}).get("count"))
            else:
                self.limiter.block_derivatives(seconds)
            exc.retry_after = 0.0  # the limiter now does the waiting

        if not private:
            return self._send(
                endpoint, lambda client: client.build_request("GET", url),
                self._interpret(endpoint), before_send=before, on_rate_limit=on_rate_limit,
            )
        creds = self._require_credentials(path)
        nonces = self._nonces(creds)

        def build(client: httpx.Client) -> httpx.Request:
            nonce = str(nonces.next())
            authent = futures_signature(path, query, nonce, creds.api_secret.reveal())
            return client.build_request(
                "GET", url, headers={"APIKey": creds.api_key, "Nonce": nonce, "Authent": authent}
            )

        return self._send_signed(
            creds, endpoint, build, self._interpret(endpoint),
            before_send=before, on_rate_limit=on_rate_limit,
        )

    def _history(self, name: str, params: Mapping[str, Any], version: str | None = None
                 ) -> dict[str, Any]:
        return self.request(f"/api/history/{version or self.history_version}/{name}", params)

    # -- /derivatives/api/v3 -------------------------------------------------------------------

    def get_tickers(self) -> dict[str, Any]:
        """Public ``tickers``: ``{"result": "success", "tickers": [...]}`` (cost 0)."""
        return self.request("/derivatives/api/v3/tickers", private=False)

    def get_instruments(self) -> dict[str, Any]:
        """Public ``instruments``: contract specifications."""
        return self.request("/derivatives/api/v3/instruments", private=False)

    def get_open_positions(self) -> dict[str, Any]:
        """``openpositions``: ``{"openPositions": [{side, symbol, price, size, ...}]}`` (cost 2)."""
        return self.request("/derivatives/api/v3/openpositions")

    def get_accounts(self) -> dict[str, Any]:
        """``accounts``: ``{"accounts": {name: {...}}}`` — cash, margin and flex (cost 2)."""
        return self.request("/derivatives/api/v3/accounts")

    # -- history API ---------------------------------------------------------------------------

    def get_executions(
        self,
        *,
        since: int | None = None,
        before: int | None = None,
        sort: str | None = None,
        continuation_token: str | None = None,
        count: int | None = None,
        tradeable: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """History ``executions``: ``{"elements": [...], "continuationToken"?: str}``.

        ``since``/``before`` are Unix milliseconds; pass ``continuationToken`` back with the same
        ``sort`` until it is absent.
        """
        return self._history("executions", {
            "since": since, "before": before, "sort": sort,
            "continuation_token": continuation_token, "count": count, "tradeable": tradeable,
            **extra,
        })

    def get_account_log(
        self,
        *,
        since: int | None = None,
        before: int | None = None,
        from_: int | None = None,
        to: int | None = None,
        sort: str | None = None,
        count: int | None = None,
        info: str | None = None,
        conversion_details: bool | None = None,
        continuation_token: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """History ``account-log``: ``{"logs": [...]}``; page by ``before``/``to`` (desc) or
        ``since``/``from`` (asc). Cost depends on ``count`` (default 500 costs 3 tokens)."""
        return self._history("account-log", {
            "since": since, "before": before, "from": from_, "to": to, "sort": sort,
            "count": count, "info": info, "conversion_details": conversion_details,
            "continuation_token": continuation_token, **extra,
        })

    def get_position_history(
        self,
        *,
        since: int | None = None,
        before: int | None = None,
        sort: str | None = None,
        continuation_token: str | None = None,
        count: int | None = None,
        tradeable: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """History ``positions`` (v3 only): ``{"elements": [...], "continuationToken"?}``."""
        return self._history("positions", {
            "since": since, "before": before, "sort": sort,
            "continuation_token": continuation_token, "count": count, "tradeable": tradeable,
            **extra,
        }, version="v3")


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json") or (
        response.content[:1] in (b"{", b"[")
    )


def _known(text: str) -> bool:
    return text.strip().lower() in FUTURES_ERRORS
