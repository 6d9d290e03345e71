"""Kraken API credentials: where they come from, the encrypted secrets file, and the set-up flow.

Precedence, per product (``spot``, ``futures``): environment variables (a ``.env`` file in the
working directory fills in what the real environment lacks) > ``.dlt/secrets.toml`` in the working
directory > ``<config_dir>/secrets.enc`` (scrypt + AES-256-GCM, master password) > none, signalled
by ``NoCredentialsError``. Keys, secrets and master passwords never reach a log line, an exception
or a ``repr``; keys appear masked to their first 4 characters.

Modules by job: ``types`` (``Secret``, ``KeyPair``), ``sources`` (the precedence above,
``Credentials``, the master password's rule), ``secrets_file`` (the encrypted file), ``setup``
(validate and save).
"""

from __future__ import annotations

from krakked.credentials.secrets_file import DEFAULT_SCRYPT_N, read_secrets, save_secrets
from krakked.credentials.setup import (
    VALIDATION_ENDPOINTS,
    SetupResult,
    SetupStatus,
    remove_credentials,
    setup_credentials,
)
from krakked.credentials.sources import (
    DLT_SECRETS_FILE,
    DLT_SECTIONS,
    ENV_VAR_PAIRS,
    MASTER_PASSWORD_ENV,
    Credentials,
    describe_sources,
    load_credentials,
    load_key_pair,
    master_password,
)
from krakked.credentials.types import MIN_SECRET_BYTES, PRODUCTS, KeyPair, Secret

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
    "master_password",
    "read_secrets",
    "remove_credentials",
    "save_secrets",
    "setup_credentials",
]
