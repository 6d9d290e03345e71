"""Kraken counts per key, not per process: the Spot counter and the Futures budgets persisted
beside the key's nonce state, so consecutive and concurrent processes share one budget."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from krakked.kraken.auth import key_state_lock, key_state_lock_file, nonce_state_file
from krakked.kraken.limit_state import LimiterState
from krakked.kraken.limits import (
    SPOT_PENALTY_UNITS,
    SPOT_SAFETY_SECONDS,
    SPOT_TIERS,
    FuturesLimiter,
    SpotCounterLimiter,
)
from krakked.sim import SimClock

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEY = "KEYabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXY"


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


def state_for(directory: Path, clock: SimClock, key: str = KEY) -> LimiterState:
    return LimiterState.for_key(directory, key, wall_clock=clock.now)


def process_limiter(directory: Path, clock: SimClock, tier: str = "starter",
                    key: str = KEY) -> SpotCounterLimiter:
    """A Spot counter as a new process builds it: empty memory, the key's state file on disk."""
    return SpotCounterLimiter(tier, clock=clock.monotonic, sleep=clock.sleep,
                              state=state_for(directory, clock, key))


# --- consecutive processes ----------------------------------------------------------------------


def test_a_new_process_starts_from_the_counter_decayed_over_the_wall_time_between(
    tmp_path: Path, clock: SimClock
) -> None:
    first = process_limiter(tmp_path, clock)
    for _ in range(15):
        first.acquire("Balance")
    clock.advance(30.0)  # 9.9 units decay while no process runs
    later = process_limiter(tmp_path, clock)
    assert later.counter == pytest.approx(15 - 9.9)
    clock.advance(60.0)
    assert process_limiter(tmp_path, clock).counter == 0.0


def test_kraken_rate_limit_penalty_carries_over_to_the_next_process(
    tmp_path: Path, clock: SimClock
) -> None:
    process_limiter(tmp_path, clock).penalize()
    later = process_limiter(tmp_path, clock)
    assert later.counter == pytest.approx(15 + SPOT_PENALTY_UNITS)
    assert later.acquire("Balance") == pytest.approx(2 / 0.33 + SPOT_SAFETY_SECONDS)


def test_a_throttle_block_carries_over_for_the_time_it_has_left(
    tmp_path: Path, clock: SimClock
) -> None:
    process_limiter(tmp_path, clock).block_for(10.0)
    clock.advance(4.0)
    assert process_limiter(tmp_path, clock).acquire("Balance") == pytest.approx(6.0)


def test_a_wall_clock_gone_back_credits_no_decay(tmp_path: Path) -> None:
    wall = SimClock(NOW)
    mono = SimClock(5_000.0)
    first = SpotCounterLimiter("starter", clock=mono.monotonic, sleep=mono.sleep,
                               state=LimiterState.for_key(tmp_path, KEY, wall_clock=wall.now))
    for _ in range(15):
        first.acquire("Balance")
    wall.advance(-3600.0)  # NTP stepped the clock back an hour
    later = SpotCounterLimiter("starter", clock=mono.monotonic, sleep=mono.sleep,
                               state=LimiterState.for_key(tmp_path, KEY, wall_clock=wall.now))
    assert later.counter == pytest.approx(15)
    # ...and the block of a throttle saved before the step back is not stretched by it.
    later.block_for(5.0)
    wall.advance(-3600.0)
    assert SpotCounterLimiter(
        "starter", clock=mono.monotonic, sleep=mono.sleep,
        state=LimiterState.for_key(tmp_path, KEY, wall_clock=wall.now),
    ).wait_time(0) == pytest.approx(5.0)


def test_keys_do_not_share_a_counter(tmp_path: Path, clock: SimClock) -> None:
    for _ in range(15):
        process_limiter(tmp_path, clock, key=KEY).acquire("Balance")
    assert process_limiter(tmp_path, clock, key=KEY + "2").counter == 0.0


# --- concurrent processes -----------------------------------------------------------------------


class KrakenCounter:
    """Kraken's side: decays continuously, rejects when counter + cost > max."""

    def __init__(self, clock: SimClock) -> None:
        self.max, self.decay = SPOT_TIERS["starter"]
        self.clock = clock
        self.counter, self.stamp = 0.0, clock.monotonic()
        self.rejections = 0
        self._lock = threading.Lock()

    def call(self, cost: int) -> None:
        with self._lock:
            now = self.clock.monotonic()
            self.counter = max(0.0, self.counter - self.decay * (now - self.stamp))
            self.stamp = now
            if self.counter + cost > self.max + 1e-6:
                self.rejections += 1
            else:
                self.counter += cost


