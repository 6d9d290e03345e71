"""Progress of an account sync: what a source reports after every page of a resource
(``ResourceProgress``), how the runner passes it on (``ProgressRelay``: the pipeline's name and
the rate-limit waits added), and the default display (``ProgressLog``: INFO lines on
``krakked.account.progress``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "ProgressCallback",
    "ProgressLog",
    "ResourceProgress",
    "describe_progress",
    "rate_limit_waits",
    "report_progress",
]

log = logging.getLogger("krakked.account")
progress_log = logging.getLogger("krakked.account.progress")


@dataclass(frozen=True)
class ResourceProgress:
    """Where one resource's run stands after a page: ``pages`` fetched and ``rows`` kept so far,
    its ``cursor`` (the newest time loaded, ISO), ``done`` once it finished (``error`` says why
    when it stopped early: permission denied, a Kraken error it kept going past). The runner
    fills in ``pipeline`` and ``rate_limit_waits`` (calls of this resource that waited on a
    rate limit)."""

    resource: str
    pages: int
    rows: int
    cursor: str | None = None
    done: bool = False
    error: str | None = None
    rate_limit_waits: int = 0
    pipeline: str | None = None


ProgressCallback = Callable[[ResourceProgress], None]
"""Called by the sources after every page and once when a resource ends."""


def report_progress(callback: ProgressCallback | None, resource: str, pages: int, rows: int,
                    cursor: str | None = None, *, done: bool = False,
                    error: str | None = None) -> None:
    """Tell ``callback`` (if any) where ``resource`` stands; a failing display is logged at
    DEBUG and never stops a sync."""
    if callback is None:
        return
    try:
        callback(ResourceProgress(resource, pages, rows, cursor, done, error))
    except Exception as exc:  # a progress display must not break the data
        log.debug("progress display failed: %s", exc)


def rate_limit_waits(counters: Mapping[str, Any]) -> int:
    """How many calls waited on a rate limit, read from a client's ``stats.to_dict()`` or a
    run's ``api`` counters: ``rate_limit_waits`` (the client's own limiter made a call wait)
    where the client counts it, else ``rate_limited`` (Kraken told it to wait). The one place
    that reads the figure, for the progress display and the run summary."""
    value = counters.get("rate_limit_waits", counters.get("rate_limited", 0))
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def describe_progress(event: ResourceProgress) -> str:
    """One line for a resource's progress: ``kraken_futures.executions: 3 pages, 150 rows,
    0 rate-limit waits, cursor 2026-…`` (``; done`` or ``; stopped: <error>`` at its end)."""
    name = f"{event.pipeline}.{event.resource}" if event.pipeline else event.resource
    text = (f"{name}: {event.pages} page{'s' if event.pages != 1 else ''}, {event.rows} rows, "
            f"{event.rate_limit_waits} rate-limit waits, cursor {event.cursor or '-'}")
    if event.error:
        return f"{text}; stopped: {event.error}"
    return f"{text}; done" if event.done else text


class ProgressLog:
    """Progress as INFO lines on ``krakked.account.progress`` (what a sync shows when no
    terminal is watching): per resource at most one line every ``interval`` seconds while it
    runs, and always one when it ends."""

    def __init__(self, interval: float = 5.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[str | None, str], float] = {}

    def __call__(self, event: ResourceProgress) -> None:
        key = (event.pipeline, event.resource)
        now = self.clock()
        if not event.done and now - self._last.get(key, -math.inf) < self.interval:
            return
        self._last[key] = now
        progress_log.info("%s", describe_progress(event))


class ProgressRelay:
    """Passes the sources' progress on with the pipeline's name and each resource's rate-limit
    waits: the client's count since the previous page is credited to the resource whose page
    that was (calls are made one at a time). Pages, rows and cursor never go backwards."""

    def __init__(self, pipeline: str, client: Any, target: ProgressCallback) -> None:
        self.pipeline = pipeline
        self.client = client
        self.target = target
        self.last_waits = rate_limit_waits(client_stats(client))
        self.waits: dict[str, int] = {}
        self.seen: dict[str, ResourceProgress] = {}

    def __call__(self, event: ResourceProgress) -> None:
        waits = rate_limit_waits(client_stats(self.client))
        self.waits[event.resource] = self.waits.get(event.resource, 0) + max(
            0, waits - self.last_waits)
        self.last_waits = waits
        before = self.seen.get(event.resource)
        merged = replace(
            event, pipeline=self.pipeline, rate_limit_waits=self.waits[event.resource],
            pages=max(event.pages, before.pages if before else 0),
            rows=max(event.rows, before.rows if before else 0),
            cursor=event.cursor or (before.cursor if before else None))
        self.seen[event.resource] = merged
        self.target(merged)


def client_stats(client: Any) -> dict[str, Any]:
    """A client's counters (``stats.to_dict()``: requests, retries, rate-limit waits,
    failures…), zeros for a client that keeps none."""
    stats = getattr(client, "stats", None)
    if stats is None:
        return {"requests": 0, "retries": 0, "rate_limited": 0, "failures": 0}
    return dict(stats.to_dict())

