"""Config: paths, defaults when absent, values read when present, env overrides, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from krakked.config import (
    DEFAULT_FUTURES_URL,
    DEFAULT_SPOT_URL,
    RegionProfile,
    load_settings,
    resolve_paths,
)
from krakked.errors import ConfigError


def _home(tmp_path: Path) -> dict[str, str]:
    return {"KRAKKED_HOME": str(tmp_path)}


def test_krakked_home_relocates_config_secrets_store_and_dlt(tmp_path: Path) -> None:
    paths = resolve_paths(_home(tmp_path))
    assert paths.config_file == tmp_path / "config" / "config.toml"
    assert paths.secrets_file == tmp_path / "config" / "secrets.enc"
    assert paths.default_store_url == f"duckdb:///{tmp_path / 'data' / 'krakked.duckdb'}"
    assert paths.dlt_pipelines_dir == tmp_path / "data" / "dlt"
    assert paths.nonce_dir.is_relative_to(tmp_path)


def test_os_paths_on_linux_follow_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    paths = resolve_paths({})
    assert paths.config_dir == tmp_path / "cfg" / "krakked"
    assert paths.data_dir == tmp_path / "share" / "krakked"


def test_missing_config_gives_documented_defaults(tmp_path: Path) -> None:
    s = load_settings(_home(tmp_path))
    assert s.source_file is None
    assert s.region == RegionProfile("US_CA", False, False, False, "USD")
    assert s.tier == "starter"
    assert s.stale_tolerance_seconds == 60.0
    assert s.universe.include_pairs == () and s.universe.min_24h_volume_usd is None
    assert s.kraken.spot_url == DEFAULT_SPOT_URL
    assert s.kraken.futures_url == DEFAULT_FUTURES_URL
    assert s.kraken.futures_history_version == "v3"
    assert s.kraken.nonce_format == "ms_counter"
    assert s.store_url == f"duckdb:///{tmp_path / 'data' / 'krakked.duckdb'}"
    assert s.store_url_source == "default"


def _write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    path = cfg / name
    path.write_text(text)
    return path


def test_config_present_reads_region_and_capabilities(tmp_path: Path) -> None:
    _write(tmp_path, """
[region]
code = "EU"
default_quote = "EUR"
[region.capabilities]
supports_margin = true
supports_futures = true
supports_staking = false
[universe]
include_pairs = ["XBTUSD", "ETHUSD", "XBTUSD"]
exclude_pairs = ["DOGEUSD"]
min_24h_volume_usd = 100000
[market_data.ws]
stale_tolerance_seconds = 30
[limits]
tier = "pro"
spot_costs = { Ledgers = 2 }
[store]
url = "postgresql://localhost/krakked"
""")
    s = load_settings(_home(tmp_path))
    assert s.region == RegionProfile("EU", True, True, False, "EUR")
    assert s.universe.include_pairs == ("XBTUSD", "ETHUSD")  # deduplicated, order kept
    assert s.universe.exclude_pairs == ("DOGEUSD",)
    assert s.universe.min_24h_volume_usd == 100000.0
    assert s.stale_tolerance_seconds == 30.0
    assert s.tier == "pro"
    assert s.limits.spot_costs == {"Ledgers": 2}
    assert s.store_url == "postgresql://localhost/krakked"
    assert s.store_url_source == "config:store.url"


def test_env_overrides_urls_tier_and_store(tmp_path: Path) -> None:
    _write(tmp_path, '[limits]\ntier = "pro"\n[kraken]\nspot_url = "https://example.org"\n')
    env = {
        **_home(tmp_path),
        "KRAKKED_SPOT_URL": "http://127.0.0.1:8787/",
        "KRAKKED_FUTURES_URL": "http://127.0.0.1:8788",
        "KRAKKED_WS_URL": "ws://127.0.0.1:8787/v2",
        "KRAKKED_TIER": "intermediate",
        "KRAKKED_STORE": "parquet:///tmp/x",
    }
    s = load_settings(env)
    assert s.kraken.spot_url == "http://127.0.0.1:8787"
    assert s.kraken.futures_url == "http://127.0.0.1:8788"
    assert s.kraken.ws_url == "ws://127.0.0.1:8787/v2"
    assert s.tier == "intermediate"
    assert (s.store_url, s.store_url_source) == ("parquet:///tmp/x", "env:KRAKKED_STORE")


def test_database_url_is_the_last_resort_and_logged(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="krakked.config"):
        s = load_settings({**_home(tmp_path), "DATABASE_URL": "postgresql://db/k"})
    assert (s.store_url, s.store_url_source) == ("postgresql://db/k", "env:DATABASE_URL")
    assert any("DATABASE_URL" in r.getMessage() for r in caplog.records)


def test_legacy_config_yaml_read_when_no_toml(tmp_path: Path) -> None:
    _write(tmp_path, """
