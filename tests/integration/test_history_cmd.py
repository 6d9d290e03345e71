"""`krakked verify` (candles from stored trades against Kraken's OHLC) and `krakked history`
(CSV import + API tail + candles + gaps, one command) against the simulator."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from krakked.cli import app
from krakked.errors import MismatchError, NoDataError
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market.candles import epoch_us, from_epoch_us
from krakked.market_data import Market
from krakked.sim import SimConfig, Simulator
from krakked.sim.server import running
from krakked.sync.ohlc import parse_ohlc
from tests.integration.simkit import sim_market as _market

NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)


def _sim_trades(sim: Simulator, since: datetime) -> list[list[Any]]:
    rows: list[list[Any]] = []
    cursor = str(epoch_us(since) * 1000 - 1)
    with SpotClient(transport=sim.transport(), public_limiter=PublicLimiter(1000, 1000)) as c:
        while True:
            result = c.get_trades("XBTUSD", since=cursor)
            page = result[next(k for k in result if k != "last")]
            rows.extend(page)
            if len(page) < 1000:
                return rows
            cursor = result["last"]


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


# -- verify ------------------------------------------------------------------------------------


def test_candles_built_from_backfilled_trades_agree_with_krakens_ohlc(
        sim: Simulator, tmp_path: Path, url: str) -> None:
    with _market(sim, tmp_path, url) as market:
        market.backfill_trades("XBTUSD", since=NOW - timedelta(hours=3))
        result = market.verify("BTC/USD", "1m")
        assert result.ok and result.mismatches == ()
        assert result.compared >= 170  # ~3 h of minutes inside Kraken's 720-bar window
        assert market.verify("XBTUSD", "5m").ok


def test_a_trade_missing_from_the_store_is_a_reported_mismatch(
        sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "v.duckdb"
    with _market(sim, tmp_path, f"duckdb:///{path}") as market:
        market.backfill_trades("XBTUSD", since=NOW - timedelta(hours=2))
        recent = market.store.read_trades("XBTUSD", start=NOW - timedelta(hours=1)).to_pylist()
        by_minute: dict[datetime, list[dict[str, Any]]] = {}
        for t in recent:
            by_minute.setdefault(t["timestamp"].replace(second=0, microsecond=0), []).append(t)
        victim = next(ts[1] for ts in by_minute.values() if len(ts) >= 3)
        import duckdb

        con = duckdb.connect(str(path))
        con.execute("DELETE FROM trades WHERE id = ?", [victim["id"]])
        con.close()
        result = market.verify("XBTUSD", "1m")
    assert not result.ok
    minute = victim["timestamp"].replace(second=0, microsecond=0)
    fields = {m.field for m in result.mismatches if m.timestamp == minute}
    assert {"volume", "trade_count"} <= fields
    bad = next(m for m in result.mismatches if m.field == "volume")
    assert bad.kraken - bad.ours == victim["volume"]


def test_verify_without_stored_trades_in_krakens_window_is_an_error(
        sim: Simulator, tmp_path: Path) -> None:
    with _market(sim, tmp_path, f"duckdb:///{tmp_path / 'v.duckdb'}") as market:
        market.backfill_trades("XBTUSD", since=NOW - timedelta(days=3),
                               until=NOW - timedelta(days=2))
        with pytest.raises(NoDataError, match="cover a whole 1m bucket"):
            market.verify("XBTUSD", "1m")


# -- the CLI, served simulator -------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        "[limits]\npublic_rate_per_second = 500.0\npublic_burst = 100\n")
    sim = Simulator(SimConfig(seed=7, public_rate=0))
    with running(sim) as info:
        monkeypatch.setenv("KRAKKED_HOME", str(home))
        monkeypatch.setenv("KRAKKED_SPOT_URL", info["spot_url"])
        for var in ("KRAKKED_STORE", "DATABASE_URL"):
            monkeypatch.delenv(var, raising=False)
        yield sim


def _kraken_csv_zip(path: Path, rows: list[list[Any]]) -> None:
    """Kraken's time-and-sales layout (whole seconds, no header) inside a zip, in a folder."""
    text = io.StringIO()
    for r in rows:
        text.write(f"{int(Decimal(str(r[2])))},{r[0]},{r[1]}\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("TimeAndSales_Combined/XBTUSD.csv", text.getvalue())


def test_history_imports_the_csv_backfills_the_tail_and_stores_each_trade_once(
        served: Simulator, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(hours=2)).replace(second=0, microsecond=0)
    served_rows = _sim_trades(served, start)
    cut = epoch_us(now - timedelta(minutes=40)) / 1e6
    csv_rows = [r for r in served_rows if float(r[2]) < cut]
    archive = tmp_path / "Kraken_Trading_History.zip"
    _kraken_csv_zip(archive, csv_rows)
    store = f"duckdb:///{tmp_path / 'h.duckdb'}"
    result = CliRunner().invoke(app, ["history", "BTC/USD", "--csv", str(archive),
                                      "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["symbol"] == "XBTUSD" and report["gaps_left"] == []
    assert report["first_trade"].startswith(
        from_epoch_us(int(float(csv_rows[0][2])) * 1_000_000).isoformat()[:19])
    assert {"import_seconds", "api_tail_seconds", "gaps_seconds"} <= set(report["timings"])
    with Market(store, offline=True, read_only=True) as market:
        trades = market.store.read_trades("XBTUSD").to_pylist()
        # every trade Kraken served, once: CSV rows up to the seam second, API rows after it
        last = from_epoch_us(int(served_rows[-1][7]) // 1000)
        mine = Counter((int(t["timestamp"].timestamp()), t["price"], t["volume"])
                       for t in trades if t["timestamp"] <= last)
        theirs = Counter((int(Decimal(str(r[2]))), Decimal(r[0]), Decimal(r[1]))
                         for r in served_rows)
        assert mine == theirs
        ids = [t["id"] for t in trades if t["id"] is not None]
        assert len(ids) == len(set(ids)) and ids == sorted(ids)
        seam = max(t["timestamp"] for t in trades if t["id"] is None)
        assert seam.timestamp() < cut  # CSV rows only before the file's end
        assert min(t["timestamp"] for t in trades if t["id"] is not None).timestamp() >= int(
            seam.timestamp())  # API rows from inside the file's last second on
        # the 1m candles equal Kraken's own for the closed minutes both cover
        with SpotClient(transport=served.transport(),
                        public_limiter=PublicLimiter(1000, 1000)) as c:
            ohlc, _ = parse_ohlc(c.get_ohlc("XBTUSD", 1), "XBTUSD", 1, datetime.now(UTC))
        ours = {c.timestamp: c for c in market.get_candles(
            "XBTUSD", "1m", start + timedelta(minutes=1), now - timedelta(minutes=3))}
        compared = 0
        for k in ohlc:
            mine = ours.get(k.timestamp)
            if mine is None or not k.volume:
                continue
            compared += 1
            assert (mine.open, mine.high, mine.low, mine.close, mine.volume,
                    mine.trade_count) == (k.open, k.high, k.low, k.close, k.volume,
                                          k.trade_count), k.timestamp
        assert compared >= 50


def test_cli_verify_exits_26_on_a_mismatch_and_0_when_all_agree(
        served: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.duckdb"
    store = f"duckdb:///{path}"
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    runner = CliRunner()
    done = runner.invoke(app, ["trades", "backfill", "XBTUSD", "--since", since,
                               "--store", store, "--json"])
    assert done.exit_code == 0, done.output
    ok = runner.invoke(app, ["verify", "XBTUSD", "--store", store, "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    import duckdb

    con = duckdb.connect(str(path))
    # twice the price: that trade becomes its minute's high whatever else traded then (a
    # +1 could hide inside the minute's range and change only the vwap)
    con.execute("UPDATE trades SET price = price * 2 WHERE id = (SELECT max(id) - 50 FROM "
                "trades)")
    con.close()
    from krakked.cli import main

    with pytest.raises(SystemExit) as info:
        main(["verify", "XBTUSD", "--store", store])
    assert info.value.code == MismatchError.exit_code == 26
    captured = capsys.readouterr()
    assert "mismatching fields" in captured.out
    errors = [x for x in captured.err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "1 of" in errors[0] and "differ from Kraken's" in errors[0]


def test_the_store_answers_readers_while_a_csv_import_writes(tmp_path: Path) -> None:
    """A user can query the store (another process) while import-csv writes it."""
    import os
    import subprocess
    import sys
    import time

    import duckdb

    from krakked.store import open_store

    csv_path = tmp_path / "XBTUSD.csv"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT 1700000000 + i // 3 AS ts, (30000 + i % 97)::DECIMAL(18,1),
                    0.01::DECIMAL(18,8) FROM range(900000) t(i)) TO '{csv_path}'
                    (HEADER false)""")  # noqa: S608 - a path of ours
    con.close()
    path = tmp_path / "busy.duckdb"
    with open_store(f"duckdb:///{path}"):
        pass  # the store exists before the import starts
    env = {**os.environ, "KRAKKED_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(  # noqa: S603 - this very package
        [sys.executable, "-m", "krakked.cli", "import-csv", str(csv_path), "--store",
         f"duckdb:///{path}", "--batch-size", "60000", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    try:
        while proc.poll() is None:
            with open_store(f"duckdb:///{path}", read_only=True) as reader:
                seen.append(reader.trades_summary("XBTUSD")["rows"]
                            if reader.trades_summary("XBTUSD") else 0)
            time.sleep(0.05)
    finally:
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert any(0 < n < 900000 for n in seen), seen  # read mid-import, between batches
    assert seen == sorted(seen)  # each read saw whole batches only, never fewer rows
    with open_store(f"duckdb:///{path}", read_only=True) as reader:
        assert reader.read_trades("XBTUSD").num_rows == 900000
