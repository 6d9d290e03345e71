"""Choosing and opening the market store from one URL.

``duckdb:///abs/path.duckdb`` (or ``duckdb:///:memory:``), ``parquet:///dir``, ``csv:///dir``,
``postgresql://…`` / ``postgres://…``. The URL comes from ``--store``, else from the settings
(``KRAKKED_STORE``, ``config.toml``, ``DATABASE_URL``, the default DuckDB file).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from krakked.errors import ConfigError, StoreError, StoreNotFoundError
from krakked.store.base import redact_url

if TYPE_CHECKING:
    from krakked.config import Settings
    from krakked.store.base import MarketStore

__all__ = ["SCHEMES", "open_store", "resolve_store_url", "store_path"]

SCHEMES = ("duckdb", "parquet", "csv", "postgresql", "postgres")
"""URL schemes ``open_store`` understands."""


def resolve_store_url(flag: str | None = None,
                      settings: Settings | None = None) -> tuple[str, str]:
    """The store URL and where it came from: ``--store`` if given, else the settings' choice
    (``env:KRAKKED_STORE``, ``config:store.url``, ``config:market_data.ohlc_store``,
    ``env:DATABASE_URL`` or ``default``)."""
    if flag:
        return flag, "--store"
    if settings is None:
        from krakked.config import load_settings

        settings = load_settings()
    url = settings.store_url or settings.paths.default_store_url
    return url, settings.store_url_source


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(
            f"store URL {url!r} has no scheme: use duckdb:///, parquet:///, csv:/// or "
            "postgresql://")
    return scheme.lower()


def store_path(url: str) -> str:
    """The filesystem path of a ``duckdb``/``parquet``/``csv`` URL (``:memory:`` kept as is).

    ``duckdb:///home/me/x.duckdb`` -> ``/home/me/x.duckdb``; ``duckdb:///:memory:`` ->
    ``:memory:``; ``~`` is expanded.
    """
    scheme = _scheme(url)
    rest = url.split("://", 1)[1]
    parts = urlsplit(f"{scheme}://{rest}")
    path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
    if path in (":memory:", "/:memory:"):
        return ":memory:"
    if path.startswith("//"):  # duckdb:////abs/path (an absolute path after "///")
        path = "/" + path.lstrip("/")
    if not path or path == "/":
        raise ConfigError(f"store URL {url!r} names no path")
    return str(Path(path).expanduser())


def _ensure_dir(directory: Path, what: str) -> None:
    """Create ``directory`` (mode 0o700) if needed; a StoreError naming it if impossible."""
    if directory.is_dir():
        return
    if directory.exists():
        raise StoreError(f"{directory}: not a directory (needed for the {what})")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"{directory}: cannot create the {what} directory ({exc.strerror or exc})"
        ) from None


def open_store(url: str | None = None, *, settings: Settings | None = None,
               read_only: bool = False, lock_timeout: float | None = None) -> MarketStore:
    """Open the market store ``url`` names (the settings' URL when ``None``).

    ``read_only`` is for reading: it never creates a file or directory, and a store that does
    not exist is ``StoreNotFoundError``. Raises ``ConfigError`` for an unknown scheme and
    ``StoreError`` (``StoreLockedError``) when the store cannot be opened; the message names
    the URL, file or directory at fault.
    """
    if url is None:
        url, _ = resolve_store_url(None, settings)
    scheme = _scheme(url)
    if scheme == "duckdb":
        from krakked.store.duckdb import DuckDBStore

        path = store_path(url)
        if path != ":memory:" and not read_only:
            _ensure_dir(Path(path).parent, "DuckDB store")
        if lock_timeout is None:
            return DuckDBStore(path, read_only=read_only)
        return DuckDBStore(path, read_only=read_only, lock_timeout=lock_timeout)
    if scheme in ("parquet", "csv"):
        from krakked.store.files import FileStore

        root = Path(store_path(url))
        if not read_only:
            _ensure_dir(root, f"{scheme} store")
        elif not root.is_dir():
            raise StoreNotFoundError(
                f"no store at {root}: no such {scheme} store directory (a read never creates "
                "a store)")
        return FileStore(root, scheme, read_only=read_only)
    if scheme in ("postgresql", "postgres"):
        from krakked.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ConfigError(
        f"unknown store URL scheme {scheme!r} in {redact_url(url)}: "
        "use duckdb:///, parquet:///, csv:/// or postgresql://")
