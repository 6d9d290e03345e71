"""Rate limiters against Kraken's models, on a fake clock whose sleep advances it (no waits)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krakked.errors import ConfigError, UsageError
from krakked.kraken.limits import (
    FUTURES_COSTS,
    SPOT_PENALTY_UNITS,
    SPOT_SAFETY_SECONDS,
    SPOT_TIERS,
    FuturesLimiter,
    PublicLimiter,
    SpotCounterLimiter,
    TokenBucket,
    derivatives_cost,
    history_cost,
)
from krakked.kraken.limits import (
    TOKEN_SAFETY_SECONDS as SAFE,
)


class FakeClock:
    """A monotonic clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a limiter never sleeps for nothing"
        self.advance(seconds)
        time.sleep(0)  # let other threads run, as a real sleep would

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


class KrakenCounter:
    """Kraken's side of the Spot model: decays continuously, rejects when counter + cost > max."""

    def __init__(self, tier: str, clock: FakeClock) -> None:
        self.max, self.decay = SPOT_TIERS[tier]
        self.clock = clock
        self.counter = 0.0
        self.stamp = clock()

    def call(self, cost: int) -> None:
        now = self.clock()
        self.counter = max(0.0, self.counter - self.decay * (now - self.stamp))
        self.stamp = now
        if self.counter + cost > self.max + 1e-6:
            raise AssertionError(f"EAPI:Rate limit exceeded (counter {self.counter:.3f} + {cost})")
        self.counter += cost


def spot(tier: str = "starter", **kwargs) -> tuple[SpotCounterLimiter, FakeClock]:
    clock = FakeClock()
    return SpotCounterLimiter(tier, clock=clock, sleep=clock.sleep, **kwargs), clock


# --- Spot private counter --------------------------------------------------------------------


def test_fifteen_starter_calls_pass_without_waiting() -> None:
    limiter, _ = spot()
    assert [limiter.acquire("Balance") for _ in range(15)] == [0.0] * 15
    assert limiter.counter == pytest.approx(15)


def test_sixteenth_starter_call_waits_three_seconds() -> None:
    limiter, clock = spot()
    for _ in range(15):
        limiter.acquire("Balance")
    start = clock()
    waited = limiter.acquire("Balance")
    assert waited == pytest.approx(1 / 0.33, rel=0.01)
    assert waited == pytest.approx(3.03, rel=0.01)
    assert clock() - start == pytest.approx(waited)


@pytest.mark.parametrize(("tier", "burst", "wait"), [("intermediate", 20, 2.0), ("pro", 20, 1.0)])
def test_higher_tiers_allow_twenty_then_wait_for_one_unit_of_decay(
    tier: str, burst: int, wait: float
) -> None:
    limiter, _ = spot(tier)
    assert sum(limiter.acquire("OpenOrders") for _ in range(burst)) == 0.0
    assert limiter.acquire("OpenOrders") == pytest.approx(wait + SPOT_SAFETY_SECONDS)


def test_unknown_tier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tier"):
        SpotCounterLimiter("whale")


def test_history_endpoints_cost_four_and_trading_endpoints_cost_nothing() -> None:
    limiter, _ = spot()
    assert limiter.cost("Ledgers") == limiter.cost("/0/private/Ledgers") == 4
    assert limiter.cost("TradesHistory") == limiter.cost("ClosedOrders") == 4
    assert limiter.cost("Balance") == 1
    assert [limiter.acquire("Ledgers") for _ in range(3)] == [0.0] * 3  # counter 12
    assert limiter.acquire("AddOrder") == 0.0
    assert limiter.counter == pytest.approx(12)
    # 12 + 4 > 15: one unit must decay first.
    assert limiter.acquire("Ledgers") == pytest.approx(1 / 0.33, rel=0.01)


def test_configured_costs_override_the_defaults() -> None:
    limiter, _ = spot(costs={"Ledgers": 2, "Balance": 3})
    assert (limiter.cost("Ledgers"), limiter.cost("Balance"), limiter.cost("QueryLedgers")) == (
        2,
        3,
        4,
    )


