"""Where credentials come from, per product (``spot``, ``futures``): environment variables (a
``.env`` file in the working directory fills in what the real environment lacks) >
``.dlt/secrets.toml`` in the working directory > the encrypted secrets file (master password) >
none, signalled by ``NoCredentialsError``; and the master password's one rule
(``master_password``)."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from krakked.config import Paths, resolve_paths
from krakked.credentials.secrets_file import SECRETS_SOURCE, check_password, read_secrets
from krakked.credentials.types import PRODUCTS, KeyPair, check_product
from krakked.errors import CredentialsError, NoCredentialsError
from krakked.logs import mask_key, register_secret

__all__ = [
    "DLT_SECRETS_FILE",
    "DLT_SECTIONS",
    "ENV_VAR_PAIRS",
    "MASTER_PASSWORD_ENV",
    "Credentials",
    "describe_sources",
    "load_credentials",
    "load_key_pair",
    "master_password",
]

log = logging.getLogger("krakked.credentials")

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

MASTER_PASSWORD_ENV = "KRAKKED_MASTER_PASSWORD"  # noqa: S105 (a variable name, not a password)

_DOTENV_FILE = ".env"


@dataclass(frozen=True)
class Credentials:
    """The key pairs found for each product (``None`` where none was found)."""

    spot: KeyPair | None = None
    futures: KeyPair | None = None

    def get(self, product: str) -> KeyPair:
        """Return the product's key pair, or raise ``NoCredentialsError`` saying how to set one."""
        check_product(product)
        pair = getattr(self, product)
        if pair is None:
            raise NoCredentialsError(_missing_message(product))
        return pair


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
        """The explicit argument (a string, or a prompt called once), else ``master_password``'s
        rule over this environment (``KRAKKED_MASTER_PASSWORD``, else the locked error)."""
        if self._password is not None:
            return self._password
        arg = self._password_arg
        if arg is None:
            value = master_password(env=self.env, locked=f"secrets file {self.paths.secrets_file}")
        else:
            value = arg() if callable(arg) else arg
            check_password(value)
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


def master_password(
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    prompt: Callable[[], str] | None = None,
    interactive: bool = False,
    locked: str = "the secrets file",
) -> str:
    """The secrets file's master password, by krakked's one rule: ``KRAKKED_MASTER_PASSWORD``
    from ``env`` (default: the process environment, a ``.env`` file in ``cwd`` filling in what
    it lacks), else ``prompt()`` when ``interactive``, else ``CredentialsError`` ("<locked> is
    locked: set KRAKKED_MASTER_PASSWORD or run interactively"). An empty password is a
    ``CredentialsError``; the password is registered with the log redaction filter."""
    if env is None:
        base = Path.cwd() if cwd is None else Path(cwd)
        env = {**_read_dotenv(base / _DOTENV_FILE), **os.environ}
    value = env.get(MASTER_PASSWORD_ENV)
    if not value:
        if not interactive or prompt is None:
            raise CredentialsError(
                f"{locked} is locked: set {MASTER_PASSWORD_ENV} or run interactively")
        value = prompt()
    check_password(value)
    register_secret(value)
    return value


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
    check_product(product)
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
    check_product(product)
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
            "source": SECRETS_SOURCE,
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

