"""Nonces and request signatures for Kraken: Spot ``API-Sign`` and Futures ``Authent``.

The signers are pure functions of their inputs and sign exactly the bytes they are given, so a
client encodes its parameters once (``encode_form``) and sends the same string it signed. The nonce
source is the one piece of process-wide state: one strictly increasing generator per API key,
optionally persisted so restarts and other processes on the same machine never go backwards. The
key's state files (its nonce high-water mark here, its rate-limit state in ``limits``) are named by
a hash of the key and guarded by one file lock (``key_state_lock``).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from krakked.errors import ConfigError

__all__ = [
    "NONCE_SCALES",
    "KeySendLock",
    "NonceSource",
    "decode_secret",
    "encode_form",
    "futures_signature",
    "key_lock",
    "key_state_lock",
    "key_state_lock_file",
    "limits_state_file",
    "nonce_source_for",
    "nonce_state_file",
    "spot_signature",
]

# Each scale maps ``time.time_ns()`` to "now" in that scale. Ordered by magnitude: a key's nonce
# can never go back to a smaller scale (Kraken rejects every nonce below the key's last one,
# forever), so a key may move up this list but never down it.
#   ms          ≈ 1.7e12   milliseconds
#   us          ≈ 1.7e15   microseconds
#   ms_counter  ≈ 1.7e17   milliseconds followed by a 5-digit counter (the default)
#   ns          ≈ 1.7e18   nanoseconds (still far below the unsigned 64-bit limit ≈ 1.8e19)
NONCE_SCALES: dict[str, Callable[[int], int]] = {
    "ms": lambda ns: ns // 1_000_000,
    "us": lambda ns: ns // 1_000,
    "ms_counter": lambda ns: (ns // 1_000_000) * 100_000,
    "ns": lambda ns: ns,
}
_SCALE_RANK = {name: rank for rank, name in enumerate(("ms", "us", "ms_counter", "ns"))}


def _check_scale(scale: str) -> None:
    if scale not in NONCE_SCALES:
        raise ConfigError(
            f"unknown nonce format {scale!r}; expected one of {', '.join(NONCE_SCALES)}"
        )


class NonceSource:
    """A strictly increasing nonce generator for one API key; safe to share between threads.

    ``next()`` returns ``max(now, last + 1)`` in the chosen scale. With ``ms_counter`` that is the
    millisecond clock followed by a 5-digit counter: calls within one millisecond count up, and a
    counter that would pass 99,999 spills into the next millisecond (the clock then catches up).
    A clock that steps backwards never makes a nonce go down.

    With ``state_file``, the high-water mark survives restarts and is shared with every other
    process on this machine using the same file: each ``next()`` re-reads it and writes the new
    value atomically under an exclusive ``flock``, so no two processes issue the same nonce. The
    file is not fsynced: it survives a crash of the process, not necessarily a power loss.
    """

    def __init__(
        self,
        scale: str = "ms_counter",
        *,
        state_file: Path | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        _check_scale(scale)
        self.scale = scale
        self.state_file = state_file
        self._scaled = NONCE_SCALES[scale]
        self._clock_ns = clock_ns
        self._last = 0
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The last nonce this source issued (0 before the first)."""
        return self._last

    def next(self) -> int:
        """Return a nonce above every nonce issued before by this source (and its state file)."""
        with self._lock:
            if self.state_file is None:
                self._last = max(self._scaled(self._clock_ns()), self._last + 1)
                return self._last
            return self._next_persisted(self.state_file)

    # --- persistence -------------------------------------------------------------------------

    def _next_persisted(self, path: Path) -> int:
        with key_state_lock(key_state_lock_file(path)):
            stored = self._read_last(path)
            value = max(self._scaled(self._clock_ns()), self._last + 1, stored + 1)
            self._write(path, value)
            self._last = value
            return value

    def _read_last(self, path: Path) -> int:
        """The last nonce recorded in ``path`` (0 if absent); refuses a larger recorded scale."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read nonce state ({exc.strerror})") from None
        try:
            data = json.loads(raw)
            scale, last = data["scale"], data["last"]
            if not isinstance(last, int) or isinstance(last, bool) or scale not in _SCALE_RANK:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f'{path}: nonce state is not {{"scale": <format>, "last": <int>}}; '
                "fix or remove it (removing it risks 'EAPI:Invalid nonce' until the clock passes "
                "the last nonce used)"
            ) from None
        if _SCALE_RANK[scale] > _SCALE_RANK[self.scale]:
            raise ConfigError(
                f"{path}: this API key already used nonce format {scale!r}, whose values are "
                f"larger than {self.scale!r}'s; Kraken would reject every {self.scale!r} nonce "
                f"forever. Set kraken.nonce_format = {scale!r} (or use a new API key)."
            )
        return last

    def _write(self, path: Path, value: int) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"scale": self.scale, "last": value}, fh)
        os.replace(tmp, path)


def _key_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def nonce_state_file(nonce_dir: Path, api_key: str) -> Path:
    """The nonce state file for ``api_key`` in ``nonce_dir``, named by a hash (never the key)."""
    return nonce_dir / f"{_key_id(api_key)[:16]}.json"


def limits_state_file(nonce_dir: Path, api_key: str) -> Path:
    """The rate-limit state file for ``api_key``, beside its nonce state and named by the same
    hash (never the key); it is guarded by the same lock (``key_state_lock_file``)."""
    return nonce_dir / f"{_key_id(api_key)[:16]}.limits.json"


def key_state_lock_file(nonce_file: Path) -> Path:
    """The lock file guarding every state file of the key whose nonce state is ``nonce_file``."""
    return nonce_file.with_name(nonce_file.name + ".lock")


@contextmanager
def key_state_lock(lock_file: Path) -> Iterator[None]:
    """Hold the exclusive ``flock`` on ``lock_file`` (created private, with its directory).

    Every process on this machine, and every thread of this one, waits here for the others, so a
    read-modify-write of a key's state inside the block is atomic. Never nest two of them for one
    key: ``flock`` locks of two descriptors conflict even within one process.
    """
    lock_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


_registry_lock = threading.Lock()
_sources: dict[tuple[str, str, str], NonceSource] = {}
_key_locks: dict[str, threading.Lock] = {}


def nonce_source_for(api_key: str, scale: str, nonce_dir: Path | None) -> NonceSource:
    """The process-wide ``NonceSource`` for this key, scale and state directory (one per key).

    Every client built with the same key shares it, so their nonces never collide. With
    ``nonce_dir`` the high-water mark persists in ``nonce_state_file(nonce_dir, api_key)``.
    """
    _check_scale(scale)
    directory = nonce_dir.expanduser().absolute() if nonce_dir is not None else None
    registry_key = (_key_id(api_key), scale, str(directory) if directory else "")
    with _registry_lock:
        source = _sources.get(registry_key)
        if source is None:
            state = nonce_state_file(directory, api_key) if directory else None
            source = _sources[registry_key] = NonceSource(scale, state_file=state)
        return source


def key_lock(api_key: str) -> threading.Lock:
    """The one lock for ``api_key`` in this process; hold it from signing to response."""
    with _registry_lock:
        return _key_locks.setdefault(_key_id(api_key), threading.Lock())


class KeySendLock:
    """``api_key``'s lock from signing to response, reusable for every attempt of a call: this
    process's ``key_lock`` and, with a state directory, an exclusive ``flock`` that every process
    of this machine using the key takes too — so the key's nonces reach Kraken in the order they
    were issued, whichever process sends them. (Its own file, ``<hash>.send.lock``: the nonce and
    rate-limit state lock is taken inside it, never the other way round.)"""

    def __init__(self, api_key: str, nonce_dir: Path | None) -> None:
        self._thread_lock = key_lock(api_key)
        self._file = (nonce_state_file(nonce_dir, api_key).with_suffix(".send.lock")
                      if nonce_dir is not None else None)
        self._held: list[AbstractContextManager[None]] = []

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._file is not None:
            try:
                held = key_state_lock(self._file)
                held.__enter__()
            except BaseException:
                self._thread_lock.release()
                raise
            self._held.append(held)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._held:
                self._held.pop().__exit__(None, None, None)
        finally:
            self._thread_lock.release()


# --- signing ---------------------------------------------------------------------------------


def decode_secret(secret_b64: str) -> bytes:
    """Decode a base64 API secret, tolerating missing ``=`` padding and surrounding whitespace.

    Raises ``ValueError`` (whose message never contains the secret) when it is empty or not base64.
    """
    text = secret_b64.strip()
    if not text:
        raise ValueError("API secret is empty")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"API secret is not valid base64 ({len(secret_b64)} characters); "
            "copy it again from Kraken's API key page"
        ) from None


def spot_signature(url_path: str, nonce: int | str, postdata: bytes | str, secret_b64: str) -> str:
    """Spot ``API-Sign``: base64(HMAC-SHA512(secret, path + SHA256(nonce + postdata))).

    ``url_path`` starts at ``/0/private/``; ``postdata`` must be exactly the body that is sent.
    """
    body = postdata.encode("utf-8") if isinstance(postdata, str) else postdata
    inner = hashlib.sha256(str(nonce).encode("utf-8") + body).digest()
    mac = hmac.new(decode_secret(secret_b64), url_path.encode("utf-8") + inner, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode("ascii")


def futures_signature(endpoint_path: str, postdata: str, nonce: str, secret_b64: str) -> str:
    """Futures ``Authent``: base64(HMAC-SHA512(secret, SHA256(postdata + nonce + path))).

    A leading ``/derivatives`` is removed from ``endpoint_path`` (history paths are signed in
    full); ``nonce`` is ``""`` when no ``Nonce`` header is sent; ``postdata`` is the query string
    (GET) or form body (POST) exactly as sent.
    """
    path = endpoint_path
    if path == "/derivatives" or path.startswith("/derivatives/"):
        path = path[len("/derivatives") :]
    digest = hashlib.sha256((postdata + nonce + path).encode("utf-8")).digest()
    mac = hmac.new(decode_secret(secret_b64), digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode("ascii")


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_form_value(v) for v in value)
    return str(value)


def encode_form(params: Mapping[str, Any]) -> str:
    """URL-encode ``params`` in the caller's order: the one string to both sign and send.

    ``None`` values are dropped, booleans become ``true``/``false``, lists and tuples are joined
    with commas (Kraken's list syntax), everything else goes through ``str()``.
    """
    return urlencode([(k, _form_value(v)) for k, v in params.items() if v is not None])