def test_a_cost_above_the_maximum_waits_for_an_empty_counter_instead_of_forever() -> None:
    limiter, _ = spot(costs={"Export": 40})
    limiter.acquire("Balance")
    assert limiter.acquire("Export") == pytest.approx(1 / 0.33, rel=0.01)


def test_settle_takes_back_the_decay_credited_while_the_request_was_in_flight() -> None:
    limiter, clock = spot()
    for _ in range(14):
        limiter.acquire("Balance")
    sent_at = limiter.now()
    limiter.acquire("Balance")
    clock.advance(2.0)  # the response takes 2 s: Kraken may have counted the call just now
    assert limiter.counter == pytest.approx(15 - 0.66)
    limiter.settle(sent_at)
    assert limiter.counter == pytest.approx(15)
    assert limiter.acquire("Balance") == pytest.approx(1 / 0.33, rel=0.01)


def test_settle_never_credits_more_than_the_calls_cost_or_above_the_maximum() -> None:
    limiter, clock = spot()
    sent_at = limiter.now()
    limiter.acquire("Balance")
    clock.advance(60.0)  # 19.8 units of decay credited
    limiter.settle(sent_at, cost=1)
    assert limiter.counter == pytest.approx(1)
    limiter.settle(sent_at)  # uncapped credit is still capped at the maximum
    assert limiter.counter == pytest.approx(15)


def test_settle_never_lowers_a_counter_penalized_above_the_maximum() -> None:
    limiter, clock = spot()
    sent_at = limiter.now()
    limiter.acquire("Balance")
    clock.advance(1.0)
    limiter.penalize()  # another client of the key was told "EAPI:Rate limit exceeded"
    limiter.settle(sent_at)
    assert limiter.counter == pytest.approx(15 + SPOT_PENALTY_UNITS)


def test_penalize_after_rate_limit_exceeded_forces_a_real_wait() -> None:
    limiter, _ = spot()
    limiter.penalize()
    assert limiter.counter == pytest.approx(16)
    assert limiter.wait_time(1) == pytest.approx(2 / 0.33 + SPOT_SAFETY_SECONDS)
    assert limiter.acquire("Balance") == pytest.approx(2 / 0.33 + SPOT_SAFETY_SECONDS)


def test_block_for_holds_every_call_until_the_throttle_ends() -> None:
    limiter, _ = spot()
    limiter.block_for(7.5)
    assert limiter.acquire("Balance") == pytest.approx(7.5)
    assert limiter.acquire("Balance") == 0.0


def test_starter_pace_is_exactly_the_decay_rate_not_slower() -> None:
    limiter, clock = spot()
    start = clock()
    for _ in range(60):
        limiter.acquire("Balance")
    assert clock() - start == pytest.approx((60 - 15) / 0.33, rel=0.01)


@settings(max_examples=80, deadline=None)
@given(
    tier=st.sampled_from(sorted(SPOT_TIERS)),
    calls=st.lists(
        st.tuples(
            st.sampled_from(["Balance", "Ledgers", "OpenOrders", "TradesHistory"]),
            st.floats(min_value=0.0, max_value=3.0),  # request latency
            st.floats(min_value=0.0, max_value=1.0),  # where in the flight Kraken counts it
            st.floats(min_value=0.0, max_value=5.0),  # idle time before the next call
        ),
        min_size=60,
        max_size=60,
    ),
)
def test_simulated_kraken_never_rejects_a_call_made_through_the_limiter(
    tier: str, calls: list[tuple[str, float, float, float]]
) -> None:
    limiter, clock = spot(tier)
    kraken = KrakenCounter(tier, clock)
    for endpoint, latency, counted_at, idle in calls:
        limiter.acquire(endpoint)
        sent_at = limiter.now()
        clock.advance(latency * counted_at)
        kraken.call(limiter.cost(endpoint))
        clock.advance(latency * (1 - counted_at))
        limiter.settle(sent_at, cost=limiter.cost(endpoint))
        if idle:
            clock.advance(idle)


