"""The account dlt sources end to end: real dlt pipelines into real DuckDB files, against the
simulator's Futures and Spot accounts (in-process, fake clocks, nothing sleeps) — paging, state,
dedup, failures, permissions, rate limits, fees joined to fills — and the REST-client auths
against the simulator served on loopback."""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import httpx
import pytest
import requests
from dlt.common.configuration import resolve_configuration
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.configuration.specs.base_configuration import is_secret_hint
from dlt.common.storages.exceptions import SchemaNotFoundError
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.sources.helpers.requests import Client as DltRetryingClient
from dlt.sources.helpers.rest_client import RESTClient
from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
from hypothesis import given, settings
from hypothesis import strategies as st

from krakked.account import (
    KrakenFuturesAuth,
    KrakenSpotAuth,
    kraken_futures_source,
    kraken_spot_source,
)
from krakked.account.auth import KrakenAuth
from krakked.account.common import (
    SkipCounter,
    coalesce_timestamp,
    parse_since,
    raw_data,
    resource_errors,
    to_naive_utc,
)
from krakked.account.futures import FEE_JOIN_SQL
from krakked.account.futures_helpers import account_log_row, execution_row, position_row
from krakked.account.futures_settings import EXECUTION_TIME_PATHS
from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.errors import NoCredentialsError, PermissionDeniedError, UsageError
from krakked.kraken.futures import FuturesClient
from krakked.kraken.limits import FuturesLimiter, SpotCounterLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.sim.server import running
from tests.fakes import FakeClock

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)  # three months of history: enough, and quick to load
AFTER_ALL = datetime(2026, 12, 1, tzinfo=UTC)  # every simulated history row is visible
FIXTURES = Path(__file__).parent.parent / "fixtures" / "account"


# --- helpers ------------------------------------------------------------------------------------


def make_sim(clock: SimClock, **options: Any) -> Simulator:
    options.setdefault("futures_executions", 300)
    options.setdefault("spot_trades", 300)
    options.setdefault("rate_limits", False)
    options.setdefault("public_rate", 0)
    return Simulator(SimConfig(seed=7, clock=clock.now, **options))


