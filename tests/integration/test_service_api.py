"""The service's HTTP API against a real store filled from krakked.sim, with a stand-in
ingestor and scheduler (tests/integration/servicekit.py, the contract of the real ones)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from typer.testing import CliRunner

from krakked.cli import app as cli_app
from krakked.cli import main
from krakked.cli import serve as serve_cli
from krakked.config import load_settings
from krakked.errors import UsageError
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market_data import Market
from krakked.service.app import check_bind, create_app, freshness, service_alerts
from krakked.sim import SimClock, Simulator
from tests.integration.servicekit import FakeIngestor, FakeRun, FakeScheduler, served
from tests.integration.simkit import sim_market

NOW = datetime(2026, 11, 22, 12, 7, 30, tzinfo=UTC)
NEXT = datetime(2026, 11, 22, 12, 15, tzinfo=UTC)


@pytest.fixture
def market(sim: Simulator, tmp_path: Path) -> Iterator[Market]:
    with sim_market(sim, tmp_path) as m:
        yield m


@pytest.fixture
def ingestor(market: Market) -> FakeIngestor:
    return FakeIngestor(market)


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler(NEXT)


def _client(market: Market, ingestor: Any, scheduler: Any, *, token: str | None = None,
            live: Any = None, now: datetime = NOW,
            lifespan: bool = True) -> contextlib.AbstractContextManager[httpx.Client]:
    return served(create_app(market, ingestor, scheduler, token=token, live=live,
                             clock=lambda: now), lifespan=lifespan)


def test_lifespan_starts_the_scheduler_and_shuts_it_down_waiting_for_the_run(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    with _client(market, ingestor, scheduler) as api:
        assert scheduler.started == 1 and scheduler.running
        body = api.get("/health").json()
        assert body["scheduler_running"] is True
        assert body["next_run"] == NEXT.isoformat()
    assert scheduler.shutdown_waits == [True] and not scheduler.running


def test_health_is_healthy_when_scheduler_runs_and_store_answers(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    ingestor.run("schedule")
    with _client(market, ingestor, scheduler) as api:
        resp = api.get("/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "healthy" and body["store_reachable"] is True
    assert body["last_run"]["trigger"] == "schedule" and body["last_run"]["status"] == "ok"


def test_health_is_degraded_503_when_the_last_run_failed_or_the_breaker_is_open(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    with _client(market, ingestor, scheduler) as api:
        ingestor.runs.append(FakeRun("r1", "schedule", NOW, NOW, "failed", 2, 0, 0,
                                     [{"pair": "*", "error": "StoreError: disk full"}]))
        failed = api.get("/health")
        ingestor.runs.clear()
        ingestor.breaker_open_until = NOW + timedelta(minutes=5)
        paused = api.get("/health")
    assert failed.status_code == 503 and failed.json()["status"] == "degraded"
    assert paused.status_code == 503
    assert paused.json()["breaker_open_until"] == (NOW + timedelta(minutes=5)).isoformat()


def test_health_is_degraded_when_the_scheduler_is_not_running(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    with _client(market, ingestor, scheduler, lifespan=False) as api:  # never started
        resp = api.get("/health")
    assert resp.status_code == 503
    assert resp.json()["status"] == "degraded" and resp.json()["scheduler_running"] is False


def test_manual_trigger_runs_an_ingestion_and_returns_its_stats(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler,
        sim: Simulator) -> None:
    with _client(market, ingestor, scheduler) as api:
        resp = api.post("/api/ingest/kraken")
        status = api.get("/api/ingest/status").json()
        candles = api.get("/api/candles/XBTUSD", params={"tf": "15m", "limit": 1000}).json()
    assert resp.status_code == 200
    run = resp.json()
    assert run["trigger"] == "manual" and run["status"] == "ok" and run["candles"] > 0
    assert status["runs"][0]["run_id"] == run["run_id"] and status["running"] is False
    # what the run stored is what the simulator serves, closed candles only, exact
    bars = sim.market.ohlc("XXBTZUSD", 15)[0][:-1]  # the last one is the running candle
    assert [c["timestamp"] for c in candles["candles"]] == [
        datetime.fromtimestamp(b[0], UTC).isoformat() for b in bars]
    assert [Decimal(c["close"]) for c in candles["candles"]] == [Decimal(b[4]) for b in bars]


def test_second_manual_trigger_during_a_run_gets_409(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    ingestor.gate = threading.Event()
    with _client(market, ingestor, scheduler) as api:
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.update(r=api.post("/api/ingest/kraken")))
        worker.start()
        assert ingestor.started.wait(5)
        second = api.post("/api/ingest/kraken")
        mid = api.get("/api/ingest/status").json()
        ingestor.gate.set()
        worker.join(10)
    assert second.status_code == 409 and second.json()["type"] == "IngestBusyError"
    assert mid["running"] is True
    assert first["r"].status_code == 200 and len(ingestor.runs) == 1


def test_manual_trigger_while_a_scheduled_run_is_active_gets_409(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    ingestor.gate = threading.Event()
    scheduled = threading.Thread(target=ingestor.run, args=("schedule",))
    scheduled.start()
    try:
        assert ingestor.started.wait(5)
        with _client(market, ingestor, scheduler) as api:
            resp = api.post("/api/ingest/kraken")
    finally:
        ingestor.gate.set()
        scheduled.join(10)
    assert resp.status_code == 409
    assert [r.trigger for r in ingestor.runs] == ["schedule"]


def test_busy_error_raised_by_the_ingestor_itself_is_a_409(
        market: Market, scheduler: FakeScheduler) -> None:
    class RacingIngestor(FakeIngestor):
        """The scheduler's run starts between the app's check and its call."""

        def run(self, trigger: str = "manual") -> FakeRun:
            self._running = True
            return super().run(trigger)

    ingestor = RacingIngestor(market)
    with _client(market, ingestor, scheduler) as api:
        resp = api.post("/api/ingest/kraken")
    assert resp.status_code == 409 and ingestor.runs == []


def test_a_failed_manual_run_answers_500_with_the_run(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    def failing(trigger: str = "manual") -> FakeRun:
        return FakeRun("r9", trigger, NOW, NOW, "failed", 2, 0, 0,
                       [{"pair": "*", "error": "StoreError: database is read-only"}])

    ingestor.run = failing  # type: ignore[method-assign]
    with _client(market, ingestor, scheduler) as api:
        resp = api.post("/api/ingest/kraken")
    assert resp.status_code == 500
    assert resp.json()["status"] == "failed" and "read-only" in resp.json()["errors"][0]["error"]


def test_token_guards_the_mutating_route_and_leaves_reads_open(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    with _client(market, ingestor, scheduler, token="s3cret-token") as api:
        missing = api.post("/api/ingest/kraken")
        wrong = api.post("/api/ingest/kraken", headers={"Authorization": "Bearer nope"})
        assert ingestor.runs == []
        right = api.post("/api/ingest/kraken",
                         headers={"Authorization": "Bearer s3cret-token"})
        read = api.get("/api/ingest/status")
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "s3cret-token" not in wrong.text
    assert right.status_code == 200 and len(ingestor.runs) == 1
    assert read.status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])  # noqa: S104
def test_a_non_loopback_bind_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(UsageError, match="KRAKKED_SERVICE_TOKEN"):
        check_bind(host, None)
    check_bind(host, "a-token")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_a_loopback_bind_needs_no_token(host: str) -> None:
    check_bind(host, None)


def _load(market: Market, clock: SimClock, pairs: tuple[str, ...]) -> None:
    for pair in pairs:
        market.backfill_ohlc(pair, "15m")


def test_candles_are_exact_decimal_strings_by_any_alias_with_range_and_limit(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler,
        clock: SimClock) -> None:
    _load(market, clock, ("XBTUSD",))
    stored = market.get_candles("XBTUSD", "15m")
    with _client(market, ingestor, scheduler) as api:
        latest = api.get("/api/candles/BTC/USD", params={"tf": "15m", "limit": 3}).json()
        start = stored[10].timestamp.isoformat()
        end = stored[14].timestamp.isoformat()
        ranged = api.get("/api/candles/XXBTZUSD",
                         params={"tf": "15m", "start": start, "end": end}).json()
        limited = api.get("/api/candles/XBTUSD",
                          params={"tf": "15m", "start": start, "limit": 2}).json()
        hourly = api.get("/api/candles/XBTUSD", params={"tf": "1h", "limit": 2}).json()
    assert latest["pair"] == "XBTUSD"
    assert latest["candles"] == [c.to_dict() for c in stored[-3:]]
    assert all(isinstance(latest["candles"][0][k], str) and "E" not in latest["candles"][0][k]
               for k in ("open", "high", "low", "close", "volume"))
    assert ranged["candles"] == [c.to_dict() for c in stored[10:14]]
    assert limited["candles"] == [c.to_dict() for c in stored[10:12]]
    assert hourly["candles"] == [c.to_dict() for c in market.get_candles("XBTUSD", "1h")[-2:]]


def test_candles_errors_are_one_line_with_the_right_status(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler,
        clock: SimClock) -> None:
    _load(market, clock, ("XBTUSD",))
    with _client(market, ingestor, scheduler) as api:
        unknown = api.get("/api/candles/XBTUS")
        bad_tf = api.get("/api/candles/XBTUSD", params={"tf": "7m"})
        bad_date = api.get("/api/candles/XBTUSD", params={"start": "yesterday-ish"})
        nothing = api.get("/api/candles/ETHUSD", params={"tf": "15m"})
        bad_limit = api.get("/api/candles/XBTUSD", params={"limit": 0})
    assert unknown.status_code == 404 and unknown.json()["type"] == "UnknownPairError"
    assert "XBTUSD" in unknown.json()["error"]  # the close match is named
    assert bad_tf.status_code == 400 and "7m" in bad_tf.json()["error"]
    assert bad_date.status_code == 400 and bad_date.json()["type"] == "UsageError"
    assert nothing.status_code == 404 and nothing.json()["type"] == "NoDataError"
    assert "ETHUSD" in nothing.json()["error"]
    assert bad_limit.status_code == 422
    for resp in (unknown, bad_tf, bad_date, nothing):
        assert "\n" not in resp.json()["error"]


def test_status_marks_a_series_stale_once_more_than_one_cycle_behind(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler,
        clock: SimClock) -> None:
    _load(market, clock, ("ETHUSD",))
    clock.advance(2 * 3600)
    _load(market, clock, ("XBTUSD",))
    now = NOW + timedelta(hours=2)
    with _client(market, ingestor, scheduler, now=now) as api:
        body = api.get("/api/status").json()
    rows = {(r["pair"], r["timeframe"]): r for r in body["coverage"]}
    fresh, stale = rows[("XBTUSD", "15m")], rows[("ETHUSD", "15m")]
    assert (fresh["stale"], fresh["lag_seconds"]) == (False, 0)
    assert fresh["last"] == "2026-11-22T13:45:00+00:00"
    assert stale["stale"] is True and stale["lag_seconds"] == 2 * 3600
    assert fresh["cursor"] is not None and fresh["rows"] > 0 and fresh["first"] is not None
    lags = [a for a in body["alerts"] if a["code"] == "cursor_lag"]
    assert [a["resource"] for a in lags] == ["ETHUSD/15m"]
    assert body["schedule"]["next_run"] == NEXT.isoformat()
    assert body["live"] is None


def test_freshness_allows_one_cycle_not_yet_run_and_no_more() -> None:
    now = datetime(2026, 11, 22, 10, 31, tzinfo=UTC)  # the 10:30 run has not stored 10:15
    assert freshness(datetime(2026, 11, 22, 10, 15, tzinfo=UTC), 15, now) == (0.0, False)
    assert freshness(datetime(2026, 11, 22, 10, 0, tzinfo=UTC), 15, now) == (900.0, False)
    assert freshness(datetime(2026, 11, 22, 9, 45, tzinfo=UTC), 15, now) == (1800.0, True)
    # an hourly series: the newest closed hour at 10:31 opened at 09:00
    assert freshness(datetime(2026, 11, 22, 9, 0, tzinfo=UTC), 60, now) == (0.0, False)


def _run(status: str, candles: int, duration: float = 1.0) -> dict[str, Any]:
    return FakeRun("r", "schedule", NOW, NOW, status, 30, 30, candles, [], None,
                   duration).to_dict()


def test_alerts_follow_the_original_thresholds() -> None:
    assert service_alerts([_run("ok", 5), _run("ok", 0)], []) == []
    zero = service_alerts([_run("ok", 0), _run("partial", 0)], [])
    assert [a["code"] for a in zero] == ["zero_rows"]
    slow = service_alerts([_run("ok", 5, duration=301)], [])
    assert [(a["code"], a["level"]) for a in slow] == [("slow_run", "WARNING")]
    failed = service_alerts([_run("failed", 0)], [])
    assert [(a["code"], a["level"]) for a in failed] == [("run_failed", "CRITICAL")]


def test_status_includes_the_live_stream_when_the_service_streams(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    class Live:
        def get_data_status(self) -> dict[str, Any]:
            return {"ws": {"connected": True}, "pairs": {"XBTUSD": {"ticker_age": 0.4}}}

    with _client(market, ingestor, scheduler, live=Live()) as api:
        body = api.get("/api/status").json()
    assert body["live"]["ws"]["connected"] is True


def test_kraken_test_reports_reachable_and_system_status(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    with _client(market, ingestor, scheduler) as api:
        resp = api.get("/api/kraken/test")
    assert resp.status_code == 200
    assert resp.json()["reachable"] is True and resp.json()["system_status"] == "online"


def test_kraken_test_answers_502_with_the_error_when_kraken_is_unreachable(
        tmp_path: Path, scheduler: FakeScheduler) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    client = SpotClient(settings=settings, transport=httpx.MockTransport(refuse),
                        retry=RetryPolicy(max_attempts=1),
                        public_limiter=PublicLimiter(1000, 1000))
    with Market(f"duckdb:///{tmp_path / 'm.duckdb'}", settings=settings, client=client,
                offline=True) as market, _client(market, FakeIngestor(market), scheduler) as api:
        resp = api.get("/api/kraken/test")
    assert resp.status_code == 502
    assert resp.json()["reachable"] is False
    assert resp.json()["error"] == "spot:SystemStatus: cannot connect (ConnectError)"


def test_openapi_schema_is_valid_and_lists_every_route(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    schema = create_app(market, ingestor, scheduler, token=None).openapi()
    validate(schema)
    assert set(schema["paths"]) == {"/health", "/api/ingest/status", "/api/ingest/kraken",
                                    "/api/kraken/test", "/api/candles/{pair}", "/api/status"}
    assert "post" in schema["paths"]["/api/ingest/kraken"]


def test_status_page_and_vendored_chart_library_are_served_locally(
        market: Market, ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    with _client(market, ingestor, scheduler) as api:
        page = api.get("/")
        lib = api.get("/static/vendor/lightweight-charts-4.2.3.standalone.production.js")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/vendor/lightweight-charts-4.2.3' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert lib.status_code == 200 and "Lightweight Charts" in lib.text[:300]


# -- krakked serve -----------------------------------------------------------------------------


def test_serve_refuses_a_non_loopback_bind_without_a_token(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KRAKKED_HOME", str(tmp_path))
    monkeypatch.delenv("KRAKKED_SERVICE_TOKEN", raising=False)
    built: list[Any] = []
    monkeypatch.setattr(serve_cli, "build_service", lambda *a, **k: built.append(a))
    with pytest.raises(SystemExit) as info:
        main(["serve", "--host", "0.0.0.0"])  # noqa: S104
    assert info.value.code == 2 and built == []
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: refusing to bind 0.0.0.0") and "\n" not in err


def test_serve_says_where_it_listens_and_whether_a_token_guards_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, market: Market,
        ingestor: FakeIngestor, scheduler: FakeScheduler) -> None:
    monkeypatch.setenv("KRAKKED_HOME", str(tmp_path))
    monkeypatch.setenv("KRAKKED_SERVICE_TOKEN", "tok-123456789")
    served: list[tuple[Any, str, int]] = []
    monkeypatch.setattr(serve_cli, "build_service",
                        lambda settings, store: (market, ingestor, scheduler))
    monkeypatch.setattr(serve_cli, "run_server",
                        lambda app, host, port, log_json: served.append((app, host, port)))
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0",  # noqa: S104
                                          "--port", "8123"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["krakked serve: http://0.0.0.0:8123 (mutating routes need the bearer "
                     "token from KRAKKED_SERVICE_TOKEN)"]
    assert "tok-123456789" not in result.output
    assert served and served[0][1:] == ("0.0.0.0", 8123)  # noqa: S104


def test_serve_stops_on_sigterm_and_shuts_the_scheduler_down(tmp_path: Path) -> None:
    """A real uvicorn on a free port, SIGTERM: the lifespan shuts the scheduler down."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    marker = tmp_path / "shutdown"
    script = f"""
import sys
from pathlib import Path
from krakked.cli import serve
from krakked.sim import Simulator
from tests.integration.simkit import sim_market
from tests.integration.servicekit import FakeIngestor, FakeScheduler

class Recording(FakeScheduler):
    def shutdown(self, wait=True):
        super().shutdown(wait)
        Path({str(marker)!r}).write_text(f"wait={{wait}}")

market = sim_market(Simulator(), Path({str(tmp_path)!r}))
app = serve.create_app(market, FakeIngestor(market), Recording(), token=None)
serve.run_server(app, "127.0.0.1", {port}, log_json=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script],  # noqa: S603
                            cwd=Path(__file__).parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"the service did not come up: {proc.stderr.read() if proc.poll() else ''}")
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # uvicorn shuts down gracefully, then ends by the signal it got (as a process should)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert marker.read_text() == "wait=True"
    assert '"level": "INFO"' in err and '"logger": "krakked.service"' in err
