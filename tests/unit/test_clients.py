"""Spot and Futures clients against a fake Kraken: signing, error mapping, retry categories,
limiter fidelity and redaction."""

from __future__ import annotations

import ast
import importlib
import json
import logging
from pathlib import Path

import httpx
import pytest

import krakked
import krakked.kraken
from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.errors import (
    AuthError,
    InvalidNonceError,
    InvalidRequestError,
    KrakenError,
    MalformedResponseError,
    NetworkError,
    NoCredentialsError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnknownPairError,
)
from krakked.kraken.auth import key_lock
from krakked.kraken.futures import FuturesClient
from krakked.kraken.http import (
    USER_AGENT,
    ClientStats,
    RetryPolicy,
    classify_futures_error,
    classify_spot_errors,
)
from krakked.kraken.limits import FuturesLimiter, PublicLimiter, SpotCounterLimiter
from krakked.kraken.spot import SpotClient
from tests.fakes import FUT_KEY, FUT_SECRET, SPOT_KEY, SPOT_SECRET, FakeClock, FakeKraken


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings({"KRAKKED_HOME": str(tmp_path)})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kraken(clock: FakeClock) -> FakeKraken:
    return FakeKraken(clock=clock)


def spot_keys() -> KeyPair:
    return KeyPair.create("spot", SPOT_KEY, SPOT_SECRET, "test")


def futures_keys() -> KeyPair:
    return KeyPair.create("futures", FUT_KEY, FUT_SECRET, "test")


def make_spot(settings, kraken: FakeKraken, clock: FakeClock, keys: KeyPair | None = None,
              **kw) -> SpotClient:
    return SpotClient(
        keys if keys is not None else spot_keys(),
        settings=settings,
        transport=kraken.transport(),
        limiter=SpotCounterLimiter("starter", clock=clock, sleep=clock.sleep),
        public_limiter=PublicLimiter(1000.0, 1000, clock=clock, sleep=clock.sleep),
        sleep=clock.sleep,
        rng=lambda: 0.5,
        **kw,
    )


def make_futures(settings, kraken: FakeKraken, clock: FakeClock, keys: KeyPair | None = None
                 ) -> FuturesClient:
    return FuturesClient(
        keys if keys is not None else futures_keys(),
        settings=settings,
        transport=kraken.transport(),
        limiter=FuturesLimiter(clock=clock, sleep=clock.sleep),
        sleep=clock.sleep,
        rng=lambda: 0.5,
    )


# -- happy paths -------------------------------------------------------------------------------


def test_spot_public_and_private_calls_return_kraken_result(settings, kraken, clock) -> None:
    client = make_spot(settings, kraken, clock)
    assert client.get_server_time()["unixtime"] == 1688669448
    assert client.get_system_status()["status"] == "online"
    assert client.get_balance() == {"ZUSD": "171288.6158", "XXBT": "1011.1908877900"}
    assert client.get_ledgers()["count"] == 0


def test_spot_trade_times_parse_exactly_as_decimals(settings, kraken, clock) -> None:
    row = make_spot(settings, kraken, clock).get_trades("XBTUSD")["XXBTZUSD"][0]
    assert str(row[2]) == "1688669597.8277369"  # a float would lose digits
    assert row[6] == 61044952 and row[7] == "1688669597827736900"


def test_private_request_is_signed_form_with_nonce_first(settings, kraken, clock) -> None:
    make_spot(settings, kraken, clock).get_ledgers(asset="XXBT", ofs=50)
    request = kraken.requests[-1]
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    body = request.content.decode()
    assert body.startswith("nonce=") and body.endswith("&asset=XXBT&ofs=50")
    assert request.headers["User-Agent"].startswith("krakked/")


