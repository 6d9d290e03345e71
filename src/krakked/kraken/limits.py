"""Rate limiters that mirror Kraken's own models, so krakked waits instead of being rejected.

Promises: a call made after ``acquire`` returns fits Kraken's model as documented (Spot's per-key
decaying call counter, per-IP and per-pair public pacing, Futures' 500-units-per-10-s budget and
its separate history token pool); waiting happens in the limiter (``sleep`` is injectable, as is
the ``clock``), every limiter is thread-safe, and none deadlocks on a cost larger than its budget.

Kraken's facts that are UNCONFIRMED, and therefore configurable rather than hard-wired:

* the cost of Spot history calls (Ledgers, TradesHistory, ClosedOrders, QueryLedgers): sources say
  +2 or +4; the default is the conservative 4 (``costs=`` / ``limits.spot_costs`` overrides it);
* the public endpoints' burst: Kraken only says "about 1 request/second per IP"; the default
  burst of 5 is our choice (``limits.public_rate_per_second`` / ``limits.public_burst``);
* the penalty Kraken applies after ``EAPI:Rate limit exceeded`` ("a few seconds, longer if you keep
  calling"): the limiter waits for the counter to decay from its maximum plus one extra unit;
* the cost of Futures history ``positions`` and public ``market/*`` calls (assumed 1) and of
  Futures endpoints missing from Kraken's table (assumed 10).

Kraken counts per key, not per process: with a ``LimiterState`` (``limit_state``) the Spot
counter and the Futures budgets are shared by every process on this machine using the key.

Kraken documents the models at
https://docs.kraken.com/api/docs/guides/spot-rest-ratelimits (the Spot counter),
https://support.kraken.com/articles/206548367-what-are-the-api-rate-limits- (Spot history costs,
public calls per IP) and https://docs.kraken.com/api/docs/guides/futures-rate-limits (Futures).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from krakked.errors import ConfigError, UsageError
from krakked.kraken.limit_state import Clock, LimiterState, elapsed_and_block, saved_number

__all__ = [
    "ACCOUNT_LOG_COSTS",
    "DEFAULT_SPOT_COSTS",
    "FUTURES_COSTS",
    "FUTURES_DEFAULT_COST",
    "HISTORY_COSTS",
    "PER_PAIR_ENDPOINTS",
    "PUBLIC_PENALTY_SECONDS",
    "SPOT_PENALTY_UNITS",
    "SPOT_TIERS",
    "FuturesLimiter",
    "LimiterState",
    "PublicLimiter",
    "SpotCounterLimiter",
    "TokenBucket",
    "derivatives_cost",
    "history_cost",
]

Sleep = Callable[[float], None]

# A wait shorter than this is float noise (a clock at Unix-epoch magnitude resolves ~0.2 µs),
# not a real wait: sleeping it might not even move the clock.
_EPSILON = 1e-6

# --- Spot private: the per-key call counter ---------------------------------------------------

SPOT_TIERS: dict[str, tuple[int, float]] = {
    "starter": (15, 0.33),
    "intermediate": (20, 0.5),
    "pro": (20, 1.0),
}
"""Tier -> (maximum counter, decay per second)."""

DEFAULT_SPOT_COSTS: dict[str, int] = {
    "Ledgers": 4,
    "TradesHistory": 4,
    "ClosedOrders": 4,
    "QueryLedgers": 4,
    # Trading calls are counted by Kraken's separate per-pair trading limiter, not this counter.
    "AddOrder": 0,
    "CancelOrder": 0,
}
"""Counter cost per Spot private endpoint; any endpoint not listed costs 1."""

SPOT_SAFETY_SECONDS = 0.02
"""Added to every real counter wait, so float rounding on either side never lands a call a
hair above Kraken's maximum (0.7 % of a Starter wait)."""

TOKEN_SAFETY_SECONDS = 0.02
"""Added to every real token-bucket wait (Futures budgets, public pacing), for the same reason
as ``SPOT_SAFETY_SECONDS``."""

