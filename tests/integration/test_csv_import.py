"""Kraken's CSV files into real stores (DuckDB and PostgreSQL): both layouts and the quarterly
variant, from directories and straight from zip archives, pair names, intervals, idempotent
re-imports and overlapping files, bad rows (nothing of the file stored, or skipped and counted),
coverage, candles built from the trades, the CLI and the original ``BulkCSVImporter``."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from krakked.cli import app
from krakked.config import load_settings
from krakked.errors import ImportFormatError, UsageError
from krakked.history import BulkCSVImporter
from krakked.market_data import Market
from krakked.sim import SimConfig, Simulator
from krakked.sim.server import running
from krakked.store import open_store
from krakked.sync.csv_import import ImportProgress

T0 = 1_700_000_040  # 2023-11-14 22:14:00 UTC, a minute boundary
US = 1_000_000


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def trade_rows(first: int, seconds: int) -> list[str]:
    """Time-and-sales rows over ``seconds`` seconds from ``first``: 0 to 4 trades a second,
    some seconds with two identical trades (two trades, not one seen twice)."""
    rows = []
    for s in range(first, first + seconds):
        for k in range(s % 5):
            rows.append(f"{s},{100 + s % 7}.{k},0.{s % 13 + 1:02d}")
        if s % 11 == 0:
            rows.append(f"{s},{100 + s % 7}.9,0.5")
            rows.append(f"{s},{100 + s % 7}.9,0.5")
    return rows


def ohlcvt_rows(first: int, count: int, minutes: int) -> list[str]:
    """OHLCVT rows of ``minutes`` intervals from ``first`` (aligned), every third interval
    empty (Kraken writes no row for an interval without trades)."""
    width = minutes * 60
    start = first - first % width
    return [f"{start + i * width},{10 + i}.5,{12 + i},{9 + i},{11 + i}.25,{i + 1}.125,{i % 4 + 1}"
            for i in range(count) if i % 3 != 2]


def write(path: Path, rows: list[str], header: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r}\n" for r in ([header] if header else []) + rows))
    return path


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


@pytest.fixture
def market(url: str, tmp_path: Path):
    settings = load_settings({"KRAKKED_HOME": str(tmp_path / "home")})
    with Market(url, settings=settings, offline=True) as m:
        yield m


def count(market: Market, symbol: str) -> int:
    summary = market.store.trades_summary(symbol)
    return summary["rows"] if summary else 0


# -- layouts, places, names ----------------------------------------------------------------------


def test_both_layouts_and_the_quarterly_variant_are_stored_exactly(market: Market,
                                                                   tmp_path: Path) -> None:
    d = tmp_path / "csv"
    write(d / "XBTUSD.csv", [f"{T0},0.1,0.000000000000000001",
                             f"{T0},30306.1,1.5", f"{T0 + 1},99999999999999999999.5,2"])
    write(d / "ETHUSD.csv", [f"2000.5,0.25,{T0}.1234,b,l,,41", f"2001,0.5,{T0 + 1}.5,s,m,x,42"],
          header="price,volume,timestamp,side,ordertype,misc,trade_id")
    write(d / "XBTUSD_1.csv", ohlcvt_rows(T0, 6, 1))
    result = market.import_csv(d)
    assert not result.failed
    xbt = market.store.read_trades("XBTUSD").to_pylist()
    assert [(t["price"], t["volume"]) for t in xbt] == [
        (Decimal("0.1"), Decimal("1E-18")), (Decimal("30306.1"), Decimal("1.5")),
        (Decimal("99999999999999999999.5"), Decimal("2"))]
    assert {(t["id"], t["side"], t["source"]) for t in xbt} == {(None, None, "csv")}
    eth = market.store.read_trades("ETHUSD").to_pylist()
    assert [(t["id"], t["side"], t["order_type"], t["misc"], t["timestamp"]) for t in eth] == [
        (41, "buy", "limit", "", at(T0) + timedelta(microseconds=123400)),
        (42, "sell", "market", "x", at(T0 + 1) + timedelta(microseconds=500000))]
    candles = market.store.read_stored_candles("XBTUSD", 1, at(T0), at(T0 + 600))
    assert candles.num_rows == 4
    first = candles.to_pylist()[0]
    assert (first["open"], first["close"], first["volume"], first["trade_count"]) == (
        Decimal("10.5"), Decimal("11.25"), Decimal("1.125"), 1)
    assert (first["source"], first["quote_volume"], first["vwap"]) == ("csv", None, None)
    series = {(s["symbol"], s["kind"], s["interval_minutes"]): s for s in result.series()}
    assert series[("XBTUSD", "trades", None)]["rows_stored"] == 3
    assert series[("XBTUSD", "candles", 1)]["first"] == at(T0)


def test_a_zip_is_read_in_place_with_members_under_a_folder(market: Market,
                                                            tmp_path: Path) -> None:
    archive = tmp_path / "Kraken_OHLCVT.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Kraken_OHLCVT_Q4_2020/XBTUSD_1.csv", "\n".join(ohlcvt_rows(T0, 30, 1)))
        z.writestr("Kraken_OHLCVT_Q4_2020/XBTUSD_720.csv",
                   "\n".join(ohlcvt_rows(T0, 9, 720)) + "\n")
        z.writestr("TimeAndSales_Combined/XBTUSD.csv", "\n".join(trade_rows(T0, 120)) + "\n")
    only_1m = market.import_csv(archive)
    assert {(f.kind, f.interval_minutes) for f in only_1m.files} == {("candles", 1),
                                                                     ("trades", None)}
    assert only_1m.skipped["not-1m"].count == 1
    assert only_1m.files[0].file == f"{archive}:Kraken_OHLCVT_Q4_2020/XBTUSD_1.csv"
    assert count(market, "XBTUSD") == len(trade_rows(T0, 120))
    everything = market.import_csv(archive, all_intervals=True)
    assert [f.rows_stored for f in everything.files if f.interval_minutes == 720] == [6]
    half_days = market.get_candles("XBTUSD", "12h", as_="arrow")
    assert half_days.num_rows >= 6 and set(half_days["source"].to_pylist()) == {"csv"}


def test_file_names_map_through_the_pair_tables_and_pairs_filter_by_any_alias(
        market: Market, tmp_path: Path) -> None:
    d = tmp_path / "csv"
    for stem in ("XBTUSD", "XDGUSD", "BTCUSDT", "FOOBAR"):
        write(d / f"{stem}.csv", [f"{T0},1,1"])
    result = market.import_csv(d)
    assert sorted(f.symbol for f in result.files) == ["XBTUSD", "XBTUSDT", "XDGUSD"]
    assert result.skipped["unknown-pair"].count == 1
    assert result.skipped["unknown-pair"].examples == [str(d / "FOOBAR.csv")]
    kept = market.import_csv(d, pairs=["BTC/USD", "DOGE/USD"])
    assert sorted(f.symbol for f in kept.files) == ["XBTUSD", "XDGUSD"]
    assert kept.skipped["not-wanted"].count == 1


def test_nothing_to_import_is_a_usage_error_naming_what_was_left_out(market: Market,
                                                                     tmp_path: Path) -> None:
    write(tmp_path / "csv" / "FOOBAR.csv", [f"{T0},1,1"])
    with pytest.raises(UsageError, match=r"no Kraken CSV file to import .*1 file name is no "
                                         r"known pair"):
        market.import_csv(tmp_path / "csv")


# -- once, whatever the batches and overlaps -----------------------------------------------------


def test_reimports_and_overlapping_quarterly_files_store_nothing_twice(market: Market,
                                                                       tmp_path: Path) -> None:
    first = write(tmp_path / "q1" / "XBTUSD.csv", trade_rows(T0, 120))
    second = write(tmp_path / "q2" / "XBTUSD.csv", trade_rows(T0 + 60, 120))
    union = Counter(trade_rows(T0, 120)) | Counter(trade_rows(T0 + 60, 120))
    assert market.import_csv(first, batch_size=7).rows_stored == len(trade_rows(T0, 120))
    market.import_csv(second, batch_size=13)
    assert count(market, "XBTUSD") == sum(union.values())
    again = market.import_csv([first, second], batch_size=1000)
    assert again.rows_stored == 0 and count(market, "XBTUSD") == sum(union.values())
    stored = Counter((int(t["timestamp"].timestamp()), t["price"], t["volume"])
                     for t in market.store.read_trades("XBTUSD").to_pylist())
    assert stored == Counter({(int(r.split(",")[0]), Decimal(r.split(",")[1]),
                               Decimal(r.split(",")[2])): n for r, n in union.items()})


def test_a_second_with_more_trades_than_a_batch_is_never_split(market: Market,
                                                               tmp_path: Path) -> None:
    rows = [f"{T0},1.{k:02d},1" for k in range(12)] + [f"{T0 + 1},2,1", f"{T0 + 1},2,1"]
    path = write(tmp_path / "XBTUSD.csv", rows)
    assert market.import_csv(path, batch_size=5).rows_stored == 14
    assert market.import_csv(path, batch_size=3).rows_stored == 0  # other cuts, same ids
    assert count(market, "XBTUSD") == 14


def test_reimporting_ohlcvt_files_stores_nothing_new(market: Market, tmp_path: Path) -> None:
    path = write(tmp_path / "XBTUSD_5.csv", ohlcvt_rows(T0, 40, 5))
    assert market.import_csv(path, all_intervals=True, batch_size=4).rows_stored == 27
    market.import_csv(path, all_intervals=True)  # same volumes: rewritten in place
    assert market.store.read_stored_candles("XBTUSD", 5, at(0), at(2 * T0)).num_rows == 27


# -- bad rows ------------------------------------------------------------------------------------


def test_a_bad_row_stores_nothing_of_its_file_and_the_other_files_go_on(
        market: Market, tmp_path: Path) -> None:
    d = tmp_path / "csv"
    rows = trade_rows(T0, 300)
    rows.append(f"{T0 + 300},1.5,abc")  # the last line: every batch before it would be written
    write(d / "XBTUSD.csv", rows)
    write(d / "ETHUSD.csv", trade_rows(T0, 30))
    result = market.import_csv(d, batch_size=10)
    assert [f.symbol for f in result.failed] == ["XBTUSD"]
    error = result.failed[0].error
    assert (error.path, error.line) == (str(d / "XBTUSD.csv"), len(rows))
    assert "volume 'abc' is not a decimal number" in str(error)
    assert count(market, "XBTUSD") == 0
    assert market.store.read_trade_coverage("XBTUSD") == []
    assert market.store.get_sync_status("XBTUSD") == []
    assert count(market, "ETHUSD") == len(trade_rows(T0, 30))
    with pytest.raises(ImportFormatError, match=rf"XBTUSD.csv:{len(rows)}: volume 'abc'"):
        result.raise_for_errors()


def test_skip_bad_counts_the_rows_and_leaves_their_seconds_uncovered(market: Market,
                                                                     tmp_path: Path) -> None:
    rows = [f"{T0 + s},1,1" for s in range(0, 100, 2)]
    rows[10] = f"{T0 + 20},1,-1"  # line 11: a negative volume
    rows[30] = "garbage"  # line 31: no timestamp at all
    path = write(tmp_path / "XBTUSD.csv", rows)
    result = market.import_csv(path, skip_bad=True)
    f = result.files[0]
    assert (f.rows_read, f.bad_rows, f.rows_stored) == (50, 2, 48)
    assert [line for line, _ in f.bad_lines] == [11, 31]
    assert result.series()[0]["bad_rows"] == 2
    assert market.store.read_trade_coverage("XBTUSD") == [
        (T0 * US, (T0 + 18) * US), ((T0 + 23) * US, (T0 + 58) * US),
        ((T0 + 63) * US, (T0 + 98) * US)]


# -- coverage and candles ------------------------------------------------------------------------


def test_trade_coverage_runs_from_the_first_second_to_the_last_one_exclusive(
        market: Market, tmp_path: Path) -> None:
    path = write(tmp_path / "XBTUSD.csv", trade_rows(T0 + 1, 100))
    market.import_csv(path, batch_size=9)
    rows = trade_rows(T0 + 1, 100)
    first, last = int(rows[0].split(",")[0]), int(rows[-1].split(",")[0])
    assert market.store.read_trade_coverage("XBTUSD") == [(first * US, last * US)]


def test_an_ohlcvt_file_vouches_for_its_whole_range(market: Market, tmp_path: Path) -> None:
    rows = ohlcvt_rows(T0, 20, 1)  # every third minute has no row
    market.import_csv(write(tmp_path / "XBTUSD_1.csv", rows), batch_size=4)
    last = int(rows[-1].split(",")[0])
    assert market.store.read_coverage("XBTUSD")[1] == [(T0 * US, (last + 60) * US)]


@pytest.mark.parametrize("build", [True, False])
def test_one_minute_candles_are_built_from_the_trades_unless_told_not_to(
        market: Market, tmp_path: Path, build: bool) -> None:
    rows = trade_rows(T0, 300)  # the first trade at 22:14:01, the last at 22:18:59
    assert (rows[0].split(",")[0], rows[-1].split(",")[0]) == (str(T0 + 1), str(T0 + 299))
    market.import_csv(write(tmp_path / "XBTUSD.csv", rows), build_candles=build, batch_size=50)
    built = market.store.read_stored_candles("XBTUSD", 1, at(T0), at(T0 + 300))
    if not build:
        assert built.num_rows == 0
        return
    # only the minutes the file covers whole: not 22:14 (from :01) nor 22:18 (its last second)
    assert built["timestamp"].to_pylist() == [at(T0 + 60 * m) for m in (1, 2, 3)]
    assert set(built["source"].to_pylist()) == {"trades"}
    minute = [r for r in rows if T0 + 60 <= int(r.split(",")[0]) < T0 + 120]
    assert built["trade_count"][0].as_py() == len(minute)
    assert built["volume"][0].as_py() == sum(Decimal(r.split(",")[2]) for r in minute)
    assert built["open"][0].as_py() == Decimal(minute[0].split(",")[1])  # file order
    assert built["close"][0].as_py() == Decimal(minute[-1].split(",")[1])


def test_progress_counts_every_byte_once_and_never_goes_back(market: Market,
                                                             tmp_path: Path) -> None:
    d = tmp_path / "csv"
    write(d / "XBTUSD.csv", trade_rows(T0, 200))
    write(d / "XBTUSD_1.csv", ohlcvt_rows(T0, 50, 1))
    events: list[ImportProgress] = []
    market.import_csv(d, progress=events.append, batch_size=20)
    total = sum(p.stat().st_size for p in d.iterdir())
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and done[-1] == total == events[-1].bytes_total
    assert {e.phase for e in events} == {"reading", "writing", "done"}


# -- the CLI and the original API ----------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    sim = Simulator(SimConfig(seed=7, public_rate=0))
    with running(sim) as info:
        monkeypatch.setenv("KRAKKED_HOME", str(home))
        monkeypatch.setenv("KRAKKED_SPOT_URL", info["spot_url"])
        for var in ("KRAKKED_STORE", "DATABASE_URL"):
            monkeypatch.delenv(var, raising=False)
        yield home


def test_cli_imports_a_zip_and_prints_a_json_summary(cli_env: Path, tmp_path: Path) -> None:
    archive = tmp_path / "Kraken_Trading_History.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("TimeAndSales_Combined/XBTUSD.csv", "\n".join(trade_rows(T0, 100)) + "\n")
        z.writestr("TimeAndSales_Combined/ETHUSD.csv", "\n".join(trade_rows(T0, 50)) + "\n")
        z.writestr("TimeAndSales_Combined/SOLUSD.csv", "\n".join(trade_rows(T0, 10)) + "\n")
    store = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    result = CliRunner().invoke(app, ["import-csv", str(archive), "--pairs", "XBTUSD", "ETH/USD",
                                      "--batch-size", "100", "--db-url", store, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert {(s["symbol"], s["rows_stored"]) for s in summary["series"]} == {
        ("XBTUSD", len(trade_rows(T0, 100))), ("ETHUSD", len(trade_rows(T0, 50)))}
    assert summary["skipped"] == [{"reason": "pair not in --pairs", "files": 1,
                                   "examples": [f"{archive}:TimeAndSales_Combined/SOLUSD.csv"]}]
    with open_store(store, read_only=True) as s:
        assert s.trades_summary("XBTUSD")["rows"] == len(trade_rows(T0, 100))


def test_cli_exits_22_when_a_file_fails_and_still_reports_the_rest(
        cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from krakked.cli import main

    d = tmp_path / "csv"
    write(d / "XBTUSD.csv", [f"{T0},1,1", f"{T0},1,1,1"])
    write(d / "ETHUSD_1.csv", ohlcvt_rows(T0, 10, 1))
    store = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    with pytest.raises(SystemExit) as info:
        main(["import-csv", "--dir", str(d), "--store", store, "--json"])
    assert info.value.code == ImportFormatError.exit_code == 22
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [  # one line, the file's error, not also a log line
        f"error: {d / 'XBTUSD.csv'}:2: expected 3 fields, got 4 ('{T0},1,1,1') (--skip-bad "
        "skips and counts bad rows)"]
    summary = json.loads(out)
    assert summary["ok"] is False
    assert summary["failed"] == [f"{d / 'XBTUSD.csv'}:2: expected 3 fields, got 4 "
                                 f"('{T0},1,1,1') (--skip-bad skips and counts bad rows)"]
    assert [s["symbol"] for s in summary["series"] if s["rows_stored"]] == ["ETHUSD"]
    table = CliRunner().invoke(app, ["import-csv", str(d / "XBTUSD.csv"), "--skip-bad",
                                     "--store", store])
    assert table.exit_code == 0, table.output
    assert "1 bad row(s) skipped, line(s) 2" in table.stderr


def test_cli_takes_paths_after_the_pairs_and_needs_something_to_import(cli_env: Path,
                                                                       tmp_path: Path) -> None:
    path = write(tmp_path / "XBTUSD_1.csv", ohlcvt_rows(T0, 10, 1))
    store = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    done = CliRunner().invoke(app, ["import-csv", "--pairs", "BTC/USD", str(path),
                                    "--store", store, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["series"][0]["rows_stored"] == 7
    nothing = CliRunner().invoke(app, ["import-csv", "--store", store])
    assert nothing.exit_code == UsageError.exit_code == 2


def test_bulk_csv_importer_keeps_the_original_api(url: str, tmp_path: Path) -> None:
    d = tmp_path / "kraken_csv"
    plain = write(d / "whatever.csv", ohlcvt_rows(T0, 12, 1))
    write(d / "XBTUSD_1.csv", ohlcvt_rows(T0, 6, 1))
    write(d / "XBTUSD_60.csv", ohlcvt_rows(T0, 6, 60))
    write(d / "XBTUSD.csv", trade_rows(T0, 20))
    archive = tmp_path / "ohlcvt.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(d / "XBTUSD_60.csv", "Kraken_OHLCVT/XBTUSD_60.csv")

    async def run() -> tuple[int, int, int, int, dict, dict]:
        async with BulkCSVImporter(url, batch_size=5) as importer:
            assert importer.CSV_COLUMNS == ["timestamp", "open", "high", "low", "close",
                                            "volume", "trades"]
            assert importer.INTERVAL_MAP["720"] == 720
            one = await importer.import_csv_file(plain, "XRP/USDT", 1)
            again = await importer.import_csv_file(plain, "XRP/USDT", 1)
            zipped = await importer.import_csv_file(archive, "BTC/USD", 60)
            trades = await importer.import_csv_file(d / "XBTUSD.csv", "XBTUSD", None)
            only_1m = await importer.import_directory(d)
            every = await importer.import_directory(d, only_1m=False)
            return one, again, zipped, trades, only_1m, every

    one, again, zipped, trades, only_1m, every = asyncio.run(run())
    assert (one, again, zipped) == (8, 8, 4)  # rows stored, new or rewritten
    assert trades == len(trade_rows(T0, 20))
    assert only_1m == {"XBTUSD": {1: 4, "trades": 0}}
    assert every == {"XBTUSD": {1: 4, 60: 4, "trades": 0}}  # trades are never stored twice
    with open_store(url) as s:
        assert s.read_stored_candles("XRPUSDT", 1, at(0), at(2 * T0)).num_rows == 8
        assert s.read_stored_candles("XBTUSD", 60, at(0), at(2 * T0)).num_rows == 4


def test_bulk_csv_importer_raises_the_bad_files_error(url: str, tmp_path: Path) -> None:
    bad = write(tmp_path / "XBTUSD_1.csv", [f"{T0},1,1,1,1,1,1", f"{T0 + 7},1,1,1,1,1,1"])

    async def run() -> None:
        async with BulkCSVImporter(url) as importer:
            await importer.import_csv_file(bad, "XBTUSD", 1)

    with pytest.raises(ImportFormatError, match=r"XBTUSD_1.csv:2: timestamp 1700000047 is not "
                                                r"the start of a 1m interval"):
        asyncio.run(run())