def test_futures_public_private_and_history_calls(settings, kraken, clock) -> None:
    client = make_futures(settings, kraken, clock)
    assert client.get_tickers()["tickers"][0]["symbol"] == "PI_XBTUSD"
    assert client.get_accounts()["accounts"]["flex"]["portfolioValue"] == pytest.approx(1234.5)
    assert client.get_executions(since=1, sort="asc")["elements"][0]["uid"] == "e1"
    sent = kraken.requests[-1]
    assert sent.url.path == "/api/history/v3/executions"
    assert sent.url.query.decode() == "since=1&sort=asc"
    assert sent.headers["Nonce"].isdigit()


def test_futures_history_version_is_configurable(settings, kraken, clock) -> None:
    client = FuturesClient(futures_keys(), settings=settings, transport=kraken.transport(),
                           limiter=FuturesLimiter(clock=clock, sleep=clock.sleep),
                           history_version="v2")
    kraken.fault("executions", (200, {"elements": []}))
    client.get_executions()
    assert kraken.requests[-1].url.path == "/api/history/v2/executions"
    kraken.fault("positions", (200, {"elements": []}))
    client.get_position_history()
    assert kraken.requests[-1].url.path == "/api/history/v3/positions"  # v3 only


def test_private_call_without_keys_is_detectable(settings, kraken, clock) -> None:
    client = SpotClient(None, settings=settings, transport=kraken.transport())
    with pytest.raises(NoCredentialsError, match="KRAKEN_API_KEY"):
        client.get_balance()
    with pytest.raises(NoCredentialsError, match="KRAKEN_FUTURES__API_KEY"):
        FuturesClient(None, settings=settings, transport=kraken.transport()).get_accounts()


# -- what every client shares: per-key state, one lock per key, lifecycle -----------------------


def test_clients_of_one_key_share_its_limiter_and_other_keys_get_their_own(settings) -> None:
    other_spot = KeyPair.create("spot", "OTHER" + SPOT_KEY[5:], SPOT_SECRET, "test")
    other_futures = KeyPair.create("futures", "OTHER" + FUT_KEY[5:], FUT_SECRET, "test")
    spot = [SpotClient(keys, settings=settings) for keys in (spot_keys(), spot_keys(), other_spot)]
    assert spot[0].limiter is spot[1].limiter
    assert spot[0].limiter is not spot[2].limiter
    assert spot[0].public_limiter is spot[2].public_limiter  # public calls: one pace per host
    futures = [FuturesClient(keys, settings=settings)
               for keys in (futures_keys(), futures_keys(), other_futures)]
    assert futures[0].limiter is futures[1].limiter
    assert futures[0].limiter is not futures[2].limiter


def test_a_persisted_key_shares_its_limits_beside_its_nonce_state_unless_told_not_to(
        settings) -> None:
    spot = SpotClient(spot_keys(), settings=settings)
    futures = FuturesClient(futures_keys(), settings=settings)
    for state in (spot.limiter.state, futures.limiter.derivatives.state,
                  futures.limiter.history.state):
        assert state is not None and state.path.parent == settings.paths.nonce_dir
    in_memory = SpotClient(spot_keys(), settings=settings, persist_nonce=False)
    assert in_memory.limiter.state is None and in_memory.limiter is not spot.limiter
    for client in (FuturesClient(futures_keys(), settings=settings, persist_nonce=False),
                   FuturesClient(None, settings=settings)):  # no key: nothing to share
        assert client.limiter.derivatives.state is None and client.limiter is not futures.limiter