def test_snapshot_reports_tier_counter_and_wait() -> None:
    limiter, _ = spot()
    for _ in range(15):
        limiter.acquire("Balance")
    snap = limiter.snapshot()
    assert snap["tier"] == "starter" and snap["max_counter"] == 15
    assert snap["counter"] == pytest.approx(15)
    assert snap["wait_seconds_for_cost_1"] == pytest.approx(3.03 + SPOT_SAFETY_SECONDS, abs=0.01)


def test_threads_acquiring_together_never_push_the_counter_past_the_maximum() -> None:
    limiter, clock = spot()
    start = clock()
    over: list[float] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for i in range(30):
            limiter.acquire("Ledgers" if i % 5 == 0 else "Balance")
            if (value := limiter.counter) > 15 + 1e-9:
                over.append(value)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert over == []
    total_cost = 8 * (6 * 4 + 24 * 1)
    # Nothing was let through that the decay since the start did not pay for.
    assert total_cost <= 15 + 0.33 * (clock() - start) + 1e-6


# --- token buckets ---------------------------------------------------------------------------


def bucket(capacity: float, rate: float) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(capacity, rate, clock=clock, sleep=clock.sleep), clock


def test_token_bucket_allows_its_capacity_then_paces_at_the_refill_rate() -> None:
    b, _ = bucket(5, 2.0)
    assert [b.acquire() for _ in range(5)] == [0.0] * 5
    assert b.wait_time(1) == pytest.approx(0.5 + SAFE)
    assert b.acquire() == pytest.approx(0.5 + SAFE)


def test_token_bucket_refills_up_to_its_capacity_only() -> None:
    b, clock = bucket(5, 1.0)
    for _ in range(5):
        b.acquire()
    clock.advance(2.0)
    assert b.available == pytest.approx(2)
    clock.advance(100.0)
    assert b.available == pytest.approx(5)


def test_block_for_empties_the_bucket_and_refuses_tokens_until_the_reset() -> None:
    b, clock = bucket(5, 1.0)
    b.block_for(30.0)
    assert b.available == 0.0
    clock.advance(29.0)
    assert b.available == 0.0
    # 1 s left of the block + 1 s to refill a token
    assert b.acquire() == pytest.approx(2.0 + SAFE)


def test_a_cost_larger_than_the_capacity_goes_through_when_full_instead_of_deadlocking() -> None:
    b, _ = bucket(5, 1.0)
    assert b.acquire(8) == 0.0
    assert b.available == pytest.approx(-3)
    assert b.acquire(1) == pytest.approx(4.0 + SAFE)


def test_token_bucket_threads_never_take_more_than_capacity_plus_refill() -> None:
    b, clock = bucket(10, 2.0)
    start = clock()

    def work() -> None:
        for _ in range(25):
            b.acquire()

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    taken = 8 * 25
    assert 10 + 2.0 * (clock() - start) + 1e-6 >= taken
    assert b.available >= -1e-9


# --- Spot public -----------------------------------------------------------------------------


def public(**kwargs) -> tuple[PublicLimiter, FakeClock]:
    clock = FakeClock()
    return PublicLimiter(clock=clock, sleep=clock.sleep, **kwargs), clock


def test_public_calls_burst_then_pace_at_one_per_second() -> None:
    limiter, _ = public()
    assert [limiter.acquire("Ticker") for _ in range(5)] == [0.0] * 5
    assert limiter.acquire("Ticker") == pytest.approx(1.0 + SAFE)


