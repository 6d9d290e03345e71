"""Kraken API credentials: where they come from, the encrypted secrets file, and the set-up flow.

Precedence, per product (``spot``, ``futures``): environment variables (a ``.env`` file in the
working directory fills in what the real environment lacks) > ``.dlt/secrets.toml`` in the working
directory > ``<config_dir>/secrets.enc`` (scrypt + AES-256-GCM, master password) > none, signalled
by ``NoCredentialsError``. Keys, secrets and master passwords never reach a log line, an exception
or a ``repr``; keys appear masked to their first 4 characters.

Secrets file layout (version 1)::

    b"KRKD" | version (1 byte) | log2(n), r, p (1 byte each) | salt (16) | nonce (12) | ciphertext

The header is the AES-GCM associated data, so altering any byte of the file fails decryption. The
plaintext is JSON: ``{product: {api_key, api_secret, validated, validated_at}}``.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import secrets as _random
import struct
import tomllib
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from dotenv import dotenv_values

from krakked.config import Paths, resolve_paths
from krakked.errors import (
    AuthError,
    CredentialsError,
    KrakenError,
    NoCredentialsError,
    SecretsDecryptionError,
    UsageError,
)
from krakked.logs import mask_key, redact, register_secret

__all__ = [
    "DEFAULT_SCRYPT_N",
    "DLT_SECRETS_FILE",
    "DLT_SECTIONS",
    "ENV_VAR_PAIRS",
    "MASTER_PASSWORD_ENV",
    "MIN_SECRET_BYTES",
    "PRODUCTS",
    "VALIDATION_ENDPOINTS",
    "Credentials",
    "KeyPair",
    "Secret",
    "SetupResult",
    "SetupStatus",
    "describe_sources",
    "load_credentials",
    "load_key_pair",
    "read_secrets",
    "remove_credentials",
    "save_secrets",
    "setup_credentials",
]

log = logging.getLogger("krakked.credentials")

PRODUCTS: tuple[str, ...] = ("spot", "futures")

#: product -> (key variable, secret variable) pairs, in the order they are tried.
ENV_VAR_PAIRS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "spot": (
        ("KRAKEN_API_KEY", "KRAKEN_API_SECRET"),
        ("KRAKEN_SPOT__API_KEY", "KRAKEN_SPOT__API_SECRET"),  # dlt convention
    ),
    "futures": (
        ("KRAKEN_FUTURES__API_KEY", "KRAKEN_FUTURES__API_SECRET"),  # dlt convention
        ("KRAKEN_API_PUBLIC_KEY", "KRAKEN_API_SECRET_KEY"),  # the original Futures plan's names
    ),
}

#: product -> section of ``.dlt/secrets.toml`` holding ``api_key`` / ``api_secret``.
DLT_SECTIONS: Mapping[str, str] = {"spot": "kraken_spot", "futures": "kraken_futures"}
DLT_SECRETS_FILE = Path(".dlt") / "secrets.toml"

#: product -> the private read-only endpoint the set-up flow validates a key pair against.
VALIDATION_ENDPOINTS: Mapping[str, str] = {"spot": "Balance", "futures": "accounts"}

MASTER_PASSWORD_ENV = "KRAKKED_MASTER_PASSWORD"  # noqa: S105 (a variable name, not a password)
MIN_SECRET_BYTES = 32

_DOTENV_FILE = ".env"
_SECRETS_SOURCE = "secrets.enc"

# --- secrets file format -------------------------------------------------------------------

_MAGIC = b"KRKD"
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBBBB16s12s")  # magic, version, log2 n, r, p, salt, nonce
_TAG_LEN = 16
DEFAULT_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_MIN_LOG2_N, _MAX_LOG2_N = 10, 20
_MAX_SCRYPT_MEMORY = 2**30  # bytes; a tampered header must not make us allocate more


# --- values --------------------------------------------------------------------------------


class Secret:
    """A secret string that shows itself only through ``reveal()``; ``repr`` says REDACTED."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise UsageError("Secret holds a str")
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """Return the secret itself; the caller takes responsibility for where it goes."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('REDACTED')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, repr=False)
class KeyPair:
    """One product's API key and secret, where they came from, and whether Kraken accepted them."""

    product: str
    api_key: str
    api_secret: Secret
    source: str
    validated: bool = False
    validated_at: datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.api_secret, str):  # tolerate a plain string; never keep it bare
            object.__setattr__(self, "api_secret", Secret(self.api_secret))
        register_secret(self.api_key, kind="key")

    @classmethod
    def create(
        cls,
        product: str,
        key: str,
        secret: str | Secret,
        source: str,
        *,
        validated: bool = False,
        validated_at: datetime | None = None,
        secret_source: str | None = None,
    ) -> KeyPair:
        """Return a checked key pair, or raise ``CredentialsError`` naming product and source.

        The key must be non-empty without inner whitespace; the secret must be base64 (missing
        ``=`` padding is restored) of at least 32 bytes. The stored secret is the padded form.
        ``secret_source`` names where the secret came from when that differs from ``source``.
        """
        _check_product(product)
        raw_secret = secret.reveal() if isinstance(secret, Secret) else secret
        if isinstance(key, str):
            register_secret(key.strip(), kind="key")
        if isinstance(raw_secret, str):
            register_secret(raw_secret.strip())
        where = secret_source or source
        if not isinstance(key, str) or not key.strip():
            raise CredentialsError(f"{product} API key from {source} is empty")
        key = key.strip()
        if any(ch.isspace() for ch in key):
            raise CredentialsError(f"{product} API key from {source} contains whitespace")
        if not isinstance(raw_secret, str) or not raw_secret.strip():
            raise CredentialsError(f"{product} API secret from {where} is empty")
        normalized = _normalize_secret(raw_secret, product, where)
        return cls(
            product=product,
            api_key=key,
            api_secret=Secret(normalized),
            source=source,
            validated=validated,
            validated_at=validated_at,
        )

    @property
    def masked_key(self) -> str:
        """The key as its first 4 characters and an ellipsis."""
        return mask_key(self.api_key)

    def __repr__(self) -> str:
        return (
            f"KeyPair(product={self.product!r}, api_key={self.masked_key!r}, "
            f"source={self.source!r}, validated={self.validated!r})"
        )

    __str__ = __repr__


