"""dlt's anonymous telemetry stays off during `krakked account sync` and `krakked export` unless
the user turned it on the dlt way. Each run is a real `krakked` process (dlt's telemetry is
process-wide) against the simulator on loopback, with dlt's telemetry endpoint pointed at a
local collector that records what would have left the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from krakked.sim import SimConfig, Simulator
from krakked.sim.server import running


@pytest.fixture
def collector() -> Iterator[tuple[str, list[str]]]:
    """(URL, events received) of a stand-in for dlt's telemetry endpoint on 127.0.0.1."""
    events: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            events.append(str(json.loads(body or b"{}").get("event")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", events
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sim_urls() -> Iterator[dict[str, str]]:
    with running(Simulator(SimConfig(seed=7, public_rate=0))) as info:
        yield info


def _krakked(tmp_path: Path, endpoint: str, sim_urls: dict[str, str], *args: str,
             **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RUNTIME__", "KRAKEN_", "KRAKKED_", "DESTINATION__"))}
    environ = {**base, "HOME": str(tmp_path), "KRAKKED_HOME": str(tmp_path / "home"),
               "KRAKKED_FUTURES_URL": sim_urls["futures_url"],
               "KRAKKED_SPOT_URL": sim_urls["spot_url"],
               "RUNTIME__DLTHUB_TELEMETRY_ENDPOINT": endpoint, **env}
    done = subprocess.run([sys.executable, "-m", "krakked.cli", *args],  # noqa: S603
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


SYNC = ("account", "sync", "--resources", "tickers", "--json")


def test_a_sync_sends_no_telemetry_by_default(tmp_path, collector, sim_urls) -> None:
    endpoint, events = collector
    _krakked(tmp_path, endpoint, sim_urls, *SYNC)
    assert events == []


def test_telemetry_turned_on_in_the_environment_is_respected(tmp_path, collector,
                                                             sim_urls) -> None:
    endpoint, events = collector
    _krakked(tmp_path, endpoint, sim_urls, *SYNC, RUNTIME__DLTHUB_TELEMETRY="true")
    assert "pipeline_run" in events


def test_telemetry_turned_on_in_dlt_config_is_respected(tmp_path, collector, sim_urls) -> None:
    endpoint, events = collector
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text("[runtime]\ndlthub_telemetry = true\n")
    _krakked(tmp_path, endpoint, sim_urls, *SYNC)
    assert "pipeline_run" in events


def test_an_export_sends_no_telemetry_by_default(tmp_path, collector, sim_urls) -> None:
    endpoint, events = collector
    from krakked.store import open_store

    store = f"duckdb:///{tmp_path / 'market.duckdb'}"
    open_store(store).close()
    _krakked(tmp_path, endpoint, sim_urls, "export", "--destination", "duckdb", "--store",
             store, "--json")
    assert events == []
