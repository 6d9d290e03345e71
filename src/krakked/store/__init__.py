"""Persistence of market data behind one interface: ``open_store(url)`` picks the backend.

``duckdb:///path.duckdb`` (default), ``parquet:///dir``, ``csv:///dir``, ``postgresql://…``.
"""

from __future__ import annotations

from krakked.store.base import MarketStore, SyncUpdate
from krakked.store.open import open_store, resolve_store_url

__all__ = ["MarketStore", "SyncUpdate", "open_store", "resolve_store_url"]
