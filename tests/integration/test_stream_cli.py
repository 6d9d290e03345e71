"""``krakked stream`` against the served simulator: the views, persisting with --store while
another process reads the store, a clean SIGTERM, and its errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from krakked.cli import app, main
from krakked.sim import SimClock, Simulator
from krakked.store import open_store
from tests.integration.simkit import served_cli

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[tuple[dict[str, str], Simulator, SimClock]]:
    with served_cli(tmp_path, monkeypatch, NOW) as (_, sim, clock, values):
        sim.ws.poll_interval = 0.01
        yield values, sim, clock


def _docs(text: str) -> list[Any]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    return docs


def test_json_view_prints_live_values_then_a_stopped_summary(env: Any) -> None:
    result = CliRunner().invoke(app, ["stream", "XBTUSD", "ETH/USD", "--channels", "ticker",
                                      "book", "--duration", "1.5", "--interval", "0.5",
                                      "--json"])
    assert result.exit_code == 0, result.output
    docs = _docs(result.stdout)
    assert docs[-1]["stopped"] is True and len(docs) >= 3
    last = docs[-2]
    assert set(last["pairs"]) == {"XBTUSD", "ETHUSD"}
    xbt = last["pairs"]["XBTUSD"]
    assert Decimal(xbt["bid"]) < Decimal(xbt["ask"]) and "error" not in xbt["book"]
    assert last["status"]["ws_connected"] and last["status"]["pairs_with_fresh_ticker"] == 2
    # streaming without --store/--persist writes no store anywhere
    assert not list(Path(env[0]["KRAKKED_HOME"]).rglob("*.duckdb"))


def test_plain_view_is_one_line_per_pair(env: Any) -> None:
    result = CliRunner().invoke(app, ["stream", "BTC/USD", "--duration", "1", "--interval",
                                      "0.4"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("XBTUSD")]
    assert lines and "bid=" in lines[-1] and "last=" in lines[-1]


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the real entry point (errors mapped to exit codes); (code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, message", [
    (["--channels", "ticker"], "name the pairs"),
    (["XBTUSD", "--channels", "candles"], "unknown channel"),
    (["XBTUSD", "--channels", "ohlc", "--tf", "12h"], "720-minute"),
    (["XBTUSD", "--depth", "7", "--channels", "book"], "depth"),
    (["XBTUSD", "--duration", "0"], "--duration"),
])
def test_bad_arguments_exit_2_with_one_line(env: Any, args: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _main(["stream", *args], capsys)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreachable_ws_is_a_network_error_not_an_empty_success(
        env: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KRAKKED_WS_URL", "ws://127.0.0.1:9/v2?token=s3cr3t")
    code, out, err = _main(["stream", "XBTUSD", "--duration", "1"], capsys)
    assert code == 16, err
    assert "127.0.0.1:9" in err and "s3cr3t" not in out + err and not out.strip()


def test_universe_streams_every_pair_of_the_universe(env: Any) -> None:
    result = CliRunner().invoke(app, ["universe", "--json"])
    assert result.exit_code == 0, result.output
    universe = {p["canonical"] for p in json.loads(result.stdout)}
    result = CliRunner().invoke(app, ["stream", "--universe", "--duration", "1.5", "--interval",
                                      "0.7", "--json"])
    assert result.exit_code == 0, result.output
    docs = _docs(result.stdout)
    assert set(docs[-2]["pairs"]) == universe and len(universe) > 3
    assert docs[-2]["status"]["pairs_with_fresh_ticker"] == len(universe)


def test_terminal_table_shows_live_values(env: Any) -> None:
    import asyncio

    from rich.console import Console

    from krakked.cli.common import open_market
    from krakked.cli.stream import _table

    market = open_market(None)
    live = market.live(["XBTUSD"], channels=("ticker", "book"),
                       ws_options={"request_interval": 0.01})

    async def run() -> tuple[str, Any, Any]:
        async with live:
            for _ in range(200):
                if live.cache.fresh_tickers() and "XBTUSD" in live.cache.books:
                    break
                await asyncio.sleep(0.02)
            console = Console(width=250, record=True)
            console.print(_table(live, 1, live.channels))
            return console.export_text(), live.get_best_bid_ask("XBTUSD"), live.get_book(
                "XBTUSD", 1)

    try:
        text, (bid, ask), book = asyncio.run(run())
    finally:
        market.close()
    row = next(line for line in text.splitlines() if "XBTUSD" in line).split()
    assert "connected" in text
    assert format(bid, "f") in row and format(ask, "f") in row
    assert format(book.bids[0][0], "f") in row and format(book.asks[0][0], "f") in row
    assert row.count("…") == 5  # no ohlc subscribed: the candle cells say "not yet"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_the_store_was_readable_meanwhile(
        env: Any, tmp_path: Path, sig: signal.Signals) -> None:
    values, sim, clock = env
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "krakked.cli", "stream", "XBTUSD", "--channels", "trade", "ohlc",
         "--store", url, "--interval", "0.5"],
        env={**os.environ, **values}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    reads = 0
    try:
        deadline = time.monotonic() + 30
        while sim.ws.connections < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        for step in range(60):
            clock.advance(120)
            time.sleep(0.05)
            if step % 10 == 9:  # another process queries the store while it streams
                with open_store(url, read_only=True) as store:
                    store.read_trades("XBTUSD")
                reads += 1
        time.sleep(1.0)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert reads == 6 and "stopped:" in err and "trades" in err
    with open_store(url, read_only=True) as store:
        trades = store.read_trades("XBTUSD").to_pylist()
        candles = store.read_candles("XBTUSD", 1).to_pylist()
    ids = [t["id"] for t in trades]
    assert len(ids) > 50 and ids == list(range(ids[0], ids[-1] + 1))
    # the last closed candles were written on the way out; the running one never
    assert candles and candles[-1]["timestamp"].timestamp() + 60 <= clock.now()


def test_persist_writes_into_the_configured_store(env: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    _, sim, clock = env
    url = f"duckdb:///{tmp_path / 'configured.duckdb'}"
    monkeypatch.setenv("KRAKKED_STORE", url)
    done = threading.Event()

    def tape_moves() -> None:
        while sim.ws.connections < 1 and not done.is_set():
            time.sleep(0.02)
        while not done.wait(0.05):
            clock.advance(120)

    mover = threading.Thread(target=tape_moves, daemon=True)
    mover.start()
    try:
        result = CliRunner().invoke(app, ["stream", "XBTUSD", "--channels", "trade",
                                          "--persist", "--duration", "3", "--interval", "1"])
    finally:
        done.set()
        mover.join()
    assert result.exit_code == 0, result.output
    with open_store(url, read_only=True) as store:
        ids = [t["id"] for t in store.read_trades("XBTUSD").to_pylist()]
    assert len(ids) > 10 and ids == list(range(ids[0], ids[-1] + 1))


def test_kill_9_then_run_again_stores_the_tape_without_duplicate_or_hole(
        env: Any, tmp_path: Path) -> None:
    values, sim, clock = env
    url = f"duckdb:///{tmp_path / 'live.duckdb'}"

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "krakked.cli", "stream", "XBTUSD", "--channels", "trade",
             "--store", url, "--interval", "5"],
            env={**os.environ, **values}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        deadline = time.monotonic() + 30
        while sim.ws.connections < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        return proc

    def stored_ids() -> list[int]:
        with open_store(url, read_only=True) as store:
            return [t["id"] for t in store.read_trades("XBTUSD").to_pylist()]

    first = start()
    try:
        for _ in range(40):
            clock.advance(120)
            time.sleep(0.05)
        deadline = time.monotonic() + 15
        while not stored_ids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(5):  # more trades, buffered, not yet flushed
            clock.advance(120)
            time.sleep(0.05)
        first.kill()  # kill -9: the buffered trades are lost with the process
        first.communicate(timeout=10)
        before = stored_ids()
        assert before
        for _ in range(40):  # the tape goes on while nothing listens
            clock.advance(120)
            time.sleep(0.01)
        while sim.ws.connections:
            time.sleep(0.05)
        second = start()
        for _ in range(20):
            clock.advance(120)
            time.sleep(0.05)
        time.sleep(1.0)
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert second.returncode == 0, err
    with open_store(url, read_only=True) as store:
        rows = store.read_trades("XBTUSD").to_pylist()
    ids = [r["id"] for r in rows]
    assert ids[: len(before)] == before and len(ids) > len(before) + 50
    assert ids == list(range(ids[0], ids[-1] + 1))  # no duplicate, no hole
    page, _ = sim.market.trades_since("XXBTZUSD", None, 1000)
    tape = {int(r[6]): (Decimal(r[0]), Decimal(r[1])) for r in page}
    assert all(tape[r["id"]] == (r["price"], r["volume"]) for r in rows if r["id"] in tape)