SPOT_PENALTY_UNITS = 1.0
"""Units added above the maximum after ``EAPI:Rate limit exceeded`` (3 s more on Starter)."""


SPOT_SECTION = "spot_counter"
"""The Spot counter's section in a key's limits state file."""


class SpotCounterLimiter:
    """Kraken Spot's per-key REST call counter: each call adds its cost, the counter decays
    continuously at the tier's rate, and a call is made only when counter + cost <= maximum.

    Share one instance per API key; with ``state`` the counter is also shared with every other
    process using the key (see the module docstring). After the response arrives call
    ``settle(sent_at)``; after ``EAPI:Rate limit exceeded`` call ``penalize()``; after
    ``EService:Throttled: <ts>`` call ``block_for(ts - now)``.
    """

    def __init__(
        self,
        tier: str = "starter",
        costs: Mapping[str, int] | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        state: LimiterState | None = None,
    ) -> None:
        if tier not in SPOT_TIERS:
            raise ConfigError(f"unknown tier {tier!r}; expected one of {', '.join(SPOT_TIERS)}")
        self.tier = tier
        self.max_counter, self.decay_per_second = SPOT_TIERS[tier]
        self.costs: dict[str, int] = {**DEFAULT_SPOT_COSTS, **(costs or {})}
        self.clock = clock
        self.state = state
        self._sleep = sleep
        self._lock = threading.Lock()
        self._counter = 0.0
        self._stamp = clock()
        self._blocked_until = float("-inf")

    def now(self) -> float:
        """The limiter's clock; pass its value just before sending as ``settle(sent_at)``."""
        return self.clock()

    def cost(self, endpoint: str) -> int:
        """What ``endpoint`` (``Ledgers`` or ``/0/private/Ledgers``) adds to the counter."""
        return self.costs.get(endpoint.rsplit("/", 1)[-1], 1)

    def _decay(self) -> float:
        now = self.clock()
        if now > self._stamp:
            self._counter = max(0.0, self._counter - self.decay_per_second * (now - self._stamp))
            self._stamp = now
        return now

    def _wait(self, cost: float, now: float) -> float:
        # A cost above the maximum can never fit: it is allowed once the counter is back to 0.
        excess = self._counter + min(cost, self.max_counter) - self.max_counter
        wait = max(0.0, excess) / self.decay_per_second
        if wait > _EPSILON:
            wait += SPOT_SAFETY_SECONDS
        return max(wait, self._blocked_until - now)

    # --- the state shared with other processes -------------------------------------------------

    def _parse_saved(self, section: Mapping[str, Any], now: float) -> tuple[float, float]:
        """A saved section -> (counter now, block left now)."""
        counter = saved_number(section, "counter")
        if counter < 0:
            raise ValueError("counter")
        elapsed, blocked_for = elapsed_and_block(section, now)
        counter = min(counter, self.max_counter + SPOT_PENALTY_UNITS)
        return (max(0.0, counter - self.decay_per_second * elapsed),
                max(0.0, blocked_for - elapsed))

    def _spent(self) -> tuple[float, float]:
        return float(self.max_counter), 0.0

    @contextmanager
    def _synced(self) -> Iterator[float]:
        """Hold the lock (and the key's file lock when shared) with the counter decayed to now
        and merged with what other processes saved; yield now; save the result."""
        with self._lock:
            if self.state is None:
                yield self._decay()
                return
            with self.state.transaction() as snapshot:
                now = self._decay()
                saved = snapshot.load(SPOT_SECTION, self._parse_saved, self._spent)
                if saved is not None:
                    # Every process's calls are in the file; ours are too, unless the file was
                    # lost: the larger of the two is the counter Kraken may have.
                    self._counter = max(self._counter, saved[0])
                    self._blocked_until = max(self._blocked_until, now + saved[1])
                yield now
                # Saved every time: it also repairs a file that could not be read.
                snapshot.put(SPOT_SECTION, {
                    "counter": self._counter,
                    "at": snapshot.now,
                    "blocked_for": max(0.0, self._blocked_until - now),
                })

    # --- the limiter ---------------------------------------------------------------------------

    @property
    def counter(self) -> float:
        """The counter as Kraken would see it now (after decay)."""
        with self._synced():
            return self._counter

    def wait_time(self, cost: float) -> float:
        """Seconds until a call costing ``cost`` fits under the maximum (0 if it fits now)."""
        with self._synced() as now:
            return self._wait(cost, now)

    def acquire(self, endpoint: str) -> float:
        """Block until ``endpoint``'s call fits, count it, and return the seconds waited."""
        cost = self.cost(endpoint)
        if cost <= 0:
            return 0.0
        waited = 0.0
        while True:
            with self._synced() as now:
                wait = self._wait(cost, now)
                if wait <= _EPSILON:
                    self._counter += cost
                    return waited
            self._sleep(wait)
            waited += wait

    def settle(self, sent_at: float, cost: float | None = None) -> None:
        """Account for the request's flight time once its response is in.

        Kraken counted the call somewhere between ``sent_at`` and now, so the decay credited to
        it meanwhile is taken back (at most ``cost``, when given), never above the maximum.
        """
        with self._synced() as now:
            credit = self.decay_per_second * max(0.0, now - sent_at)
            if cost is not None:
                credit = min(credit, cost)
            self._counter = max(self._counter,
                                min(float(self.max_counter), self._counter + credit))

    def penalize(self) -> None:
        """Kraken said ``EAPI:Rate limit exceeded``: assume its counter is full, plus
        ``SPOT_PENALTY_UNITS``, so the next call waits for real decay."""
        with self._synced():
            self._counter = max(self._counter, self.max_counter + SPOT_PENALTY_UNITS)

    def block_for(self, seconds: float) -> None:
        """Forbid every call for ``seconds`` (``EService:Throttled: <ts>``)."""
        with self._synced() as now:
            self._blocked_until = max(self._blocked_until, now + seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for status output."""
        with self._synced() as now:
            return {
                "tier": self.tier,
                "max_counter": self.max_counter,
                "decay_per_second": self.decay_per_second,
                "counter": round(self._counter, 3),
                "wait_seconds_for_cost_1": round(self._wait(1, now), 3),
            }


# --- token buckets (public pacing, Futures) ---------------------------------------------------


class TokenBucket:
    """A bucket of ``capacity`` tokens refilled at ``refill_per_second``; starts full.

    A cost above the capacity is allowed once the bucket is full (the balance goes negative and
    later calls wait for it to refill), so no cost can deadlock. With ``state`` (and a
    ``section`` name) the bucket is shared with every process using the same state file.
    """

    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        state: LimiterState | None = None,
        section: str = "bucket",
    ) -> None:
        if capacity <= 0 or refill_per_second <= 0:
            raise ConfigError("a token bucket needs capacity > 0 and refill_per_second > 0")
        self.capacity = float(capacity)
        self.refill_per_second = float(refill_per_second)
        self.clock = clock
        self.state = state
        self.section = section
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = clock()
        self._blocked_until = float("-inf")

    def _refill(self) -> float:
        now = self.clock()
        start = max(self._stamp, self._blocked_until)  # nothing refills while blocked
        if now > start:
            self._tokens = min(self.capacity, self._tokens + self.refill_per_second * (now - start))
        self._stamp = max(self._stamp, now)
        return now

    def _wait(self, cost: float, now: float) -> float:
        start = max(now, self._blocked_until)
        deficit = min(cost, self.capacity) - self._tokens
        wait = (start - now) + max(0.0, deficit) / self.refill_per_second
        # Like the Spot counter: a real wait gets a hair of margin, so a client taking tokens a
        # few ms before Kraken does never runs ahead of Kraken's own bucket.
        return wait + TOKEN_SAFETY_SECONDS if wait > _EPSILON else wait

    # --- the state shared with other processes -------------------------------------------------

    def _parse_saved(self, section: Mapping[str, Any], now: float) -> tuple[float, float]:
        """A saved section -> (tokens now, block left now)."""
        tokens = min(self.capacity, max(-self.capacity, saved_number(section, "tokens")))
        elapsed, blocked_for = elapsed_and_block(section, now)
        refilled = self.refill_per_second * max(0.0, elapsed - blocked_for)
        return min(self.capacity, tokens + refilled), max(0.0, blocked_for - elapsed)

    @staticmethod
    def _spent() -> tuple[float, float]:
        return 0.0, 0.0

    @contextmanager
    def _synced(self) -> Iterator[float]:
        """Hold the lock (and the key's file lock when shared) with the bucket refilled to now
        and merged with what other processes saved; yield now; save the result."""
        with self._lock:
            if self.state is None:
                yield self._refill()
                return
            with self.state.transaction() as snapshot:
                now = self._refill()
                saved = snapshot.load(self.section, self._parse_saved, self._spent)
                if saved is not None:
                    # Every process's takings are in the file: the fewer tokens, the truer.
                    self._tokens = min(self._tokens, saved[0])
                    self._blocked_until = max(self._blocked_until, now + saved[1])
                yield now
                snapshot.put(self.section, {
                    "tokens": self._tokens,
                    "at": snapshot.now,
                    "blocked_for": max(0.0, self._blocked_until - now),
                })

    # --- the bucket ----------------------------------------------------------------------------

    @property
    def available(self) -> float:
        """Tokens available now (0 while blocked, negative after an oversized cost)."""
        with self._synced() as now:
            return 0.0 if now < self._blocked_until else self._tokens

    def wait_time(self, cost: float = 1) -> float:
        """Seconds until ``cost`` tokens can be taken (0 if now)."""
        with self._synced() as now:
            return self._wait(cost, now)

    def _try_take(self, cost: float) -> float:
        """Take ``cost`` and return 0 if it is there now, else take nothing and return the wait."""
        with self._synced() as now:
            wait = self._wait(cost, now)
            if wait <= _EPSILON:
                self._tokens -= cost
                return 0.0
            return wait

    def acquire(self, cost: float = 1) -> float:
        """Block until ``cost`` tokens are taken; return the seconds waited."""
        if cost <= 0:
            return 0.0
        waited = 0.0
        while (wait := self._try_take(cost)) > 0:
            self._sleep(wait)
            waited += wait
        return waited

    def block_for(self, seconds: float, cost: float = 0.0) -> None:
        """Refuse tokens until ``seconds`` from now (HTTP 429 ``rate-limit-reset``,
        ``EService:Throttled``), then allow one call of ``cost`` at once — Kraken's reset says
        when a same-cost request is accepted; refilling restarts after that."""
        with self._synced() as now:
            # The rejected call's tokens were already taken; Kraken will accept it again at the
            # reset, so exactly its cost is there then.
            self._tokens = max(0.0, min(cost, self.capacity))
            self._blocked_until = max(self._blocked_until, now + seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for status output."""
        with self._synced() as now:
            return {
                "capacity": self.capacity,
                "refill_per_second": self.refill_per_second,
                "available": round(0.0 if now < self._blocked_until else self._tokens, 3),
                "blocked_seconds": round(max(0.0, self._blocked_until - now), 3),
            }


# --- Spot public: per IP, plus per pair for Trades and OHLC ----------------------------------

PER_PAIR_ENDPOINTS = frozenset({"Trades", "OHLC"})
"""Spot public endpoints Kraken also limits per pair."""

PUBLIC_PENALTY_SECONDS = 5.0
"""Default pause after ``EGeneral:Too many requests`` (Kraken states none; UNCONFIRMED)."""


class PublicLimiter:
    """Paces Spot public calls per IP (``rate_per_second``, bursts of ``burst``), and ``Trades``
    and ``OHLC`` additionally per pair (same rate unless ``pair_rate_per_second`` says otherwise).
    Share one instance per process (per egress IP)."""

    def __init__(
        self,
        rate_per_second: float = 1.0,
        burst: int = 5,
        *,
        pair_rate_per_second: float | None = None,
        pair_burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.ip = TokenBucket(burst, rate_per_second, clock=clock, sleep=sleep)
        self._pair_rate = pair_rate_per_second or rate_per_second
        self._pair_burst = pair_burst or burst
        self._pairs: dict[tuple[str, str], TokenBucket] = {}

    def _pair_bucket(self, endpoint: str, pair: str | None) -> TokenBucket | None:
        if pair is None or endpoint not in PER_PAIR_ENDPOINTS:
            return None
        bucket = self._pairs.get((endpoint, pair))
        if bucket is None:
            bucket = TokenBucket(
                self._pair_burst, self._pair_rate, clock=self.clock, sleep=self._sleep
            )
            self._pairs[(endpoint, pair)] = bucket
        return bucket

    def acquire(self, endpoint: str, pair: str | None = None) -> float:
        """Block until a call to ``endpoint`` (for ``pair``) fits both the IP and the pair pace;
        return the seconds waited."""
        endpoint = endpoint.rsplit("/", 1)[-1]
        waited = 0.0
        while True:
            with self._lock:
                bucket = self._pair_bucket(endpoint, pair)
                wait = max(self.ip.wait_time(1), bucket.wait_time(1) if bucket else 0.0)
                if wait <= _EPSILON:
                    # Both fit now and only this limiter (under its lock) takes from them.
                    self.ip._try_take(1)
                    if bucket is not None:
                        bucket._try_take(1)
                    return waited
            self._sleep(wait)
            waited += wait

    def penalize(self, seconds: float = PUBLIC_PENALTY_SECONDS) -> None:
        """Kraken said ``EGeneral:Too many requests``: stop all public calls for ``seconds``."""
        self.ip.block_for(seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for status output."""
        with self._lock:
            pairs = len(self._pairs)
        return {"ip": self.ip.snapshot(), "pairs_tracked": pairs}


# --- Futures: the /derivatives budget and the history pool ---------------------------------

FUTURES_COSTS: dict[str, int] = {
    # public
    "tickers": 0,
    "instruments": 0,
    "orderbook": 0,
    "history": 0,
    "feeschedules": 0,
    "historicalfundingrates": 0,
    # private
    "accounts": 2,
    "openpositions": 2,
    "openorders": 2,
    "fills": 2,
    "fills?lastFillTime": 25,
    "sendorder": 10,
    "editorder": 10,
    "cancelorder": 10,
    "batchorder": 9,  # + batch size: pass cost= explicitly
    "cancelallorders": 25,
    "cancelallordersafter": 25,
    "orders/status": 1,
    "unwindqueue": 200,
    "withdrawal": 100,
    "leveragepreferences": 2,
    "PUT leveragepreferences": 10,
    "pnlpreferences": 2,
    "PUT pnlpreferences": 10,
    "transfer": 10,
    "transfer/subaccount": 10,
    "subaccount": 2,  # subaccount/{uid}/trading-enabled
    "self-trade-strategy": 2,
}
"""Cost units per ``/derivatives/api/v3`` endpoint (``"PUT name"`` when the method changes it)."""

FUTURES_DEFAULT_COST = 10
"""Cost assumed for a ``/derivatives`` endpoint missing from Kraken's table (UNCONFIRMED)."""

HISTORY_COSTS: dict[str, int] = {
    "executions": 1,
    "orders": 1,
    "triggers": 1,
    "positions": 1,  # UNCONFIRMED
    "accountlogcsv": 6,
    "market": 1,  # public market/{tradeable}/... (UNCONFIRMED)
}
"""Tokens per Futures history endpoint; ``account-log`` is priced by ``count``."""

ACCOUNT_LOG_COSTS: tuple[tuple[int, int], ...] = (
    (25, 1),
    (50, 2),
    (1000, 3),
    (5000, 6),
    (100_000, 10),
)
"""(largest ``count``, tokens) for ``account-log``; the default count is 500."""
ACCOUNT_LOG_DEFAULT_COUNT = 500


def _endpoint_name(endpoint: str, markers: tuple[str, ...]) -> str:
    """``/derivatives/api/v3/tickers/PI_XBTUSD`` -> ``tickers/PI_XBTUSD`` (after a marker)."""
    path = endpoint.split("?", 1)[0]
    for marker in markers:
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return path.strip("/")


def derivatives_cost(
    endpoint: str, *, method: str = "GET", params: Mapping[str, Any] | None = None
) -> int:
    """Cost units of a ``/derivatives`` call (``fills`` with ``lastFillTime`` costs 25)."""
    name = _endpoint_name(endpoint, ("/api/v3/", "/api/v4/"))
    if name == "fills" and params and params.get("lastFillTime") is not None:
        name = "fills?lastFillTime"
    for candidate in (f"{method.upper()} {name}", name, name.split("/", 1)[0]):
        if candidate in FUTURES_COSTS:
            return FUTURES_COSTS[candidate]
    return FUTURES_DEFAULT_COST


def history_cost(endpoint: str, count: int | None = None) -> int:
    """Tokens a Futures history call takes from the history pool (``account-log`` by ``count``)."""
    name = _endpoint_name(endpoint, ("/history/v2/", "/history/v3/"))
    if name == "account-log":
        n = ACCOUNT_LOG_DEFAULT_COUNT if count is None else int(count)
        if n < 1:
            raise UsageError(f"futures:account-log: count must be >= 1, got {n}")
        return next(
            (cost for limit, cost in ACCOUNT_LOG_COSTS if n <= limit), ACCOUNT_LOG_COSTS[-1][1]
        )
    return HISTORY_COSTS.get(name, HISTORY_COSTS.get(name.split("/", 1)[0], 1))


FUTURES_DERIVATIVES_SECTION = "futures_derivatives"
FUTURES_HISTORY_SECTION = "futures_history"
"""The Futures budgets' sections in a key's limits state file."""


class FuturesLimiter:
    """Kraken Futures' two budgets for one key: 500 cost units per 10 s for ``/derivatives``
    endpoints, and a separate pool of 100 history tokens refilling at 100 per 10 minutes.
    With ``state`` both are shared with every process using the key."""

    def __init__(
        self,
        *,
        derivatives_capacity: float = 500,
        derivatives_per_second: float = 50,
        history_capacity: float = 100,
        history_per_second: float = 100 / 600,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        state: LimiterState | None = None,
    ) -> None:
        self.derivatives = TokenBucket(
            derivatives_capacity, derivatives_per_second, clock=clock, sleep=sleep,
            state=state, section=FUTURES_DERIVATIVES_SECTION,
        )
        self.history = TokenBucket(history_capacity, history_per_second, clock=clock, sleep=sleep,
                                   state=state, section=FUTURES_HISTORY_SECTION)

    def acquire_derivatives(
        self,
        endpoint: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        cost: int | None = None,
    ) -> float:
        """Block until the ``/derivatives`` call fits the budget; return the seconds waited.
        ``cost`` overrides the table (e.g. batchorder: 9 + batch size)."""
        units = derivatives_cost(endpoint, method=method, params=params) if cost is None else cost
        return self.derivatives.acquire(units)

    def acquire_history(self, endpoint: str, count: int | None = None) -> float:
        """Block until the history pool has the call's tokens; return the seconds waited."""
        return self.history.acquire(history_cost(endpoint, count))

    def block_history(self, seconds: float, endpoint: str | None = None,
                      count: int | None = None) -> None:
        """History answered HTTP 429 with ``rate-limit-reset: seconds``: the same call is
        accepted again after exactly that long."""
        cost = history_cost(endpoint, count) if endpoint else 1
        self.history.block_for(seconds, cost)

    def block_derivatives(self, seconds: float) -> None:
        """``/derivatives`` answered ``apiLimitExceeded``: pause (10 s lets the budget refill)."""
        self.derivatives.block_for(seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for status output."""
        return {"derivatives": self.derivatives.snapshot(), "history": self.history.snapshot()}
