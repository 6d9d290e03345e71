"""Market data end to end against krakked.sim: the universe, OHLC backfill (closed candles only,
incremental), the Python API, the original history facade, the CLI, export via dlt."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from krakked.cli import app
from krakked.config import UniverseSettings, load_settings
from krakked.errors import NetworkError, UnknownPairError, UsageError
from krakked.history import HistoricalDataProvider
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market_data import Market
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.sim.server import running
from krakked.store import open_store

NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def market(sim: Simulator, tmp_path: Path, clock: SimClock):
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    client = SpotClient(settings=settings, transport=sim.transport(),
                        public_limiter=PublicLimiter(1000, 1000))
    with Market(f"duckdb:///{tmp_path / 'm.duckdb'}", settings=settings, client=client) as m:
        yield m


def test_universe_is_the_online_usd_spot_pairs_including_those_offering_margin(
        market: Market) -> None:
    universe = market.get_universe()
    assert len(universe) >= 30
    assert "SOLUSD" in universe and "XBTUSD" in universe  # XBTUSD also offers margin
    assert "MATICUSD" not in universe  # cancel_only
    assert not any(p.endswith(("USDT", "XBT", "EUR")) for p in universe)
    meta = market.get_pair_metadata("BTC/USD")  # any pair resolves, not only the universe
    assert (meta.canonical, meta.raw_name, meta.ws_symbol) == ("XBTUSD", "XXBTZUSD", "BTC/USD")
    assert market.resolve("XRP/BTC") == "XRPXBT"
    with pytest.raises(UnknownPairError, match="XBTUSD"):
        market.resolve("XBTUS")


def _unreachable_client(settings) -> SpotClient:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return SpotClient(settings=settings, transport=httpx.MockTransport(refuse),
                      retry=RetryPolicy(max_attempts=1), public_limiter=PublicLimiter(1000, 1000))


def test_universe_without_kraken_or_a_snapshot_fails_with_the_network_error(
        tmp_path: Path) -> None:
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    with Market(f"duckdb:///{tmp_path / 'm.duckdb'}", settings=settings,
                client=_unreachable_client(settings)) as m:
        with pytest.raises(NetworkError):
            m.get_universe()
        with pytest.raises(NetworkError):
            m.get_universe_metadata()
        assert m.resolve("BTC/USD") == "XBTUSD"  # the offline tables still resolve names
        assert m.store.canonical("XBT/USDT") == "XBTUSDT"
        with pytest.raises(UnknownPairError):
            m.resolve("NOPEUSD")
        with pytest.raises(NetworkError):
            m.get_pair_metadata("BTC/USD")  # known name, but no metadata without AssetPairs
        assert m.universe_updated_at is None and m.universe_is_stale is False


def test_universe_offline_serves_the_stored_snapshot_marked_stale(
        market: Market, tmp_path: Path, caplog) -> None:
    fresh = market.get_universe_metadata()
    taken = market.universe_updated_at
    assert taken is not None and market.universe_is_stale is False
    url, settings = market.store.url, market.settings
    market.close()
    with Market(url, settings=settings, client=_unreachable_client(settings)) as offline, \
            caplog.at_level(logging.WARNING, "krakked.market_data"):
        stale = offline.get_universe_metadata()
        assert offline.universe_is_stale is True and offline.universe_updated_at == taken
        assert [p.to_row() for p in stale] == [p.to_row() for p in fresh]
        assert offline.get_universe() == [p.canonical for p in fresh]
        assert offline.resolve("XXBTZUSD") == "XBTUSD"
        assert offline.get_pair_metadata("DOGE/USD").tick_size == Decimal("0.0000001")
    assert "stale" in caplog.text and taken.isoformat() in caplog.text


@pytest.mark.parametrize("store_url", ["duckdb", "parquet", "csv", "postgresql"],
                         indirect=True)
def test_the_stale_snapshot_is_served_from_every_store_backend(
        sim: Simulator, store_url: str, tmp_path: Path) -> None:
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    client = SpotClient(settings=settings, transport=sim.transport(),
                        public_limiter=PublicLimiter(1000, 1000))
    with open_store(store_url) as store:
        fresh = Market(store, settings=settings, client=client)
        expected = fresh.get_universe_metadata()
        offline = Market(store, settings=settings, client=_unreachable_client(settings))
        assert [p.to_row() for p in offline.get_universe_metadata()] == [
            p.to_row() for p in expected]
        assert offline.universe_is_stale and offline.universe_updated_at == \
            fresh.universe_updated_at
        assert str(offline.get_pair_metadata("PEPE/USD").tick_size) == "1E-10"
        assert format(offline.get_pair_metadata("PEPE/USD").tick_size, "f") == "0.0000000001"


@pytest.mark.parametrize("universe", [UniverseSettings(exclude_leveraged_pairs=True),
                                      UniverseSettings(min_24h_volume_usd=1000.0)])
def test_a_snapshot_that_cannot_apply_the_universe_rules_is_not_served(
        market: Market, universe: UniverseSettings) -> None:
    market.refresh()
    url, settings = market.store.url, dataclasses.replace(market.settings, universe=universe)
    market.close()
    with Market(url, settings=settings, client=_unreachable_client(settings)) as offline:
        with pytest.raises(NetworkError):
            offline.get_universe()
        assert offline.get_pair_metadata("BTC/USD").raw_name == "XXBTZUSD"  # stale metadata


def test_pair_metadata_says_whether_margin_is_available_in_the_region(
        market: Market, tmp_path: Path) -> None:
    assert market.get_pair_metadata("BTC/USD").margin_available is False
    margin = dataclasses.replace(
        market.settings, region=dataclasses.replace(market.settings.region, supports_margin=True))
    with Market(f"duckdb:///{tmp_path / 'margin.duckdb'}", settings=margin,
                client=market.client) as m:
        assert m.get_pair_metadata("BTC/USD").margin_available is True
        assert m.get_pair_metadata("SOLUSD").margin_available is False


def test_backfill_stores_closed_candles_only_and_resumes(market: Market, sim: Simulator,
                                                         clock: SimClock) -> None:
    first = market.backfill_ohlc("BTC/USD", "1h")
    assert 0 < first.fetched <= 719 and first.stored == first.fetched
    assert any("720" in n for n in first.notes)
    candles = market.get_ohlc("XBTUSD", "1h", lookback=5)
    newest = candles[-1]
    assert newest.close_time <= NOW  # the running hour is never stored
    sim_rows = sim.market.ohlc("XXBTZUSD", 60)[0]
    committed = {int(r[0]): r for r in sim_rows[:-1]}
    row = committed[int(newest.timestamp.timestamp())]
    assert (newest.open, newest.close, newest.volume) == (Decimal(row[1]), Decimal(row[4]),
                                                          Decimal(row[6]))
    clock.advance(2 * 3600)
    again = market.backfill_ohlc("XBTUSD", "1h")
    assert again.fetched == 2  # only what closed since: the cursor was kept
    assert len(market.get_ohlc("XBTUSD", "1h")) == first.fetched + 2
    status = {r["data_type"]: r for r in market.store.get_sync_status("XBTUSD")}
    assert status["candles_1h"]["last_kraken_since"] == again.cursor


def test_higher_timeframes_derive_from_stored_candles(market: Market) -> None:
    market.backfill_ohlc("XBTUSD", "1h")
    four = market.get_ohlc("XBTUSD", "4h", lookback=3)
    ones = market.get_ohlc_since("XBTUSD", "1h", four[0].timestamp)
    bucket = [c for c in ones if four[0].timestamp <= c.timestamp < four[0].close_time]
    assert len(bucket) == 4
    assert four[0].volume == sum(c.volume for c in bucket)
    assert four[0].high == max(c.high for c in bucket)
    assert four[0].open == bucket[0].open and four[0].close == bucket[-1].close


def test_12h_is_derived_never_fetched(market: Market) -> None:
    with pytest.raises(UsageError, match="12h candles are not served"):
        market.backfill_ohlc("XBTUSD", "12h")


def test_since_in_the_future_is_refused(market: Market) -> None:
    with pytest.raises(UsageError, match="in the future"):
        market.get_ohlc_since("XBTUSD", "1h", datetime.now(UTC) + timedelta(days=2))


def test_history_facade_keeps_the_original_async_api(market: Market, tmp_path: Path) -> None:
    market.backfill_ohlc("XBTUSD", "1h")
    url = market.store.url
    market.store.close()
    assert HistoricalDataProvider.INTERVAL_VIEWS == {
        1: "candles", 5: "candles_5m", 15: "candles_15m", 30: "candles_30m", 60: "candles_1h",
        240: "candles_4h", 720: "candles_12h", 1440: "candles_1d", 10080: "candles_1w"}

    async def go() -> tuple:
        async with HistoricalDataProvider(url) as provider:
            latest = await provider.get_latest_candles("BTC/USD", 60, 3)
            warm = await provider.get_warmup_data("XBTUSD", 240, 2)
            multi = await provider.get_multi_timeframe_candles("XBTUSD", NOW, [60, 240], 2)
            replayed = [c async for c in provider.replay_candles(
                "XBTUSD", 60, latest[0].timestamp, NOW, speed=0)]
            rng = await provider.get_data_range("XBTUSD")
            status = await provider.get_sync_status("XBTUSD")
            health = await provider.health_check()
            return latest, warm, multi, replayed, rng, status, health

    latest, warm, multi, replayed, rng, status, health = asyncio.run(go())
    assert len(latest) == 3 and latest[0].timestamp < latest[-1].timestamp
    assert len(warm) == 2 and warm[0].interval_minutes == 240
    assert set(multi) == {60, 240} and len(multi[60]) == 2
    assert [c.timestamp for c in replayed] == [c.timestamp for c in latest]
    assert rng["total_candles"] > 0
    assert status["candles_1h"]["symbol"] == "XBTUSD"
    assert health["ok"] is True


# -- the CLI, served simulator -----------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        "[limits]\npublic_rate_per_second = 200.0\npublic_burst = 50\n")
    sim = Simulator(SimConfig(seed=7, public_rate=0))
    with running(sim) as info:
        for k, v in {"KRAKKED_HOME": str(home), "KRAKKED_SPOT_URL": info["spot_url"],
                     "KRAKKED_FUTURES_URL": info["futures_url"]}.items():
            monkeypatch.setenv(k, v)
        for var in ("KRAKKED_STORE", "DATABASE_URL"):
            monkeypatch.delenv(var, raising=False)
        yield home


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_universe_backfill_candles_store_info(cli_env: Path) -> None:
    universe = json.loads(cli("universe", "--json").output)
    assert len(universe) >= 30 and {"canonical", "ws_symbol", "ordermin"} <= set(universe[0])
    result = cli("ohlc", "backfill", "XBTUSD", "ETH/USD", "--tf", "1h", "1d", "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.output)
    assert {(r["symbol"], r["timeframe"]) for r in done} == {
        ("XBTUSD", "1h"), ("XBTUSD", "1d"), ("ETHUSD", "1h"), ("ETHUSD", "1d")}
    table = cli("candles", "XBTUSD", "--tf", "4h", "--last", "20")
    assert table.exit_code == 0 and "XBTUSD 4h: 20 candles" in table.output
    csv_out = cli("candles", "XBTUSD", "--tf", "1h", "--since", "2026-11-20", "--format", "csv")
    lines = csv_out.output.strip().splitlines()
    assert lines[0].startswith("symbol,interval_minutes,timestamp,open") and len(lines) > 40
    as_json = json.loads(cli("candles", "XBTUSD", "--tf", "1d", "--last", "3", "--format",
                             "json").output)
    assert len(as_json) == 3 and as_json[0]["interval_minutes"] == 1440
    parquet = CliRunner().invoke(app, ["candles", "XBTUSD", "--tf", "1h", "--last", "5",
                                       "--format", "parquet"])
    assert pq.read_table(io.BytesIO(parquet.stdout_bytes)).num_rows == 5
    info = json.loads(cli("store", "info", "--json").output)
    series = {(s["symbol"], s["timeframe"]) for s in info["series"]}
    assert ("XBTUSD", "1h") in series and ("ETHUSD", "1d") in series
    again = json.loads(cli("ohlc", "backfill", "XBTUSD", "--tf", "1h", "--json").output)
    assert again[0]["fetched"] <= 1  # nothing new (at most the hour that just closed)


def test_cli_universe_shows_tick_sizes_as_plain_decimals(cli_env: Path) -> None:
    rows = {r["canonical"]: r for r in json.loads(cli("universe", "--json").output)}
    assert rows["PEPEUSD"]["tick_size"] == "0.0000000001"
    assert rows["XDGUSD"]["tick_size"] == "0.0000001"
    numbers = [r[k] for r in rows.values() for k in ("lot_size", "ordermin", "costmin",
                                                     "tick_size") if r[k] is not None]
    assert numbers and not [v for v in numbers if "E" in v or "e" in v]
    assert rows["XBTUSD"]["margin_available"] is False  # US_CA: leverage never used
    assert rows["XBTUSD"]["stale"] is False and rows["XBTUSD"]["updated_at"]
    table = cli("universe").output
    assert "0.0000000001" in table and "E-" not in table


def _unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("KRAKKED_SPOT_URL", dead)
    monkeypatch.setattr("krakked.kraken.http.RetryPolicy.backoff", lambda self, n, rng=None: 0.01)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_cli_universe_unreachable_without_snapshot_exits_with_the_network_code(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys, json_flag: list[str]) -> None:
    from krakked.cli import main

    _unreachable(monkeypatch)
    with pytest.raises(SystemExit) as info:
        main(["universe", *json_flag])
    assert info.value.code == NetworkError.exit_code == 16
    captured = capsys.readouterr()
    assert captured.out == ""  # neither "Universe: 0 pairs" nor []
    lines = captured.err.strip().splitlines()  # (the retries are logged before it)
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]] and "AssetPairs" in errors[0]


def test_cli_universe_unreachable_serves_the_stored_snapshot_marked_stale(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from krakked.cli import main

    fresh = json.loads(cli("universe", "--json").output)
    _unreachable(monkeypatch)
    with pytest.raises(SystemExit) as info:
        main(["universe", "--json"])
    assert info.value.code == 0
    captured = capsys.readouterr()
    stale = json.loads(captured.out)
    assert isinstance(stale, list)
    assert [r["canonical"] for r in stale] == [r["canonical"] for r in fresh]
    taken = fresh[0]["updated_at"]
    assert all(r["stale"] is True and r["updated_at"] == taken for r in stale)
    assert "stale" in captured.err and taken in captured.err
    with pytest.raises(SystemExit) as info:
        main(["universe"])
    assert info.value.code == 0
    assert f"stale snapshot taken {taken}" in capsys.readouterr().out


def test_cli_backfill_fetches_each_canonical_pair_and_timeframe_once(cli_env: Path) -> None:
    result = cli("ohlc", "backfill", "XBTUSD", "BTC/USD", "XXBTZUSD", "ETH/USD", "ETHUSD",
                 "--tf", "1h", "60", "1d", "--json")
    assert result.exit_code == 0, result.output
    done = [(r["symbol"], r["timeframe"]) for r in json.loads(result.output)]
    assert done == [("XBTUSD", "1h"), ("XBTUSD", "1d"), ("ETHUSD", "1h"), ("ETHUSD", "1d")]


def test_cli_last_n_inside_a_window_is_the_newest_n_in_it(cli_env: Path) -> None:
    assert cli("ohlc", "backfill", "XBTUSD", "--tf", "1h").exit_code == 0
    stored = json.loads(cli("candles", "XBTUSD", "--tf", "1h", "--format", "json").output)
    until = stored[-10]["timestamp"]  # ten hours before the newest stored one
    got = json.loads(cli("candles", "XBTUSD", "--tf", "1h", "--last", "2", "--until", until,
                         "--format", "json").output)
    assert [c["timestamp"] for c in got] == [c["timestamp"] for c in stored[-12:-10]]
    since = stored[5]["timestamp"]
    got = json.loads(cli("candles", "XBTUSD", "--tf", "1h", "--last", "3", "--since", since,
                         "--until", until, "--format", "json").output)
    assert [c["timestamp"] for c in got] == [c["timestamp"] for c in stored[-13:-10]]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("ohlc", "backfill", "NOPEUSD", "--tf", "1h"), 19, "unknown pair 'NOPEUSD'"),
        (("ohlc", "backfill", "XBTUSD", "--tf", "2h"), 2, "unsupported timeframe '2h'"),
        (("candles", "XBTUSD", "--tf", "1h", "--store", "mysql://x/y"), 3, "unknown store URL"),
    ],
)
def test_cli_bad_input_is_one_line_with_its_exit_code(cli_env: Path, capsys, args, code,
                                                      fragment) -> None:
    from krakked.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == code
    err = capsys.readouterr().err.strip()
    assert fragment in err and "Traceback" not in err


def test_reads_resolve_names_through_the_stored_pairs_snapshot_without_asking_kraken(
        cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from krakked.cli import main

    assert cli("ohlc", "backfill", "ARBUSD", "--tf", "1h").exit_code == 0  # writes the snapshot
    _unreachable(monkeypatch)  # and from here on Kraken cannot be reached
    got = json.loads(cli("candles", "ARB/USD", "--tf", "1h", "--last", "2", "--format",
                         "json").output)  # a name only AssetPairs (or its snapshot) knows
    assert [c["symbol"] for c in got] == ["ARBUSD", "ARBUSD"]
    empty = f"duckdb:///{tmp_path / 'other.duckdb'}"
    assert cli("ohlc", "backfill", "XBTUSD", "--tf", "1h", "--store", empty).exit_code != 0
    with pytest.raises(SystemExit) as info:  # no snapshot there: the offline tables alone
        main(["candles", "ARB/USD", "--store", empty])
    assert info.value.code == 19 and "ARB/USD" in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["duckdb", "parquet", "csv"])
@pytest.mark.parametrize("command", [("candles", "XBTUSD"), ("store", "info"),
                                     ("export", "--destination", "duckdb")])
def test_cli_reads_never_create_a_store(cli_env: Path, tmp_path: Path, capsys,
                                        scheme: str, command: tuple[str, ...]) -> None:
    from krakked.cli import main

    missing = tmp_path / "nonexistent" / "dir"
    url = f"{scheme}:///{missing / 'x.duckdb'}" if scheme == "duckdb" else f"{scheme}:///{missing}"
    with pytest.raises(SystemExit) as info:
        main([*command, "--store", url])
    assert info.value.code == 25
    err = capsys.readouterr().err.strip()
    assert "no store at" in err and str(missing) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nonexistent").exists()  # nothing created


def test_cli_export_to_duckdb_is_incremental(cli_env: Path) -> None:
    assert cli("ohlc", "backfill", "XBTUSD", "--tf", "1h").exit_code == 0
    first = json.loads(cli("export", "--destination", "duckdb", "--json").stdout)
    assert first["rows"]["candles"] > 0
    second = json.loads(cli("export", "--destination", "duckdb", "--json").stdout)
    assert second["rows"].get("candles", 0) <= 25  # only the day of overlap, both ends
    db = cli_env / "data" / "krakked_export.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        n, distinct = con.execute(
            "select count(*), count(distinct (timestamp, symbol, interval_minutes)) "
            "from kraken_market.candles").fetchone()
    assert n == distinct == first["rows"]["candles"]


def test_export_into_postgres_destination(tmp_path: Path, postgres_db_url: str) -> None:
    from krakked.market.candles import Candle
    from krakked.store.arrow import candles_to_arrow
    from krakked.sync.export import export_market

    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    store.upsert_candles(candles_to_arrow(
        Candle("XBTUSD", start + timedelta(minutes=i), 1, Decimal("100.1"), Decimal("101"),
               Decimal("99"), Decimal("100.5"), Decimal("0.1"), Decimal("10.05"), 3,
               Decimal("100.5")) for i in range(120)))
    from urllib.parse import parse_qs, quote, urlsplit

    import dlt

    # dlt wants host and password in the URL; the test server is trust-auth on a unix socket,
    # which libpq takes as a percent-encoded directory in the host part.
    parts = urlsplit(postgres_db_url)
    query = parse_qs(parts.query)
    host = quote(query.get("host", [parts.hostname or "localhost"])[0], safe="")
    port = query.get("port", [str(parts.port or 5432)])[0]
    destination = dlt.destinations.postgres(
        credentials=f"postgresql://postgres:unused@{host}:{port}{parts.path}")
    report = export_market(store, destination, pipelines_dir=tmp_path / "dlt")
    assert report["rows"]["candles"] == 120
    import psycopg

    with psycopg.connect(postgres_db_url) as con:
        (n,) = con.execute("select count(*) from kraken_market.candles").fetchone()
        (o,) = con.execute("select open from kraken_market.candles limit 1").fetchone()
    assert n == 120 and o == Decimal("100.1")
    store.close()
