"""The CLI as a user runs it: status, setup, config show, creds show; exit codes; no leaks."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from krakked.cli import app, main
from krakked.errors import (
    AuthError,
    CredentialsError,
    NetworkError,
    SecretsDecryptionError,
    ServiceUnavailableError,
)
from tests.fakes import FUT_KEY, FUT_SECRET, SPOT_KEY, SPOT_SECRET, FakeKraken, served

PASSWORD = "correct horse battery staple"
FORBIDDEN = (SPOT_KEY, SPOT_SECRET, FUT_KEY, FUT_SECRET, PASSWORD)


@pytest.fixture
def fake() -> FakeKraken:
    return FakeKraken()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeKraken):
    monkeypatch.chdir(tmp_path)
    for var in ("KRAKEN_API_KEY", "KRAKEN_API_SECRET", "KRAKEN_SPOT__API_KEY",
                "KRAKEN_SPOT__API_SECRET", "KRAKEN_FUTURES__API_KEY",
                "KRAKEN_FUTURES__API_SECRET", "KRAKEN_API_PUBLIC_KEY", "KRAKEN_API_SECRET_KEY",
                "KRAKKED_MASTER_PASSWORD", "KRAKKED_STORE", "DATABASE_URL", "KRAKKED_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    with served(fake) as url:
        values = {"KRAKKED_HOME": str(tmp_path / "home"), "KRAKKED_SPOT_URL": url,
                  "KRAKKED_FUTURES_URL": url}
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        yield values


def run(*args: str, input: str | None = None, extra_env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, list(args), input=input, env=extra_env or {})
    for text in (result.output, repr(result.exception)):
        for value in FORBIDDEN:
            assert value not in text
    return result


KEYS = {"KRAKEN_API_KEY": SPOT_KEY, "KRAKEN_API_SECRET": SPOT_SECRET,
        "KRAKEN_FUTURES__API_KEY": FUT_KEY, "KRAKEN_FUTURES__API_SECRET": FUT_SECRET}


def test_status_json_reports_reachability_and_working_keys(env) -> None:
    result = run("status", "--json", extra_env=KEYS)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["spot"]["reachable"] and report["spot"]["system_status"] == "online"
    assert report["futures"]["reachable"]
    assert report["spot"]["credentials"]["private_call_ok"] is True
    assert report["spot"]["credentials"]["source"] == "env:KRAKEN_API_KEY"
    assert report["spot"]["credentials"]["key"] == SPOT_KEY[:4] + "…"
    assert report["futures"]["credentials"]["private_call_ok"] is True
    assert report["region"]["code"] == "US_CA" and report["tier"] == "starter"
    assert report["store"]["url"].startswith("duckdb:///")
    assert "warning" in report["futures"]  # region says no futures, keys exist: still synced


def test_status_without_keys_says_none_present(env) -> None:
    result = run("status", "--json")
    report = json.loads(result.output)
    assert report["spot"]["credentials"] == {"present": False, "problem": None}
    assert result.exit_code == 0  # no keys: the key checks do not apply, nothing failed
    assert report["ok"] is True and report["exit_code"] == 0 and report["failures"] == []


def test_status_reports_rejected_keys_as_auth_problem(env, fake) -> None:
    fake.spot_keys = {}
    result = run("status", "--json", extra_env=KEYS)
    creds = json.loads(result.stdout)["spot"]["credentials"]
    assert creds["private_call_ok"] is False and creds["auth_problem"] is True
    assert "EAPI:Invalid key" in creds["error"]
    assert result.exit_code == AuthError.exit_code == 11


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_status_with_kraken_unreachable_exits_with_the_network_code(env, monkeypatch) -> None:
    dead = _dead_url()
    monkeypatch.setenv("KRAKKED_SPOT_URL", dead)
    monkeypatch.setenv("KRAKKED_FUTURES_URL", dead)
    result = run("status", "--json", extra_env=KEYS)
    assert result.exit_code == NetworkError.exit_code == 16
    report = json.loads(result.stdout)  # the full report is still printed
    assert report["spot"]["reachable"] is False and report["futures"]["reachable"] is False
    assert report["ok"] is False and report["exit_code"] == 16
    assert report["failures"][0]["check"] == "spot.rest"
    assert report["failures"][0]["exit_code"] == 16


def test_status_with_kraken_unavailable_exits_with_the_service_code(env, fake) -> None:
    fake.fault("SystemStatus", (503, b"<html>503 Service Unavailable</html>"))
    result = run("status", "--json")
    assert result.exit_code == ServiceUnavailableError.exit_code == 15
    assert json.loads(result.stdout)["spot"]["reachable"] is False


def test_status_with_a_wrong_master_password_exits_6(env, monkeypatch) -> None:
    assert run("setup", input=_setup_input()).exit_code == 0
    result = run("status", "--json", extra_env={"KRAKKED_MASTER_PASSWORD": "wrong"})
    assert result.exit_code == SecretsDecryptionError.exit_code == 6
    report = json.loads(result.stdout)
    assert report["spot"]["credentials"]["problem"] == "Wrong password or corrupted secrets file"
    assert report["failures"][0] == {"check": "spot.credentials", "exit_code": 6,
                                     "error": "Wrong password or corrupted secrets file"}


def test_status_with_malformed_credentials_exits_4(env) -> None:
    result = run("status", "--json", extra_env={"KRAKEN_API_KEY": SPOT_KEY,
                                                "KRAKEN_API_SECRET": "not base64 at all!"})
    assert result.exit_code == CredentialsError.exit_code == 4
    assert json.loads(result.stdout)["failures"][0]["check"] == "spot.credentials"


def test_status_with_a_locked_secrets_file_and_no_password_exits_4(env) -> None:
    assert run("setup", input=_setup_input()).exit_code == 0
    result = run("status", "--json")  # not a terminal, no KRAKKED_MASTER_PASSWORD
    assert result.exit_code == 4
    assert "locked" in json.loads(result.stdout)["failures"][0]["error"]


def test_status_futures_rest_counts_only_where_futures_apply(env, monkeypatch) -> None:
    monkeypatch.setenv("KRAKKED_FUTURES_URL", _dead_url())
    spot_only = {k: v for k, v in KEYS.items() if "FUTURES" not in k}
    result = run("status", "--json", extra_env=spot_only)
    assert json.loads(result.stdout)["futures"]["reachable"] is False
    assert result.exit_code == 0  # region without futures, no Futures keys: not a failure
    assert run("status", "--json", extra_env=KEYS).exit_code == 16  # Futures keys exist
    config = Path(env["KRAKKED_HOME"]) / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text("[region.capabilities]\nsupports_futures = true\n")
    assert run("status", "--json", extra_env=spot_only).exit_code == 16  # futures region


def test_status_failing_checks_the_first_in_fixed_order_wins(env, monkeypatch) -> None:
    assert run("setup", input=_setup_input()).exit_code == 0
    monkeypatch.setenv("KRAKKED_SPOT_URL", _dead_url())
    result = run("status", "--json", extra_env={"KRAKKED_MASTER_PASSWORD": "wrong"})
    checks = [(f["check"], f["exit_code"]) for f in json.loads(result.stdout)["failures"]]
    assert checks[0] == ("spot.rest", 16) and ("spot.credentials", 6) in checks
    assert result.exit_code == 16


def test_status_table_exits_non_zero_and_names_the_failed_check(env, fake) -> None:
    fake.spot_keys = {}
    result = run("status", extra_env=KEYS)
    assert result.exit_code == 11
    assert "rejected by Kraken" in result.stdout
    assert "spot credentials" in result.stderr and "EAPI:Invalid key" in result.stderr


def test_status_table_on_a_terminal(env) -> None:
    result = run("status", extra_env=KEYS)
    assert result.exit_code == 0
    assert "reachable" in result.output and "works" in result.output
    assert "region US_CA" in result.output


def _setup_input(product: str = "spot", key: str = SPOT_KEY, secret: str = SPOT_SECRET) -> str:
    return f"{product}\n{PASSWORD}\n{PASSWORD}\n{key}\n{secret}\n"


def test_setup_validates_then_saves_encrypted_and_creds_show_reads_it(env) -> None:
    result = run("setup", input=_setup_input())
    assert result.exit_code == 0, result.output
    assert "validated and saved" in result.output
    secrets = Path(env["KRAKKED_HOME"]) / "config" / "secrets.enc"
    raw = secrets.read_bytes()
    assert SPOT_KEY.encode() not in raw and SPOT_SECRET.encode() not in raw
    assert secrets.stat().st_mode & 0o777 == 0o600
    shown = run("creds", "show", "--json", extra_env={"KRAKKED_MASTER_PASSWORD": PASSWORD})
    spot = json.loads(shown.output)["spot"]
    assert spot["source"] == "secrets.enc" and spot["validated"] is True
    assert spot["validated_at"] and spot["key"] == SPOT_KEY[:4] + "…"
    status = json.loads(run("status", "--json",
                            extra_env={"KRAKKED_MASTER_PASSWORD": PASSWORD}).output)
    assert status["spot"]["credentials"]["private_call_ok"] is True


def test_setup_with_rejected_keys_saves_nothing(env, fake) -> None:
    fake.spot_keys = {}
    result = run("setup", input=_setup_input())
    assert result.exit_code == AuthError.exit_code == 11
    assert "rejected" in result.output and "nothing saved" in result.output
    assert not (Path(env["KRAKKED_HOME"]) / "config" / "secrets.enc").exists()


def test_setup_when_kraken_is_unreachable_is_not_a_key_problem(env, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("KRAKKED_SPOT_URL", dead)
    monkeypatch.setattr("krakked.kraken.http.RetryPolicy.backoff", lambda self, n, rng=None: 0.01)
    result = run("setup", input=_setup_input())
    assert result.exit_code == NetworkError.exit_code == 16  # nothing saved
    assert "could not be reached (not a key problem)" in result.output
    saved = run("setup", "--save-unvalidated", input=_setup_input())
    assert saved.exit_code == 0 and "saved UNVALIDATED" in saved.output
    shown = json.loads(run("creds", "show", "--json",
                           extra_env={"KRAKKED_MASTER_PASSWORD": PASSWORD}).output)
    assert shown["spot"]["validated"] is False


def test_setup_of_both_products_exits_with_the_first_failures_code(env, fake,
                                                                    monkeypatch) -> None:
    fake.spot_keys = {}  # spot rejected (11), then futures unreachable (16)
    monkeypatch.setenv("KRAKKED_FUTURES_URL", _dead_url())
    monkeypatch.setattr("krakked.kraken.http.RetryPolicy.backoff", lambda self, n, rng=None: 0.01)
    result = run("setup", "--product", "both",
                 input=f"{PASSWORD}\n{PASSWORD}\n{SPOT_KEY}\n{SPOT_SECRET}\n{FUT_KEY}\n"
                       f"{FUT_SECRET}\n")
    assert "rejected" in result.output and "could not be reached" in result.output
    assert result.exit_code == 11


def test_config_show_json(env) -> None:
    data = json.loads(run("config", "show", "--json").output)
    assert data["region"]["code"] == "US_CA"
    assert data["kraken"]["spot_url"] == env["KRAKKED_SPOT_URL"]


def test_errors_are_one_line_with_their_exit_code(env, capsys) -> None:
    cfg = Path(env["KRAKKED_HOME"]) / "config"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text("[limits]\ntier = 'gold'\n")
    with pytest.raises(SystemExit) as info:
        main(["config", "show"])
    assert info.value.code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "limits.tier" in err and "\n" not in err


def test_an_error_keeps_its_bracketed_text(env, capsys) -> None:
    cfg = Path(env["KRAKKED_HOME"]) / "config"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text("limits = 5\n")
    with pytest.raises(SystemExit) as info:
        main(["config", "show"])
    assert info.value.code == 3
    err = capsys.readouterr().err.strip()
    assert "[limits]" in err  # printed as text, not eaten as a rich style tag


@pytest.mark.parametrize(("args", "fragment"), [
    (["candles", "XBTUSD", "--bogus"], "No such option: --bogus"),
    (["candles"], "Missing argument"),
    (["candles", "XBTUSD", "--tf", "2h"], "unsupported timeframe '2h'"),
    (["candles", "XBTUSD", "--since", "yesterday"], "--since: 'yesterday' is not an ISO"),
    (["candles", "XBTUSD", "--last", "-1"], "--last"),
    (["ohlc", "backfill", "XBTUSD", "--tf", "90m"], "unsupported timeframe '90m'"),
])
def test_bad_usage_is_one_line_and_exit_code_2(env, capsys, args, fragment) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err
    assert "Traceback" not in err and "╭" not in err


def test_an_unexpected_error_is_still_one_line_and_v_shows_the_traceback(
        env, capsys, monkeypatch) -> None:
    import krakked.cli.common as cli_module

    def broken() -> None:
        raise RuntimeError("something we did not foresee")

    monkeypatch.setattr(cli_module, "current_settings", broken)
    with pytest.raises(SystemExit) as info:
        main(["config", "show"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unexpected RuntimeError: something we did not foresee")
    assert "\n" not in err
    with pytest.raises(SystemExit):
        main(["-v", "config", "show"])
    assert "Traceback" in capsys.readouterr().err


def test_wrong_master_password_exit_code_and_message(env, capsys, monkeypatch) -> None:
    assert run("setup", input=_setup_input()).exit_code == 0
    monkeypatch.setenv("KRAKKED_MASTER_PASSWORD", "wrong")
    with pytest.raises(SystemExit) as info:
        main(["creds", "show", "--json"])
    assert info.value.code == 0  # creds show reports the problem per product
    out = json.loads(capsys.readouterr().out)
    assert out["spot"]["problem"] == "Wrong password or corrupted secrets file"


def test_version(env) -> None:
    assert run("--version").output.startswith("krakked ")
