"""`krakked account …` as a user runs it, against the simulator served on loopback."""

from __future__ import annotations

import io
import json
import re
import socket
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.console import Console
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
    assert info.value.code == 2  # a bad argument of ours (UsageError), not Kraken's refusal
    assert "executions" in capsys.readouterr().err  # the valid names are listed
    monkeypatch.delenv("KRAKEN_FUTURES__API_KEY")
    with pytest.raises(SystemExit) as info:
        main(["account", "sync"])
    assert info.value.code == 5
    message = capsys.readouterr().err
    assert "KRAKEN_FUTURES__API_KEY" in message and "KRAKEN_API_PUBLIC_KEY" in message
    # the .dlt/secrets.toml way survives the console's markup (it once read "under  in")
    assert ("kraken_futures.api_key and kraken_futures.api_secret in .dlt/secrets.toml"
            in message)
    assert env["KRAKEN_FUTURES__API_SECRET"] not in message


# --- dlt's failures as one line each ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def market_store(tmp_path: Path) -> str:
    """A (small, empty) market store for `krakked export`."""
    from krakked.store import open_store

    url = f"duckdb:///{tmp_path / 'market.duckdb'}"
    open_store(url).close()
    return url


COMMANDS = {
    "sync": ("account", "sync", "--resources", "tickers"),
    "state": ("account", "state"),
    "reset": ("account", "reset", "executions"),
    "reset --all": ("account", "reset", "--all", "--yes"),
    "export": ("export",),
}


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from krakked.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert err.rstrip().endswith(line), err  # the error is the last thing said, on one line
    return int(info.value.code or 0), line


def _args(command: str, destination: str, market_store: str) -> list[str]:
    args = [*COMMANDS[command], "--destination", destination]
    return [*args, "--store", market_store] if command == "export" else args


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_destination_is_a_usage_error(env, capsys, market_store, command) -> None:
    code, line = _fails(capsys, *_args(command, "nonsense", market_store))
    assert code == 2
    assert "unknown destination 'nonsense'" in line and "postgres" in line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_postgres_without_credentials_names_the_setting(env, capsys, monkeypatch, market_store,
                                                        command) -> None:
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    code, line = _fails(capsys, *_args(command, "postgres", market_store))
    assert code == 3
    assert "DESTINATION__POSTGRES__CREDENTIALS" in line and "credentials" in line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unreachable_postgres_is_a_store_error(env, capsys, monkeypatch, market_store,
                                               command) -> None:
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS",
                       f"postgresql://krakked:s3cret-pw@127.0.0.1:{_free_port()}/history")
    code, line = _fails(capsys, *_args(command, "postgres", market_store))
    assert code == 23
    assert "destination postgres: cannot connect" in line and "Connection refused" in line
    assert "s3cret-pw" not in capsys.readouterr().err + line


@pytest.mark.parametrize(("user", "database", "said"), [
    ("postgres", "no_such_database", 'database "no_such_database" does not exist'),
    ("no_such_role", "postgres", 'role "no_such_role" does not exist'),  # login refused
])
def test_a_missing_postgres_database_or_a_refused_login_is_a_store_error(
        env, capsys, monkeypatch, postgres_server, user, database, said) -> None:
    from tests.integration.test_account_decimals import dlt_postgres_url

    url = dlt_postgres_url(postgres_server).rsplit("/", 1)[0] + f"/{database}"
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS",
                       url.replace("postgresql://postgres:", f"postgresql://{user}:"))
    code, line = _fails(capsys, "account", "sync", "--resources", "tickers",
                        "--destination", "postgres")
    assert code == 23
    assert said in line


