"""Kraken counts Spot calls per key, not per process: krakked's clients against krakked.sim,
as consecutive and concurrent processes of one key (in-process with separate limiters, and as
real processes against the simulator served on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.kraken.auth import nonce_state_file
from krakked.kraken.futures import FuturesClient
from krakked.kraken.limits import (
    SPOT_SAFETY_SECONDS,
    LimiterState,
    PublicLimiter,
    SpotCounterLimiter,
)
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.sim.server import running

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings({"KRAKKED_HOME": str(tmp_path)})


def sim_client(sim: Simulator, settings, clock: SimClock) -> SpotClient:
    """A SpotClient as a new process on this machine builds it (its own in-memory counter)."""
    spec = sim.config.account("spot")
    return SpotClient(
        KeyPair.create("spot", spec.api_key, spec.api_secret, "sim"),
        settings=settings,
        transport=sim.transport(),
        limiter=SpotCounterLimiter(
            sim.config.tier, clock=clock.monotonic, sleep=clock.sleep,
            state=LimiterState.for_key(settings.paths.nonce_dir, spec.api_key,
                                       wall_clock=clock.now),
        ),
        public_limiter=PublicLimiter(1000, 1000, clock=clock.monotonic, sleep=clock.sleep),
        sleep=clock.sleep,
    )


def test_second_client_right_after_the_first_waits_instead_of_being_rate_limited(
    clock: SimClock, settings
) -> None:
    sim = Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0))
    first = sim_client(sim, settings, clock)
    for _ in range(15):
        first.get_balance()
    assert first.stats.rate_limit_waits == 0
    clock.advance(1.0)  # the second `account sync` starts one second later

    second = sim_client(sim, settings, clock)
    second.get_balance()
    second.get_ledgers()

    assert sim.counter.rejections == 0
    assert second.stats.rate_limited == 0
    assert second.stats.rate_limit_waits == 2
    # 15 - 0.33 left after a second: Balance waits for 0.67 units, Ledgers (4) for 4 more.
    expected = (0.67 / 0.33 + SPOT_SAFETY_SECONDS) + (4 / 0.33 + SPOT_SAFETY_SECONDS)
    assert second.stats.rate_limit_wait_seconds == pytest.approx(expected, abs=0.05)
    assert second.stats.to_dict()["rate_limit_waits"] == 2


# --- real processes --------------------------------------------------------------------------


_CHILD = """
import json, sys, time
from pathlib import Path
from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.kraken.spot import SpotClient
home, url, key, secret, calls, flag, go = sys.argv[1:8]
settings = load_settings({"KRAKKED_HOME": home, "KRAKKED_TIER": "pro"})
client = SpotClient(KeyPair.create("spot", key, secret, "test"), settings=settings, base_url=url)
Path(flag).touch()
while not Path(go).exists():  # imports done: start when told, so startup time decays nothing
    time.sleep(0.005)
for _ in range(int(calls)):
    client.get_balance()
