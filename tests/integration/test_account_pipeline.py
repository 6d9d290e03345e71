"""The account-history runner against the simulator into real DuckDB files: reports, cursors,
no duplicates, ``since``, state restored from the destination, resets, alerts and credentials."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from krakked.account.alerts import THRESHOLDS, evaluate_alerts
from krakked.account.destinations import DUCKDB_FILES, default_duckdb_path, make_pipeline
from krakked.account.runlog import RUNS_TABLE
from krakked.account.runner import run_sync, run_syncs
from krakked.account.sources import RESOURCES
from krakked.account.state import account_state, reset_all, reset_resource
from krakked.config import Settings, load_settings
from krakked.credentials import ENV_VAR_PAIRS, KeyPair
from krakked.errors import NoCredentialsError, RateLimitError, UsageError
from krakked.kraken.futures import FuturesClient
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import FuturesLimiter, PublicLimiter, SpotCounterLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator

NOW = datetime(2026, 11, 22, tzinfo=UTC)
KEYS = {"executions": "uid", "account_log": "booking_uid", "position_history": "uid"}


@pytest.fixture(autouse=True)
def _offline_dlt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


@pytest.fixture
def sim(clock: SimClock) -> Simulator:
    return Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0,
                               futures_executions=150, spot_trades=100))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"KRAKKED_HOME": str(tmp_path / "home")})


@pytest.fixture
def now(clock: SimClock) -> Callable[[], datetime]:
    return lambda: datetime.fromtimestamp(clock.now(), UTC)


@pytest.fixture
def futures(sim: Simulator, settings: Settings, clock: SimClock
            ) -> Iterator[Callable[..., FuturesClient]]:
    """A factory of Futures clients on the simulator; every wait advances the sim clock."""
    made: list[FuturesClient] = []

    def make(retry: RetryPolicy | None = None) -> FuturesClient:
        spec = sim.config.account("futures")
        client = FuturesClient(
            KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"),
            settings=settings, transport=sim.transport(),
            limiter=FuturesLimiter(clock=clock.monotonic, sleep=clock.sleep),
            sleep=clock.sleep, retry=retry, persist_nonce=False,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _sync(futures: Callable[..., FuturesClient], settings: Settings,
          now: Callable[[], datetime], **kwargs: Any) -> Any:
    client = kwargs.pop("client", None) or futures()
    return run_sync("futures", settings=settings, client=client, now=now, **kwargs)


def _query(settings: Settings, sql: str, kind: str = "futures", params: list[Any] | None = None
           ) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(default_duckdb_path(kind, settings))) as con:
        return con.execute(sql, params).fetchall()


def _tables(settings: Settings, kind: str = "futures") -> set[str]:
    schema = "kraken_futures" if kind == "futures" else "kraken_spot"
    rows = _query(settings, "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = ?", kind, [schema])
    return {r[0] for r in rows}


def _counts(settings: Settings, tables: Iterable[str] = tuple(KEYS)
            ) -> dict[str, tuple[int, int]]:
    """(rows, distinct keys) per incremental table."""
    return {
        table: _query(settings, f"SELECT COUNT(*), COUNT(DISTINCT {KEYS[table]}) "  # noqa: S608
                                f"FROM kraken_futures.{table}")[0]
        for table in tables
    }


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- one run -----------------------------------------------------------------------------


def test_first_sync_loads_every_resource_and_reports_it(
    futures, settings, now, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="krakked.account")
    report = _sync(futures, settings, now)

    assert report.status == "ok"
    assert set(report.resources) == set(RESOURCES["futures"])
    assert all(res["rows"] > 0 for res in report.resources.values()), report.resources
    for name in KEYS:
        assert report.resources[name]["last_timestamp"]
        assert report.resources[name]["continuation_token"] is None
    assert report.resources["account_log"]["last_id"] == report.resources["account_log"]["rows"]
    assert report.api["requests"] >= 5 and report.api["failures"] == 0

    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["pipeline"] == payload["dataset"] == "kraken_futures"
    assert payload["destination"].endswith(DUCKDB_FILES["futures"])
    assert set(payload["api"]) >= {"requests", "retries", "rate_limited", "failures"}
    assert payload["load_info"]["pipeline"]["pipeline_name"] == "kraken_futures"
    assert payload["duration_seconds"] >= 0

    tables = _tables(settings)
    assert {"executions", "account_log", "position_history", "tickers", "open_positions",
            "_trace", RUNS_TABLE} <= tables
    assert _query(settings, "SELECT COUNT(*) FROM kraken_futures._trace")[0][0] == 1
    stored = _query(settings, "SELECT status, record_json FROM kraken_futures._krakked_runs")
    assert stored[0][0] == "ok" and json.loads(stored[0][1])["run_id"] == report.run_id

    lines = [r.getMessage() for r in caplog.records if r.name == "krakked.account"]
    for name in RESOURCES["futures"]:
        assert any(m.startswith(f"kraken_futures.{name}: ") and " rows" in m for m in lines)
    assert any("api requests=" in m and "retries=" in m for m in lines)
    # the default region profile lists no futures: a warning, and the sync still ran
    assert any(r.levelno == logging.WARNING and "does not list futures" in r.getMessage()
               for r in caplog.records)
    assert (settings.paths.dlt_pipelines_dir / "kraken_futures.runs.json").is_file()


def test_second_sync_adds_no_duplicates_and_never_moves_cursors_back(
    futures, settings, now, clock
) -> None:
    first = _sync(futures, settings, now, resources=list(KEYS))
    clock.advance(3 * 86_400)  # new history becomes visible
    second = _sync(futures, settings, now, resources=list(KEYS))

    for table, (rows, distinct) in _counts(settings).items():
        assert rows == distinct, table
        assert rows >= first.resources[table]["rows"]
    for name in KEYS:
        assert _ts(second.resources[name]["last_timestamp"]) >= _ts(
            first.resources[name]["last_timestamp"])
    # the second run fetched only what was new (plus the cursor's own millisecond)
    assert second.resources["account_log"]["rows"] < first.resources["account_log"]["rows"]
    assert second.resources["account_log"]["last_id"] > first.resources["account_log"]["last_id"]


def test_since_seeds_the_first_run_only(futures, settings, now) -> None:
    since = datetime(2026, 9, 1, tzinfo=UTC)
    first = _sync(futures, settings, now, resources=["executions"], since="2026-09-01T00:00:00Z")
    (count, earliest), = _query(
        settings, "SELECT COUNT(*), MIN(timestamp) FROM kraken_futures.executions")
    assert first.resources["executions"]["rows"] == count > 0
    assert earliest.replace(tzinfo=UTC) >= since

    _sync(futures, settings, now, resources=["executions"], since="2026-01-01T00:00:00Z")
    (count2, earliest2), = _query(
        settings, "SELECT COUNT(*), MIN(timestamp) FROM kraken_futures.executions")
    assert (count2, earliest2) == (count, earliest)


def test_unknown_names_are_refused_with_the_valid_ones(settings) -> None:
    with pytest.raises(UsageError) as info:
        run_sync("futures", resources=["executions", "fills"], settings=settings)
    assert "fills" in str(info.value)
    for name in RESOURCES["futures"]:
        assert name in str(info.value)
    with pytest.raises(UsageError, match="futures, spot, all"):
        run_sync("options", settings=settings)
    with pytest.raises(UsageError, match="ISO 8601"):
        run_sync("futures", since="last tuesday", settings=settings)
    with pytest.raises(UsageError, match="ledgers"):
        run_syncs("all", resources=["executions", "nonsense"], settings=settings)
    with pytest.raises(UsageError, match="give one of futures, spot"):
        reset_all("all", settings)  # one pipeline at a time (the CLI loops over both)


def test_missing_keys_name_every_way_to_set_them(settings, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for pairs in ENV_VAR_PAIRS.values():
        for key_var, secret_var in pairs:
            monkeypatch.delenv(key_var, raising=False)
            monkeypatch.delenv(secret_var, raising=False)
    with pytest.raises(NoCredentialsError) as info:
        run_sync("futures", settings=settings)
    message = str(info.value)
    assert "\n" not in message
    for key_var, secret_var in ENV_VAR_PAIRS["futures"]:
        assert key_var in message and secret_var in message
    assert "kraken_futures.api_key and kraken_futures.api_secret in .dlt/secrets.toml" in message
    assert "krakked setup" in message
    with pytest.raises(NoCredentialsError, match="KRAKEN_SPOT__API_KEY"):
        run_sync("spot", settings=settings)


# --- ephemeral machines, resets ----------------------------------------------------------


def test_fresh_machine_restores_cursors_and_run_log_from_the_destination(
    futures, settings, now, clock
) -> None:
    first = _sync(futures, settings, now, resources=["executions", "account_log"])
    shutil.rmtree(settings.paths.dlt_pipelines_dir)  # the working dir is gone; DuckDB stays
    clock.advance(86_400)
    second = _sync(futures, settings, now, resources=["executions", "account_log"])

    assert second.resources["account_log"]["rows"] < first.resources["account_log"]["rows"]
    assert second.resources["executions"]["rows"] < first.resources["executions"]["rows"]
    assert second.resources["account_log"]["last_id"] >= first.resources["account_log"]["last_id"]
    for rows, distinct in _counts(settings, ["executions", "account_log"]).values():
        assert rows == distinct
    state = account_state("futures", settings, now=now)
    assert [r["run_id"] for r in state["runs"]] == [first.run_id, second.run_id]


def test_reset_resource_drops_its_tables_and_state_only(futures, settings, now) -> None:
    _sync(futures, settings, now, resources=["executions", "account_log"])
    result = reset_resource("futures", "executions", settings)

    assert "executions" in result["tables"] and result["state"] == ["executions"]
    tables = _tables(settings)
    assert "executions" not in tables and "account_log" in tables
    state = account_state("futures", settings, now=now)
    assert state["resources"]["executions"]["last_timestamp"] is None
    assert state["resources"]["executions"]["rows"] is None
    assert state["resources"]["account_log"]["last_id"] > 0
    assert state["resources"]["account_log"]["rows"] == state["resources"]["account_log"][
        "last_id"]
    with pytest.raises(UsageError):
        reset_resource("futures", "ledgers", settings)


def test_reset_all_drops_every_table_and_all_state(futures, settings, now) -> None:
    _sync(futures, settings, now, resources=["executions", "tickers"])
    result = reset_all("futures", settings)

    assert {"executions", "tickers", "_trace", RUNS_TABLE} <= set(result["tables"])
    assert not {t for t in _tables(settings) if not t.startswith("_dlt")}
    state = account_state("futures", settings, now=now)
    assert all(r.get("last_timestamp") is None and r["rows"] is None
               for r in state["resources"].values())
    assert state["runs"] == [] and state["alerts"] == []
    assert not (settings.paths.dlt_pipelines_dir / "kraken_futures.runs.json").exists()


def test_state_of_a_never_synced_account_creates_nothing(settings) -> None:
    state = account_state("spot", settings)
    assert set(state["resources"]) == set(RESOURCES["spot"])
    assert all(r["rows"] is None for r in state["resources"].values())
    assert not default_duckdb_path("spot", settings).exists()
    assert reset_all("spot", settings)["tables"] == []


# --- alerts ------------------------------------------------------------------------------


def test_zero_rows_in_two_consecutive_runs_raise_the_alert(futures, settings, now, sim) -> None:
    first = _sync(futures, settings, now, resources=["account_log"])
    assert first.resources["account_log"]["rows"] > 0
    sim.inject("permission", "account-log")  # the key lost its permission: 0 rows, no error
    second = _sync(futures, settings, now, resources=["account_log"])
    assert second.rows == {"account_log": 0}
    assert "zero_rows" not in {a.code for a in second.alerts}
    sim.inject("permission", "account-log")
    third = _sync(futures, settings, now, resources=["account_log"])
    (alert,) = [a for a in third.alerts if a.code == "zero_rows"]
    assert alert.level == "WARNING" and alert.severity == "high"


def test_cursor_lag_counts_from_the_last_sync_not_the_newest_record(
    futures, settings, now, clock
) -> None:
    report = _sync(futures, settings, now, resources=["executions"])
    synced_at = report.started_at
    last = _ts(report.resources["executions"]["last_timestamp"])
    assert (synced_at - last) > timedelta(hours=1)  # the account was quiet before the sync
    assert "cursor_lag" not in {a.code for a in report.alerts}

    fresh = account_state("futures", settings, now=synced_at + timedelta(minutes=30))
    assert "cursor_lag" not in {a["code"] for a in fresh["alerts"]}
    stale = account_state("futures", settings, now=synced_at + timedelta(hours=2))
    (alert,) = [a for a in stale["alerts"] if a["code"] == "cursor_lag"]
    assert alert["resource"] == "executions" and alert["level"] == "WARNING"
    assert synced_at.isoformat() in alert["message"]


def test_a_quiet_account_raises_no_cursor_lag_run_after_run(
    futures, settings, now, clock, sim, caplog
) -> None:
    clock.advance(120 * 86_400)  # past the end of the simulated history: nothing new arrives
    first = _sync(futures, settings, now, resources=list(KEYS))
    assert all(first.rows[name] > 0 for name in KEYS)
    stored = _counts(settings)
    for _ in range(2):
        clock.advance(3 * 3600)
        caplog.clear()
        again = _sync(futures, settings, now, resources=list(KEYS))
        assert _counts(settings) == stored  # nothing new (the cursor's own row, merged)
        assert "cursor_lag" not in {a.code for a in again.alerts}
        assert not any("cursor_lag" in r.getMessage() for r in caplog.records)
    # a resource the key may no longer read is behind from its last clean sync on
    clock.advance(2 * 3600)
    sim.inject("permission", "executions")
    denied = _sync(futures, settings, now, resources=list(KEYS))
    assert "permission denied" in denied.resources["executions"]["error"]
    later = account_state("futures", settings, now=denied.started_at + timedelta(minutes=30))
    assert "permission denied" in later["resources"]["executions"]["error"]
    lagging = {a["resource"] for a in later["alerts"] if a["code"] == "cursor_lag"}
    assert lagging == {"executions"}


def test_a_run_over_five_minutes_is_alerted(futures, settings, now, caplog) -> None:
    ticks = iter([1000.0, 1000.0 + 301])
    report = _sync(futures, settings, now, resources=["tickers"],
                   monotonic=lambda: next(ticks))
    assert report.duration_seconds == pytest.approx(301)
    (alert,) = [a for a in report.alerts if a.code == "slow_run"]
    assert alert.level == "WARNING"
    assert any(r.levelno == logging.WARNING and "slow_run" in r.getMessage()
               for r in caplog.records if r.name == "krakked.account")


def test_exhausted_rate_limit_ends_the_run_with_alerts(
    futures, settings, now, sim, caplog
) -> None:
    client = futures(retry=RetryPolicy(max_attempts=2))
    sim.inject("ratelimit", "executions", times=5)
    with pytest.raises(RateLimitError) as info:
        _sync(futures, settings, now, resources=["executions"], client=client)

    report = info.value.sync_report  # type: ignore[attr-defined]
    assert report.status == "failed" and report.api["rate_limited"] >= 1
    codes = {a.code: a.level for a in report.alerts}
    assert codes["rate_limit_exhausted"] == "WARNING"
    assert codes["run_failed"] == "CRITICAL"
    assert any(r.levelno == logging.CRITICAL and "run_failed" in r.getMessage()
               for r in caplog.records if r.name == "krakked.account")
    state = account_state("futures", settings, now=now)
    assert {"rate_limit_exhausted", "run_failed"} <= {a["code"] for a in state["alerts"]}
    assert state["runs"][-1]["status"] == "failed"


def test_a_continuation_token_unchanged_for_six_hours_is_alerted() -> None:
    def run(hours: float, token: str | None) -> dict[str, Any]:
        at = (NOW + timedelta(hours=hours)).isoformat()
        return {"pipeline": "kraken_futures", "status": "ok", "finished_at": at,
                "duration_seconds": 1.0, "incremental": ["executions"],
                "incremental_rows": {"executions": 5},
                "cursors": {"executions": {"continuation_token": token}}}

    history = [run(0, None), run(1, "T1"), run(4, "T1"), run(7.5, "T1")]
    state = {"executions": {"last_timestamp": (NOW + timedelta(hours=7.4)).isoformat(),
                            "continuation_token": "T1"}}
    alerts = evaluate_alerts(history, state, NOW + timedelta(hours=7.5))
    assert [a.code for a in alerts] == ["token_stale"]
    assert alerts[0].level == "WARNING" and alerts[0].resource == "executions"
    # a token that changed recently is not stale
    history[-1] = run(7.5, "T2")
    state["executions"]["continuation_token"] = "T2"
    assert evaluate_alerts(history, state, NOW + timedelta(hours=7.5)) == []
    assert THRESHOLDS["token_stale"].limit == 6 * 3600


# --- spot, dev mode ----------------------------------------------------------------------


def test_spot_sync_loads_its_history(sim, settings, now, clock) -> None:
    spec = sim.config.account("spot")
    client = SpotClient(
        KeyPair.create("spot", spec.api_key, spec.api_secret, "sim"), settings=settings,
        transport=sim.transport(),
        limiter=SpotCounterLimiter("starter", clock=clock.monotonic, sleep=clock.sleep),
        public_limiter=PublicLimiter(clock=clock.monotonic, sleep=clock.sleep),
        sleep=clock.sleep, persist_nonce=False,
    )
    with client:
        report = run_sync("spot", settings=settings, client=client, now=now,
                          resources=["balances", "ledgers", "trades_history"])
    assert report.pipeline == "kraken_spot" and report.status == "ok"
    assert all(report.rows[name] > 0 for name in ("balances", "ledgers", "trades_history"))
    assert report.resources["ledgers"]["last_timestamp"]
    rows, distinct = _query(settings, "SELECT COUNT(*), COUNT(DISTINCT ledger_id) "
                                      "FROM kraken_spot.ledgers", "spot")[0]
    assert rows == distinct == report.rows["ledgers"]


def test_dev_mode_loads_a_fresh_dataset_and_keeps_no_run_log(futures, settings, now) -> None:
    report = _sync(futures, settings, now, resources=["tickers"], dev_mode=True)
    assert report.dataset.startswith("kraken_futures_") and report.rows["tickers"] > 0
    assert not (settings.paths.dlt_pipelines_dir / "kraken_futures.runs.json").exists()


def test_pipelines_live_under_krakked_home(settings) -> None:
    pipeline = make_pipeline("spot", settings=settings)
    assert Path(pipeline.pipelines_dir) == settings.paths.dlt_pipelines_dir
    assert pipeline.pipeline_name == pipeline.dataset_name == "kraken_spot"
    assert default_duckdb_path("futures", settings).parent == settings.paths.data_dir
