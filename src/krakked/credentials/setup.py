"""The set-up flow: validate a key pair with Kraken, then save it in the encrypted secrets file
(keeping the other product's keys); and removing a product's keys from that file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from krakked.config import Paths, resolve_paths
from krakked.credentials.secrets_file import (
    DEFAULT_SCRYPT_N,
    SECRETS_SOURCE,
    check_password,
    read_secrets,
    save_secrets,
)
from krakked.credentials.types import KeyPair, check_product
from krakked.errors import AuthError, KrakenError
from krakked.logs import redact, register_secret

__all__ = ["VALIDATION_ENDPOINTS", "SetupResult", "SetupStatus", "remove_credentials",
           "setup_credentials"]

log = logging.getLogger("krakked.credentials")

#: product -> the private read-only endpoint the set-up flow validates a key pair against.
VALIDATION_ENDPOINTS: Mapping[str, str] = {"spot": "Balance", "futures": "accounts"}

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
    check_product(product)
    check_password(password)
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
            pair, source=SECRETS_SOURCE, validated=validated, validated_at=validated_at
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
    check_product(product)
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
