"""The service's HTTP API and status page: a FastAPI app over a ``Market``, the ingestor and its
scheduler (started and stopped with the app).

Routes: ``GET /health``, ``GET /api/ingest/status``, ``POST /api/ingest/kraken``,
``GET /api/kraken/test``, ``GET /api/candles/{pair}``, ``GET /api/status`` and the status page
at ``/`` (``static/index.html``, its charting library vendored under ``static/vendor/``).
Errors answer ``{"error": one line, "type": class name}`` with a status that says what kind
they are (400 bad argument, 404 unknown pair or no data, 409 a run is active, 502 Kraken,
503 store). When a token is set, every mutating route wants ``Authorization: Bearer <token>``;
``check_bind`` refuses a non-loopback bind without one.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from krakked.account.alerts import THRESHOLDS, Alert, Threshold
from krakked.errors import (
    KrakenError,
    KrakkedError,
    NoDataError,
    StoreError,
    UnknownPairError,
    UsageError,
)
from krakked.logs import redact
from krakked.market.candles import bucket_start, timeframe_name
from krakked.market_data import Market

__all__ = ["CYCLE", "STATIC_DIR", "check_bind", "create_app", "freshness"]

log = logging.getLogger("krakked.service")

STATIC_DIR = Path(__file__).parent / "static"
CYCLE = timedelta(minutes=15)
"""The ingestion schedule's period: a series more than one cycle behind is stale."""
TOKEN_ENV = "KRAKKED_SERVICE_TOKEN"  # noqa: S105 - the variable's name, not a secret


class IngestorLike(Protocol):
    """What the app uses of ``krakked.sync.ingest.Ingestor``."""

    @property
    def running(self) -> bool: ...

    @property
    def breaker_open_until(self) -> datetime | None: ...

    def run(self, trigger: str = "manual") -> Any: ...

    def history(self, n: int = 20) -> list[Any]: ...

    def missed_cycles(self) -> list[datetime]: ...


