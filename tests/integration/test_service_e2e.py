"""``krakked serve`` end to end with the real ingestor and scheduler: a real process against the
served simulator, a manual ingestion through the API, its candles readable by another process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from krakked.store import open_store
from tests.integration.simkit import served_cli

NOW = datetime(2026, 3, 2, 12, 7, tzinfo=UTC)


def test_serve_ingests_on_demand_and_reports_it(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"duckdb:///{tmp_path / 'svc.duckdb'}"
    with served_cli(tmp_path, monkeypatch, NOW) as (_, _sim, _, values):
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "krakked.cli", "serve", "--port", str(port), "--store", url],
            env={**os.environ, **values}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            health: Any = None
            while time.monotonic() < deadline:
                try:
                    health = httpx.get(f"{base}/health", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert health is not None, "the service never answered"
            assert health.json()["scheduler_running"] is True
            # the catch-up run of the start may be going: wait, then trigger one by hand
            for _ in range(300):
                runs = httpx.get(f"{base}/api/ingest/status", timeout=5).json()
                if not runs.get("running"):
                    break
                time.sleep(0.2)
            run = httpx.post(f"{base}/api/ingest/kraken", timeout=120)
            assert run.status_code == 200, run.text
            body = run.json()
            assert body["trigger"] == "manual" and body["candles"] >= 0
            assert body["assets_done"] >= 2 and body["status"] in ("ok", "partial")
            # another process reads the store while the service runs
            with open_store(url, read_only=True) as store:
                stored = store.read_candles("XBTUSD", 15).to_pylist()
            assert stored
            candles = httpx.get(f"{base}/api/candles/XBTUSD",
                                params={"tf": "15m", "limit": 5}, timeout=5)
            assert candles.status_code == 200, candles.text
            assert candles.json()  # exact decimal strings from the store the run filled
            page = httpx.get(f"{base}/", timeout=5)
            assert page.status_code == 200 and "<html" in page.text.lower()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert "Traceback" not in err
