"""KrakenClient: what the Spot and Futures clients share — settings, credentials, one HTTP core,
the key's nonce source, its one lock and its rate-limit state, stats, and closing.

A product client adds only what is its own: its endpoints, how it signs, how it reads Kraken's
answers and which limiters it waits on. Every signed call goes through ``_send_signed``, which
holds the key's one lock from signing to response; the request is built (and so signed, with a
fresh nonce) at send time, on every attempt.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx

from krakked.config import Settings, load_settings
from krakked.credentials import KeyPair
from krakked.errors import NoCredentialsError, RateLimitError
from krakked.kraken.auth import KeySendLock, NonceSource, nonce_source_for
from krakked.kraken.http import CallStats, HttpCore, RetryPolicy
from krakked.kraken.limit_state import LimiterState

__all__ = ["KrakenClient", "LimiterRegistry"]

_L = TypeVar("_L")


class LimiterRegistry(Generic[_L]):
    """The process's limiters of one kind, one per identity (a key, a host); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, ...], _L] = {}

    def get(self, ident: tuple[str, ...], make: Callable[[], _L]) -> _L:
        """The limiter of ``ident``, made by ``make`` the first time it is asked for."""
        with self._lock:
            limiter = self._limiters.get(ident)
            if limiter is None:
                limiter = self._limiters[ident] = make()
            return limiter


class KrakenClient(ABC):
    """The plumbing of a Kraken REST client; ``SpotClient`` and ``FuturesClient`` build on it.

    ``credentials`` may be None (public calls only). ``persist_nonce=False`` keeps the key's nonce
    and rate-limit state in this process; by default both live in the nonce directory, shared by
    every process of the key on this machine. ``transport``, ``sleep`` and ``rng`` are injectable
    so every path runs offline and without real waits.
    """

    product: ClassVar[str]
    """``spot`` or ``futures``: names the endpoints (``spot:Balance``) and the key pair."""

    key_variables: ClassVar[str]
    """The environment variables that configure the product's key pair."""

    def __init__(
        self,
        credentials: KeyPair | None = None,
        *,
        settings: Settings | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        timeout: float | None = None,
        persist_nonce: bool = True,
    ) -> None:
        self.settings = settings or load_settings()
        self.base_url = (base_url or self._default_url(self.settings)).rstrip("/")
        self.credentials = credentials
        self._persist_nonce = persist_nonce
        self._http = HttpCore(
            self.base_url,
            transport=transport,
            timeout=timeout or self.settings.kraken.timeout_seconds,
            retry=retry,
            sleep=sleep,
            rng=rng,
        )

    @classmethod
    @abstractmethod
    def _default_url(cls, settings: Settings) -> str:
        """The product's host when no ``base_url`` is given."""

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def stats(self) -> CallStats:
        """Requests, retries and rate-limit waits so far (for run reports)."""
        return self._http.stats

    def close(self) -> None:
        """Close the client's connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(base_url={self.base_url!r}, credentials={self.credentials!r})"

    # -- the key's state -----------------------------------------------------------------------

    @property
    def _state_dir(self) -> Path | None:
        """Where the key's nonce and rate-limit state persist; None with ``persist_nonce=False``."""
        return self.settings.paths.nonce_dir if self._persist_nonce else None

    def _require_credentials(self, what: str) -> KeyPair:
        """The key pair, or ``NoCredentialsError`` naming the private ``what`` that needs it."""
        if self.credentials is None:
            raise NoCredentialsError(
                f"{self.product}:{what} is private and no {self.product.title()} key pair is "
                f"configured (set {self.key_variables}, or run `krakked setup`)"
            )
        return self.credentials

    def _nonces(self, credentials: KeyPair) -> NonceSource:
        """The key's one nonce source in this process (persisted unless told not to)."""
        return nonce_source_for(credentials.api_key, self.settings.kraken.nonce_format,
                                self._state_dir)

    def _key_limiter(self, registry: LimiterRegistry[_L], api_key: str | None,
                     make: Callable[[LimiterState | None], _L], *config: str) -> _L:
        """The limiter of ``api_key`` in this process (Kraken limits per key), one per key and
        ``config``; with a key and a state directory its state is the key's ``LimiterState``,
        shared with the key's other processes."""
        state_dir = self._state_dir
        directory = state_dir.expanduser().absolute() if state_dir is not None and api_key else None
        ident = (hashlib.sha256((api_key or "").encode()).hexdigest(), *config,
                 str(directory or ""))

        def made() -> _L:
            state = (LimiterState.for_key(directory, api_key)
                     if directory is not None and api_key else None)
            return make(state)

        return registry.get(ident, made)

    # -- sending -------------------------------------------------------------------------------

    def _send(
        self,
        endpoint: str,
        build: Callable[[httpx.Client], httpx.Request],
        interpret: Callable[[httpx.Response], Any],
        *,
        before_send: Callable[[], float | None] | None = None,
        after_send: Callable[[], None] | None = None,
        on_rate_limit: Callable[[RateLimitError], None] | None = None,
    ) -> Any:
        """Send an unsigned request through the HTTP core (retries, error mapping, stats)."""
        return self._http.call(endpoint, build, interpret, before_send=before_send,
                               after_send=after_send, on_rate_limit=on_rate_limit)

    def _send_signed(
        self,
        credentials: KeyPair,
        endpoint: str,
        build: Callable[[httpx.Client], httpx.Request],
        interpret: Callable[[httpx.Response], Any],
        *,
        before_send: Callable[[], float | None] | None = None,
        after_send: Callable[[], None] | None = None,
        on_rate_limit: Callable[[RateLimitError], None] | None = None,
    ) -> Any:
        """Send a request that ``build`` signs afresh on every attempt, holding the key's one
        lock (in this process and, when its state persists, across the machine's processes)
        from signing to response so that its nonces reach Kraken in order."""
        state_dir = self._state_dir
        lock = KeySendLock(credentials.api_key,
                             state_dir.expanduser().absolute() if state_dir is not None else None)
        return self._http.call(endpoint, build, interpret, lock=lock,
                               before_send=before_send, after_send=after_send,
                               on_rate_limit=on_rate_limit)