class SchedulerLike(Protocol):
    """What the app uses of ``krakked.service.scheduler``'s scheduler."""

    @property
    def running(self) -> bool: ...

    @property
    def next_run_time(self) -> datetime | None: ...

    def start(self) -> None: ...

    def shutdown(self, wait: bool = True) -> None: ...


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``UsageError``) to serve on a non-loopback ``host`` without a bearer token."""
    if not _is_loopback(host) and not token:
        raise UsageError(
            f"refusing to bind {host}: a non-loopback address needs a bearer token for the "
            f"mutating routes (set {TOKEN_ENV}), or bind 127.0.0.1")


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _run_dict(run: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    data = run.to_dict() if hasattr(run, "to_dict") else dict(run)
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in data.items()}


def freshness(last: datetime, minutes: int, now: datetime,
              cycle: timedelta = CYCLE) -> tuple[float, bool]:
    """``(lag_seconds, stale)`` of a series whose newest stored candle opened at ``last``:
    the lag is how far it is behind the newest candle closed at ``now``; it is stale when
    that is more than one ingestion ``cycle`` (one cycle may simply not have run yet)."""
    newest_closed = bucket_start(now, minutes) - timedelta(minutes=minutes)
    lag = max(0.0, (newest_closed - last).total_seconds())
    return lag, lag > cycle.total_seconds()


def _threshold_alert(code: str, message: str, rule: Threshold,
                     resource: str | None = None) -> dict[str, Any]:
    return Alert(rule.level, code, message, rule.severity, resource).to_dict()


def service_alerts(runs: list[dict[str, Any]], coverage: list[dict[str, Any]],
                   thresholds: dict[str, Threshold] = THRESHOLDS) -> list[dict[str, Any]]:
    """The original plan's alerts that hold now for the ingestion: the last run failed or
    took too long, the last runs stored no candle, a series lags more than an hour.
    ``runs`` newest first (``IngestRun.to_dict()``), ``coverage`` as ``/api/status`` has it."""
    alerts: list[dict[str, Any]] = []
    if runs:
        last = runs[0]
        if last.get("status") == "failed":
            cause = "; ".join(str(e.get("error")) for e in last.get("errors") or []) or "?"
            alerts.append(_threshold_alert(
                "run_failed", f"ingestion run {last.get('run_id')} failed: {cause}",
                thresholds["run_failed"]))
        duration = float(last.get("duration_seconds") or 0.0)
        if duration > thresholds["slow_run"].limit:
            alerts.append(_threshold_alert(
                "slow_run", f"ingestion run {last.get('run_id')} took {duration:.0f} s (over "
                f"{thresholds['slow_run'].limit:.0f} s)", thresholds["slow_run"]))
    need = int(thresholds["zero_rows"].limit)
    done = [r for r in runs if r.get("status") in ("ok", "partial")][:need]
    if need > 0 and len(done) >= need and runs and done[0] is runs[0] and all(
            not r.get("candles") for r in done):
        alerts.append(_threshold_alert(
            "zero_rows", f"the last {len(done)} ingestion runs stored no candle (check "
            "connectivity and the configured pairs)", thresholds["zero_rows"]))
    lag_limit = thresholds["cursor_lag"].limit
    for row in coverage:
        if row["lag_seconds"] > lag_limit:
            alerts.append(_threshold_alert(
                "cursor_lag", f"{row['pair']} {row['timeframe']}: newest candle "
                f"{row['last']}, {row['lag_seconds'] / 3600:.1f} h behind (over "
                f"{lag_limit / 3600:g} h)", thresholds["cursor_lag"],
                f"{row['pair']}/{row['timeframe']}"))
    return alerts


_STATUS_OF: tuple[tuple[type[KrakkedError], int], ...] = (
    (UsageError, 400), (UnknownPairError, 404), (NoDataError, 404), (StoreError, 503),
    (KrakenError, 502),
)


def _error(exc: KrakkedError) -> JSONResponse:
    code = next((status for kind, status in _STATUS_OF if isinstance(exc, kind)), 500)
    return JSONResponse({"error": " ".join(redact(str(exc)).split()),
                         "type": type(exc).__name__}, status_code=code)


def create_app(
    market: Market,
    ingestor: IngestorLike,
    scheduler: SchedulerLike,
    *,
    token: str | None,
    live: Any = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    cycle: timedelta = CYCLE,
) -> FastAPI:
    """The service's FastAPI app. Its lifespan starts ``scheduler`` and shuts it down (waiting
    for the running batch); ``token`` (when set) guards the mutating routes; ``live`` (a
    ``LiveMarket``) adds the live stream's status to ``/api/status``; ``clock`` is "now" for
    freshness; ``cycle`` the schedule's period."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        log.info("scheduler started; next run %s", _iso(scheduler.next_run_time))
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(lambda: scheduler.shutdown(wait=True))
            log.info("scheduler stopped")

    app = FastAPI(title="krakked", version=_version(), lifespan=lifespan,
                  description="Scheduled Kraken ingestion, the market store's query API and "
                              "its data status.")
    manual = threading.Lock()

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(),
                                                                   token.encode()):
            raise _UnauthorizedError

    @app.exception_handler(KrakkedError)
    async def krakked_error(_: Request, exc: KrakkedError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(_UnauthorizedError)
    async def unauthorized(_: Request, __: _UnauthorizedError) -> JSONResponse:
        return JSONResponse({"error": "this route needs Authorization: Bearer <token>",
                             "type": "Unauthorized"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    def last_run() -> dict[str, Any] | None:
        runs = ingestor.history(1)
        return _run_dict(runs[0]) if runs else None

    @app.get("/health", summary="Is the service doing its job")
    def health() -> JSONResponse:
        """``healthy`` when the scheduler runs, the store answers, the breaker is closed and
        the last run did not fail; else ``degraded`` (HTTP 503)."""
        store = market.store.health_check()
        run = last_run()
        body = {
            "scheduler_running": bool(scheduler.running),
            "last_run": run,
            "next_run": _iso(scheduler.next_run_time),
            "store_reachable": bool(store["ok"]),
            "breaker_open_until": _iso(ingestor.breaker_open_until),
        }
        ok = (body["scheduler_running"] and body["store_reachable"]
              and body["breaker_open_until"] is None
              and (run is None or run.get("status") != "failed"))
        return JSONResponse({"status": "healthy" if ok else "degraded", **body},
                            status_code=200 if ok else 503)

    @app.get("/api/ingest/status", summary="The last ingestion runs")
    def ingest_status(n: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """The newest ``n`` runs (stats and errors), whether one runs now, the breaker and
        the missed cycles."""
        return {
            "running": bool(ingestor.running),
            "breaker_open_until": _iso(ingestor.breaker_open_until),
            "next_run": _iso(scheduler.next_run_time),
            "missed_cycles": [_iso(m) for m in ingestor.missed_cycles()],
            "runs": [_run_dict(r) for r in ingestor.history(n)],
        }

    @app.post("/api/ingest/kraken", summary="Run an ingestion now",
              dependencies=[Depends(require_token)],
              responses={409: {"description": "a run is active"},
                         401: {"description": "missing or wrong bearer token"}})
    async def ingest_now() -> JSONResponse:
        """Run one ingestion (in a worker thread) and return it; 409 while a run is active;
        500 with the run when it failed."""
        if not manual.acquire(blocking=False):
            return _busy()
        try:
            if ingestor.running:
                return _busy()
            try:
                run = await anyio.to_thread.run_sync(lambda: ingestor.run("manual"))
            except KrakkedError as exc:
                if ingestor.running:  # the scheduler's run began first (IngestBusyError)
                    return _busy()
                return _error(exc)
        finally:
            manual.release()
        body = _run_dict(run)
        return JSONResponse(body, status_code=500 if body and body.get("status") == "failed"
                            else 200)

    @app.get("/api/kraken/test", summary="Can Kraken be reached")
    def kraken_test() -> JSONResponse:
        """Kraken's SystemStatus through the service's client: reachable, its status and the
        round trip; 502 with the error when Kraken cannot be reached."""
        started = time.perf_counter()
        try:
            status = market.client.get_system_status()
        except KrakenError as exc:
            return JSONResponse({"reachable": False, "system_status": None,
                                 "error": " ".join(redact(str(exc)).split())},
                                status_code=502)
        return JSONResponse({
            "reachable": True,
            "system_status": status.get("status") if isinstance(status, dict) else None,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "error": None})

    @app.get("/api/candles/{pair:path}", summary="Stored closed candles")
    def candles(
        pair: str,
        tf: Annotated[str, Query(description="1m 5m 15m 30m 1h 4h 12h 1d 1w 15d")] = "15m",
        start: Annotated[str | None, Query(description="ISO time or epoch seconds; "
                                                        "open time >= start")] = None,
        end: Annotated[str | None, Query(description="open time < end")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 500,
    ) -> dict[str, Any]:
        """Closed candles of ``pair`` (any alias) oldest first, prices and volumes as exact
        decimal strings: the newest ``limit`` without ``start``, else the first ``limit``
        from ``start``. 404 when the store holds none of that pair and timeframe."""
        canonical = market.resolve(pair)
        if start is None:
            rows = market.store.get_latest_candles(canonical, tf, limit, end=end)
        else:
            rows = market.get_candles(canonical, tf, start, end, limit)
        if not rows:
            market.store.require_candles(canonical, tf)
        return {"pair": canonical, "timeframe": tf,
                "candles": [c.to_dict() for c in rows]}

    @app.get("/api/status", summary="What the store holds and how fresh it is")
    def status() -> dict[str, Any]:
        """Per pair and timeframe the covered range, Kraken's cursor, the lag behind the
        newest closed candle and ``stale`` (over one cycle behind); the alerts that hold;
        the last runs; the live stream's status when the service streams."""
        now = clock()
        cursors = {(r["symbol"], r["data_type"]): r for r in market.store.read_sync_status()}
        rows = []
        for cov in market.store.coverage():
            minutes = cov.get("interval_minutes")
            if minutes is None:
                continue  # trades: no schedule to be fresh against
            tf = timeframe_name(minutes)
            lag, stale = freshness(cov["last"], minutes, now, cycle)
            sync = cursors.get((cov["symbol"], f"candles_{tf}"), {})
            rows.append({"pair": cov["symbol"], "timeframe": tf, "first": _iso(cov["first"]),
                         "last": _iso(cov["last"]), "rows": cov["rows"],
                         "missing": cov["missing"], "gaps": cov["gaps"],
                         "cursor": sync.get("last_kraken_since"),
                         "last_sync_at": _iso(sync.get("last_sync_at")),
                         "lag_seconds": lag, "stale": stale})
        runs = [_run_dict(r) for r in ingestor.history(20)]
        return {
            "now": _iso(now),
            "schedule": {"cycle_seconds": cycle.total_seconds(),
                         "next_run": _iso(scheduler.next_run_time),
                         "scheduler_running": bool(scheduler.running),
                         "breaker_open_until": _iso(ingestor.breaker_open_until),
                         "missed_cycles": [_iso(m) for m in ingestor.missed_cycles()]},
            "coverage": rows,
            "alerts": service_alerts(runs, rows),
            "runs": runs[:10],
            "live": live.get_data_status() if live is not None else None,
        }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


class _UnauthorizedError(Exception):
    """A mutating route called without the right bearer token."""



def _busy() -> JSONResponse:
    return JSONResponse({"error": "an ingestion run is active; try again when it has finished",
                         "type": "IngestBusyError"}, status_code=409)


def _version() -> str:
    from krakked import __version__

    return __version__