class Hooked(httpx.BaseTransport):
    """The simulator's transport, running ``action`` after the ``n``-th response of an endpoint
    (the last path segment: ``executions``, ``Ledgers``...)."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = sim.transport()
        self.calls: Counter[str] = Counter()
        self.hooks: dict[str, list[tuple[int, Callable[[], None]]]] = {}

    def after(self, endpoint: str, n: int, action: Callable[[], None]) -> Hooked:
        self.hooks.setdefault(endpoint, []).append((n, action))
        return self

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        name = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        self.calls[name] += 1
        for n, action in self.hooks.get(name, []):
            if self.calls[name] == n:
                action()
        return response


def futures_client(sim: Simulator, tmp_path: Path, transport: httpx.BaseTransport | None = None
                   ) -> FuturesClient:
    spec = sim.config.account("futures")
    fake = FakeClock()
    return FuturesClient(
        KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"),
        settings=load_settings({"KRAKKED_HOME": str(tmp_path / "home")}),
        transport=transport or sim.transport(),
        limiter=FuturesLimiter(clock=fake, sleep=fake.sleep), sleep=fake.sleep,
    )


def spot_client(sim: Simulator, tmp_path: Path, transport: httpx.BaseTransport | None = None,
                tier: str = "pro", clock: FakeClock | None = None) -> SpotClient:
    spec = sim.config.account("spot")
    fake = clock or FakeClock()
    return SpotClient(
        KeyPair.create("spot", spec.api_key, spec.api_secret, "sim"),
        settings=load_settings({"KRAKKED_HOME": str(tmp_path / "home")}),
        transport=transport or sim.transport(),
        limiter=SpotCounterLimiter(tier, clock=fake, sleep=fake.sleep), sleep=fake.sleep,
    )


def pipeline(tmp_path: Path, name: str = "kraken_futures") -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(str(tmp_path / f"{name}-x.duckdb")),
        dataset_name=name,
        pipelines_dir=str(tmp_path / "dlt"),
        dev_mode=False,
    )


def query(p: dlt.Pipeline, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with p.sql_client() as client:
        return [tuple(r) for r in client.execute_sql(sql, *args)]


def count(p: dlt.Pipeline, table: str) -> int:
    """Rows in ``table`` (0 when it was never created)."""
    try:
        p.default_schema  # noqa: B018 - raises until a first schema exists
    except SchemaNotFoundError:
        return 0
    exists = query(p, "SELECT count(*) FROM information_schema.tables "
                      "WHERE table_schema = ? AND table_name = ?", p.dataset_name, table)[0][0]
    if not exists:
        return 0
    return query(p, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 - test names


def res_state(p: dlt.Pipeline, resource: str) -> dict[str, Any]:
    sources = p.state.get("sources", {})
    for source in sources.values():
        if resource in source.get("resources", {}):
            return dict(source["resources"][resource])
    return {}


def visible(series: Any, now: datetime) -> int:
    return bisect.bisect_right(series, int(now.timestamp() * 1000))


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")


# --- Futures: executions ------------------------------------------------------------------------


def test_token_pagination_500_500_100_loads_1100_rows_and_state_at_last_timestamp(
        tmp_path: Path) -> None:
    clock = SimClock(AFTER_ALL)
    sim = make_sim(clock, futures_executions=1100)
    book = sim.book(sim.config.account("futures"))
    assert len(book.x_ts) == 1100
    p = pipeline(tmp_path)
    source = kraken_futures_source(client=futures_client(sim, tmp_path), page_size=500)
    p.run(source.with_resources("executions"))

    assert sim.requests["executions"] == 3  # 500 + 500 + 100
    assert count(p, "executions") == 1100
    assert query(p, "SELECT count(DISTINCT uid) FROM executions")[0][0] == 1100
    state = res_state(p, "executions")
    assert state["last_timestamp"] == iso_ms(book.x_ts[-1])
    assert state["continuation_token"] is None

    # The same window again: one page (since is inclusive), merged, nothing doubles.
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), page_size=500)
          .with_resources("executions"))
    assert sim.requests["executions"] == 4
    assert count(p, "executions") == 1100
    assert res_state(p, "executions")["last_timestamp"] == iso_ms(book.x_ts[-1])


def test_later_runs_append_only_new_executions(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    client = futures_client(sim, tmp_path)
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=client, page_size=100).with_resources("executions"))
    before = visible(book.x_ts, NOW)
    assert count(p, "executions") == before
    loads_before = query(p, "SELECT count(DISTINCT _dlt_load_id) FROM executions")[0][0]

    clock.advance(10 * 86_400)
    later = datetime.fromtimestamp(clock.now(), UTC)
    after = visible(book.x_ts, later)
    assert after > before
    p.run(kraken_futures_source(client=client, page_size=100).with_resources("executions"))
    assert count(p, "executions") == after
    assert query(p, "SELECT count(DISTINCT uid) FROM executions")[0][0] == after
    # Only the new rows (and the re-read boundary millisecond) came with the second load.
    second = query(p, "SELECT count(*) FROM executions WHERE _dlt_load_id = "
                      "(SELECT max(_dlt_load_id) FROM executions)")[0][0]
    assert after - before <= second <= after - before + 2
    assert loads_before == 1


def test_since_seeds_only_the_first_run(tmp_path: Path) -> None:
    clock = SimClock(AFTER_ALL)
    sim = make_sim(clock, futures_executions=200)
    book = sim.book(sim.config.account("futures"))
    since = datetime(2026, 7, 1, tzinfo=UTC)
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), since="2026-07-01T00:00:00Z")
          .with_resources("executions"))
    expected = len(book.x_ts) - bisect.bisect_left(book.x_ts, int(since.timestamp() * 1000))
    assert 0 < expected < len(book.x_ts)
    assert count(p, "executions") == expected
    first = query(p, "SELECT min(timestamp) FROM executions")[0][0]
    assert first >= since
    # With state in place, an earlier `since` changes nothing: state wins.
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), since="2026-01-01")
          .with_resources("executions"))
    assert count(p, "executions") == expected


def test_since_is_read_one_way_by_the_sources_and_the_runner_with_one_error() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    for value in ("2024-01-01T00:00:00Z", " 2024-01-01 ", datetime(2024, 1, 1), 1704067200,
                  "1704067200000", Decimal("1704067200")):
        assert parse_since(value) == at
    assert parse_since(None) is None and parse_since("  ") is None
    for bad in ("last tuesday", "2024-13-01", -5, [2024]):
        with pytest.raises(UsageError, match=r"^--since: .* is not an ISO 8601 time"):
            parse_since(bad, "--since")
    for source in (kraken_futures_source, kraken_spot_source):
        with pytest.raises(UsageError) as info:
            source(client=object(), since="last tuesday")
        assert str(info.value) == ("since: 'last tuesday' is not an ISO 8601 time "
                                   "(e.g. 2024-01-01T00:00:00Z) or a Unix time")


def test_full_executions_page_without_token_continues_from_its_last_timestamp(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(AFTER_ALL)
    sim = make_sim(clock, futures_executions=150)
    sim.inject("notoken", "executions", 1)
    p = pipeline(tmp_path)
    with caplog.at_level(logging.WARNING, logger="krakked.account"):
        p.run(kraken_futures_source(client=futures_client(sim, tmp_path), page_size=50)
              .with_resources("executions"))
    assert "without a continuation token" in caplog.text
    assert count(p, "executions") == 150


def test_failure_mid_run_leaves_state_and_tables_unchanged_then_the_next_run_resumes(
        tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock, futures_executions=600)
    book = sim.book(sim.config.account("futures"))
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), page_size=50)
          .with_resources("executions", "account_log"))
    state_before = res_state(p, "executions")
    log_state_before = res_state(p, "account_log")
    rows_before = count(p, "executions")
    log_rows_before = count(p, "account_log")

    clock.advance(10 * 86_400)
    transport = Hooked(sim).after("executions", 1,
                                  lambda: sim.inject("http500", "executions", 4))
    # Enough new executions for several pages; the 2nd page fails 4 times (all retries).
    with pytest.raises(PipelineStepFailed):
        p.run(kraken_futures_source(client=futures_client(sim, tmp_path, transport),
                                    page_size=2).with_resources("executions", "account_log"))
    assert transport.calls["executions"] == 5  # page 1, then 4 attempts at page 2
    assert res_state(p, "executions") == state_before
    assert res_state(p, "account_log") == log_state_before
    assert count(p, "executions") == rows_before
    assert count(p, "account_log") == log_rows_before
    assert not p.list_extracted_load_packages()
    assert not p.list_normalized_load_packages()

    # A fresh pipeline object (state restored from disk) completes the window.
    again = pipeline(tmp_path)
    again.run(kraken_futures_source(client=futures_client(sim, tmp_path), page_size=50)
              .with_resources("executions", "account_log"))
    now = datetime.fromtimestamp(clock.now(), UTC)
    assert count(again, "executions") == visible(book.x_ts, now)
    assert count(again, "account_log") == visible(book.log_ts, now)
    assert res_state(again, "executions")["last_timestamp"] > state_before["last_timestamp"]


# --- Futures: permissions, rate limits, credentials --------------------------------------------


def test_permission_denied_on_one_resource_skips_it_and_loads_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    sim.inject("permission", "executions", 1)
    p = pipeline(tmp_path)
    with caplog.at_level(logging.WARNING, logger="krakked.account"):
        p.run(kraken_futures_source(client=futures_client(sim, tmp_path)))
    assert "executions: permission denied (permissionDenied); skipped" in caplog.text
    assert count(p, "executions") == 0
    assert "last_timestamp" not in res_state(p, "executions")
    assert count(p, "account_log") == visible(book.log_ts, NOW)
    assert count(p, "position_history") == visible(book.pos_ts, NOW)
    assert count(p, "tickers") > 0
    assert count(p, "open_positions") > 0


def test_strict_makes_permission_denied_fail_the_run(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    sim.inject("permission", "openpositions", 1)
    p = pipeline(tmp_path)
    with pytest.raises(PipelineStepFailed) as info:
        p.run(kraken_futures_source(client=futures_client(sim, tmp_path), strict=True))
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, PermissionDeniedError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, PermissionDeniedError)
    assert count(p, "executions") == 0


def test_429_and_api_limit_exceeded_are_waited_out(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    sim.inject("ratelimit", "executions", 2)  # history: HTTP 429 + rate-limit-reset
    sim.inject("ratelimit", "openpositions", 1)  # derivatives: apiLimitExceeded
    client = futures_client(sim, tmp_path)
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=client).with_resources("executions", "open_positions"))
    assert client.stats.rate_limited == 3
    assert count(p, "executions") == visible(book.x_ts, NOW)
    assert count(p, "open_positions") == len(book.position_at())


def test_missing_keys_raise_no_credentials_error_listing_every_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KRAKEN_FUTURES__API_KEY", "KRAKEN_FUTURES__API_SECRET", "KRAKEN_API_PUBLIC_KEY",
                "KRAKEN_API_SECRET_KEY", "KRAKEN_API_KEY", "KRAKEN_API_SECRET",
                "KRAKEN_SPOT__API_KEY", "KRAKEN_SPOT__API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KRAKKED_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"KRAKKED_HOME": str(tmp_path / "home")})
    with pytest.raises(NoCredentialsError) as info:
        kraken_futures_source(settings=settings)
    message = str(info.value)
    assert "\n" not in message
    for way in ("KRAKEN_FUTURES__API_KEY", "KRAKEN_API_PUBLIC_KEY", ".dlt/secrets.toml",
                "kraken_futures.api_key", "krakked setup"):
        assert way in message
    with pytest.raises(NoCredentialsError, match="KRAKEN_API_KEY"):
        kraken_spot_source(settings=settings)


# --- Futures: account log, fees, positions -----------------------------------------------------


def test_fees_join_executions_to_their_two_account_log_legs(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock, futures_executions=600)
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path)))
    executions = count(p, "executions")
    assert executions > 100

    legs = query(p, """
        SELECT e.execution_uid, count(l.booking_uid)
        FROM executions e LEFT JOIN account_log l ON l.execution = e.execution_uid
        GROUP BY e.execution_uid""")
    assert len(legs) == executions
    assert {n for _, n in legs} == {2}

    joined = query(p, FEE_JOIN_SQL)
    assert len(joined) == executions
    columns = ["uid", "execution_uid", "timestamp", "tradeable", "direction", "quantity", "price",
               "fee", "realized_pnl", "cash_after", "position_after"]
    by_exec = {row[1]: dict(zip(columns, row, strict=True)) for row in joined}
    own_fees = dict(query(p, "SELECT execution_uid, fee FROM executions"))
    for uid, row in by_exec.items():
        assert row["fee"] == own_fees[uid]  # exact: both are DECIMAL(38,18)
    # The position leg holds the position after the fill (the execution's own position size).
    sizes = dict(query(p, "SELECT execution_uid, position_size FROM executions"))
    for uid, row in by_exec.items():
        assert row["position_after"] == sizes[uid]


def test_position_history_flattens_position_update_events(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), page_size=200)
          .with_resources("position_history"))
    assert count(p, "position_history") == visible(book.pos_ts, NOW)
    columns = set(p.default_schema.get_table_columns("position_history"))
    assert {"uid", "element_uid", "execution_uid", "tradeable", "old_position", "new_position",
            "position_change", "update_reason", "realized_pnl", "realized_funding", "fee",
            "fill_time", "timestamp", "raw_data"} <= columns
    assert not any(c.startswith("event") for c in columns)
    trades = query(p, "SELECT count(*) FROM position_history WHERE update_reason = 'trade' "
                      "AND uid = execution_uid")[0][0]
    funding = query(p, "SELECT count(*) FROM position_history WHERE update_reason = "
                       "'fundingRealisation' AND execution_uid IS NULL AND uid = element_uid")[0][0]
    assert trades == visible(book.x_ts, NOW)
    assert trades + funding == count(p, "position_history")
    sample = query(p, "SELECT raw_data FROM position_history LIMIT 1")[0][0]
    assert json.loads(sample)["event"]["PositionUpdate"]


def test_account_log_paged_by_time_keeps_rows_sharing_a_millisecond(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    p = pipeline(tmp_path)
    # 7 rows a page: page boundaries fall between an execution's two legs (same timestamp).
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), account_log_count=7,
                                account_log_paging="time", fallback_max_pages=10_000)
          .with_resources("account_log"))
    expected = visible(book.log_ts, NOW)
    assert count(p, "account_log") == expected
    assert query(p, "SELECT min(id), max(id), count(DISTINCT id) FROM account_log")[0] == (
        1, expected, expected)
    state = res_state(p, "account_log")
    assert state["gaps"] == []
    assert state["last_id"] == expected


def test_full_page_without_token_pages_backwards_and_stops_at_50_pages(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    expected = visible(book.log_ts, NOW)
    p = pipeline(tmp_path)
    with caplog.at_level(logging.WARNING, logger="krakked.account"):
        p.run(kraken_futures_source(client=futures_client(sim, tmp_path), account_log_count=5,
                                    account_log_paging="time").with_resources("account_log"))
    assert sim.requests["account-log"] == 51  # the first page + 50 fallback pages
    assert "fallback paging stopped after 50 pages" in caplog.text
    first_run = count(p, "account_log")
    # Each page re-reads its boundary millisecond (two legs per fill), so ~3 new rows a page.
    assert 50 * 2 < first_run < expected
    newest = query(p, "SELECT max(id) FROM account_log")[0][0]
    assert newest == expected  # it walked back from the newest entry
    state = res_state(p, "account_log")
    assert len(state["gaps"]) == 1
    gap_since, gap_before = state["gaps"][0]
    assert gap_since is None
    oldest_loaded = query(p, "SELECT min(timestamp) FROM account_log")[0][0]
    assert gap_before == int(oldest_loaded.timestamp() * 1000) + 1
    assert state["last_timestamp"] == iso_ms(book.log_ts[expected - 1])

    # A later run (bigger pages) fills the gap first, then nothing is missing or doubled.
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), account_log_count=500,
                                account_log_paging="time").with_resources("account_log"))
    assert res_state(p, "account_log")["gaps"] == []
    assert count(p, "account_log") == expected
    assert query(p, "SELECT count(DISTINCT booking_uid) FROM account_log")[0][0] == expected


def test_account_log_pages_by_entry_id_and_resumes_from_last_id(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), account_log_count=300)
          .with_resources("account_log"))
    first = visible(book.log_ts, NOW)
    assert count(p, "account_log") == first
    assert res_state(p, "account_log")["last_id"] == first
    assert sim.requests["account-log"] == first // 300 + 1
    clock.advance(2 * 86_400)
    p.run(kraken_futures_source(client=futures_client(sim, tmp_path), account_log_count=300)
          .with_resources("account_log"))
    second = visible(book.log_ts, datetime.fromtimestamp(clock.now(), UTC))
    assert second > first
    assert count(p, "account_log") == second
    assert res_state(p, "account_log")["last_id"] == second


# --- Futures: recorded-style variants -----------------------------------------------------------


class FixtureFutures:
    """A FuturesClient stand-in replaying tests/fixtures/account/futures_variants.json."""

    def __init__(self) -> None:
        self.data = json.loads((FIXTURES / "futures_variants.json").read_text())
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _page(self, name: str, pages: list[dict[str, Any]], params: dict[str, Any]
              ) -> dict[str, Any]:
        self.calls.append((name, params))
        token = params.get("continuation_token")
        return pages[1] if token == "page-2" else pages[0]

    def get_executions(self, **params: Any) -> dict[str, Any]:
        return self._page("executions", self.data["executions"], params)

    def get_account_log(self, **params: Any) -> dict[str, Any]:
        return self._page("account_log", self.data["account_log"], params)

    def get_position_history(self, **params: Any) -> dict[str, Any]:
        return self._page("positions", self.data["positions"], params)

    def get_tickers(self) -> dict[str, Any]:
        return self.data["tickers"]

    def get_open_positions(self) -> dict[str, Any]:
        return self.data["open_positions"]


def _at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_timestamp_coalescing_order_and_payload_variants(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FixtureFutures()
    p = pipeline(tmp_path)
    with caplog.at_level(logging.WARNING, logger="krakked.account"):
        p.run(kraken_futures_source(client=fake))  # type: ignore[arg-type]

    times = dict(query(p, "SELECT uid, timestamp FROM executions"))
    assert times == {
        "ev-1": _at(2026, 1, 1),  # `timestamp` wins over info.timestamp
        "ev-2": _at(2026, 1, 1, 0, 0, 1) + timedelta(milliseconds=500),  # info.timestamp (ISO)
        "ev-3": _at(2026, 1, 1, 0, 0, 2),  # takerOrder.timestamp wins over trade.timestamp
        "ev-4": _at(2026, 1, 1, 0, 0, 3),  # trade.timestamp in seconds, blank info skipped
        "ev-6": _at(2026, 1, 1, 0, 0, 4),
    }
    assert "executions: 1 record(s) skipped without a usable timestamp" in caplog.text
    # `executionEvents`, lowercase v2 `execution`, snake_case `continuation_token` all followed.
    assert [c[1].get("continuation_token") for c in fake.calls if c[0] == "executions"] == [
        None, "page-2"]
    ours = query(p, "SELECT uid, execution_uid, liquidity, fee, position_size, direction, "
                    "taker_reduced_quantity FROM executions WHERE uid IN ('ev-1', 'ev-6') "
                    "ORDER BY uid")
    assert ours == [
        ("ev-1", "ex-1", "maker", Decimal("0.03007500"), Decimal("1.5"), "Buy", None),
        ("ev-6", "ex-6", "taker", Decimal("0.315"), Decimal("-6"), "Sell", Decimal("0.5")),
    ]

    log_times = dict(query(p, "SELECT booking_uid, timestamp FROM account_log"))
    assert log_times == {"b-1": _at(2026, 1, 1), "b-2": _at(2026, 1, 1)}  # `timestamp` > `date`
    assert "account_log: 1 record(s) skipped" in caplog.text

    positions = query(p, "SELECT uid, element_uid, timestamp, new_position, realized_pnl "
                         "FROM position_history ORDER BY timestamp")
    assert positions == [
        ("ex-1", "pe-1", _at(2026, 1, 1), Decimal("1.5"), Decimal("0")),
        ("pe-2", "pe-2", _at(2026, 1, 2), Decimal("1.5"), None),
    ]
    assert "position_history: 1 record(s) skipped" in caplog.text

    assert count(p, "tickers") == 2
    rate = query(p, "SELECT funding_rate, bid_size FROM tickers WHERE symbol = 'PF_XBTUSD'")[0]
    assert rate == (Decimal("1.18588737106e-07"), Decimal(1000))  # exact, not a double
    assert count(p, "open_positions") == 1


def test_raw_data_is_deterministic_json_on_every_row(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    p.run(kraken_futures_source(client=FixtureFutures()))  # type: ignore[arg-type]
    data = json.loads((FIXTURES / "futures_variants.json").read_text())
    first = data["executions"][0]["executionEvents"][0]
    stored = query(p, "SELECT raw_data FROM executions WHERE uid = 'ev-1'")[0][0]
    assert stored == json.dumps(first, sort_keys=True, separators=(",", ":"))
    for table in ("executions", "account_log", "position_history", "tickers", "open_positions"):
        nulls = query(p, f"SELECT count(*) FROM {table} WHERE raw_data IS NULL")  # noqa: S608
        assert nulls[0][0] == 0
    assert raw_data({"b": Decimal("0.1"), "a": [Decimal("2")]}) == '{"a":[2],"b":0.1}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.sampled_from(["2026-01-01T00:00:00Z", "1767225600000", "1767225600.5", " ", "Z",
                       "2026-13-01", "1e400", "-1", "0"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["timestamp", "info", "date", "takerOrder", "trade", "event", "Execution",
                         "execution", "PositionUpdate", "uid", "makerOrder", "fillTime",
                         "executionUid", "x"]), children, max_size=5),
    max_leaves=16,
)


@settings(max_examples=200, deadline=None)
@given(record=json_values)
def test_timestamp_coalescing_yields_utc_or_a_counted_skip_and_never_raises(record: Any) -> None:
    result = coalesce_timestamp(record, (*EXECUTION_TIME_PATHS, "date"))
    if result is not None:
        assert result.tzinfo is not None
        assert result.utcoffset() == timedelta(0)
        assert to_naive_utc(result).tzinfo is None
    if isinstance(record, dict):
        skips = SkipCounter("executions")
        for build in (execution_row, position_row, account_log_row):
            row = build(record)
            if row is None:
                skips.skip(record)
            else:
                assert row["timestamp"].tzinfo is None
                json.loads(row["raw_data"])
        assert skips.count <= 3


@given(ms=st.integers(min_value=10**11, max_value=10**13))
def test_millisecond_timestamps_round_trip(ms: int) -> None:
    result = coalesce_timestamp({"trade": {"timestamp": ms}}, EXECUTION_TIME_PATHS)
    assert result == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


# --- Spot ----------------------------------------------------------------------------------------


def _spot_ids(p: dlt.Pipeline, table: str, key: str) -> Counter[str]:
    return Counter(r[0] for r in query(p, f"SELECT {key} FROM {table}"))  # noqa: S608


def test_spot_ofs_paging_loads_every_entry_once(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("spot"))
    p = pipeline(tmp_path, "kraken_spot")
    p.run(kraken_spot_source(client=spot_client(sim, tmp_path)))
    trades, ledger, orders = book.visible_trades(), book.visible_ledger(), book.visible_orders()
    assert len(ledger) > 150  # several 50-entry pages
    assert _spot_ids(p, "ledgers", "ledger_id") == Counter(e.id for e in ledger)
    assert _spot_ids(p, "trades_history", "txid") == Counter(t.txid for t in trades)
    assert _spot_ids(p, "closed_orders", "txid") == Counter(o.txid for o in orders)
    now = clock.now()
    assert count(p, "deposits") == len([d for d in book.deposits if d.time <= now]) > 0
    assert count(p, "withdrawals") == len([w for w in book.withdrawals if w.time <= now])
    assert sim.requests["Ledgers"] == -(-len(ledger) // 50)
    newest = max(t.time for t in trades)
    assert res_state(p, "trades_history")["last_timestamp"].startswith(
        datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds")[:19])
    # Exact decimals and UTC timestamps.
    entry = ledger[-1]
    row = query(p, "SELECT amount, fee, balance, timestamp FROM ledgers WHERE ledger_id = ?",
                entry.id)[0]
    assert row[:3] == (entry.amount, entry.fee, entry.balance)
    assert abs(row[3].timestamp() - entry.time) < 1e-3
    balances = dict(query(p, "SELECT asset, balance FROM balances"))
    assert balances == {k: v for k, v in book.balances().items()}

    # Re-running the same window merges: nothing doubles.
    p.run(kraken_spot_source(client=spot_client(sim, tmp_path))
          .with_resources("ledgers", "trades_history"))
    assert count(p, "ledgers") == len(ledger)
    assert count(p, "trades_history") == len(trades)


def test_spot_entries_added_between_pages_are_each_loaded_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("spot"))
    before_trades = {t.txid for t in book.visible_trades()}
    before_ledger = {e.id for e in book.visible_ledger()}
    added: list[Any] = []
    transport = (Hooked(sim)
                 .after("TradesHistory", 1, lambda: added.append(book.add_trade()))
                 .after("Ledgers", 2, lambda: added.append(book.add_trade())))
    p = pipeline(tmp_path, "kraken_spot")
    with caplog.at_level(logging.INFO, logger="krakked.account"):
        p.run(kraken_spot_source(client=spot_client(sim, tmp_path, transport))
              .with_resources("trades_history", "ledgers"))
    assert "while paging" in caplog.text
    trades = _spot_ids(p, "trades_history", "txid")
    ledgers = _spot_ids(p, "ledgers", "ledger_id")
    assert set(trades) >= before_trades and max(trades.values()) == 1
    assert set(ledgers) >= before_ledger and max(ledgers.values()) == 1

    # The next run picks up what arrived at the top while the first paged downwards.
    p.run(kraken_spot_source(client=spot_client(sim, tmp_path))
          .with_resources("trades_history", "ledgers"))
    assert _spot_ids(p, "trades_history", "txid") == Counter(t.txid for t in book.visible_trades())
    assert _spot_ids(p, "ledgers", "ledger_id") == Counter(e.id for e in book.visible_ledger())
    assert {t.txid for t in added} <= set(_spot_ids(p, "trades_history", "txid"))


def test_spot_failure_keeps_what_it_loaded_and_resumes_from_the_last_good_timestamp(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("spot"))
    transport = Hooked(sim).after("Ledgers", 1, lambda: sim.inject("http500", "Ledgers", 4))
    p = pipeline(tmp_path, "kraken_spot")
    with caplog.at_level(logging.ERROR, logger="krakked.account"):
        p.run(kraken_spot_source(client=spot_client(sim, tmp_path, transport))
              .with_resources("ledgers", "trades_history"))
    assert "ledgers: spot:Ledgers: HTTP 500" in caplog.text
    assert count(p, "ledgers") == 50  # the first page is kept
    assert count(p, "trades_history") == len(book.visible_trades())
    state = res_state(p, "ledgers")
    assert "last_timestamp" not in state  # no good window yet: the next run starts over
    assert state["last_error"]["rows_kept"] == 50
    assert resource_errors(p.state) == {"ledgers": state["last_error"]["message"]}

    p.run(kraken_spot_source(client=spot_client(sim, tmp_path))
          .with_resources("ledgers", "trades_history"))
    assert _spot_ids(p, "ledgers", "ledger_id") == Counter(e.id for e in book.visible_ledger())
    assert res_state(p, "ledgers")["last_error"] is None
    assert resource_errors(p.state) == {}


def test_spot_strict_failure_fails_the_run(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    sim.inject("http500", "TradesHistory", 4)
    p = pipeline(tmp_path, "kraken_spot")
    with pytest.raises(PipelineStepFailed):
        p.run(kraken_spot_source(client=spot_client(sim, tmp_path), strict=True)
              .with_resources("trades_history"))
    assert count(p, "trades_history") == 0


def test_spot_permission_denied_and_rate_limits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("spot"))
    sim.inject("permission", "ClosedOrders", 1)
    sim.inject("ratelimit", "TradesHistory", 2)  # EAPI:Rate limit exceeded, on HTTP 200
    client = spot_client(sim, tmp_path)
    p = pipeline(tmp_path, "kraken_spot")
    with caplog.at_level(logging.WARNING, logger="krakked.account"):
        p.run(kraken_spot_source(client=client))
    assert "closed_orders: permission denied (EGeneral:Permission denied); skipped" in caplog.text
    assert count(p, "closed_orders") == 0
    assert client.stats.rate_limited == 2
    assert count(p, "trades_history") == len(book.visible_trades())
    assert count(p, "ledgers") == len(book.visible_ledger())


def test_spot_history_costs_are_honoured_by_the_call_counter(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    mono = FakeClock()
    sim = make_sim(clock, rate_limits=True, monotonic=mono, tier="starter")
    book = sim.book(sim.config.account("spot"))
    client = spot_client(sim, tmp_path, tier="starter", clock=mono)
    p = pipeline(tmp_path, "kraken_spot")
    p.run(kraken_spot_source(client=client).with_resources("ledgers", "trades_history",
                                                           "closed_orders"))
    assert client.stats.rate_limited == 0  # Kraken's counter was never exceeded...
    assert sum(mono.sleeps) > 10  # ...because the limiter waited for it to decay
    assert count(p, "ledgers") == len(book.visible_ledger())


# --- REST-client auth ----------------------------------------------------------------------------


def test_both_auths_take_their_shared_config_fields_from_one_dlt_configspec_base(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shared = {"api_key", "api_secret", "nonce_format", "nonce_dir", "persist_nonce"}
    futures_fields = KrakenFuturesAuth.get_resolvable_fields()
    spot_fields = KrakenSpotAuth.get_resolvable_fields()
    assert set(futures_fields) == shared == set(KrakenAuth.get_resolvable_fields())
    assert set(spot_fields) == shared | {"otp"}
    for fields in (futures_fields, spot_fields):
        assert is_secret_hint(fields["api_secret"]) and not is_secret_hint(fields["api_key"])
    assert is_secret_hint(spot_fields["otp"])

    # dlt resolves the inherited fields of each auth from its own config section
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0NTY3OA=="
    for section, key in (("KRAKEN_FUTURES", "FUTKEY1234"), ("KRAKEN_SPOT", "SPOTKEY1234")):
        monkeypatch.setenv(f"{section}__CREDENTIALS__API_KEY", key)
        monkeypatch.setenv(f"{section}__CREDENTIALS__API_SECRET", secret)
        monkeypatch.setenv(f"{section}__CREDENTIALS__PERSIST_NONCE", "false")
    monkeypatch.setenv("KRAKEN_SPOT__CREDENTIALS__OTP", "123456")
    futures = resolve_configuration(KrakenFuturesAuth(), sections=("kraken_futures",))
    spot = resolve_configuration(KrakenSpotAuth(), sections=("kraken_spot",))
    assert (futures.api_key, futures.persist_nonce, futures.nonce_format) == (
        "FUTKEY1234", False, "ms_counter")
    assert (spot.api_key, spot.persist_nonce, spot.otp) == ("SPOTKEY1234", False, "123456")
    assert str(futures.api_secret) == str(spot.api_secret) == secret
    assert repr(futures) == "KrakenFuturesAuth(api_key='FUTK…', api_secret=REDACTED)"
    assert repr(spot) == "KrakenSpotAuth(api_key='SPOT…', api_secret=REDACTED)"
    # the base's key and secret stay required in each subclass
    monkeypatch.delenv("KRAKEN_FUTURES__CREDENTIALS__API_KEY")
    with pytest.raises(ConfigFieldMissingException) as missing:
        resolve_configuration(KrakenFuturesAuth(), sections=("kraken_futures",))
    assert missing.value.fields == ["api_key"]
    # the shared constructor builds the subclass it is called on
    pair = KeyPair.create("spot", "SPOTKEY1234", secret, "test")
    assert type(KrakenSpotAuth.from_key_pair(pair, persist_nonce=False)) is KrakenSpotAuth


def test_auth_classes_never_show_the_secret() -> None:
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0NTY3OA=="
    for auth in (KrakenFuturesAuth(api_key="KEY123456", api_secret=secret),
                 KrakenSpotAuth(api_key="KEY123456", api_secret=secret)):
        for text in (repr(auth), str(auth), f"{auth}"):
            assert secret not in text
            assert "KEY123456" not in text
            assert "REDACTED" in text


def test_kraken_futures_auth_signs_rest_client_pages_on_loopback(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    book = sim.book(sim.config.account("futures"))
    spec = sim.config.account("futures")
    auth = KrakenFuturesAuth.from_key_pair(
        KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"), persist_nonce=False)
    with running(sim) as info:
        client = RESTClient(base_url=info["futures_url"], auth=auth, session=requests.Session())
        pages = list(client.paginate(
            "/api/history/v3/executions", params={"sort": "asc", "count": 20},
            paginator=JSONResponseCursorPaginator(cursor_path="continuationToken",
                                                  cursor_param="continuation_token"),
            data_selector="elements"))
        tickers = client.get("/derivatives/api/v3/openpositions").json()
    assert len(pages) == -(-visible(book.x_ts, NOW) // 20)
    assert sum(len(page) for page in pages) == visible(book.x_ts, NOW)
    assert tickers["result"] == "success"


def test_kraken_spot_auth_signs_form_and_json_bodies_and_dlt_retry_reuses_the_nonce(
        tmp_path: Path) -> None:
    clock = SimClock(NOW)
    sim = make_sim(clock)
    spec = sim.config.account("spot")
    auth = KrakenSpotAuth(api_key=spec.api_key, api_secret=spec.api_secret, persist_nonce=False)
    with running(sim) as info:
        client = RESTClient(base_url=info["spot_url"], auth=auth, session=requests.Session())
        form = client.post("/0/private/Ledgers", data={"ofs": 50}).json()
        as_json = client.post("/0/private/Balance", json={}).json()
        assert form["error"] == [] and len(form["result"]["ledger"]) == 50
        assert as_json["error"] == [] and as_json["result"]

        # dlt's retrying session re-sends the same prepared request: the nonce is reused.
        sim.inject("http500", "Balance", 1)
        retrying = DltRetryingClient(raise_for_status=False, request_max_attempts=2,
                                     request_backoff_factor=0, respect_retry_after_header=False)
        dlt_client = RESTClient(base_url=info["spot_url"], auth=auth, session=retrying.session)
        assert dlt_client.post("/0/private/Balance", json={}).json()["error"] == [
            "EAPI:Invalid nonce"]
        # Without dlt's retry, the caller re-sends from scratch and the fresh nonce works.
        sim.inject("http500", "Balance", 1)
        assert client.post("/0/private/Balance", json={}).status_code == 500
        assert client.post("/0/private/Balance", json={}).json()["error"] == []


def test_nonces_stay_unique_under_many_concurrent_calls(tmp_path: Path) -> None:
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0NTY3OA=="
    auth = KrakenFuturesAuth(api_key="NONCETEST", api_secret=secret,
                             nonce_dir=str(tmp_path / "nonces"))
    seen: list[int] = []
    lock = threading.Lock()

    def sign(n: int) -> None:
        mine = []
        for i in range(n):
            request = requests.Request("GET", "https://futures.kraken.com/api/history/v3/"
                                       f"executions?count={i}").prepare()
            auth(request)
            mine.append(int(request.headers["Nonce"]))
        assert mine == sorted(mine)
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=sign, args=(125,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 1000
    # A client on the same key and nonce directory continues above every nonce issued.
    again = KrakenFuturesAuth(api_key="NONCETEST", api_secret=secret,
                              nonce_dir=str(tmp_path / "nonces"))
    request = requests.Request("GET", "https://futures.kraken.com/api/v3/x").prepare()
    assert int(again(request).headers["Nonce"]) > max(seen)


class RepeatingTokenFutures(FixtureFutures):
    """Answers every executions page with the same continuation token (a paging loop)."""

    def get_executions(self, **params: Any) -> dict[str, Any]:
        page = dict(self.data["executions"][0])
        page["continuationToken"] = "stuck"
        self.calls.append(("executions", params))
        return page


def test_a_continuation_token_repeated_by_kraken_fails_instead_of_looping(
        tmp_path: Path) -> None:
    fake = RepeatingTokenFutures()
    p = pipeline(tmp_path)
    with pytest.raises(PipelineStepFailed, match="same continuation token twice"):
        p.run(kraken_futures_source(client=fake).with_resources("executions"))  # type: ignore[arg-type]
    assert len(fake.calls) == 2  # the first page, then the repeat: no third request
