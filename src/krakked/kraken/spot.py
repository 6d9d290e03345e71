"""SpotClient: Kraken Spot REST, public and private, rate-limited, signed afresh on every attempt.

Methods are named after Kraken's endpoints and return Kraken's ``result`` object unchanged except
that JSON numbers with a fraction arrive as ``Decimal`` (prices and volumes are decimal strings
already). Extra keyword arguments are passed through, so new Kraken parameters need no release.
Docs: https://docs.kraken.com/api/docs/guides/spot-rest-intro (envelope, errors) and one page per
endpoint, e.g. https://docs.kraken.com/api/docs/rest-api/get-ticker-information.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from krakked.config import Settings
from krakked.credentials import KeyPair
from krakked.errors import InvalidRequestError, MalformedResponseError, RateLimitError
from krakked.kraken.auth import encode_form, spot_signature
from krakked.kraken.client import KrakenClient, LimiterRegistry
from krakked.kraken.http import RetryPolicy, classify_spot_errors, classify_status, parse_json
from krakked.kraken.limits import PublicLimiter, SpotCounterLimiter

__all__ = ["PRIVATE_ENDPOINTS", "PUBLIC_ENDPOINTS", "SpotClient"]

PUBLIC_ENDPOINTS = ("Time", "SystemStatus", "Assets", "AssetPairs", "Ticker", "OHLC", "Trades",
                    "Depth", "Spread")
PRIVATE_ENDPOINTS = ("Balance", "BalanceEx", "TradesHistory", "Ledgers", "ClosedOrders",
                     "QueryOrders", "QueryLedgers", "QueryTrades", "TradeBalance", "OpenOrders",
                     "DepositStatus", "WithdrawStatus")

_COUNTERS: LimiterRegistry[SpotCounterLimiter] = LimiterRegistry()
"""One private call counter per API key (with its tier, costs, state directory): Kraken counts
per key."""

_PUBLIC_PACERS: LimiterRegistry[PublicLimiter] = LimiterRegistry()
"""One public pacer per Kraken host: Kraken limits public calls per IP."""


class SpotClient(KrakenClient):
    """Kraken Spot REST. Public calls need no credentials; private calls need a Spot KeyPair."""

    product: ClassVar[str] = "spot"
    key_variables: ClassVar[str] = "KRAKEN_API_KEY + KRAKEN_API_SECRET"

    def __init__(
        self,
        credentials: KeyPair | None = None,
        *,
        settings: Settings | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        limiter: SpotCounterLimiter | None = None,
        public_limiter: PublicLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        timeout: float | None = None,
        otp: str | None = None,
        persist_nonce: bool = True,
    ) -> None:
        super().__init__(credentials, settings=settings, base_url=base_url, transport=transport,
                         retry=retry, sleep=sleep, rng=rng, timeout=timeout,
                         persist_nonce=persist_nonce)
        self.otp = otp
        limits = self.settings.limits
        self.public_limiter = public_limiter or _PUBLIC_PACERS.get(
            (self.base_url,),
            lambda: PublicLimiter(limits.public_rate_per_second, limits.public_burst))
        self._limiter = limiter

    @classmethod
    def _default_url(cls, settings: Settings) -> str:
        return settings.kraken.spot_url

    @property
    def limiter(self) -> SpotCounterLimiter:
        """The private call counter of this client's key, shared by every client of the key —
        and, unless ``persist_nonce=False``, by every process of the key on this machine (its
        state lives beside the key's nonce state)."""
        if self._limiter is None:
            key = self._require_credentials("counter").api_key
            limits = self.settings.limits
            self._limiter = self._key_limiter(
                _COUNTERS, key,
                lambda state: SpotCounterLimiter(limits.tier, limits.spot_costs or None,
                                                 state=state),
                limits.tier, repr(sorted(limits.spot_costs.items())),
            )
        return self._limiter

    # -- reading Kraken's answers --------------------------------------------------------------

    def _interpret(self, endpoint: str, pair: str | None) -> Callable[[httpx.Response], Any]:
        def interpret(response: httpx.Response) -> Any:
            status_error = classify_status(response, endpoint=endpoint)
            if status_error is not None:
                raise status_error
            if response.status_code >= 400 and response.content[:1] != b"{":
                raise InvalidRequestError(
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                    endpoint=endpoint, status_code=response.status_code)
            payload = parse_json(response, endpoint=endpoint)
            if not isinstance(payload, dict):
                raise MalformedResponseError("response is not a JSON object", endpoint=endpoint)
            error = classify_spot_errors(payload.get("error") or [], endpoint=endpoint,
                                         status_code=response.status_code, pair=pair)
            if error is not None:
                raise error
            if response.status_code != 200:
                raise InvalidRequestError(f"HTTP {response.status_code}", endpoint=endpoint,
                                          status_code=response.status_code)
            if "result" not in payload:
                raise MalformedResponseError("response has no result", endpoint=endpoint)
            return payload["result"]

        return interpret

    # -- calls ---------------------------------------------------------------------------------

    def public(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``/0/public/<method>`` and return its ``result``."""
        endpoint = f"spot:{method}"
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        pair = query.get("pair")
        return self._send(
            endpoint,
            lambda client: client.build_request("GET", f"/0/public/{method}", params=query),
            self._interpret(endpoint, pair),
            before_send=lambda: self.public_limiter.acquire(method, pair),
            on_rate_limit=self._public_rate_limited,
        )

    def _public_rate_limited(self, exc: RateLimitError) -> None:
        self.public_limiter.penalize(exc.retry_after or 1.0)
        exc.retry_after = 0.0  # the pacer now does the waiting

    def private(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """POST ``/0/private/<method>`` signed with this client's key; returns ``result``."""
        creds = self._require_credentials(method)
        endpoint = f"spot:{method}"
        path = f"/0/private/{method}"
        nonces = self._nonces(creds)
        limiter = self.limiter
        extra = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        sent_at = [0.0]

        def build(client: httpx.Client) -> httpx.Request:
            form: dict[str, Any] = {"nonce": nonces.next(), **extra}
            if self.otp:
                form["otp"] = self.otp
            body = encode_form(form)
            signature = spot_signature(path, form["nonce"], body, creds.api_secret.reveal())
            return client.build_request(
                "POST", path, content=body.encode(),
                headers={"API-Key": creds.api_key, "API-Sign": signature,
                         "Content-Type": "application/x-www-form-urlencoded"},
            )

        def before() -> float:
            waited = limiter.acquire(method)
            sent_at[0] = limiter.now()
            return waited

        return self._send_signed(
            creds, endpoint, build, self._interpret(endpoint, extra.get("pair")),
            before_send=before,
            after_send=lambda: limiter.settle(sent_at[0]),
            on_rate_limit=lambda exc: limiter.penalize(),
        )

    # -- public endpoints ----------------------------------------------------------------------

    def get_server_time(self) -> dict[str, Any]:
        """``Time``: ``{"unixtime": int, "rfc1123": str}``."""
        return self.public("Time")

    def get_system_status(self) -> dict[str, Any]:
        """``SystemStatus``: ``{"status": online|maintenance|cancel_only|post_only, ...}``."""
        return self.public("SystemStatus")

    def get_assets(self, asset: str | list[str] | None = None, aclass: str | None = None,
                   **extra: Any) -> dict[str, Any]:
        """``Assets``: asset id -> ``{aclass, altname, decimals, display_decimals, status}``."""
        return self.public("Assets", {"asset": asset, "aclass": aclass, **extra})

    def get_asset_pairs(self, pair: str | list[str] | None = None, info: str | None = None,
                        **extra: Any) -> dict[str, Any]:
        """``AssetPairs``: pair id (``XXBTZUSD``) -> ``{altname, wsname, base, quote, ...}``."""
        return self.public("AssetPairs", {"pair": pair, "info": info, **extra})

    def get_ticker(self, pair: str | list[str] | None = None, **extra: Any) -> dict[str, Any]:
        """``Ticker``: pair id -> ``{a, b, c, v, p, t, l, h, o}``
        (https://docs.kraken.com/api/docs/rest-api/get-ticker-information)."""
        return self.public("Ticker", {"pair": pair, **extra})

    def get_ohlc(self, pair: str, interval: int = 1, since: int | str | None = None,
                 **extra: Any) -> dict[str, Any]:
        """``OHLC``: ``{pair_id: [[time, o, h, l, c, vwap, volume, count], ...], "last": int}``.

        At most 720 bars; the last row is the running (uncommitted) bar.
        """
        return self.public("OHLC", {"pair": pair, "interval": interval, "since": since, **extra})

    def get_trades(self, pair: str, since: int | str | None = None, count: int | None = None,
                   **extra: Any) -> dict[str, Any]:
        """``Trades``: ``{pair_id: [[price, volume, time, side, type, misc, id, ...]], "last"}``.

        ``last`` is a nanosecond cursor string: pass it back as ``since`` for the next page.
        """
        return self.public("Trades", {"pair": pair, "since": since, "count": count, **extra})

    def get_depth(self, pair: str, count: int | None = None, **extra: Any) -> dict[str, Any]:
        """``Depth``: ``{pair_id: {"asks": [[price, volume, ts]], "bids": [...]}}``."""
        return self.public("Depth", {"pair": pair, "count": count, **extra})

    def get_spread(self, pair: str, since: int | None = None, **extra: Any) -> dict[str, Any]:
        """``Spread``: ``{pair_id: [[time, bid, ask]], "last": int}`` (about 200 rows)."""
        return self.public("Spread", {"pair": pair, "since": since, **extra})

    # -- private endpoints ---------------------------------------------------------------------

    def get_balance(self, **extra: Any) -> dict[str, str]:
        """``Balance``: asset -> balance (decimal string). Needs "Funds - Query"."""
        return self.private("Balance", extra)

    def get_balance_ex(self, **extra: Any) -> dict[str, Any]:
        """``BalanceEx``: asset -> ``{balance, hold_trade, credit?, credit_used?}``."""
        return self.private("BalanceEx", extra)

    def get_trades_history(self, **params: Any) -> dict[str, Any]:
        """``TradesHistory``: ``{"trades": {txid: trade}, "count": total}``; 50 per call, newest
        first; page with ``ofs``; ``start`` exclusive, ``end`` inclusive."""
        return self.private("TradesHistory", params)

    def get_ledgers(self, **params: Any) -> dict[str, Any]:
        """``Ledgers``: ``{"ledger": {ledger_id: entry}, "count": total}``; 50 per call."""
        return self.private("Ledgers", params)

    def get_closed_orders(self, **params: Any) -> dict[str, Any]:
        """``ClosedOrders``: ``{"closed": {txid: order}, "count": total}``; 50 per call."""
        return self.private("ClosedOrders", params)

    def query_orders(self, txid: str | list[str], **params: Any) -> dict[str, Any]:
        """``QueryOrders``: txid -> order (up to 50 txids)."""
        return self.private("QueryOrders", {"txid": txid, **params})

    def query_ledgers(self, id: str | list[str], **params: Any) -> dict[str, Any]:
        """``QueryLedgers``: ledger id -> entry (up to 20 ids)."""
        return self.private("QueryLedgers", {"id": id, **params})

    def get_deposit_status(self, **params: Any) -> Any:
        """``DepositStatus``: recent deposits (list, or ``{"deposit": [...], "next_cursor"}``)."""
        return self.private("DepositStatus", params)

    def get_withdraw_status(self, **params: Any) -> Any:
        """``WithdrawStatus``: recent withdrawals (list, or a cursor-paged object)."""
        return self.private("WithdrawStatus", params)


def _param(value: Any) -> Any:
    """Kraken takes lists as comma-separated strings and booleans as ``true``/``false``."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
