"""The credential values: ``Secret`` (shows itself only through ``reveal()``), ``KeyPair`` (one
product's checked key and secret, where they came from, whether Kraken accepted them), and the
products krakked knows."""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from datetime import datetime

from krakked.errors import CredentialsError, UsageError
from krakked.logs import mask_key, register_secret

__all__ = ["MIN_SECRET_BYTES", "PRODUCTS", "KeyPair", "Secret", "check_product"]

PRODUCTS: tuple[str, ...] = ("spot", "futures")
MIN_SECRET_BYTES = 32


def check_product(product: str) -> None:
    """Raise ``UsageError`` unless ``product`` is one of ``PRODUCTS``."""
    if product not in PRODUCTS:
        raise UsageError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")


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
        check_product(product)
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

