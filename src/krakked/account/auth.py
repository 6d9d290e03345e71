"""Auth classes that sign Kraken requests for dlt's own ``RESTClient`` / ``rest_api``:
``KrakenFuturesAuth`` (``APIKey``, ``Nonce``, ``Authent``) and ``KrakenSpotAuth`` (``nonce`` in
the body, ``API-Key``, ``API-Sign``), on one dlt configspec base (``KrakenAuth``: the key, the
secret, the nonce source, a ``repr`` without the secret).

Disable dlt's own retry for Kraken: dlt's retrying session re-sends the *same* prepared request,
so the retry carries a used nonce (Futures answers ``nonceBelowThreshold``, Spot ``EAPI:Invalid
nonce``), and it retries on HTTP status only, never seeing Spot rate limits, which arrive with
HTTP 200. Give ``RESTClient(session=requests.Session())`` (or
``dlt.sources.helpers.requests.Client(request_max_attempts=1, raise_for_status=False).session``)
and retry by re-sending the request from scratch — or use krakked's clients, which re-sign
every attempt and wait on Kraken's rate limits.
"""

from __future__ import annotations

import json
from typing import Any, Self
from urllib.parse import urlsplit

from dlt.common.configuration.specs.base_configuration import configspec
from dlt.common.typing import TSecretStrValue
from dlt.sources.helpers.rest_client.auth import AuthConfigBase
from requests import PreparedRequest

from krakked.account.common import nonce_directory
from krakked.credentials import KeyPair
from krakked.kraken.auth import encode_form, futures_signature, nonce_source_for, spot_signature
from krakked.logs import mask_key, register_secret

__all__ = ["KrakenAuth", "KrakenFuturesAuth", "KrakenSpotAuth"]


@configspec
class KrakenAuth(AuthConfigBase):
    """What both Kraken auths share, as dlt config fields: ``api_key``, ``api_secret`` (a dlt
    secret), and where nonces come from — the key's process-wide nonce source (shared with
    krakked's own clients; ``nonce_format``), persisted under ``nonce_dir`` (default krakked's
    data directory) unless ``persist_nonce`` is off. ``repr`` and ``str`` never show the
    secret; the key shows masked."""

    api_key: str = None
    api_secret: TSecretStrValue = None
    nonce_format: str = "ms_counter"
    nonce_dir: str | None = None
    persist_nonce: bool = True

    @classmethod
    def from_key_pair(cls, pair: KeyPair, **options: Any) -> Self:
        """An auth for ``pair`` (a ``KeyPair`` of the auth's product); ``options`` set the
        other fields."""
        return cls(api_key=pair.api_key, api_secret=pair.api_secret.reveal(), **options)

    def _secret(self) -> str:
        """The secret, registered (with the key) with the log redaction filter first."""
        secret = str(self.api_secret)
        register_secret(secret)
        register_secret(self.api_key, kind="key")
        return secret

    def _next_nonce(self) -> int:
        directory = nonce_directory(self.nonce_dir, self.persist_nonce)
        return nonce_source_for(self.api_key, self.nonce_format, directory).next()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(api_key={mask_key(self.api_key or '')!r}, "
                "api_secret=REDACTED)")

    __str__ = __repr__


@configspec
class KrakenFuturesAuth(KrakenAuth):
    """Signs Kraken Futures requests: ``APIKey``, ``Nonce`` and ``Authent`` over the exact query
    string (or form body) and the path without ``/derivatives``, computed when the request is
    prepared, with a fresh nonce (see ``KrakenAuth``; turn dlt's retry off, see the module)."""

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        secret = self._secret()
        parts = urlsplit(request.url or "")
        body = request.body
        if body:
            postdata = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        else:
            postdata = parts.query
        nonce = str(self._next_nonce())
        request.headers["APIKey"] = self.api_key
        request.headers["Nonce"] = nonce
        request.headers["Authent"] = futures_signature(parts.path, postdata, nonce, secret)
        return request


@configspec
class KrakenSpotAuth(KrakenAuth):
    """Signs Kraken Spot private requests: adds a fresh ``nonce`` (and ``otp`` when set) to the
    body (form-encoded, or JSON when the request is JSON) and sets ``API-Key`` and ``API-Sign``
    over exactly the bytes sent, when the request is prepared (see ``KrakenAuth``; turn dlt's
    retry off and check the body's ``error`` yourself, see the module)."""

    otp: TSecretStrValue | None = None

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        secret = self._secret()
        nonce = self._next_nonce()
        body = request.body or b""
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            data = json.loads(text or "{}")
            data["nonce"] = nonce
            if self.otp:
                data["otp"] = str(self.otp)
            text = json.dumps(data, separators=(",", ":"))
        else:
            extra = {"nonce": nonce, "otp": str(self.otp) if self.otp else None}
            text = encode_form(extra) + (f"&{text}" if text else "")
            request.headers["Content-Type"] = "application/x-www-form-urlencoded"
        payload = text.encode("utf-8")
        parts = urlsplit(request.url or "")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request.body = payload
        request.headers["Content-Length"] = str(len(payload))
        request.headers["API-Key"] = self.api_key
        request.headers["API-Sign"] = spot_signature(path, nonce, payload, secret)
        return request
