"""The simulator's deterministic trade tapes: one per pair, a pure function of seed, pair and
time, from which ``market.SimMarket`` derives Trades, OHLC, Ticker, Depth and Spread.

Tapes are made lazily, one UTC day at a time, from ``random.Random(hash(seed, pair, day))``
around a smooth price curve per asset; a day's trade count is a hash too, so trade ids (dense, per
pair, starting at 1 at ``SimConfig.origin``) are known without generating earlier days. Every
trade has a distinct nanosecond stamp: its microsecond time * 1000 + its rank among the trades
sharing that microsecond. A bounded amount of tape is cached.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from krakked.sim.config import SimConfig
from krakked.sim.pairs import ASSETS, SimPair

__all__ = ["DAY_S", "DAY_US", "LRU", "DayTape", "Tapes"]

DAY_US = 86_400_000_000
DAY_S = 86_400
_SHARED = 0.05  # share of trades that reuse the previous trade's timestamp
_NOISE = 0.00015  # per-trade price noise (relative, times the asset's volatility)
# an asset's price curve: log price = log level + sum of these sines (times its volatility)
_PERIODS = (43 * DAY_S, 11.3 * DAY_S, 2.7 * DAY_S, 14.6 * 3600, 2.9 * 3600, 2460.0, 430.0)
_AMPS = (0.12, 0.05, 0.025, 0.012, 0.005, 0.002, 0.0008)


class LRU:
    """A bounded mapping that forgets the least recently used entries beyond ``capacity``
    total weight."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def get(self, key: Any) -> Any:
        """The value kept for ``key`` (now the most recently used), or None."""
        hit = self._data.get(key)
        if hit is None:
            return None
        self._data.move_to_end(key)
        return hit[0]

    def put(self, key: Any, value: Any, weight: int) -> None:
        """Keep ``value`` for ``key``, forgetting the oldest entries beyond the capacity."""
        old = self._data.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self._data[key] = (value, weight)
        self.weight += weight
        while self.weight > self.capacity and len(self._data) > 1:
            _, (_, w) = self._data.popitem(last=False)
            self.weight -= w


@dataclass(slots=True)
class DayTape:
    """One pair's trades of one UTC day (all of them, also those after "now")."""

    first_id: int
    us: array  # microseconds since the epoch
    ns: array  # distinct nanosecond stamps (the Trades cursor)
    px: array  # price in units of 10**-pair_decimals
    vol: array  # volume in units of 10**-lot_decimals
    side: bytes  # b"b" / b"s" per trade
    kind: bytes  # b"m" / b"l" per trade