print(json.dumps(client.stats.to_dict()))
"""


def _children(tmp_path: Path, info: dict, calls: list[int]) -> tuple[list[subprocess.Popen],
                                                                     Path]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    go = tmp_path / "go"
    flags = [tmp_path / f"ready{i}" for i in range(len(calls))]
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", _CHILD, str(tmp_path / "home"), info["spot_url"],
             info["api_key"], info["api_secret"], str(n), str(flag), str(go)],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        for n, flag in zip(calls, flags, strict=True)
    ]
    deadline = time.monotonic() + 60
    while not all(f.exists() for f in flags) and time.monotonic() < deadline:
        time.sleep(0.01)
    return procs, go


def _results(procs: list[subprocess.Popen]) -> list[dict]:
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return [json.loads(out) for out in outputs]


def test_a_real_second_process_waits_for_the_counter_the_first_spent(tmp_path: Path) -> None:
    sim = Simulator(SimConfig(seed=7, public_rate=0, tier="pro"))  # max 20, -1/s
    with running(sim) as info:
        procs, go = _children(tmp_path, info, [2])  # the second process, started and waiting
        settings = load_settings({"KRAKKED_HOME": str(tmp_path / "home"), "KRAKKED_TIER": "pro"})
        with SpotClient(KeyPair.create("spot", info["api_key"], info["api_secret"], "test"),
                        settings=settings, base_url=info["spot_url"]) as first:
            for _ in range(20):
                first.get_balance()
        go.touch()
        [second] = _results(procs)
    assert sim.counter.rejections == 0
    assert second["rate_limited"] == 0
    assert second.get("rate_limit_waits", 0) >= 1
    assert second.get("rate_limit_wait_seconds", 0) > 0.5


def test_two_real_processes_at_once_share_the_keys_counter(tmp_path: Path) -> None:
    sim = Simulator(SimConfig(seed=7, public_rate=0, tier="pro"))
    with running(sim) as info:
        procs, go = _children(tmp_path, info, [11, 11])  # 22 calls: 20 at once, then 1/s
        go.touch()
        results = _results(procs)
    assert sim.counter.rejections == 0
    assert sum(r["rate_limited"] for r in results) == 0
    assert sum(r.get("rate_limit_waits", 0) for r in results) >= 2


def test_a_signed_call_waits_while_another_process_holds_the_keys_send_lock(
        tmp_path: Path) -> None:
    from krakked.kraken.auth import KeySendLock

    sim = Simulator(SimConfig(seed=7, public_rate=0, tier="pro"))
    with running(sim) as info:
        settings = load_settings({"KRAKKED_HOME": str(tmp_path / "home"), "KRAKKED_TIER": "pro"})
        held = KeySendLock(info["api_key"], settings.paths.nonce_dir.absolute())
        held.__enter__()  # as another process does from signing its nonce to Kraken's answer
        try:
            procs, go = _children(tmp_path, info, [1])
            started = time.monotonic()
            go.touch()
            time.sleep(1.0)
            assert procs[0].poll() is None  # its call could not be signed and sent meanwhile
        finally:
            held.__exit__(None, None, None)
        [result] = _results(procs)
    assert time.monotonic() - started >= 1.0 and result["requests"] == 1
    assert sim.counter.rejections == 0


# --- what the file holds ------------------------------------------------------------------------


def test_the_state_file_holds_no_key_or_secret_and_is_private(
    tmp_path: Path, clock: SimClock
) -> None:
    sim = Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0))
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    spot = sim.config.account("spot")
    futures = sim.config.account("futures")
    with SpotClient(KeyPair.create("spot", spot.api_key, spot.api_secret, "sim"),
                    settings=settings, transport=sim.transport()) as client:
        client.get_balance()
    with FuturesClient(KeyPair.create("futures", futures.api_key, futures.api_secret, "sim"),
                       settings=settings, transport=sim.transport()) as fclient:
        fclient.get_accounts()
    directory = settings.paths.nonce_dir
    files = sorted(directory.glob("*.limits.json"))
    assert len(files) == 2
    for path in files:
        text = path.read_text()
        for secret in (spot.api_key, spot.api_secret, futures.api_key, futures.api_secret):
            assert secret[:8] not in path.name and secret[:8] not in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = json.loads(text)
        assert set(data) <= {"version", "spot_counter", "futures_derivatives", "futures_history"}
        assert all(isinstance(v, int | float) for section in data.values()
                   if isinstance(section, dict) for v in section.values())
    # the nonce state beside it keeps its own format
    nonce = json.loads(nonce_state_file(directory, spot.api_key).read_text())
    assert set(nonce) == {"scale", "last"}


def test_without_nonce_persistence_nothing_is_written(tmp_path: Path, clock: SimClock) -> None:
    sim = Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0))
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    spot = sim.config.account("spot")
    client = SpotClient(KeyPair.create("spot", spot.api_key, spot.api_secret, "sim"),
                        settings=settings, transport=sim.transport(), persist_nonce=False)
    client.get_balance()
    assert client.limiter.state is None
    assert not list(tmp_path.rglob("*.limits.json"))


def test_a_second_account_sync_right_after_another_waits_and_reports_its_waits(
    clock: SimClock, settings
) -> None:
    from krakked.account.progress import rate_limit_waits
    from krakked.account.runner import run_sync

    sim = Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0))
    reports = []
    for _ in range(2):  # two `krakked account sync --source spot` runs, one after the other
        with sim_client(sim, settings, clock) as client:
            reports.append(run_sync("spot", settings=settings, client=client, now=clock.now,
                                    resources=["balances", "ledgers"], dev_mode=True))
        clock.advance(1.0)
    first, second = reports
    assert first.status == second.status == "ok"
    assert sim.counter.rejections == 0  # no "EAPI:Rate limit exceeded"
    assert second.api["rate_limited"] == 0
    assert rate_limit_waits(second.api) > rate_limit_waits(first.api)
    assert rate_limit_waits(second.api) == second.api["rate_limit_waits"] > 0
    assert second.api["rate_limit_wait_seconds"] > 0
