"""The account sources by kind — ``futures`` and ``spot`` (``all`` runs both): the pipeline and
source factory of each, its resource tables (read from the sources' settings), and the checks
of the source and resources a caller names."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from krakked.account import futures_settings, spot_settings
from krakked.account.futures import kraken_futures_source
from krakked.account.spot import kraken_spot_source
from krakked.errors import UsageError

__all__ = [
    "DEFAULT_SOURCE",
    "INCREMENTAL_RESOURCES",
    "PIPELINES",
    "PUBLIC_RESOURCES",
    "RESOURCES",
    "SOURCE_KINDS",
    "expand_source_kind",
    "one_kind",
    "validate_resources",
]

PIPELINES: dict[str, tuple[str, Callable[..., Any]]] = {
    "futures": ("kraken_futures", kraken_futures_source),
    "spot": ("kraken_spot", kraken_spot_source),
}
"""Source kind -> (pipeline, dataset and dlt source name; source factory)."""

RESOURCES: dict[str, tuple[str, ...]] = {
    "futures": futures_settings.RESOURCES,
    "spot": spot_settings.RESOURCES,
}
"""Source kind -> its resource names, in load order."""

INCREMENTAL_RESOURCES: dict[str, frozenset[str]] = {
    "futures": futures_settings.INCREMENTAL_RESOURCES,
    "spot": spot_settings.INCREMENTAL_RESOURCES,
}
"""Resources with a cursor (merge); the others are snapshots (replace)."""

PUBLIC_RESOURCES: dict[str, frozenset[str]] = {
    "futures": futures_settings.PUBLIC_RESOURCES,
    "spot": spot_settings.PUBLIC_RESOURCES,
}
"""Resources that need no key pair."""

SOURCE_KINDS: tuple[str, ...] = ("futures", "spot", "all")
DEFAULT_SOURCE = "futures"


def expand_source_kind(source: str | None) -> tuple[str, ...]:
    """``futures`` / ``spot`` / ``all`` (None = ``futures``) -> the kinds to run, in order."""
    source = DEFAULT_SOURCE if source is None else source.strip().lower()
    if source == "all":
        return ("futures", "spot")
    if source not in PIPELINES:
        raise UsageError(
            f"unknown source {source!r}; expected one of {', '.join(SOURCE_KINDS)}")
    return (source,)


def one_kind(source: str | None) -> str:
    """``source`` as one kind (``futures`` / ``spot``); ``all`` is refused where one is meant."""
    kinds = expand_source_kind(source)
    if len(kinds) != 1:
        raise UsageError(f"source {source!r} names {len(kinds)} sources; give one of "
                         f"{', '.join(PIPELINES)} here")
    return kinds[0]


def validate_resources(source_kind: str, resources: Iterable[str] | None) -> tuple[str, ...]:
    """The resources to run (all of the kind's when None/empty), in load order, deduplicated.

    Raises ``UsageError`` naming the unknown names and listing the valid ones.
    """
    kind = one_kind(source_kind)
    known = RESOURCES[kind]
    wanted = [r.strip() for r in (resources or ()) if r and r.strip()]
    if not wanted:
        return known
    unknown = [r for r in dict.fromkeys(wanted) if r not in known]
    if unknown:
        raise UsageError(
            f"unknown {kind} resource(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    return tuple(r for r in known if r in wanted)