def test_a_signed_call_holds_its_keys_one_lock_from_signing_to_response(settings, kraken,
                                                                       clock) -> None:
    held: list[tuple[str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers.get("API-Key") or request.headers.get("APIKey")
        held.append((request.url.path, key_lock(key).locked() if key else
                     key_lock(SPOT_KEY).locked() or key_lock(FUT_KEY).locked()))
        return kraken.handler(request)

    transport = httpx.MockTransport(handler)
    spot = make_spot(settings, kraken, clock)
    spot._http._client._transport = transport
    futures = make_futures(settings, kraken, clock)
    futures._http._client._transport = transport
    spot.get_balance()
    spot.get_server_time()
    futures.get_accounts()
    futures.get_tickers()
    assert held == [("/0/private/Balance", True), ("/0/public/Time", False),
                    ("/derivatives/api/v3/accounts", True), ("/derivatives/api/v3/tickers", False)]
    assert not key_lock(SPOT_KEY).locked() and not key_lock(FUT_KEY).locked()


def test_clients_close_their_connections_when_their_block_ends(settings, kraken, clock) -> None:
    with make_spot(settings, kraken, clock) as spot, make_futures(settings, kraken,
                                                                 clock) as futures:
        assert spot.get_server_time()["unixtime"] == 1688669448
        assert futures.get_tickers()["result"] == "success"
    assert spot._http._client.is_closed and futures._http._client.is_closed
    assert repr(spot).startswith("SpotClient(base_url='")
    assert repr(futures).startswith("FuturesClient(base_url='")



KRAKEN_DIR = Path(krakked.kraken.__file__).parent
LAYERS_BELOW_KRAKEN = ("krakked.config", "krakked.credentials", "krakked.errors", "krakked.logs",
                       "krakked.times", "krakked._version")


def test_the_kraken_layer_imports_only_itself_and_the_layers_below_it() -> None:
    """``krakked`` itself is above: its lazy names reach the front door, sync and store."""
    wrong: list[str] = []
    for path in sorted(KRAKEN_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.split(".")[0] != "krakked" or name.startswith("krakked.kraken"):
                    continue
                if not name.startswith(LAYERS_BELOW_KRAKEN):
                    wrong.append(f"{path.name}: {name}")
    assert not wrong


def test_the_user_agent_and_the_package_carry_one_version() -> None:
    assert krakked.__version__ == importlib.import_module("krakked._version").__version__
    assert USER_AGENT.startswith(f"krakked/{krakked.__version__} ")

# -- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ("EAPI:Invalid key", AuthError),
        ("EAPI:Invalid signature", AuthError),
        ("EAPI:Invalid nonce", InvalidNonceError),
        ("EGeneral:Permission denied", PermissionDeniedError),
        ("EAPI:Permission denied", PermissionDeniedError),
        ("EGeneral:Temporary lockout", AuthError),
        ("EAuth:Account temporary disabled", AuthError),
        ("EAPI:Rate limit exceeded", RateLimitError),
        ("EGeneral:Too many requests", RateLimitError),
        ("EService:Throttled: 1688670000", RateLimitError),
        ("EOrder:Rate limit exceeded", RateLimitError),
        ("EService:Unavailable", ServiceUnavailableError),
        ("EService:Busy", ServiceUnavailableError),
        ("EService:Deadline elapsed", ServiceUnavailableError),
        ("EGeneral:Internal error:12", ServiceUnavailableError),
        ("EDatabase:Internal error", ServiceUnavailableError),
        ("EService:Market in cancel_only mode", ServiceUnavailableError),
        ("EGeneral:Invalid arguments:Index unavailable", InvalidRequestError),
        ("EGeneral:Unknown method", InvalidRequestError),
        ("EQuery:Unknown asset pair", UnknownPairError),
        ("EQuery:Unknown asset", InvalidRequestError),
        ("EOrder:Insufficient funds", InvalidRequestError),
        ("EFunding:Unknown withdraw key", InvalidRequestError),
        ("ETrade:User Locked", AuthError),
        ("EBM:limit exceeded:CAL", InvalidRequestError),
    ],
)
def test_every_spot_error_string_maps_to_its_class(error: str, cls: type) -> None:
    exc = classify_spot_errors([error], endpoint="spot:X")
    assert type(exc) is cls
    assert exc.kraken_errors == (error,)
    assert str(exc).startswith("spot:X: ")


def test_spot_warnings_alone_are_success() -> None:
    assert classify_spot_errors(["WGeneral:Something"], endpoint="spot:X") is None


def test_throttled_error_carries_seconds_to_wait() -> None:
    exc = classify_spot_errors(["EService:Throttled: 1010"], endpoint="spot:X", now=1000.0)
    assert exc.retry_after == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ("apiLimitExceeded", RateLimitError),
        ("authenticationError", AuthError),
        ("nonceBelowThreshold", InvalidNonceError),
        ("nonceDuplicate", InvalidNonceError),
        ("Server Error", ServiceUnavailableError),
        ("Unavailable", ServiceUnavailableError),
        ("unknownError", ServiceUnavailableError),
        ("marketUnavailable", ServiceUnavailableError),
        ("invalidArgument", InvalidRequestError),
        ("requiredArgumentMissing", InvalidRequestError),
        ("Json Parse Error", InvalidRequestError),
        ("accountInactive", AuthError),
    ],
)
def test_every_futures_error_string_maps_to_its_class(error: str, cls: type) -> None:
    assert type(classify_futures_error(error, endpoint="futures:x")) is cls


