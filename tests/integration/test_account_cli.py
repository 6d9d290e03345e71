"""`krakked account …` as a user runs it, against the simulator served on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from krakked.cli import app
from krakked.sim import SimConfig, Simulator
from krakked.sim.server import running


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for var in ("KRAKEN_API_KEY", "KRAKEN_API_SECRET", "KRAKEN_SPOT__API_KEY",
                "KRAKEN_SPOT__API_SECRET", "KRAKEN_FUTURES__API_KEY",
                "KRAKEN_FUTURES__API_SECRET", "KRAKEN_API_PUBLIC_KEY", "KRAKEN_API_SECRET_KEY",
                "KRAKKED_MASTER_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    # Kraken's real pacing is tested elsewhere; here a Pro tier with cost-1 history calls keeps
    # the CLI round trip quick (Starter would pace Ledgers pages 12 s apart).
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        '[limits]\ntier = "pro"\nspot_costs = { Ledgers = 1, TradesHistory = 1, '
        'ClosedOrders = 1 }\n')
    sim = Simulator(SimConfig(seed=7, public_rate=0, tier="pro",
                              spot_costs={"Ledgers": 1, "TradesHistory": 1, "ClosedOrders": 1}))
    with running(sim) as info:
        values = {
            "KRAKKED_HOME": str(home),
            "KRAKKED_SPOT_URL": info["spot_url"], "KRAKKED_FUTURES_URL": info["futures_url"],
            "KRAKEN_FUTURES__API_KEY": info["futures_api_key"],
            "KRAKEN_FUTURES__API_SECRET": info["futures_api_secret"],
            "KRAKEN_API_KEY": info["api_key"], "KRAKEN_API_SECRET": info["api_secret"],
        }
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        yield values


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_sync_state_reset_round_trip(env) -> None:
    first = run("account", "sync", "--resources", "executions", "account_log",
                "position_history", "--since", "2026-01-01T00:00:00Z", "--strict", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)[0]
    assert report["pipeline"] == "kraken_futures"
    rows = {name: r["rows"] for name, r in report["resources"].items()}
    assert rows["executions"] > 0 and rows["account_log"] > 0 and rows["position_history"] > 0
    again = json.loads(run("account", "sync", "--json").stdout)[0]  # all resources, resuming
    assert {"tickers", "open_positions"} <= set(again["resources"])
    state = json.loads(run("account", "state", "--json").stdout)["futures"]
    assert state["resources"]["executions"]["rows"] == rows["executions"]  # merged, no dupes
    assert state["resources"]["executions"]["last_timestamp"]
    assert run("account", "reset", "executions").exit_code == 0
    after = json.loads(run("account", "state", "--json").stdout)["futures"]
    assert not after["resources"].get("executions", {}).get("last_timestamp")
    db = Path(env["KRAKKED_HOME"]) / "data"
    files = list(db.glob("*futures*.duckdb"))
    assert files
    with duckdb.connect(str(files[0]), read_only=True) as con:
        tables = {r[0] for r in con.execute(
            "select table_name from information_schema.tables").fetchall()}
    assert "account_log" in tables and "executions" not in tables


def test_spot_source_with_chosen_resources(env) -> None:
    result = run("account", "sync", "--source", "spot", "--resources", "ledgers",
                 "trades_history", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]
    assert report["pipeline"] == "kraken_spot"
    assert set(report["resources"]) == {"ledgers", "trades_history"}
    assert report["resources"]["ledgers"]["rows"] > 0


def test_unknown_resource_and_missing_keys_are_one_line_errors(env, monkeypatch,
                                                               capsys) -> None:
    from krakked.cli import main

    with pytest.raises(SystemExit) as info:
        main(["account", "sync", "--resources", "fills"])
    assert info.value.code == 18
    assert "executions" in capsys.readouterr().err  # the valid names are listed
    monkeypatch.delenv("KRAKEN_FUTURES__API_KEY")
    with pytest.raises(SystemExit) as info:
        main(["account", "sync"])
    assert info.value.code == 5
    message = capsys.readouterr().err
    assert "KRAKEN_FUTURES__API_KEY" in message and "KRAKEN_API_PUBLIC_KEY" in message
    assert env["KRAKEN_FUTURES__API_SECRET"] not in message