region:
  code: "US_CA"
  capabilities:
    supports_margin: false
  default_quote: "USD"
market_data:
  ws:
    stale_tolerance_seconds: 45
  ohlc_store:
    backend: "parquet"
    root_dir: "/srv/ohlc"
""", name="config.yaml")
    s = load_settings(_home(tmp_path))
    assert s.source_file and s.source_file.name == "config.yaml"
    assert s.stale_tolerance_seconds == 45.0
    assert s.ohlc_store.backend == "parquet"
    assert s.store_url == "parquet:////srv/ohlc"
    assert s.store_url_source == "config:market_data.ohlc_store"


def test_toml_wins_over_yaml(tmp_path: Path) -> None:
    _write(tmp_path, "region:\n  code: YAML\n", name="config.yaml")
    _write(tmp_path, '[region]\ncode = "TOML"\n')
    assert load_settings(_home(tmp_path)).region.code == "TOML"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[limits]\ntier = 'gold'\n", "limits.tier = 'gold' is not one of starter"),
        ("[region.capabilities]\nsupports_margin = 'yes'\n", "supports_margin must be bool"),
        ("[market_data.ws]\nstale_tolerance_seconds = -1\n", "stale_tolerance_seconds"),
        ("[universe]\ninclude_pairs = [1, 2]\n", "include_pairs must be a list of strings"),
        ("[market_data.ohlc_store]\nbackend = 'excel'\n", "backend = 'excel'"),
        ("[limits]\nspot_costs = { Ledgers = -1 }\n", "limits.spot_costs.Ledgers"),
        ("[kraken]\nspot_url = 'ftp://x'\n", "not an http(s)"),
        ("[region\ncode = 1\n", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(_home(tmp_path))
    assert fragment in str(info.value)
    if "not an http" not in fragment:
        assert str(path) in str(info.value)


def test_unknown_keys_warn_but_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, "[region]\ncode = 'US_CA'\ncolour = 'blue'\n")
    with caplog.at_level(logging.WARNING, logger="krakked.config"):
        load_settings(_home(tmp_path))
    assert any("region.colour" in r.getMessage() for r in caplog.records)


def test_krakked_config_points_at_another_file(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[region]\ncode = 'OTHER'\n")
    s = load_settings({**_home(tmp_path), "KRAKKED_CONFIG": str(other)})
    assert s.region.code == "OTHER"
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({**_home(tmp_path), "KRAKKED_CONFIG": str(tmp_path / "nope.toml")})


def test_settings_to_dict_is_complete(tmp_path: Path) -> None:
    d = load_settings(_home(tmp_path)).to_dict()
    assert d["region"]["capabilities"]["supports_margin"] is False
    assert d["market_data"]["ws"]["stale_tolerance_seconds"] == 60.0
    assert d["limits"]["tier"] == "starter"
    assert d["store"]["url"].startswith("duckdb:///")


def test_exclude_leveraged_pairs_defaults_to_false_and_reads_true(tmp_path: Path,
                                                                  caplog) -> None:
    assert load_settings(_home(tmp_path)).universe.exclude_leveraged_pairs is False
    _write(tmp_path, "[universe]\nexclude_leveraged_pairs = true\n")
    with caplog.at_level(logging.WARNING, logger="krakked.config"):
        s = load_settings(_home(tmp_path))
    assert s.universe.exclude_leveraged_pairs is True
    assert s.to_dict()["universe"]["exclude_leveraged_pairs"] is True
    assert "unknown config key" not in caplog.text


def test_exclude_leveraged_pairs_must_be_a_bool(tmp_path: Path) -> None:
    path = _write(tmp_path, "[universe]\nexclude_leveraged_pairs = 'yes'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(_home(tmp_path))
    assert "universe.exclude_leveraged_pairs must be bool" in str(info.value)
    assert str(path) in str(info.value)
