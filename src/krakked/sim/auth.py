"""Kraken's side of ``krakked.kraken.auth``: the checks a private call passes before it is served
(the API key, its signature, the nonce order per key, and the Spot call counter it is charged).

The simulator runs every private call through them, and so does the test suite's fake Kraken,
so the two cannot disagree on what Kraken accepts. What Kraken documents:
https://docs.kraken.com/api/docs/guides/spot-rest-auth (Spot ``API-Sign`` and ``nonce``),
https://docs.kraken.com/api/docs/guides/futures-rest (Futures ``Authent`` and ``Nonce``) and
https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits (the Spot call counter).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from krakked.kraken.auth import futures_signature, spot_signature
from krakked.sim.config import AccountSpec
from krakked.sim.limits import SpotCounter
from krakked.sim.protocol import FuturesError, SimRequest, SpotError

__all__ = ["Accounts", "PrivateCallChecks"]

Accounts = Callable[[str, str], AccountSpec | None]
"""(API key, product ``"spot"``/``"futures"``) -> that account, or None for an unknown key."""


class PrivateCallChecks:
    """Kraken's admission of private calls: ``spot`` and ``futures`` either return the caller's
    account or raise the error Kraken answers with. Thread-safe.

    ``accounts`` is asked on every call (so a caller may change its keys at any time);
    ``counter`` (None = no counter) is charged ``spot_costs[method]`` (default 1) per Spot call.
    """

    def __init__(self, accounts: Accounts, *, counter: SpotCounter | None = None,
                 spot_costs: Mapping[str, int] | None = None) -> None:
        self.accounts = accounts
        self.counter = counter
        self.spot_costs: Mapping[str, int] = {} if spot_costs is None else spot_costs
        self._nonces: dict[str, int] = {}
        self._lock = threading.Lock()

    def fresh_nonce(self, key: str, nonce: int) -> bool:
        """True, and remembered, if ``nonce`` is above every nonce ``key`` has sent."""
        with self._lock:
            if nonce <= self._nonces.get(key, 0):
                return False
            self._nonces[key] = nonce
            return True

    def spot(self, req: SimRequest, method: str) -> tuple[AccountSpec, dict[str, str]]:
        """The account and the parameters of a Spot private call to ``method``.

        Raises ``SpotError`` with Kraken's string: ``EAPI:Invalid key``, ``EAPI:Invalid
        signature``, ``EAPI:Invalid nonce`` (missing, not above the last one), ``EGeneral:Invalid
        arguments`` (a JSON body that is not an object), ``EAPI:Rate limit exceeded``.
        """
        key = req.headers.get("api-key", "")
        spec = self.accounts(key, "spot")
        if spec is None:
            raise SpotError("EAPI:Invalid key")
        body = req.body.decode(errors="replace")
        if req.headers.get("content-type", "").startswith("application/json"):
            try:
                params = {k: str(v) for k, v in json.loads(body or "{}").items()}
            except (ValueError, AttributeError):
                raise SpotError("EGeneral:Invalid arguments") from None
        else:
            params = dict(parse_qsl(body, keep_blank_values=True))
        nonce = params.get("nonce", "")
        if not nonce.isdigit():
            raise SpotError("EAPI:Invalid nonce")
        expected = spot_signature(req.path, nonce, req.body, spec.api_secret)
        if req.headers.get("api-sign", "") != expected:
            raise SpotError("EAPI:Invalid signature")
        if not self.fresh_nonce(key, int(nonce)):
            raise SpotError("EAPI:Invalid nonce")
        if self.counter is not None and not self.counter.charge(
            key, self.spot_costs.get(method, 1)
        ):
            raise SpotError("EAPI:Rate limit exceeded")
        return spec, params

    def futures(self, req: SimRequest, signed_path: str) -> AccountSpec:
        """The account of a Futures private call whose ``Authent`` signs ``signed_path``.

        Raises ``FuturesError("authenticationError")`` for an unknown key or a wrong Authent,
        ``FuturesError("nonceBelowThreshold")`` for a ``Nonce`` (when sent) that is not above the
        key's last one.
        """
        key = req.headers.get("apikey", "")
        spec = self.accounts(key, "futures")
        nonce = req.headers.get("nonce", "")
        if spec is None or req.headers.get("authent", "") != futures_signature(
            signed_path, req.raw_query, nonce, spec.api_secret
        ):
            raise FuturesError("authenticationError")
        if nonce and (not nonce.isdigit() or not self.fresh_nonce(key, int(nonce))):
            raise FuturesError("nonceBelowThreshold")
        return spec
