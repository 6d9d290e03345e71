"""Signatures against Kraken's published vectors, and the nonce source's promises."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krakked.errors import ConfigError
from krakked.kraken.auth import (
    NONCE_SCALES,
    NonceSource,
    decode_secret,
    encode_form,
    futures_signature,
    key_lock,
    nonce_source_for,
    nonce_state_file,
    spot_signature,
)

SPOT_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
# Kraken's published Futures example secret is 87 characters: one "=" short of valid base64.
FUTURES_SECRET_UNPADDED = (
    "rttp4AzwRfYEdQ7R7X8Z/04Y4TZPa97pqCypi3xXxAqftygftnI6H9yGV+OcUOOJeFtZkr8mVwbAndU3Kz4Q+eG"
)
FUTURES_SECRET = FUTURES_SECRET_UNPADDED + "="
NOW_NS = 1_700_000_000_123_456_789


# --- signatures ------------------------------------------------------------------------------


def test_spot_signature_matches_krakens_official_addorder_vector() -> None:
    body = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    expected = (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
    )
    assert spot_signature("/0/private/AddOrder", 1616492376594, body, SPOT_SECRET) == expected
    assert spot_signature("/0/private/AddOrder", "1616492376594", body.encode(), SPOT_SECRET) == (
        expected
    )


@pytest.mark.parametrize("secret", [FUTURES_SECRET, FUTURES_SECRET_UNPADDED])
@pytest.mark.parametrize(
    ("nonce", "expected"),
    [
        (
            "1415957147987",
            "DqUyz8Wh/72af7dimSXHw91IFxrAriTgVodyg2s67PU2mVStwLDQak+uIoCtfb43XONq0xVAp+vm5dqnhFAB1Q==",
        ),
        (
            "",
            "BGOdiF//YXbOtKUkyFFRqKAft7gai33YfScxFrXMdMHGUJ6wSaMA6y0p6UzfYzj5Flgvv+SFQe53h2KrEe37Ng==",
        ),
    ],
)
def test_futures_signature_matches_krakens_example_padded_or_not(
    secret: str, nonce: str, expected: str
) -> None:
    assert futures_signature("/api/v3/orderbook", "symbol=fi_xbtusd_180615", nonce, secret) == (
        expected
    )


def test_futures_signature_strips_derivatives_prefix_like_python_kraken_sdk() -> None:
    secret = "cHl0aG9uLWtyYWtlbi1zZGsgdW5pdC10ZXN0IHNlY3JldCB2YWx1ZQ=="
    expected = (
        "Txi+gJVXe3EN1brXYQ46FuV6UVtEVSKhc6dYMhPb7a/HXZLGvO6m9UUg+KVKqhLxrbllOPI7qRkHYmPfJZZSGA=="
    )
    args = ("orderType=lmt&symbol=PI_XBTUSD", "1616492376594", secret)
    assert futures_signature("/derivatives/api/v3/sendorder", *args) == expected
    assert futures_signature("/api/v3/sendorder", *args) == expected


def test_history_paths_are_signed_in_full() -> None:
    a = futures_signature("/api/history/v3/executions", "", "", FUTURES_SECRET)
    b = futures_signature("/history/v3/executions", "", "", FUTURES_SECRET)
    assert a != b


def test_empty_payload_signs_deterministically_and_differently_from_a_nonempty_one() -> None:
    empty = spot_signature("/0/private/Balance", 1, "", SPOT_SECRET)
    assert empty == spot_signature("/0/private/Balance", 1, b"", SPOT_SECRET)
    assert empty != spot_signature("/0/private/Balance", 1, "nonce=1", SPOT_SECRET)
    f_empty = futures_signature("/api/v3/accounts", "", "1", FUTURES_SECRET)
    assert f_empty == futures_signature("/api/v3/accounts", "", "1", FUTURES_SECRET)
    assert f_empty != futures_signature("/api/v3/accounts", "a=1", "1", FUTURES_SECRET)


def test_encode_form_keeps_the_callers_order_and_signs_exactly_those_bytes() -> None:
    ab, ba = encode_form({"a": 1, "b": 2}), encode_form({"b": 2, "a": 1})
    assert (ab, ba) == ("a=1&b=2", "b=2&a=1")
    assert spot_signature("/0/private/X", 1, ab, SPOT_SECRET) != spot_signature(
        "/0/private/X", 1, ba, SPOT_SECRET
    )
    assert futures_signature("/api/v3/x", ab, "1", FUTURES_SECRET) != futures_signature(
        "/api/v3/x", ba, "1", FUTURES_SECRET
    )


def test_encode_form_drops_none_and_spells_booleans_and_lists_like_kraken() -> None:
    form = encode_form(
        {
            "nonce": 5,
            "trades": True,
            "ofs": None,
            "closed": False,
            "pair": ["XBTUSD", "ETHUSD"],
            "info": "futures trade",
            "price": "0.1",
        }
    )
    assert form == (
        "nonce=5&trades=true&closed=false&pair=XBTUSD%2CETHUSD&info=futures+trade&price=0.1"
    )


def test_decode_secret_tolerates_missing_padding() -> None:
    assert decode_secret(FUTURES_SECRET_UNPADDED) == decode_secret(FUTURES_SECRET)


@pytest.mark.parametrize("bad", ["not base64 !!", "abcde", "   "])
def test_decode_secret_error_never_shows_the_secret(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_secret(bad)
    if bad.strip():
        assert bad not in str(info.value)


def test_signing_with_a_bad_secret_raises_without_showing_it() -> None:
    secret = "sup3r$ecret-value"
    with pytest.raises(ValueError) as info:
        spot_signature("/0/private/Balance", 1, "nonce=1", secret)
    assert secret not in str(info.value)


# --- nonce source: ordering ------------------------------------------------------------------


def test_scales_are_ordered_ms_us_ms_counter_ns() -> None:
    values = [NONCE_SCALES[name](NOW_NS) for name in ("ms", "us", "ms_counter", "ns")]
    assert values == sorted(values)
    assert NONCE_SCALES["ms_counter"](NOW_NS) == 1_700_000_000_123 * 100_000
    assert NONCE_SCALES["ns"](NOW_NS) < 2**64


def test_unknown_scale_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nonce format"):
        NonceSource("seconds")


def _clock_from(values: list[int]) -> Callable[[], int]:
    """A thread-safe clock yielding ``values`` in turn, then repeating the last one."""
    lock, it = threading.Lock(), iter(values)
    last = [values[0]]

    def clock() -> int:
        with lock:
            last[0] = next(it, last[0])
            return last[0]

    return clock


clock_steps = st.lists(
    st.integers(min_value=-5_000_000_000, max_value=5_000_000_000), min_size=1, max_size=60
)


@settings(max_examples=60, deadline=None)
@given(scale=st.sampled_from(sorted(NONCE_SCALES)), steps=clock_steps)
def test_nonces_strictly_increase_whatever_the_clock_does(scale: str, steps: list[int]) -> None:
    times = list(itertools.accumulate(steps, initial=NOW_NS))
    source = NonceSource(scale, clock_ns=_clock_from(times))
    issued = [source.next() for _ in range(len(times) + 20)]
    assert all(a < b for a, b in itertools.pairwise(issued))
    assert issued[0] == NONCE_SCALES[scale](NOW_NS)


def _hammer(source_for_thread: Callable[[int], NonceSource], threads: int, calls: int):
    results: list[list[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def work(i: int) -> None:
        source = source_for_thread(i)
        barrier.wait()
        results[i].extend(source.next() for _ in range(calls))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


@settings(max_examples=15, deadline=None)
@given(scale=st.sampled_from(sorted(NONCE_SCALES)), steps=clock_steps)
def test_eight_threads_never_get_the_same_nonce(scale: str, steps: list[int]) -> None:
    times = list(itertools.accumulate(steps, initial=NOW_NS))
    source = NonceSource(scale, clock_ns=_clock_from(times))
    results = _hammer(lambda _: source, threads=8, calls=250)
    flat = [n for r in results for n in r]
    assert len(set(flat)) == len(flat) == 8 * 250
    assert all(all(a < b for a, b in itertools.pairwise(r)) for r in results)


def test_frozen_clock_rolls_the_counter_over_into_the_next_millisecond() -> None:
    now_ms = NOW_NS // 1_000_000
    source = NonceSource("ms_counter", clock_ns=lambda: NOW_NS)
    results = _hammer(lambda _: source, threads=8, calls=12_600)  # 100,800 calls in one ms
    flat = sorted(n for r in results for n in r)
    assert flat == list(range(now_ms * 100_000, now_ms * 100_000 + 100_800))
    assert sum(n >= (now_ms + 1) * 100_000 for n in flat) == 800
    assert all(all(a < b for a, b in itertools.pairwise(r)) for r in results)


def test_ms_counter_counts_within_a_millisecond_and_restarts_when_the_clock_moves_on() -> None:
    times = [NOW_NS, NOW_NS + 10, NOW_NS + 20, NOW_NS + 3_000_000]
    source = NonceSource("ms_counter", clock_ns=_clock_from(times))
    base = (NOW_NS // 1_000_000) * 100_000
    assert [source.next() for _ in range(4)] == [base, base + 1, base + 2, base + 300_000]


# --- nonce source: persistence ---------------------------------------------------------------


def test_restart_with_a_clock_gone_back_continues_above_the_last_nonce(tmp_path: Path) -> None:
    state = tmp_path / "nonces" / "k.json"
    first = NonceSource("ms_counter", state_file=state, clock_ns=lambda: NOW_NS)
    last = [first.next() for _ in range(5)][-1]
    restarted = NonceSource("ms_counter", state_file=state, clock_ns=lambda: NOW_NS - 10**12)
    assert restarted.next() == last + 1
    assert json.loads(state.read_text()) == {"scale": "ms_counter", "last": last + 1}


def test_state_directory_and_file_are_private(tmp_path: Path) -> None:
    state = tmp_path / "nonces" / "k.json"
    NonceSource(state_file=state).next()
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_a_state_file_from_a_larger_scale_makes_a_smaller_scale_refuse(tmp_path: Path) -> None:
    state = tmp_path / "k.json"
    NonceSource("ns", state_file=state).next()
    with pytest.raises(ConfigError, match="'ns'"):
        NonceSource("ms_counter", state_file=state).next()


def test_moving_up_to_a_larger_scale_is_allowed(tmp_path: Path) -> None:
    state = tmp_path / "k.json"
    old = NonceSource("ms", state_file=state, clock_ns=lambda: NOW_NS).next()
    new = NonceSource("ms_counter", state_file=state, clock_ns=lambda: NOW_NS).next()
    assert new > old
    assert json.loads(state.read_text())["scale"] == "ms_counter"


def test_a_corrupt_state_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "k.json"
    state.write_text("{not json")
    with pytest.raises(ConfigError, match=r"k\.json"):
        NonceSource(state_file=state).next()


def test_two_sources_on_one_state_file_never_collide(tmp_path: Path) -> None:
    state = tmp_path / "k.json"
    sources = [NonceSource(state_file=state, clock_ns=lambda: NOW_NS) for _ in range(2)]
    results = _hammer(lambda i: sources[i % 2], threads=4, calls=100)
    flat = [n for r in results for n in r]
    assert len(set(flat)) == len(flat)
    assert json.loads(state.read_text())["last"] == max(flat)


_CHILD = """
import sys, time
from pathlib import Path
from krakked.kraken.auth import NonceSource
source = NonceSource("ms_counter", state_file=Path(sys.argv[1]))
go = Path(sys.argv[3])
Path(sys.argv[4]).touch()
while not go.exists():  # start together, so the two really overlap
    time.sleep(0.001)