class LockedClock(SimClock):
    """A SimClock several threads may sleep on at once."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds
        time.sleep(0)

    sleep = advance


def test_two_processes_spending_at_once_never_overspend_the_keys_counter(
    tmp_path: Path
) -> None:
    clock = LockedClock(NOW)
    kraken = KrakenCounter(clock)
    # Four limiters with separate memory (four processes), each with its own file descriptor
    # on the lock, so they exclude each other exactly as processes do.
    limiters = [process_limiter(tmp_path, clock) for _ in range(4)]
    barrier = threading.Barrier(len(limiters))

    def work(limiter: SpotCounterLimiter) -> None:
        barrier.wait()
        for i in range(12):
            endpoint = "Ledgers" if i % 4 == 0 else "Balance"
            limiter.acquire(endpoint)
            kraken.call(limiter.cost(endpoint))

    workers = [threading.Thread(target=work, args=(lim,)) for lim in limiters]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert kraken.rejections == 0


def test_the_counter_waits_while_the_keys_state_lock_is_held(tmp_path: Path,
                                                              clock: SimClock) -> None:
    limiter = process_limiter(tmp_path, clock)
    done = threading.Event()
    # What a NonceSource of this key holds while it writes its nonce:
    with key_state_lock(key_state_lock_file(nonce_state_file(tmp_path, KEY))):
        thread = threading.Thread(target=lambda: (limiter.acquire("Balance"), done.set()))
        thread.start()
        assert not done.wait(0.3)
    thread.join(5)
    assert done.is_set()


# --- a damaged or unusable state file -----------------------------------------------------------


@pytest.mark.parametrize("content", [
    b"{not json",
    b"\xff\xfe",
    b"[]",
    b'{"spot_counter": {"counter": 3, "at": 1, "blocked_for": 0}}',  # no version: old format
    b'{"version": 99, "spot_counter": {"counter": 3, "at": 1, "blocked_for": 0}}',
    b'{"version": 1, "spot_counter": "full"}',
    b'{"version": 1, "spot_counter": {"counter": "3", "at": 1, "blocked_for": 0}}',
    b'{"version": 1, "spot_counter": {"counter": -1, "at": 1, "blocked_for": 0}}',
    b'{"version": 1, "spot_counter": {"counter": NaN, "at": 1, "blocked_for": 0}}',
    b'{"version": 1, "spot_counter": {"counter": 1, "at": true, "blocked_for": 0}}',
    b'{"version": 1, "spot_counter": {"counter": 1, "at": 1, "blocked_for": -5}}',
    b'{"version": 1, "spot_counter": {"counter": 1}}',
])
def test_an_unreadable_state_file_is_taken_as_a_full_counter_and_logged_once(
    tmp_path: Path, clock: SimClock, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state = state_for(tmp_path, clock)
    state.path.write_bytes(content)
    limiter = SpotCounterLimiter("starter", clock=clock.monotonic, sleep=clock.sleep, state=state)
    with caplog.at_level(logging.WARNING, logger="krakked.kraken.limit_state"):
        assert limiter.counter == pytest.approx(15)
        state.path.write_bytes(content)  # still damaged on the next call
        assert limiter.acquire("Balance") == pytest.approx(1 / 0.33 + SPOT_SAFETY_SECONDS)
    warnings = [r for r in caplog.records if "rate-limit state" in r.getMessage()]
    assert len(warnings) == 1
    assert str(state.path) in warnings[0].getMessage()
    # The limiter rewrote the file: the next process reads it without a warning.
    assert json.loads(state.path.read_text())["version"] == 1
    assert process_limiter(tmp_path, clock).counter == pytest.approx(15, abs=0.01)


def test_a_saved_block_longer_than_an_hour_is_capped(tmp_path: Path, clock: SimClock) -> None:
    state = state_for(tmp_path, clock)
    state.path.write_text(json.dumps({"version": 1, "spot_counter": {
        "counter": 0, "at": clock.now(), "blocked_for": 1e12}}))
    assert process_limiter(tmp_path, clock).wait_time(1) == pytest.approx(3600.0)


def test_a_state_directory_that_cannot_be_used_leaves_the_limiter_in_memory(
    tmp_path: Path, clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "nonces"
    blocker.write_text("a file where the directory should be")
    limiter = process_limiter(blocker, clock)
    with caplog.at_level(logging.WARNING, logger="krakked.kraken.limit_state"):
        assert [limiter.acquire("Balance") for _ in range(15)] == [0.0] * 15
        assert limiter.acquire("Balance") == pytest.approx(1 / 0.33 + SPOT_SAFETY_SECONDS)
    assert sum("cannot be locked" in r.getMessage() for r in caplog.records) == 1
    assert limiter.state is not None and limiter.state.in_memory


def test_a_state_file_that_keeps_coming_back_unreadable_slows_calls_once_not_forever(
    tmp_path: Path, clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = state_for(tmp_path, clock)
    other_version = b'{"version": 2, "spot_counter": {}}'

    def sleep(seconds: float) -> None:  # meanwhile another krakked version rewrites the file
        clock.sleep(seconds)
        state.path.write_bytes(other_version)

    state.path.write_bytes(other_version)
    limiter = SpotCounterLimiter("starter", clock=clock.monotonic, sleep=sleep, state=state)
    with caplog.at_level(logging.WARNING, logger="krakked.kraken.limit_state"):
        start = clock.monotonic()
        for _ in range(10):
            limiter.acquire("Balance")
    # Assumed full once, then paced by decay: 10 units at 0.33/s, not refilled on every read.
    assert clock.monotonic() - start == pytest.approx(10 / 0.33, abs=0.5)
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1


def test_a_state_file_that_cannot_be_replaced_leaves_the_limiter_in_memory(
    tmp_path: Path, clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = state_for(tmp_path, clock)
    state.path.mkdir()  # a directory where the file should be: unreadable, and cannot be replaced
    limiter = SpotCounterLimiter("starter", clock=clock.monotonic, sleep=clock.sleep, state=state)
    with caplog.at_level(logging.WARNING, logger="krakked.kraken.limit_state"):
        start = clock.monotonic()
        for _ in range(10):
            limiter.acquire("Balance")
    # Assumed full once, then paced by decay in memory: 10 units at 0.33/s, not stuck.
    assert clock.monotonic() - start == pytest.approx(10 / 0.33, abs=0.5)
    assert state.in_memory
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreadable" in m for m in messages) == 1
    assert sum("cannot be written" in m for m in messages) == 1


# --- Futures budgets ----------------------------------------------------------------------------


def futures_limiter(directory: Path, clock: SimClock) -> FuturesLimiter:
    return FuturesLimiter(clock=clock.monotonic, sleep=clock.sleep,
                          state=state_for(directory, clock))


def test_futures_history_pool_spent_by_one_process_is_spent_for_the_next(
    tmp_path: Path, clock: SimClock
) -> None:
    first = futures_limiter(tmp_path, clock)
    for _ in range(100):
        first.acquire_history("executions")
    clock.advance(60.0)  # 10 tokens refill in a minute
    later = futures_limiter(tmp_path, clock)
    assert later.history.available == pytest.approx(10)
    assert later.derivatives.available == pytest.approx(500)
    assert sum(later.acquire_history("executions") for _ in range(10)) == 0.0
    assert later.acquire_history("executions") == pytest.approx(6.0, abs=0.05)


def test_futures_derivatives_budget_and_history_block_carry_over(
    tmp_path: Path, clock: SimClock
) -> None:
    first = futures_limiter(tmp_path, clock)
    for _ in range(50):
        first.acquire_derivatives("sendorder")  # 500 units
    first.block_history(30.0, "executions")
    later = futures_limiter(tmp_path, clock)
    assert later.derivatives.available == pytest.approx(0)
    assert later.acquire_history("executions") == pytest.approx(30.0, abs=0.05)


def test_an_unreadable_futures_section_is_taken_as_an_empty_budget(
    tmp_path: Path, clock: SimClock
) -> None:
    state = state_for(tmp_path, clock)
    state.path.write_text('{"version": 1, "futures_history": {"tokens": "lots"}}')
    later = futures_limiter(tmp_path, clock)
    assert later.history.available == 0.0
    assert later.derivatives.available == pytest.approx(500)  # nothing saved: full
