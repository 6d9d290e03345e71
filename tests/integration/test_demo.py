"""`krakked demo` (what `make demo` runs): offline, against the in-process simulator."""

from __future__ import annotations

import json
from decimal import Decimal

from typer.testing import CliRunner

from krakked.cli import app
from krakked.demo import DEMO_PAIRS, run_demo


def test_demo_reports_every_section_from_the_simulator(tmp_path) -> None:
    report = run_demo(seed=7, home=tmp_path).to_dict()
    assert "simulator" in report["ran_against"]
    assert report["spot_status"]["reachable"] and report["futures_status"]["reachable"]
    assert report["spot_status"]["credentials"]["private_call_ok"] is True
    assert report["futures_status"]["credentials"]["private_call_ok"] is True
    assert [t["pair"] for t in report["tickers"]] == list(DEMO_PAIRS)
    assert Decimal(report["balance"]["ZUSD"]) > 0
    assert len(report["candles"]) == 5
    times = [c["open_time"] for c in report["candles"]]
    assert times == sorted(times)
    assert report["futures_account"]["recent_executions"] > 0


def test_demo_is_deterministic_for_a_seed(tmp_path) -> None:
    a = run_demo(seed=11, home=tmp_path / "a").to_dict()
    b = run_demo(seed=11, home=tmp_path / "b").to_dict()
    assert a["balance"] == b["balance"]


def test_demo_command_says_it_ran_against_the_simulator() -> None:
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "ran against krakked's offline Kraken simulator" in result.output
    assert "XBTUSD 1h" in result.output and "Spot balance" in result.output
    data = json.loads(CliRunner().invoke(app, ["demo", "--json"]).output)
    assert data["seed"] == 7