def test_verbose_shows_the_traceback_behind_the_line(env, capsys) -> None:
    from krakked.cli import main

    with pytest.raises(SystemExit) as info:
        main(["-v", "account", "sync", "--resources", "tickers", "--destination", "nonsense"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnknownDestinationModule" in err


def test_sync_into_postgres_configured_the_dlt_way(env, monkeypatch, postgres_db_url) -> None:
    import psycopg

    from tests.integration.test_account_decimals import dlt_postgres_url

    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", dlt_postgres_url(postgres_db_url))
    result = run("account", "sync", "--resources", "executions", "tickers",
                 "--destination", "postgres", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)[0]["resources"]["executions"]["rows"]
    with psycopg.connect(postgres_db_url) as con:
        (stored,) = con.execute("SELECT count(*) FROM kraken_futures.executions").fetchone()
    assert stored == rows > 0
    state = json.loads(run("account", "state", "--destination", "postgres", "--json").stdout)
    assert state["futures"]["resources"]["executions"]["rows"] == rows


# --- reset --all asks first ---------------------------------------------------------------------


def _rows(kind: str = "futures") -> dict[str, Any]:
    state = json.loads(run("account", "state", "--source", kind, "--json").stdout)[kind]
    return {name: r["rows"] for name, r in state["resources"].items()}


def test_reset_all_without_a_terminal_refuses_unless_yes(env, capsys) -> None:
    from krakked.cli import main

    assert run("account", "sync", "--resources", "executions").exit_code == 0
    before = _rows()
    assert before["executions"] > 0
    with pytest.raises(SystemExit) as info:
        main(["account", "reset", "--all"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "pass --yes" in err and "kraken_futures" in err
    assert _rows() == before  # nothing dropped
    assert run("account", "reset", "--all", "--yes").exit_code == 0
    assert _rows()["executions"] is None


def test_reset_all_on_a_terminal_asks_and_a_no_drops_nothing(env, monkeypatch) -> None:
    monkeypatch.setattr("krakked.cli.common.interactive", lambda: True)
    assert run("account", "sync", "--resources", "executions").exit_code == 0
    before = _rows()
    declined = CliRunner().invoke(app, ["account", "reset", "--all"], input="n\n")
    assert declined.exit_code == 1
    assert "Drop every table and all sync state of kraken_futures" in declined.stderr
    assert "Nothing dropped" in declined.stderr
    assert _rows() == before
    accepted = CliRunner().invoke(app, ["account", "reset", "--all"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert _rows()["executions"] is None


# --- progress -----------------------------------------------------------------------------------

PROGRESS_LINE = re.compile(
    r"kraken_futures\.(\w+): (\d+) pages?, (\d+) rows, (\d+) rate-limit waits, "
    r"cursor (\S+); done")


def test_sync_without_a_terminal_logs_progress_per_resource(env) -> None:
    result = run("account", "sync", "--resources", "executions", "account_log", "tickers",
                 "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]  # stdout stays pure JSON
    done = {m.group(1): m for m in PROGRESS_LINE.finditer(result.stderr)}
    assert set(done) == {"executions", "account_log", "tickers"}, result.stderr
    for name in ("executions", "account_log"):
        line = done[name]
        assert int(line.group(2)) >= 1 and int(line.group(3)) == report["resources"][name][
            "rows"]
        assert line.group(5) == report["resources"][name]["last_timestamp"]
    assert done["tickers"].group(5) == "-"


def test_sync_on_a_terminal_shows_a_live_display_on_stderr(env, monkeypatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr("krakked.cli.common.err", Console(file=screen, force_terminal=True,
                                                   width=220, color_system=None))
    result = run("account", "sync", "--resources", "executions", "account_log")
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    report_rows = _rows()
    for name in ("executions", "account_log"):
        assert re.search(rf"kraken_futures\.{name}\s+\d+ pages\s+{report_rows[name]} rows\s+"
                         r"\d+ rate-limit waits\s+cursor 20\d\d-", shown), shown
    assert "; done" not in result.stderr  # the display replaces the log lines


def test_a_duckdb_file_locked_by_another_process_is_a_store_locked_error(env, capsys) -> None:
    import subprocess
    import sys

    path = Path(env["KRAKKED_HOME"]) / "data" / "kraken_futures_account.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for command in (("account", "sync", "--resources", "tickers"), ("account", "state"),
                        ("account", "reset", "executions")):
            code, line = _fails(capsys, *command)
            assert code == 24, line
            assert "is locked by another process" in line and str(path) in line
            assert "Please check if you configured the credentials" not in line
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes the pipe
