"""Stand-ins for the service's ingestor and scheduler (the contract of krakked.sync.ingest and
krakked.service.scheduler), for testing the HTTP API and the status page on their own: the
fake ingestor really stores candles, through ``Market.backfill_ohlc`` against the simulator."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn

from krakked.errors import KrakkedError
from krakked.market_data import Market
from krakked.sync.ingest import IngestBusyError, IngestRun

# the real run record and busy error of krakked.sync.ingest (the fake only runs differently)
FakeRun = IngestRun
FakeBusyError = IngestBusyError


class FakeIngestor:
    """Runs ``pairs`` x ``timeframes`` through ``market.backfill_ohlc``; ``gate`` (when set)
    holds each run until it is set, so a test can look at the service mid-run."""

    def __init__(self, market: Market, pairs: tuple[str, ...] = ("XBTUSD", "ETHUSD"),
                 timeframes: tuple[str, ...] = ("15m",)) -> None:
        self.market, self.pairs, self.timeframes = market, pairs, timeframes
        self.runs: list[FakeRun] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.breaker_open_until: datetime | None = None
        self.missed: list[datetime] = []
        self._lock = threading.Lock()
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def run(self, trigger: str = "manual") -> FakeRun:
        with self._lock:
            if self._running:
                raise FakeBusyError("an ingestion run is active")
            self._running = True
        try:
            self.started.set()
            if self.gate is not None:
                self.gate.wait(10)
            started = datetime.now(UTC)
            candles, errors = 0, []
            for pair in self.pairs:
                for tf in self.timeframes:
                    try:
                        candles += self.market.backfill_ohlc(pair, tf).stored
                    except KrakkedError as exc:
                        errors.append({"pair": pair, "error": str(exc)})
            run = FakeRun(uuid.uuid4().hex[:8], trigger, started, datetime.now(UTC),
                          "partial" if errors else "ok", len(self.pairs),
                          len(self.pairs) - len(errors), candles, errors, None, 0.01)
            self.runs.append(run)
            return run
        finally:
            self._running = False

    def history(self, n: int = 20) -> list[FakeRun]:
        return list(reversed(self.runs))[:n]

    def missed_cycles(self) -> list[datetime]:
        return list(self.missed)


class FakeScheduler:
    """Records start and shutdown (and the ``wait`` it was asked for)."""

    def __init__(self, next_run_time: datetime | None = None) -> None:
        self.started = 0
        self.shutdown_waits: list[bool] = []
        self._running = False
        self._next = next_run_time

    @property
    def running(self) -> bool:
        return self._running

    @property
    def next_run_time(self) -> datetime | None:
        return self._next if self._running else None

    def start(self) -> None:
        self.started += 1
        self._running = True

    def shutdown(self, wait: bool = True) -> None:
        self.shutdown_waits.append(wait)
        self._running = False


@contextlib.contextmanager
def served(app: Any, *, lifespan: bool = True) -> Iterator[httpx.Client]:
    """``app`` served by a real uvicorn on a free loopback port for the block (its lifespan
    run unless told not to); yields an ``httpx.Client`` on its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="on" if lifespan else "off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("the service did not start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