def _normalize_secret(raw: str, product: str, where: str) -> str:
    """Return ``raw`` stripped and re-padded if it is base64 of enough bytes; else raise."""
    value = raw.strip()
    padded = value + "=" * (-len(value) % 4)
    try:
        decoded = base64.b64decode(padded, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise CredentialsError(
            f"{product} API secret from {where} is not valid base64 "
            "(copy it again from Kraken's API key page)"
        ) from None
    if len(decoded) < MIN_SECRET_BYTES:
        raise CredentialsError(
            f"{product} API secret from {where} is too short "
            f"({len(decoded)} bytes decoded, at least {MIN_SECRET_BYTES} expected)"
        )
    return padded


@dataclass(frozen=True)
class Credentials:
    """The key pairs found for each product (``None`` where none was found)."""

    spot: KeyPair | None = None
    futures: KeyPair | None = None

    def get(self, product: str) -> KeyPair:
        """Return the product's key pair, or raise ``NoCredentialsError`` saying how to set one."""
        _check_product(product)
        pair = getattr(self, product)
        if pair is None:
            raise NoCredentialsError(_missing_message(product))
        return pair


def _check_product(product: str) -> None:
    if product not in PRODUCTS:
        raise UsageError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")


def _dlt_key(product: str, field_name: str) -> str:
    """``kraken_spot.api_key``: a key of ``.dlt/secrets.toml`` written as a TOML dotted key.

    Messages name keys this way, never as a ``[kraken_spot]`` table header: a terminal that
    renders markup (the CLI's rich console) takes ``[kraken_spot]`` for a style tag and drops
    it, which left "api_key and api_secret under  in .dlt/secrets.toml". The dotted key is
    valid TOML too (``kraken_spot.api_key = "…"`` at the top of the file)."""
    return f"{DLT_SECTIONS[product]}.{field_name}"


def _missing_message(product: str) -> str:
    pairs = " or ".join(f"{k} and {s}" for k, s in ENV_VAR_PAIRS[product])
    return (
        f"no {product} API keys found: set {pairs} (environment or .env), "
        f"or {_dlt_key(product, 'api_key')} and {_dlt_key(product, 'api_secret')} in "
        f"{DLT_SECRETS_FILE}, or run `krakked setup` to save them in the encrypted secrets file"
    )


# --- where credentials come from -----------------------------------------------------------


@dataclass(frozen=True)
class _EnvCandidate:
    key_var: str
    secret_var: str
    key: str
    secret: str
    key_origin: str  # "env" | ".env"
    secret_origin: str

    @property
    def has_key(self) -> bool:
        return bool(self.key.strip())

    @property
    def has_secret(self) -> bool:
        return bool(self.secret.strip())

    @property
    def complete(self) -> bool:
        return self.has_key and self.has_secret

    @property
    def missing(self) -> str | None:
        if self.has_key == self.has_secret:
            return None
        return self.secret_var if self.has_key else self.key_var


class _Sources:
    """Every place credentials can come from, read lazily and at most once."""

    def __init__(
        self,
        env: Mapping[str, str] | None,
        cwd: Path | None,
        paths: Paths | None,
        password: str | Callable[[], str] | None = None,
    ) -> None:
        self.cwd = Path.cwd() if cwd is None else Path(cwd)
        self.real_env: Mapping[str, str] = os.environ if env is None else env
        self.dotenv = _read_dotenv(self.cwd / _DOTENV_FILE)
        self.env: dict[str, str] = {**self.dotenv, **self.real_env}  # real env wins
        self.paths = paths if paths is not None else resolve_paths(self.env)
        self._password_arg = password
        self._password: str | None = None
        self._dlt: Mapping[str, Any] | None = None
        self._file: dict[str, KeyPair] | None = None

    # level 1 -----------------------------------------------------------------------------
    def env_candidates(self, product: str) -> Iterator[_EnvCandidate]:
        for key_var, secret_var in ENV_VAR_PAIRS[product]:
            yield _EnvCandidate(
                key_var=key_var,
                secret_var=secret_var,
                key=self.env.get(key_var) or "",
                secret=self.env.get(secret_var) or "",
                key_origin=self._origin(key_var),
                secret_origin=self._origin(secret_var),
            )

    def _origin(self, var: str) -> str:
        return "env" if var in self.real_env else ".env"

    def from_env(self, product: str) -> KeyPair | None:
        chosen: _EnvCandidate | None = None
        for cand in self.env_candidates(product):
            if cand.complete:
                if chosen is None:
                    chosen = cand
                else:
                    log.debug(
                        "%s credentials: %s/%s ignored, %s/%s take precedence",
                        product, cand.key_var, cand.secret_var, chosen.key_var, chosen.secret_var,
                    )
            elif cand.missing is not None:
                present = cand.key_var if cand.missing == cand.secret_var else cand.secret_var
                log.warning(
                    "%s credentials: %s is set but %s is missing; ignoring %s",
                    product, present, cand.missing, present,
                )
        if chosen is None:
            return None
        return KeyPair.create(
            product,
            chosen.key,
            chosen.secret,
            f"{chosen.key_origin}:{chosen.key_var}",
            secret_source=f"{chosen.secret_origin}:{chosen.secret_var}",
        )

    # level 2 -----------------------------------------------------------------------------
    @property
    def dlt_file(self) -> Path:
        return self.cwd / DLT_SECRETS_FILE

    def dlt_section(self, product: str) -> tuple[str | None, str | None]:
        """``(api_key, api_secret)`` from ``.dlt/secrets.toml``; ``None`` where absent."""
        if self._dlt is None:
            self._dlt = _read_toml(self.dlt_file)
        name = DLT_SECTIONS[product]
        section = self._dlt.get(name)
        if section is None:
            return None, None
        if not isinstance(section, Mapping):
            raise CredentialsError(f"{DLT_SECRETS_FILE}: {name} must be a table")
        values: list[str | None] = []
        for field_name in ("api_key", "api_secret"):
            value = section.get(field_name)
            if value is not None and not isinstance(value, str):
                raise CredentialsError(
                    f"{DLT_SECRETS_FILE}: {_dlt_key(product, field_name)} must be a string"
                )
            values.append(value if value and value.strip() else None)
        return values[0], values[1]

    def from_dlt(self, product: str) -> KeyPair | None:
        key, secret = self.dlt_section(product)
        if key is None and secret is None:
            return None
        if key is None or secret is None:
            present, missing = ("api_key", "api_secret") if key else ("api_secret", "api_key")
            log.warning(
                "%s credentials: %s is set in %s but %s is missing; ignoring it",
                product, _dlt_key(product, present), DLT_SECRETS_FILE,
                _dlt_key(product, missing),
            )
            return None
        return KeyPair.create(
            product,
            key,
            secret,
            str(DLT_SECRETS_FILE),
            secret_source=f"{DLT_SECRETS_FILE} {_dlt_key(product, 'api_secret')}",
        )

    # level 3 -----------------------------------------------------------------------------
    def from_file(self, product: str) -> KeyPair | None:
        path = self.paths.secrets_file
        if self._file is None:
            if not path.exists():
                return None
            self._file = read_secrets(path, self.master_password())
        return self._file.get(product)

    def master_password(self) -> str:
        """Explicit argument (string or prompt) > ``KRAKKED_MASTER_PASSWORD`` > locked error."""
        if self._password is not None:
            return self._password
        arg = self._password_arg
        if callable(arg):
            value = arg()
        elif arg is not None:
            value = arg
        elif self.env.get(MASTER_PASSWORD_ENV):
            value = self.env[MASTER_PASSWORD_ENV]
        else:
            raise CredentialsError(
                f"secrets file {self.paths.secrets_file} is locked: "
                f"set {MASTER_PASSWORD_ENV} or run interactively"
            )
        _check_password(value)
        register_secret(value)
        self._password = value
        return value

    def key_pair(self, product: str) -> KeyPair | None:
        for level in (self.from_env, self.from_dlt, self.from_file):
            pair = level(product)
            if pair is not None:
                log.debug("%s credentials from %s (key %s)", product, pair.source, pair.masked_key)
                return pair
        return None


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        values = dotenv_values(path, interpolate=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {path}: {type(exc).__name__}") from None
    return {k: v for k, v in values.items() if v is not None}


def _read_toml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CredentialsError(f"cannot read {DLT_SECRETS_FILE}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        # the parser's message can quote the offending text, which may be a secret
        raise CredentialsError(f"{DLT_SECRETS_FILE} is not valid TOML") from None


def load_key_pair(
    product: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    paths: Paths | None = None,
    password: str | Callable[[], str] | None = None,
) -> KeyPair:
    """Return ``product``'s key pair from the first source that has one, by the precedence above.

    ``env`` defaults to ``os.environ`` (never modified), ``cwd`` to the working directory,
    ``paths`` to ``resolve_paths``. The secrets file is decrypted only when the environment and
    ``.dlt/secrets.toml`` have nothing for ``product``; ``password`` (a string, or a zero-argument
    callable such as a prompt) wins over ``KRAKKED_MASTER_PASSWORD``. Raises
    ``NoCredentialsError`` when no source has keys, ``CredentialsError`` for unusable or locked
    ones and ``SecretsDecryptionError`` for a wrong password or damaged file.
    """
    _check_product(product)
    pair = _Sources(env, cwd, paths, password).key_pair(product)
    if pair is None:
        raise NoCredentialsError(_missing_message(product))
    return pair


def load_credentials(
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    paths: Paths | None = None,
    password: str | Callable[[], str] | None = None,
) -> Credentials:
    """Return both products' key pairs (``None`` where absent), prompting at most once.

    Every error other than "no keys for this product" propagates, as in ``load_key_pair``.
    """
    sources = _Sources(env, cwd, paths, password)
    found = {product: sources.key_pair(product) for product in PRODUCTS}
    return Credentials(**found)


def describe_sources(
    product: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    paths: Paths | None = None,
) -> list[dict[str, Any]]:
    """Describe every place ``product``'s keys could come from, in precedence order, unencrypted.

    Each dict has ``source``, ``kind`` (``env``, ``dotenv``, ``dlt``, ``secrets_file``),
    ``present`` (something is there), ``complete`` (a whole pair; ``None`` for the secrets file,
    whose contents are only known after decryption), ``masked_key``, ``missing`` (the name of the
    absent half, if one half is set) and ``selected`` (the source loading would use or try first).
    Nothing is decrypted and no secret or full key is included.
    """
    _check_product(product)
    sources = _Sources(env, cwd, paths)
    rows: list[dict[str, Any]] = []
    for cand in sources.env_candidates(product):
        origin = (
            cand.key_origin if cand.has_key
            else cand.secret_origin if cand.has_secret
            else "env"
        )
        rows.append(
            {
                "source": f"{origin}:{cand.key_var}",
                "kind": "env" if origin == "env" else "dotenv",
                "variables": [cand.key_var, cand.secret_var],
                "present": cand.has_key or cand.has_secret,
                "complete": cand.complete,
                "masked_key": mask_key(cand.key.strip()) if cand.has_key else None,
                "missing": cand.missing,
            }
        )
    key, secret = sources.dlt_section(product)
    section = DLT_SECTIONS[product]
    rows.append(
        {
            "source": str(DLT_SECRETS_FILE),
            "kind": "dlt",
            "section": section,
            "path": str(sources.dlt_file),
            "present": key is not None or secret is not None,
            "complete": key is not None and secret is not None,
            "masked_key": mask_key(key.strip()) if key else None,
            "missing": (
                None if (key is None) == (secret is None)
                else _dlt_key(product, "api_secret" if key else "api_key")
            ),
        }
    )
    path = sources.paths.secrets_file
    rows.append(
        {
            "source": _SECRETS_SOURCE,
            "kind": "secrets_file",
            "path": str(path),
            "present": path.is_file(),
            "complete": None,
            "masked_key": None,
            "missing": None,
        }
    )
    selected = next(
        (r for r in rows if r["complete"] or (r["complete"] is None and r["present"])), None
    )
    for row in rows:
        row["selected"] = row is selected
    return rows


# --- the encrypted secrets file ------------------------------------------------------------


def _check_password(password: object) -> None:
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
        product, key, secret, _SECRETS_SOURCE, validated=validated, validated_at=validated_at
    )


def read_secrets(path: Path, password: str) -> dict[str, KeyPair]:
    """Decrypt the secrets file into ``{product: KeyPair}``.

    Raises ``SecretsDecryptionError`` ("Wrong password or corrupted secrets file") for a wrong
    password or any damage; never returns partial or garbage credentials. A missing file raises
    ``NoCredentialsError``.
    """
    _check_password(password)
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
    _check_password(password)
    register_secret(password)
    payload: dict[str, dict[str, Any]] = {}
    for product, pair in entries.items():
        _check_product(product)
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


# --- set-up --------------------------------------------------------------------------------

SetupStatus = Literal["validated", "auth_failed", "unreachable"]


@dataclass(frozen=True)
class SetupResult:
    """What set-up did with one key pair.

    ``status``: ``validated`` (Kraken accepted the pair; saved), ``auth_failed`` (Kraken rejected
    the key, signature or permission; saved only when forced) or ``unreachable`` (network or
    service problem, not an auth problem; saved only when asked to save it unvalidated).
    """

    product: str
    status: SetupStatus
    saved: bool
    validated: bool
    masked_key: str
    error: str | None = None
    error_type: str | None = None
    can_retry: bool = False
    can_save_unvalidated: bool = False
    validated_at: datetime | None = None
    path: Path | None = None

    @property
    def auth_problem(self) -> bool:
        return self.status == "auth_failed"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def setup_credentials(
    product: str,
    api_key: str,
    api_secret: str,
    *,
    password: str,
    validator: Callable[[KeyPair], None],
    paths: Paths | None = None,
    save_unvalidated: bool = False,
    force: bool = False,
    now: Callable[[], datetime] = _utcnow,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> SetupResult:
    """Validate a key pair with Kraken and save it encrypted, keeping the other product's keys.

    ``validator`` calls a private read-only endpoint (``VALIDATION_ENDPOINTS``) and raises
    ``AuthError`` for an auth problem or another ``KrakenError`` when Kraken could not answer.
    A validated pair is saved with ``validated_at=now()``; after an auth failure nothing is saved
    unless ``force``; after a network or service failure nothing is saved unless
    ``save_unvalidated`` (or ``force``). Malformed keys raise ``CredentialsError`` before any call;
    an existing secrets file that ``password`` does not open raises ``SecretsDecryptionError``
    and is left untouched.
    """
    _check_product(product)
    _check_password(password)
    register_secret(password)
    pair = KeyPair.create(product, api_key, api_secret, "setup")
    path = (paths if paths is not None else resolve_paths()).secrets_file
    existing = read_secrets(path, password) if path.exists() else {}

    status: SetupStatus
    error: str | None = None
    error_type: str | None = None
    try:
        validator(pair)
    except AuthError as exc:
        status, error, error_type = "auth_failed", redact(str(exc)), type(exc).__name__
    except KrakenError as exc:
        status, error, error_type = "unreachable", redact(str(exc)), type(exc).__name__
    else:
        status = "validated"

    validated = status == "validated"
    save = validated or force or (status == "unreachable" and save_unvalidated)
    validated_at = now() if validated else None
    if save:
        stored = replace(
            pair, source=_SECRETS_SOURCE, validated=validated, validated_at=validated_at
        )
        save_secrets(path, {**existing, product: stored}, password, scrypt_n=scrypt_n)

    if validated:
        log.info("%s key %s validated and saved to %s", product, pair.masked_key, path)
    elif status == "auth_failed":
        log.warning(
            "%s key %s rejected by Kraken (%s)%s", product, pair.masked_key, error_type,
            "; saved unvalidated because forced" if save else "; not saved",
        )
    else:
        log.warning(
            "%s key %s could not be validated, Kraken unreachable (%s)%s", product,
            pair.masked_key, error_type, "; saved unvalidated" if save else "; not saved",
        )
    return SetupResult(
        product=product,
        status=status,
        saved=save,
        validated=validated,
        masked_key=pair.masked_key,
        error=error,
        error_type=error_type,
        can_retry=status == "unreachable",
        can_save_unvalidated=status == "unreachable" and not save,
        validated_at=validated_at,
        path=path if save else None,
    )


def remove_credentials(
    product: str,
    password: str,
    paths: Paths | None = None,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> bool:
    """Remove ``product``'s keys from the secrets file; return whether there were any.

    The file is deleted when no keys remain. A wrong password raises ``SecretsDecryptionError``.
    """
    _check_product(product)
    path = (paths if paths is not None else resolve_paths()).secrets_file
    if not path.exists():
        return False
    entries = read_secrets(path, password)
    if product not in entries:
        return False
    del entries[product]
    if entries:
        save_secrets(path, entries, password, scrypt_n=scrypt_n)
    else:
        path.unlink()
    log.info("%s keys removed from %s", product, path)
    return True
