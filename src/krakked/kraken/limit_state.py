"""One API key's rate-limit state on disk, shared by every process on this machine using the key.

Kraken counts per key, not per process. A key's ``LimiterState`` is a small JSON file beside its
nonce state, under the same file lock: a limiter re-reads it, merges it in and writes the result
back under the lock at each reservation, so a second process starts from the decayed value the
first one left and two concurrent ones spend from one budget. Times in the file are wall clock
(monotonic clocks do not survive a process); a wall clock that went backwards credits no decay,
and an unreadable file is taken as a spent budget (logged once), never as a crash.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from krakked.kraken.auth import (
    key_state_lock,
    key_state_lock_file,
    limits_state_file,
    nonce_state_file,
)

__all__ = [
    "MAX_PERSISTED_BLOCK_SECONDS",
    "STATE_VERSION",
    "Clock",
    "LimiterState",
    "StateSnapshot",
    "elapsed_and_block",
    "saved_number",
]

log = logging.getLogger("krakked.kraken.limit_state")

Clock = Callable[[], float]

STATE_VERSION = 1
"""Version of the limits state file; any other is read as unreadable (a spent budget)."""

MAX_PERSISTED_BLOCK_SECONDS = 3600.0
"""A persisted block is capped at this (an hour), so a damaged file never blocks forever."""

_T = TypeVar("_T")


class StateSnapshot:
    """The state file's sections as read under the lock, and the wall time they were read at."""

    def __init__(self, state: LimiterState, now: float, sections: dict[str, Any],
                 readable: bool) -> None:
        self.state = state
        self.now = now
        self.sections = sections
        self.readable = readable
        self.changed = False

    def load(self, name: str, parse: Callable[[Mapping[str, Any], float], _T],
             spent: Callable[[], _T]) -> _T | None:
        """Section ``name`` parsed as of now; None if nothing is saved. If the file or the
        section cannot be read: ``spent()`` (and a warning) the first time, None after that —
        the budget assumed spent then decays in memory instead of being refilled forever."""
        if self.readable and name not in self.sections:
            return None
        section = self.sections.get(name)
        if self.readable and isinstance(section, Mapping):
            try:
                return parse(section, self.now)
            except (KeyError, TypeError, ValueError):
                pass
        if self.state.warn_once(name, "is unreadable; assuming the budget is spent"):
            return spent()
        return None

    def put(self, name: str, section: dict[str, float]) -> None:
        self.sections[name] = section
        self.changed = True


class LimiterState:
    """One API key's rate-limit state on disk: ``path`` (JSON, private), read and written under
    the file lock ``lock_file`` that also guards the key's nonce state.

    The file holds only numbers — a budget's level, the wall time it was observed, the seconds
    of block left — so it never contains the key or its secret; ``for_key`` names it by a hash.
    Disk trouble never fails a call: an unreadable file is taken as a spent budget, a file that
    cannot be locked or written leaves the limiter in memory only (each logged once).
    """

    def __init__(self, path: Path, lock_file: Path, *, wall_clock: Clock = time.time) -> None:
        self.path = path
        self.lock_file = lock_file
        self.wall_clock = wall_clock
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        self._in_memory = False  # set once the file could not be locked or written

    @classmethod
    def for_key(cls, state_dir: Path, api_key: str, *, wall_clock: Clock = time.time
                ) -> LimiterState:
        """The state of ``api_key`` in ``state_dir`` (krakked's nonce directory): beside the
        key's nonce state, under the same lock, named by the same hash."""
        return cls(limits_state_file(state_dir, api_key),
                   key_state_lock_file(nonce_state_file(state_dir, api_key)),
                   wall_clock=wall_clock)

    def warn_once(self, what: str, problem: str) -> bool:
        """Log ``problem`` with ``what`` once for this state file; True the first time."""
        with self._warn_lock:
            if what in self._warned:
                return False
            self._warned.add(what)
        log.warning("%s: rate-limit state %r %s", self.path, what, problem)
        return True

    @property
    def in_memory(self) -> bool:
        """True once the file could not be locked or written: limits stay in this process."""
        return self._in_memory

    def _give_up(self, what: str, exc: OSError) -> None:
        self._in_memory = True
        self.warn_once(what, f"cannot be {what} ({exc.strerror or exc}); "
                             "rate limits are kept in this process only")

    @contextmanager
    def transaction(self) -> Iterator[StateSnapshot]:
        """Hold the key's file lock and yield the state read under it; sections ``put`` in the
        block are written back (atomically) before the lock is released."""
        with ExitStack() as stack:
            locked = False
            if not self._in_memory:
                try:
                    stack.enter_context(key_state_lock(self.lock_file))
                    locked = True
                except OSError as exc:
                    self._give_up("locked", exc)
            snapshot = (self._read() if locked
                        else StateSnapshot(self, self.wall_clock(), {}, readable=True))
            yield snapshot
            if locked and snapshot.changed:
                self._write(snapshot.sections)

    def _read(self) -> StateSnapshot:
        now = self.wall_clock()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return StateSnapshot(self, now, {}, readable=True)
        except OSError:
            return StateSnapshot(self, now, {}, readable=False)
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return StateSnapshot(self, now, {}, readable=False)
        sections = {k: v for k, v in data.items() if k != "version"}
        return StateSnapshot(self, now, sections, readable=True)

    def _write(self, sections: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": STATE_VERSION, **sections}, fh)
            os.replace(tmp, self.path)
        except OSError as exc:
            self._give_up("written", exc)


def saved_number(section: Mapping[str, Any], name: str) -> float:
    """Field ``name`` of a saved section as a finite float; ``ValueError`` when it is not one
    (and ``KeyError`` when it is missing), which ``StateSnapshot.load`` reads as unreadable."""
    value = section[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(name)
    return float(value)


def elapsed_and_block(section: Mapping[str, Any], now: float) -> tuple[float, float]:
    """(wall seconds since ``section`` was written, never negative; the block it had left then)."""
    at, blocked_for = saved_number(section, "at"), saved_number(section, "blocked_for")
    if blocked_for < 0:
        raise ValueError("blocked_for")
    # A wall clock that went backwards credits no decay or refill: never less conservative.
    return max(0.0, now - at), min(blocked_for, MAX_PERSISTED_BLOCK_SECONDS)
