"""The encrypted secrets file ``<config_dir>/secrets.enc``: scrypt-derived key from the master
password, AES-256-GCM, written atomically, mode 0600 in a 0700 directory.

Layout (version 1)::

    b"KRKD" | version (1 byte) | log2(n), r, p (1 byte each) | salt (16) | nonce (12) | ciphertext

The header is the AES-GCM associated data, so altering any byte of the file fails decryption. The
plaintext is JSON: ``{product: {api_key, api_secret, validated, validated_at}}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets as _random
import struct
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from krakked.credentials.types import PRODUCTS, KeyPair, check_product
from krakked.errors import (
    CredentialsError,
    NoCredentialsError,
    SecretsDecryptionError,
    UsageError,
)
from krakked.logs import register_secret

__all__ = ["DEFAULT_SCRYPT_N", "SECRETS_SOURCE", "check_password", "read_secrets",
           "save_secrets"]

log = logging.getLogger("krakked.credentials")

SECRETS_SOURCE = "secrets.enc"
"""The ``source`` of a key pair read from the secrets file."""

_MAGIC = b"KRKD"
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBBBB16s12s")  # magic, version, log2 n, r, p, salt, nonce
_TAG_LEN = 16
DEFAULT_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_MIN_LOG2_N, _MAX_LOG2_N = 10, 20
_MAX_SCRYPT_MEMORY = 2**30  # bytes; a tampered header must not make us allocate more


def check_password(password: object) -> None:
    """Raise ``CredentialsError`` unless ``password`` is a non-empty string."""
    if not isinstance(password, str) or not password:
        raise CredentialsError("the master password must not be empty")


def _derive_key(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p)
    return kdf.derive(unicodedata.normalize("NFC", password).encode("utf-8"))


def _scrypt_params_ok(log2_n: int, r: int, p: int) -> bool:
    return (
        _MIN_LOG2_N <= log2_n <= _MAX_LOG2_N
        and 1 <= r <= 32
        and 1 <= p <= 16
        and 128 * (2**log2_n) * r * p <= _MAX_SCRYPT_MEMORY
    )


def _encrypt(plaintext: bytes, password: str, scrypt_n: int) -> bytes:
    log2_n = scrypt_n.bit_length() - 1
    if scrypt_n < 1 or 2**log2_n != scrypt_n or not _scrypt_params_ok(log2_n, _SCRYPT_R, _SCRYPT_P):
        raise UsageError(
            f"scrypt_n must be a power of two between 2**{_MIN_LOG2_N} and 2**{_MAX_LOG2_N}"
        )
    salt = _random.token_bytes(16)
    nonce = _random.token_bytes(12)
    header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, log2_n, _SCRYPT_R, _SCRYPT_P, salt, nonce)
    key = _derive_key(password, salt, log2_n, _SCRYPT_R, _SCRYPT_P)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def _decrypt(blob: bytes, password: str) -> bytes:
    if len(blob) < _HEADER.size + _TAG_LEN:
        raise SecretsDecryptionError()
    header = blob[: _HEADER.size]
    magic, version, log2_n, r, p, salt, nonce = _HEADER.unpack(header)
    if magic != _MAGIC or version != _FORMAT_VERSION or not _scrypt_params_ok(log2_n, r, p):
        raise SecretsDecryptionError()
    try:
        key = _derive_key(password, salt, log2_n, r, p)
        return AESGCM(key).decrypt(nonce, blob[_HEADER.size :], header)
    except (InvalidTag, ValueError, MemoryError):
        raise SecretsDecryptionError() from None


def _entry_from_json(product: str, data: object) -> KeyPair:
    if not isinstance(data, Mapping):
        raise SecretsDecryptionError()
    key, secret = data.get("api_key"), data.get("api_secret")
    validated, stamp = data.get("validated", False), data.get("validated_at")
    if not (isinstance(key, str) and isinstance(secret, str) and isinstance(validated, bool)):
        raise SecretsDecryptionError()
    if stamp is not None and not isinstance(stamp, str):
        raise SecretsDecryptionError()
    try:
        validated_at = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        raise SecretsDecryptionError() from None
    return KeyPair.create(
        product, key, secret, SECRETS_SOURCE, validated=validated, validated_at=validated_at
    )


def read_secrets(path: Path, password: str) -> dict[str, KeyPair]:
    """Decrypt the secrets file into ``{product: KeyPair}``.

    Raises ``SecretsDecryptionError`` ("Wrong password or corrupted secrets file") for a wrong
    password or any damage; never returns partial or garbage credentials. A missing file raises
    ``NoCredentialsError``.
    """
    check_password(password)
    register_secret(password)
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise NoCredentialsError(f"secrets file {path} does not exist") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read secrets file {path}: {exc.strerror}") from None
    plaintext = _decrypt(blob, password)
    try:
        data = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SecretsDecryptionError() from None
    if not isinstance(data, dict):
        raise SecretsDecryptionError()
    entries: dict[str, KeyPair] = {}
    for product, entry in data.items():
        if product not in PRODUCTS:
            log.debug("secrets file %s: unknown product %r skipped", path, product)
            continue
        entries[product] = _entry_from_json(product, entry)
    return entries


def save_secrets(
    path: Path,
    entries: Mapping[str, KeyPair],
    password: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> None:
    """Encrypt exactly ``entries`` into ``path``, atomically, mode 0600 in a 0700 directory.

    Callers merge with what the file already holds (see ``setup_credentials``).
    """
    check_password(password)
    register_secret(password)
    payload: dict[str, dict[str, Any]] = {}
    for product, pair in entries.items():
        check_product(product)
        if pair.product != product:
            raise UsageError(f"entry {product!r} holds a {pair.product} key pair")
        payload[product] = {
            "api_key": pair.api_key,
            "api_secret": pair.api_secret.reveal(),
            "validated": pair.validated,
            "validated_at": pair.validated_at.isoformat() if pair.validated_at else None,
        }
    blob = _encrypt(json.dumps(payload).encode("utf-8"), password, scrypt_n)
    _write_private(Path(path), blob)
    log.info("secrets file %s written (%s)", path, ", ".join(payload) or "empty")


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix" and directory.stat().st_mode & 0o077:
        os.chmod(directory, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a 0600 temporary file in the same directory."""
    _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{_random.token_hex(8)}.tmp")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if os.name == "posix":
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