def test_trades_and_ohlc_are_also_paced_per_pair() -> None:
    limiter, _ = public(rate_per_second=10, burst=10, pair_rate_per_second=0.5, pair_burst=2)
    assert [limiter.acquire("Trades", "XBTUSD") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("Trades", "ETHUSD") == 0.0  # another pair has its own budget
    assert limiter.acquire("OHLC", "XBTUSD") == 0.0  # so does another endpoint
    assert limiter.acquire("Ticker", "XBTUSD") == 0.0  # not limited per pair
    assert limiter.acquire("/0/public/Trades", "XBTUSD") == pytest.approx(2.0 + SAFE)


def test_too_many_requests_pauses_every_public_call() -> None:
    limiter, _ = public()
    limiter.penalize(10.0)
    # the block, then one token's refill
    assert limiter.acquire("Time") == pytest.approx(11.0 + SAFE)


# --- Futures ---------------------------------------------------------------------------------


def futures() -> tuple[FuturesLimiter, FakeClock]:
    clock = FakeClock()
    return FuturesLimiter(clock=clock, sleep=clock.sleep), clock


def test_futures_history_pool_allows_a_hundred_calls_then_one_per_six_seconds() -> None:
    limiter, _ = futures()
    assert sum(limiter.acquire_history("/api/history/v3/executions") for _ in range(100)) == 0.0
    assert limiter.acquire_history("executions") == pytest.approx(6.0 + SAFE)


@pytest.mark.parametrize(
    ("count", "cost"),
    [
        (1, 1),
        (25, 1),
        (26, 2),
        (50, 2),
        (51, 3),
        (None, 3),
        (500, 3),
        (1000, 3),
        (1001, 6),
        (5000, 6),
        (5001, 10),
        (100_000, 10),
    ],
)
def test_account_log_costs_follow_krakens_count_table(count: int | None, cost: int) -> None:
    assert history_cost("/api/history/v3/account-log", count) == cost
    assert history_cost("account-log", count) == cost


def test_other_history_endpoints_cost_their_table_value() -> None:
    assert history_cost("/api/history/v2/executions") == 1
    assert history_cost("orders") == history_cost("triggers") == history_cost("positions") == 1
    assert history_cost("/api/history/v2/accountlogcsv") == 6
    with pytest.raises(UsageError, match="count"):
        history_cost("account-log", 0)


def test_derivatives_costs_follow_krakens_table() -> None:
    assert derivatives_cost("/derivatives/api/v3/accounts") == FUTURES_COSTS["accounts"] == 2
    assert derivatives_cost("openpositions") == derivatives_cost("fills") == 2
    assert derivatives_cost("fills", params={"lastFillTime": "2024-01-01T00:00:00Z"}) == 25
    assert derivatives_cost("/derivatives/api/v3/sendorder", method="POST") == 10
    assert derivatives_cost("/derivatives/api/v3/tickers/PI_XBTUSD") == 0
    assert derivatives_cost("instruments") == 0
    assert derivatives_cost("leveragepreferences") == 2
    assert derivatives_cost("leveragepreferences", method="PUT") == 10
    assert derivatives_cost("orders/status") == 1
    assert derivatives_cost("something-new") == 10  # unknown: conservative


def test_derivatives_budget_is_500_units_per_ten_seconds_and_public_calls_are_free() -> None:
    limiter, _ = futures()
    assert sum(limiter.acquire_derivatives("sendorder") for _ in range(50)) == 0.0
    assert limiter.acquire_derivatives("tickers") == 0.0
    assert limiter.acquire_derivatives("accounts") == pytest.approx(2 / 50 + SAFE)
    # the previous wait's margin refilled one unit; this wait's margin is added back
    assert limiter.acquire_derivatives("batchorder", cost=12) == pytest.approx(12 / 50)


def test_history_429_and_api_limit_exceeded_block_their_own_pool_only() -> None:
    limiter, _ = futures()
    limiter.block_history(30.0)
    assert limiter.acquire_derivatives("accounts") == 0.0
    # reset = accepted then
    assert limiter.acquire_history("executions") == pytest.approx(30.0 + SAFE)
    limiter.block_derivatives(10.0)
    assert limiter.acquire_derivatives("accounts") == pytest.approx(10.0 + 2 / 50 + SAFE)
    snap = limiter.snapshot()
    assert set(snap) == {"derivatives", "history"}
