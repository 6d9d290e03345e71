"""Kraken's rate-limit models as Kraken enforces them (server side), with an injectable clock.

Written independently of ``krakked.kraken.limits`` (the client's mirror of the same models), so
tests of the client against the simulator check one against the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["TIERS", "Bucket", "SpotCounter"]

TIERS = {"starter": (15.0, 0.33), "intermediate": (20.0, 0.5), "pro": (20.0, 1.0)}


class SpotCounter:
    """Per-key call counter: +cost per call, decaying continuously; over the max -> rejected."""

    def __init__(self, tier: str, clock: Callable[[], float]) -> None:
        self.max, self.decay = TIERS[tier]
        self.clock = clock
        self._lock = threading.Lock()
        self._value: dict[str, tuple[float, float]] = {}
        self.peak = 0.0
        self.rejections = 0

    def value(self, key: str) -> float:
        value, stamp = self._value.get(key, (0.0, self.clock()))
        return max(0.0, value - (self.clock() - stamp) * self.decay)

    def charge(self, key: str, cost: float) -> bool:
        """Count a call; False (and nothing counted) if it would take the counter over max."""
        with self._lock:
            now = self.clock()
            current = self.value(key)
            if current + cost > self.max:
                self.rejections += 1
                # Kraken keeps a key limited while it keeps calling: the attempt still counts.
                self._value[key] = (min(current + 1.0, self.max + 1.0), now)
                return False
            self._value[key] = (current + cost, now)
            self.peak = max(self.peak, current + cost)
            return True


class Bucket:
    """A token bucket (per IP for Spot public calls; per key for Futures budgets)."""

    def __init__(self, capacity: float, refill_per_second: float,
                 clock: Callable[[], float]) -> None:
        self.capacity = capacity
        self.refill = refill_per_second
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}
        self.rejections = 0

    def _level(self, who: str, now: float) -> float:
        tokens, stamp = self._state.get(who, (self.capacity, now))
        return min(self.capacity, tokens + (now - stamp) * self.refill)

    def take(self, who: str, cost: float) -> float | None:
        """Take ``cost`` tokens; None if done, else the seconds until a same-cost call fits."""
        with self._lock:
            now = self.clock()
            tokens = self._level(who, now)
            if tokens + 1e-9 >= min(cost, self.capacity):
                self._state[who] = (tokens - cost, now)
                return None
            self._state[who] = (tokens, now)
            self.rejections += 1
            return (min(cost, self.capacity) - tokens) / self.refill