print(" ".join(str(source.next()) for _ in range(int(sys.argv[2]))))
"""


def test_two_processes_sharing_a_key_never_issue_the_same_nonce(tmp_path: Path) -> None:
    state, go = tmp_path / "k.json", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", _CHILD, str(state), "500", str(go), str(flag)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 30
    while not all(f.exists() for f in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    runs = [[int(n) for n in out.split()] for out in outputs]
    flat = [n for run in runs for n in run]
    assert len(flat) == 1000
    assert len(set(flat)) == len(flat)
    assert all(all(a < b for a, b in itertools.pairwise(run)) for run in runs)


# --- per-key registry ------------------------------------------------------------------------


def test_state_file_name_never_contains_the_key(tmp_path: Path) -> None:
    key = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    path = nonce_state_file(tmp_path, key)
    assert path.parent == tmp_path
    assert key not in str(path) and key[:8] not in path.name
    assert path != nonce_state_file(tmp_path, key + "x")


def test_every_client_of_one_key_shares_one_nonce_source_and_lock(tmp_path: Path) -> None:
    a = nonce_source_for("key-one", "ms_counter", tmp_path)
    assert nonce_source_for("key-one", "ms_counter", tmp_path) is a
    assert nonce_source_for("key-two", "ms_counter", tmp_path) is not a
    assert nonce_source_for("key-one", "ms_counter", None) is not a
    assert a.state_file == nonce_state_file(tmp_path.absolute(), "key-one")
    assert key_lock("key-one") is key_lock("key-one")
    assert key_lock("key-one") is not key_lock("key-two")
