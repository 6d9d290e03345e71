"""Pure parts of the WS v2 client: frame decoding and the reconnect policy (fake clock)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from krakked.errors import MalformedResponseError
from krakked.kraken.ws import MalformedFrame, ReconnectPolicy, decode, safe_url


def test_decode_keeps_the_wire_digits_as_decimals_and_integers_as_ints() -> None:
    msg = decode(b'{"channel":"book","data":[{"bids":[{"price":45283.5,"qty":0.10000000}],'
                 b'"checksum":3310070434,"q":1e-08}]}')
    level = msg["data"][0]["bids"][0]
    assert level["price"] == Decimal("45283.5") and isinstance(level["price"], Decimal)
    assert str(level["qty"]) == "0.10000000"  # trailing zeros kept: the checksum needs them
    assert msg["data"][0]["checksum"] == 3310070434 and isinstance(
        msg["data"][0]["checksum"], int)
    assert msg["data"][0]["q"] == Decimal("1e-08")


def test_decode_reads_text_frames_and_connection_ids_above_2_63() -> None:
    msg = decode('{"channel":"status","data":[{"connection_id":13834774380200032777}]}')
    assert msg["data"][0]["connection_id"] == 13834774380200032777


@pytest.mark.parametrize("frame", [b"not json", b'{"channel":', b"[1,2]", b'"text"', b""])
def test_decode_raises_malformed_frame_for_anything_but_a_json_object(frame: bytes) -> None:
    with pytest.raises(MalformedFrame) as info:
        decode(frame)
    assert isinstance(info.value, MalformedResponseError)  # in krakked's error tree


def test_safe_url_drops_query_strings_and_user_info() -> None:
    assert safe_url("wss://user:pw@ws.kraken.com/v2?token=abc#x") == "wss://ws.kraken.com/v2"
    assert safe_url("ws://127.0.0.1:8765/v2") == "ws://127.0.0.1:8765/v2"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_retry_is_fast_then_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    clock = FakeClock()
    low = ReconnectPolicy(clock=clock, rng=lambda: 0.0)
    high = ReconnectPolicy(clock=clock, rng=lambda: 1.0)
    assert low.delay(0) == 0.0 and high.delay(0) == 0.5
    assert [low.delay(n) for n in range(1, 5)] == [0.8, 1.6, 3.2, 6.4]
    assert [high.delay(n) for n in range(1, 5)] == [1.2, 2.4, 4.8, 9.6]
    assert high.delay(7) == 60.0 and high.delay(50) == 60.0 and low.delay(50) == 48.0


def test_after_maintenance_a_reconnect_waits_at_least_five_seconds() -> None:
    policy = ReconnectPolicy(clock=FakeClock(), rng=lambda: 0.5)
    assert policy.delay(0, maintenance=True) == 5.0
    assert policy.delay(1, maintenance=True) == 5.0
    assert policy.delay(6, maintenance=True) == 32.0


def test_no_more_than_150_attempts_in_any_rolling_ten_minutes() -> None:
    clock = FakeClock()
    policy = ReconnectPolicy(clock=clock, rng=lambda: 0.0)
    for _ in range(150):
        assert policy.window_wait() == 0.0
        policy.record_attempt()
        clock.now += 1.0
    # 150 attempts at t=1000..1149; now t=1150: the next fits when the first leaves the window
    assert policy.window_wait() == pytest.approx(1000 + 600 - 1150)
    assert policy.delay(0) == pytest.approx(450.0)
    clock.now = 1600.0
    assert policy.window_wait() == 0.0  # the attempt at t=1000 is out of the window
    policy.record_attempt()
    assert policy.window_wait() == pytest.approx(1.0)  # t=1001 leaves at 1601


def test_policy_driven_attempts_never_exceed_the_window_cap() -> None:
    clock = FakeClock()
    policy = ReconnectPolicy(clock=clock, base=0.01, cap=0.01, first_delay=0.0,
                             rng=lambda: 0.5)
    times = []
    for failures in range(400):
        clock.now += policy.delay(failures)
        policy.record_attempt()
        times.append(clock.now)
    for i, start in enumerate(times):
        inside = [t for t in times[i:] if t < start + 600]
        assert len(inside) <= 150
    assert times[150] - times[0] == pytest.approx(600.0)
