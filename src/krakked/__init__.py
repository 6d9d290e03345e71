"""krakked: a complete, exact, queryable copy of your Kraken data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from krakked._version import __version__

__all__ = ["Market", "__version__"]

if TYPE_CHECKING:
    from krakked.market_data import Market


def __getattr__(name: str) -> Any:
    # Lazy: `import krakked` stays light for the CLI; `from krakked import Market` works.
    if name == "Market":
        from krakked.market_data import Market

        return Market
    raise AttributeError(f"module 'krakked' has no attribute {name!r}")