def test_futures_errors_array_shape_is_read(settings, kraken, clock) -> None:
    kraken.fault("accounts", (500, {"errors": [{"code": 92, "message": "INSUFFICIENT_MARGIN"}]}))
    kraken.fault("accounts", (200, {"result": "error", "errors": [{"message": "invalidAmount"}]}))
    with pytest.raises(InvalidRequestError, match="invalidAmount"):
        make_futures(settings, kraken, clock).get_accounts()


# -- retry categories --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        (502, b"<html>Bad gateway</html>"),
        (520, b""),
        (200, b'{"error": [], "result": {"ZUSD": "1'),  # truncated
        (200, b"not json at all"),
        (200, {"error": ["EService:Unavailable"]}),
        (200, {"error": ["EService:Busy"]}),
    ],
)
def test_transient_errors_retry_three_times_with_2_4_8_backoff(settings, kraken, clock,
                                                                fault) -> None:
    kraken.fault("Balance", fault, fault, fault)
    client = make_spot(settings, kraken, clock)
    assert client.get_balance()["ZUSD"] == "171288.6158"
    backoffs = [s for s in clock.sleeps if s >= 1.0]
    assert backoffs == pytest.approx([2.0, 4.0, 8.0])
    assert client.stats.retries == 3


def test_transient_errors_give_up_after_four_attempts(settings, kraken, clock) -> None:
    kraken.fault("Balance", *[(503, b"")] * 4)
    client = make_spot(settings, kraken, clock)
    with pytest.raises(ServiceUnavailableError, match="HTTP 503"):
        client.get_balance()
    assert len([r for r in kraken.requests if r.url.path.endswith("Balance")]) == 4


@pytest.mark.parametrize(
    ("fault", "exc"),
    [
        (httpx.ConnectError("x"), NetworkError),
        ((200, b"{bad"), MalformedResponseError),
    ],
)
def test_last_transient_failure_is_the_mapped_class(settings, kraken, clock, fault, exc) -> None:
    kraken.fault("Balance", *[fault] * 4)
    with pytest.raises(exc):
        make_spot(settings, kraken, clock).get_balance()


def test_jitter_stays_within_ten_percent() -> None:
    policy = RetryPolicy()
    assert policy.backoff(1, lambda: 0.0) == pytest.approx(1.8)
    assert policy.backoff(1, lambda: 1.0) == pytest.approx(2.2)
    assert policy.backoff(3, lambda: 0.5) == pytest.approx(8.0)


@pytest.mark.parametrize(
    "error",
    ["EAPI:Invalid key", "EAPI:Invalid signature", "EGeneral:Permission denied",
     "EGeneral:Invalid arguments", "EQuery:Unknown asset pair", "EGeneral:Temporary lockout"],
)
def test_auth_and_bad_request_errors_are_never_retried(settings, kraken, clock, error) -> None:
    kraken.fault("Balance", (200, {"error": [error]}))
    with pytest.raises(KrakenError):
        make_spot(settings, kraken, clock).get_balance()
    assert len(kraken.requests) == 1
    assert clock.sleeps == []


