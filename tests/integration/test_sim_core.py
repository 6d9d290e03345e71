"""krakked's clients end to end against krakked.sim: signing, nonces, faults, rate limits,
the ASGI and HTTP doors, and `krakked sim serve`."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import krakked.sim
from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.errors import (
    AuthError,
    InvalidRequestError,
    MalformedResponseError,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from krakked.kraken.auth import futures_signature, spot_signature
from krakked.kraken.futures import FuturesClient
from krakked.kraken.limits import FuturesLimiter, PublicLimiter, SpotCounterLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator, parse_faults
from krakked.sim.config import AccountSpec
from krakked.sim.server import running
from tests.fakes import FUT_KEY, FUT_SECRET, SPOT_KEY, SPOT_SECRET, FakeClock, FakeKraken

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings({"KRAKKED_HOME": str(tmp_path)})


def make_sim(clock: SimClock, **kw) -> Simulator:
    kw.setdefault("public_rate", 0)
    return Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, **kw))


def spot_client(sim: Simulator, settings, clock: SimClock, **kw) -> SpotClient:
    spec = sim.config.account("spot")
    return SpotClient(
        KeyPair.create("spot", spec.api_key, spec.api_secret, "sim"),
        settings=settings,
        transport=sim.transport(),
        limiter=kw.pop("limiter", SpotCounterLimiter(sim.config.tier, clock=clock.monotonic,
                                                     sleep=clock.sleep)),
        public_limiter=kw.pop("public_limiter", PublicLimiter(1000, 1000, clock=clock.monotonic,
                                                              sleep=clock.sleep)),
        sleep=clock.sleep,
        **kw,
    )


def futures_client(sim: Simulator, settings, clock: SimClock, **kw) -> FuturesClient:
    spec = sim.config.account("futures")
    return FuturesClient(
        KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"),
        settings=settings,
        transport=sim.transport(),
        limiter=FuturesLimiter(clock=clock.monotonic, sleep=clock.sleep),
        sleep=clock.sleep,
        **kw,
    )


# -- every endpoint through the clients --------------------------------------------------------


def test_every_spot_endpoint_answers_through_the_client(clock, settings) -> None:
    sim = make_sim(clock)
    c = spot_client(sim, settings, clock)
    assert c.get_server_time()["unixtime"] == int(NOW.timestamp())
    assert c.get_system_status()["status"] == "online"
    assert "XXBT" in c.get_assets()
    assert c.get_asset_pairs("XBTUSD")["XXBTZUSD"]["altname"] == "XBTUSD"
    assert "XXBTZUSD" in c.get_ticker("XBTUSD")
    assert "last" in c.get_ohlc("XBTUSD", interval=60)
    assert c.get_trades("XBTUSD", count=10)["XXBTZUSD"]
    assert c.get_depth("XBTUSD", count=5)["XXBTZUSD"]["asks"]
    assert "last" in c.get_spread("XBTUSD")
    assert c.get_balance()
    assert "ZUSD" in c.get_balance_ex()
    th = c.get_trades_history()
    assert th["count"] > 0 and len(th["trades"]) == 50
    assert c.get_ledgers()["count"] > 0
    closed = c.get_closed_orders()["closed"]
    some = list(closed)[:2]
    assert set(c.query_orders(some)) == set(some)
    ledger_ids = list(c.get_ledgers()["ledger"])[:3]
    assert set(c.query_ledgers(ledger_ids)) == set(ledger_ids)
    assert isinstance(c.get_deposit_status(), list)
    assert isinstance(c.get_withdraw_status(), list)


def test_every_futures_endpoint_answers_through_the_client(clock, settings) -> None:
    sim = make_sim(clock)
    f = futures_client(sim, settings, clock)
    assert f.get_tickers()["tickers"]
    assert "accounts" in f.get_accounts()
    assert "openPositions" in f.get_open_positions()
    assert f.get_executions(count=10)["elements"]
    assert f.get_account_log(count=10)["logs"]
    assert f.get_position_history(count=10)["elements"]
    v2 = futures_client(sim, settings, clock, history_version="v2")
    assert v2.get_executions(count=5)["elements"]
    assert v2.get_account_log(count=5)["logs"]


# -- signing and nonces ------------------------------------------------------------------------


def test_signing_is_verified_and_a_replayed_nonce_is_rejected(clock) -> None:
    sim = make_sim(clock)
    spec = sim.config.account("spot")
    body = "nonce=1700000000000000"
    sign = spot_signature("/0/private/Balance", "1700000000000000", body, spec.api_secret)
    with httpx.Client(transport=sim.transport(), base_url="http://sim") as http:
        def post(signature: str, key: str = spec.api_key) -> dict:
            return http.post("/0/private/Balance", content=body, headers={
                "API-Key": key, "API-Sign": signature,
                "Content-Type": "application/x-www-form-urlencoded"}).json()

        assert post(sign)["error"] == []
        assert post(sign)["error"] == ["EAPI:Invalid nonce"]  # the same request, replayed
        assert post(sign[:-4] + "AAA=")["error"] == ["EAPI:Invalid signature"]
        assert post(sign, key="nope")["error"] == ["EAPI:Invalid key"]


def _spot_verdicts(transport: httpx.BaseTransport, clock: FakeClock) -> list[list[str]]:
    """Kraken's answers to a bad key, a bad signature, replayed and stale nonces, then Balance
    calls at one instant until the Starter counter refuses, and one more after 1.5 units of
    decay (still refused: a refused call is counted too)."""
    verdicts: list[list[str]] = []
    with httpx.Client(transport=transport, base_url="http://kraken") as http:
        def post(nonce: int, key: str = SPOT_KEY, secret: str = SPOT_SECRET) -> None:
            body = f"nonce={nonce}"
            sign = spot_signature("/0/private/Balance", str(nonce), body, secret)
            verdicts.append(http.post("/0/private/Balance", content=body, headers={
                "API-Key": key, "API-Sign": sign,
                "Content-Type": "application/x-www-form-urlencoded"}).json()["error"])

        post(100, key="nope")
        post(100, secret=FUT_SECRET)
        post(100)
        post(100)
        post(99)
        for nonce in range(101, 116):
            post(nonce)
        clock.sleep(1.5 / 0.33)
        post(116)
    return verdicts


def _futures_verdicts(transport: httpx.BaseTransport) -> list[str | None]:
    """The ``error`` of a signed ``accounts`` call, the same call replayed, and a bad Authent."""
    verdicts: list[str | None] = []
    with httpx.Client(transport=transport, base_url="http://kraken") as http:
        def get(nonce: str, secret: str = FUT_SECRET) -> None:
            authent = futures_signature("/api/v3/accounts", "", nonce, secret)
            verdicts.append(http.get("/derivatives/api/v3/accounts", headers={
                "APIKey": FUT_KEY, "Nonce": nonce, "Authent": authent}).json().get("error"))

        get("500")
        get("500")
        get("501", secret=SPOT_SECRET)
    return verdicts


def test_fake_kraken_and_simulator_give_the_same_verdicts_on_keys_signatures_nonces_and_counter(
) -> None:
    fake_clock, sim_clock = FakeClock(), FakeClock()
    fake = FakeKraken(clock=fake_clock)
    sim = Simulator(SimConfig(monotonic=sim_clock, accounts=[
        AccountSpec("fake-spot", SPOT_KEY, SPOT_SECRET, "spot"),
        AccountSpec("fake-futures", FUT_KEY, FUT_SECRET, "futures")]))
    limited = ["EAPI:Rate limit exceeded"]
    expected = [["EAPI:Invalid key"], ["EAPI:Invalid signature"], [], ["EAPI:Invalid nonce"],
                ["EAPI:Invalid nonce"], *[[]] * 14, limited, limited]
    assert _spot_verdicts(sim.transport(), sim_clock) == expected
    assert _spot_verdicts(fake.transport(), fake_clock) == expected
    assert fake.rate_limit_rejections == sim.counter.rejections == 2
    expected_futures = [None, "nonceBelowThreshold", "authenticationError"]
    assert _futures_verdicts(sim.transport()) == expected_futures
    assert _futures_verdicts(fake.transport()) == expected_futures


def test_sim_imports_only_kraken_auth_and_market_and_has_no_import_cycle() -> None:
    sim_dir = Path(krakked.sim.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in sorted(sim_dir.glob("*.py")):
        name = "krakked.sim" if path.stem == "__init__" else f"krakked.sim.{path.stem}"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {f"{node.module}.{alias.name}" if node.module == "krakked.sim" and (
                    sim_dir / f"{alias.name}.py").exists() else node.module
                            for alias in node.names}
        graph[name] = {t for t in targets if t.split(".")[0] == "krakked"}
    outside = {t for targets in graph.values() for t in targets if t not in graph}
    assert {t for t in outside if t != "krakked.kraken.auth"
            and t.split(".")[:2] != ["krakked", "market"]} == set()

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if module in path:
            return (*path[path.index(module):], module)
        for target in sorted(graph.get(module, ())):
            found = cycle_from(target, (*path, module))
            if found:
                return found
        return None

    assert [cycle_from(m, ()) for m in graph if cycle_from(m, ())] == []


def test_wrong_secret_is_an_auth_error_and_never_retried(clock, settings) -> None:
    sim = make_sim(clock)
    spec = sim.config.account("spot")
    bad = KeyPair.create("spot", spec.api_key, "A" * 88, "sim")
    client = SpotClient(bad, settings=settings, transport=sim.transport(), sleep=clock.sleep)
    with pytest.raises(AuthError, match="EAPI:Invalid signature"):
        client.get_balance()
    assert sim.requests["Balance"] == 1
    fspec = sim.config.account("futures")
    fbad = KeyPair.create("futures", fspec.api_key, "A" * 88, "sim")
    with pytest.raises(AuthError):
        FuturesClient(fbad, settings=settings, transport=sim.transport()).get_accounts()
    with pytest.raises(AuthError):
        FuturesClient(fbad, settings=settings, transport=sim.transport()).get_executions()


def test_clients_sharing_a_key_never_send_a_stale_nonce(clock, settings) -> None:
    sim = make_sim(clock)
    limiter = SpotCounterLimiter("starter", clock=clock.monotonic, sleep=clock.sleep)
    first = spot_client(sim, settings, clock, limiter=limiter)
    second = spot_client(sim, settings, clock, limiter=limiter)
    for _ in range(10):
        first.get_balance()
        second.get_balance()
    assert first.stats.nonce_retries == 0 and second.stats.nonce_retries == 0


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http500", "http502", "timeout", "unavailable", "busy",
                                  "malformed", "toomany", "ratelimit"])
def test_transient_spot_faults_are_retried_until_success(clock, settings, kind) -> None:
    sim = make_sim(clock)
    sim.inject(kind, "Balance", times=2)
    client = spot_client(sim, settings, clock)
    assert client.get_balance()
    assert client.stats.retries == 2
    assert sim.requests["Balance"] == 3


@pytest.mark.parametrize(
    ("kind", "error"),
    [("http500", ServiceUnavailableError), ("timeout", NetworkError),
     ("unavailable", ServiceUnavailableError), ("malformed", MalformedResponseError)],
)
def test_persistent_faults_surface_as_their_class_after_four_attempts(clock, settings, kind,
                                                                      error) -> None:
    sim = make_sim(clock)
    sim.inject(kind, "Ledgers", times=4)
    with pytest.raises(error):
        spot_client(sim, settings, clock).get_ledgers()
    assert sim.requests["Ledgers"] == 4


def test_permission_denied_is_not_retried(clock, settings) -> None:
    sim = make_sim(clock, faults=parse_faults("permission:Ledgers=1"))
    client = spot_client(sim, settings, clock)
    with pytest.raises(PermissionDeniedError):
        client.get_ledgers()
    assert sim.requests["Ledgers"] == 1
    assert client.get_balance()  # other endpoints unaffected
    fsim = make_sim(clock, faults=parse_faults("permission:executions=1"))
    with pytest.raises(PermissionDeniedError):
        futures_client(fsim, settings, clock).get_executions()


@pytest.mark.parametrize("kind", ["http500", "timeout", "unavailable", "malformed", "ratelimit"])
def test_transient_futures_faults_are_retried(clock, settings, kind) -> None:
    sim = make_sim(clock)
    sim.inject(kind, "accounts", times=1)
    sim.inject(kind, "executions", times=1)
    client = futures_client(sim, settings, clock)
    assert "accounts" in client.get_accounts()
    assert client.get_executions(count=5)["elements"]
    assert client.stats.retries == 2


def test_full_history_page_without_token_is_reproducible(clock, settings) -> None:
    sim = make_sim(clock)
    sim.inject("notoken", "executions")
    page = futures_client(sim, settings, clock).get_executions(count=10)
    assert len(page["elements"]) == 10 and "continuationToken" not in page


def test_bad_request_is_never_retried(clock, settings) -> None:
    sim = make_sim(clock)
    with pytest.raises(InvalidRequestError):
        spot_client(sim, settings, clock).get_ohlc("XBTUSD", interval=7)
    assert sim.requests["OHLC"] == 1


def test_fault_spec_errors_name_the_part() -> None:
    with pytest.raises(ValueError, match="unknown fault 'boom'"):
        parse_faults("http500=0.1,boom=1")
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        parse_faults("http500=2")
    assert parse_faults("http500=0.05,permission:Ledgers=1")[1].endpoint == "Ledgers"


# -- rate limits -------------------------------------------------------------------------------


def test_limiter_keeps_the_simulators_counter_below_max_over_a_long_run(clock, settings) -> None:
    sim = make_sim(clock)
    client = spot_client(sim, settings, clock)
    for i in range(120):
        if i % 4 == 0:
            client.get_ledgers(ofs=0)
        else:
            client.get_balance()
    assert sim.counter.rejections == 0
    assert sim.counter.peak <= sim.counter.max
    assert client.stats.rate_limited == 0


def test_without_a_limiter_the_simulator_enforces_krakens_counter(clock, settings) -> None:
    sim = make_sim(clock)
    spec = sim.config.account("spot")
    naive = SpotClient(
        KeyPair.create("spot", spec.api_key, spec.api_secret, "sim"), settings=settings,
        transport=sim.transport(), sleep=clock.sleep,
        # a limiter that believes in a higher tier than the account has
        limiter=SpotCounterLimiter("pro", clock=clock.monotonic, sleep=clock.sleep),
    )
    with pytest.raises(RateLimitError, match="EAPI:Rate limit exceeded"):
        for _ in range(20):
            naive.get_balance()


def test_public_pacing_never_trips_the_per_ip_limit(clock, settings) -> None:
    sim = make_sim(clock, public_rate=1.0, public_burst=20)
    client = spot_client(sim, settings, clock,
                         public_limiter=PublicLimiter(1.0, 5, clock=clock.monotonic,
                                                      sleep=clock.sleep))
    for _ in range(60):
        client.get_server_time()
    assert sim.public_bucket is not None and sim.public_bucket.rejections == 0


def test_history_token_pool_is_paced_not_hit(clock, settings) -> None:
    sim = make_sim(clock)
    client = futures_client(sim, settings, clock)
    for _ in range(130):
        client.get_executions(count=1)
    assert sim.history.rejections == 0
    assert clock.t - NOW.timestamp() >= 29 * 6 - 1  # 30 calls beyond the pool, 6 s each


def test_history_429_is_honoured(clock, settings) -> None:
    sim = make_sim(clock)
    spec = sim.config.account("futures")
    client = FuturesClient(KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"),
                           settings=settings, transport=sim.transport(), sleep=clock.sleep,
                           limiter=FuturesLimiter(history_capacity=1000, clock=clock.monotonic,
                                                  sleep=clock.sleep))  # optimistic pool
    for _ in range(105):
        client.get_executions(count=1)
    assert client.stats.rate_limited >= 1  # Kraken's 429 told it to wait, and it did


# -- doors: ASGI, HTTP, CLI --------------------------------------------------------------------


def test_asgi_app_serves_async_clients(clock) -> None:
    sim = make_sim(clock)

    async def go() -> dict:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                     base_url="http://sim") as http:
            return (await http.get("/0/public/Time")).json()

    assert asyncio.run(go())["result"]["unixtime"] == int(NOW.timestamp())


def test_served_over_http_on_loopback(settings) -> None:
    sim = Simulator(SimConfig(seed=7, public_rate=0))
    with running(sim) as info:
        with SpotClient(
            KeyPair.create("spot", info["api_key"], info["api_secret"], "sim"),
            settings=settings, base_url=info["spot_url"],
        ) as client:
            assert client.get_server_time()["unixtime"] > 0
            assert client.get_balance()
        assert info["ws_url"].startswith("ws://127.0.0.1:")


def test_sim_serve_prints_one_json_line_then_serves(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "krakked.cli", "sim", "serve", "--port", "0", "--seed", "7",
         "--tier", "starter", "--faults", "http500=0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        try:
            line = proc.stdout.readline()
            info = json.loads(line)
            assert set(info) == {"spot_url", "futures_url", "ws_url", "api_key", "api_secret",
                                 "futures_api_key", "futures_api_secret"}
            answer = httpx.get(info["spot_url"] + "/0/public/SystemStatus", timeout=10).json()
            assert answer["result"]["status"] == "online"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_sim_serve_refuses_a_non_loopback_host() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "krakked.cli", "sim", "serve", "--host", "0.0.0.0",  # noqa: S104
         "--port", "0"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 3
    assert "not a loopback address" in proc.stderr and "--allow-remote" in proc.stderr