class Tapes:
    """Every pair's tape for ``config.seed``, and the clock it is shown up to. Thread-safe."""

    def __init__(self, config: SimConfig) -> None:
        self.seed = config.seed
        self._clock = config.clock
        self.origin_us = round(config.origin.timestamp() * 1_000_000)
        self.origin_day = self.origin_us // DAY_US
        self._assets = {a.id: a for a in ASSETS}
        self._lock = threading.RLock()
        self._cum: dict[str, list[int]] = {}
        self._curves: dict[str, Callable[[float], float]] = {}
        self._tapes = LRU(1_000_000)  # trades

    def digest(self, *parts: object) -> int:
        """A stable 64-bit hash of ``parts`` under the seed."""
        text = "|".join(str(p) for p in (self.seed, *parts))
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def curve(self, asset_id: str) -> Callable[[float], float]:
        """The asset's USD price level as a function of Unix time (seconds)."""
        curve = self._curves.get(asset_id)
        if curve is not None:
            return curve
        asset = self._assets[asset_id]
        level = math.log(asset.usd)
        if asset.vol == 0:
            value = asset.usd

            def curve(t: float) -> float:
                return value
        else:
            terms = tuple(
                (amp * asset.vol, period, 2 * math.pi / period,
                 (self.digest("phase", asset_id, k) % 1_000_000) / 1_000_000 * 2 * math.pi)
                for k, (amp, period) in enumerate(zip(_AMPS, _PERIODS, strict=True))
            )
            sin, exp = math.sin, math.exp

            def curve(t: float) -> float:
                s = level
                for amp, period, omega, phase in terms:
                    s += amp * sin((t % period) * omega + phase)
                return exp(s)
        self._curves[asset_id] = curve
        return curve

    def _fair(self, p: SimPair) -> Callable[[float], float]:
        base, quote = self.curve(p.base), self.curve(p.quote)
        if self._assets[p.quote].vol == 0:
            q = self._assets[p.quote].usd
            return base if q == 1.0 else (lambda t: base(t) / q)
        return lambda t: base(t) / quote(t)

    def price_at(self, p: SimPair, t: float) -> Decimal:
        """The tape's price level at Unix time ``t`` (no per-trade noise), rounded to the pair's
        ``pair_decimals``; trades near ``t`` scatter a few basis points around it."""
        ticks = max(1, round(self._fair(p)(t) * 10 ** p.pair_decimals))
        return Decimal(ticks).scaleb(-p.pair_decimals)

    def now_us(self) -> int:
        """The clock's "now" in Unix microseconds."""
        return round(self._clock() * 1_000_000)

    def _count(self, p: SimPair, d: int) -> int:
        u = (self.digest("n", p.id, d) % 1_000_003) / 1_000_003
        n = p.activity * (0.55 + 0.9 * u)
        if (d + 3) % 7 >= 5:  # Saturday, Sunday
            n *= 0.7
        if d == self.origin_day:
            n *= ((d + 1) * DAY_US - self.origin_us) / DAY_US
        return max(1, int(n))

    def _first_id(self, p: SimPair, d: int) -> int:
        cum = self._cum.setdefault(p.id, [0])
        while len(cum) <= d - self.origin_day:
            cum.append(cum[-1] + self._count(p, self.origin_day + len(cum) - 1))
        return cum[d - self.origin_day] + 1

    def day(self, p: SimPair, d: int) -> DayTape:
        """Day ``d``'s (days since the epoch) whole tape of ``p``."""
        key = (p.id, d)
        with self._lock:
            tape = self._tapes.get(key)
            if tape is None:
                tape = self._generate(p, d)
                self._tapes.put(key, tape, len(tape.us) + 50)
            return tape

    def _generate(self, p: SimPair, d: int) -> DayTape:
        n = self._count(p, d)
        start = max(d * DAY_US, self.origin_us)
        span = (d + 1) * DAY_US - start
        rng = random.Random(self.digest("day", p.id, d))
        rand = rng.random
        offs = sorted([int(rand() * span) for _ in range(n)])
        if start == self.origin_us:
            offs[0] = 0  # the tape opens at the origin
        fair = self._fair(p)
        scale = 10 ** p.pair_decimals
        lscale = 10 ** p.lot_decimals
        base_usd = self.curve(p.base)((start + span // 2) / 1_000_000)
        noise = _NOISE * max(self._assets[p.base].vol, self._assets[p.quote].vol, 0.05)
        us = array("q", bytes(8 * n))
        ns = array("q", bytes(8 * n))
        px = array("q", bytes(8 * n))
        vol = array("q", bytes(8 * n))
        side = bytearray(n)
        kind = bytearray(n)
        prev_t, rank, prev_px, s, k = -1, 0, 0, 98, 109
        for i in range(n):
            if i and rand() < _SHARED:
                offs[i] = offs[i - 1]
            t = start + offs[i]
            if t == prev_t:  # one taker filling the next maker: same side, same or worse price
                rank += 1
                step = 1 if rand() < 0.3 else 0
                price = prev_px + step if s == 98 else max(1, prev_px - step)
            else:
                rank = 0
                s = 98 if rand() < 0.5 else 115  # b / s
                k = 108 if rand() < 0.35 else 109  # l / m
                price = max(1, round(fair(t / 1_000_000) * (1 + noise * (2 * rand() - 1))
                                     * scale))
            notional = 10 ** (1.0 + 3.3 * rand() ** 2)
            us[i] = t
            ns[i] = t * 1000 + rank
            px[i] = price
            vol[i] = max(1, int(notional / base_usd * lscale))
            side[i] = s
            kind[i] = k
            prev_t, prev_px = t, price
        return DayTape(self._first_id(p, d), us, ns, px, vol, bytes(side), bytes(kind))

    def visible(self, p: SimPair, d: int, now_us: int) -> tuple[DayTape, int]:
        """Day ``d``'s tape and how many of its trades are at or before now."""
        tape = self.day(p, d)
        if (d + 1) * DAY_US <= now_us:
            return tape, len(tape.us)
        return tape, bisect_right(tape.us, now_us)

    def days(self, now_us: int) -> range:
        """The days from the origin's to ``now_us``'s."""
        return range(self.origin_day, now_us // DAY_US + 1)