def test_invalid_nonce_is_retried_once_with_a_fresh_nonce(settings, kraken, clock) -> None:
    kraken.fault("Balance", (200, {"error": ["EAPI:Invalid nonce"]}))
    make_spot(settings, kraken, clock).get_balance()
    nonces = [dict(httpx.QueryParams(r.content.decode()))["nonce"] for r in kraken.requests]
    assert len(nonces) == 2 and int(nonces[1]) > int(nonces[0])
    signatures = [r.headers["API-Sign"] for r in kraken.requests]
    assert signatures[0] != signatures[1]  # re-signed, never resent


def test_invalid_nonce_twice_is_an_error(settings, kraken, clock) -> None:
    kraken.fault("Balance", *[(200, {"error": ["EAPI:Invalid nonce"]})] * 2)
    with pytest.raises(InvalidNonceError):
        make_spot(settings, kraken, clock).get_balance()
    assert len(kraken.requests) == 2


def test_every_retry_is_signed_afresh(settings, kraken, clock) -> None:
    kraken.fault("Balance", (503, b""), (200, {"error": ["EService:Unavailable"]}))
    make_spot(settings, kraken, clock).get_balance()
    nonces = [int(dict(httpx.QueryParams(r.content.decode()))["nonce"]) for r in kraken.requests]
    assert nonces == sorted(set(nonces)) and len(nonces) == 3


def test_spot_rate_limit_error_waits_for_counter_decay(settings, kraken, clock) -> None:
    kraken.fault("Balance", (200, {"error": ["EAPI:Rate limit exceeded"]}))
    client = make_spot(settings, kraken, clock)
    client.get_balance()
    assert client.stats.rate_limited == 1
    assert sum(clock.sleeps) >= 3.0  # the counter was set to max: at least one unit must decay


def test_public_too_many_requests_backs_off(settings, kraken, clock) -> None:
    kraken.fault("Time", (200, {"error": ["EGeneral:Too many requests"]}))
    client = make_spot(settings, kraken, clock)
    assert client.get_server_time()["unixtime"] == 1688669448
    assert sum(clock.sleeps) >= 1.0


def test_futures_api_limit_exceeded_is_retried(settings, kraken, clock) -> None:
    kraken.fault("accounts", (200, {"result": "error", "error": "apiLimitExceeded"}))
    client = make_futures(settings, kraken, clock)
    assert "accounts" in client.get_accounts()
    assert client.stats.rate_limited == 1


def test_futures_history_429_waits_rate_limit_reset(settings, kraken, clock) -> None:
    kraken.fault("executions", httpx.Response(429, text="Too many requests",
                                              headers={"rate-limit-reset": "42"}))
    client = make_futures(settings, kraken, clock)
    assert client.get_executions()["elements"]
    assert sum(clock.sleeps) == pytest.approx(42.0, abs=0.5)


def test_futures_bad_authent_is_auth_error(settings, kraken, clock) -> None:
    bad = KeyPair.create("futures", FUT_KEY, SPOT_SECRET, "test")
    with pytest.raises(AuthError):
        make_futures(settings, kraken, clock, keys=bad).get_accounts()
    with pytest.raises(AuthError):
        make_futures(settings, kraken, clock, keys=bad).get_executions()


def test_unknown_pair_from_kraken_names_the_pair(settings, kraken, clock) -> None:
    with pytest.raises(UnknownPairError, match="NOPEUSD"):
        make_spot(settings, kraken, clock).get_trades("NOPEUSD")


# -- limiter fidelity --------------------------------------------------------------------------


def test_sixty_private_calls_never_hit_krakens_counter(settings, kraken, clock) -> None:
    client = make_spot(settings, kraken, clock)
    for i in range(60):
        client.get_ledgers() if i % 3 == 0 else client.get_balance()
    assert kraken.rate_limit_rejections == 0
    assert kraken.max_counter_seen <= 15
    assert client.stats.rate_limited == 0


def test_fifteen_starter_calls_pass_then_the_sixteenth_waits(settings, kraken, clock) -> None:
    client = make_spot(settings, kraken, clock)
    for _ in range(15):
        client.get_balance()
    assert sum(clock.sleeps) == 0
    client.get_balance()
    assert sum(clock.sleeps) == pytest.approx(1 / 0.33, rel=0.01)


def test_waits_of_the_clients_own_limiters_are_counted_apart_from_krakens_answers(
    settings, kraken, clock
) -> None:
    client = make_spot(settings, kraken, clock)
    for _ in range(17):
        client.get_balance()
    stats = client.stats.to_dict()
    assert stats["rate_limit_waits"] == 2  # the 16th and 17th calls waited, the first 15 not
    assert stats["rate_limit_wait_seconds"] == pytest.approx(sum(clock.sleeps), abs=0.001)
    assert stats["rate_limit_wait_seconds"] == pytest.approx(2 * (1 / 0.33 + 0.02), abs=0.05)
    assert stats["rate_limited"] == 0  # Kraken never had to say so
    assert isinstance(client.stats, ClientStats)

    fclient = make_futures(settings, kraken, clock)
    for _ in range(101):  # the history pool holds 100 tokens
        fclient.get_executions()
    assert fclient.stats.rate_limit_waits == 1
    assert fclient.stats.rate_limit_wait_seconds == pytest.approx(6.0, abs=0.05)


def test_a_rate_limit_answer_counts_once_and_its_wait_on_the_limiter_too(
    settings, kraken, clock
) -> None:
    kraken.fault("Balance", (200, {"error": ["EAPI:Rate limit exceeded"]}))
    client = make_spot(settings, kraken, clock)
    client.get_balance()
    assert client.stats.rate_limited == 1
    assert client.stats.rate_limit_waits == 1  # the retry waited for the penalized counter
    assert client.stats.rate_limit_wait_seconds >= 3.0


def test_nonces_persist_across_clients_of_the_same_key(settings, kraken, clock) -> None:
    make_spot(settings, kraken, clock).get_balance()
    first = int(dict(httpx.QueryParams(kraken.requests[-1].content.decode()))["nonce"])
    files = list(settings.paths.nonce_dir.iterdir())
    assert files and all(SPOT_KEY not in f.name for f in files)
    make_spot(settings, kraken, clock).get_balance()
    second = int(dict(httpx.QueryParams(kraken.requests[-1].content.decode()))["nonce"])
    assert second > first


# -- redaction ---------------------------------------------------------------------------------


def test_no_key_secret_signature_or_nonce_leaks_from_failures(settings, kraken, clock,
                                                              caplog) -> None:
    texts: list[str] = []
    faults = [
        (200, {"error": ["EAPI:Invalid signature"]}),
        httpx.ConnectError("refused"),
        (500, b"boom"),
        (200, b"{"),
        (200, {"error": ["EAPI:Invalid nonce"]}),
    ]
    client = make_spot(settings, kraken, clock)
    fclient = make_futures(settings, kraken, clock)
    with caplog.at_level(logging.DEBUG):
        for fault in faults:
            kraken.fault("Balance", *[fault] * 4)
            kraken.fault("accounts", *[fault] * 4)
            for call in (client.get_balance, fclient.get_accounts):
                try:
                    call()
                except KrakenError as exc:
                    texts += [str(exc), repr(exc), repr(exc.args)]
        texts += [repr(client), repr(fclient), repr(client.credentials),
                  json.dumps(client.stats.to_dict())]
    texts += [r.getMessage() for r in caplog.records]
    signatures = {r.headers.get("API-Sign") or r.headers.get("Authent") for r in kraken.requests}
    signatures.discard(None)
    forbidden = [SPOT_KEY, SPOT_SECRET, FUT_KEY, FUT_SECRET, *signatures]
    assert texts
    for text in texts:
        for value in forbidden:
            assert value not in text
        assert "nonce=" not in text
