"""The trades backfill against krakked.sim (fake clock): exact rows, resume after a crash without
duplicates or holes, auto-stop and polling, candles from trades equal to the simulator's own
OHLC, the CLI (``trades backfill``, ``candles build --from-trades``) and the original async
facade, on DuckDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from krakked.cli import app
from krakked.config import load_settings
from krakked.errors import UsageError
from krakked.history import KrakenTradesBackfill
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market.candles import epoch_us, from_epoch_us
from krakked.market_data import Market
from krakked.sim import SimClock, Simulator
from krakked.sync.trades import PAGE_SIZE, TradesProgress, get_resume_point
from tests.integration.simkit import served_cli
from tests.integration.simkit import sim_market as _market

NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
SIDES = {"b": "buy", "s": "sell"}
TYPES = {"m": "market", "l": "limit"}


def _walk(sim: Simulator, pair: str, since: datetime) -> list[list[Any]]:
    """Every trade the simulator serves from ``since`` on, walked page by page with Kraken's
    cursor (its rows carry their exact ns stamp as an 8th element)."""
    rows: list[list[Any]] = []
    cursor = str(epoch_us(since) * 1000 - 1)
    with SpotClient(transport=sim.transport(), public_limiter=PublicLimiter(1000, 1000)) as c:
        while True:
            result = c.get_trades(pair, since=cursor)
            page = result[next(k for k in result if k != "last")]
            rows.extend(page)
            if len(page) < PAGE_SIZE:
                return rows
            cursor = result["last"]


def _expected(rows: list[list[Any]]) -> list[tuple[Any, ...]]:
    return [(int(r[6]), from_epoch_us(int(r[7]) // 1000), Decimal(r[0]), Decimal(r[1]),
             SIDES[r[3]], TYPES[r[4]], r[5]) for r in rows]


def _stored(m: Market, symbol: str) -> list[tuple[Any, ...]]:
    table = m.store.read_trades(symbol)
    return [(r["id"], r["timestamp"], r["price"], r["volume"], r["side"], r["order_type"],
             r["misc"]) for r in table.to_pylist()]


# -- the backfill ------------------------------------------------------------------------------


def test_backfill_from_a_date_stores_exactly_the_trades_kraken_serves(
        sim: Simulator, tmp_path: Path) -> None:
    since = NOW - timedelta(days=3)
    walk = _walk(sim, "XXBTZUSD", since)
    assert len(walk) > 3 * PAGE_SIZE  # several pages
    events: list[TradesProgress] = []
    with _market(sim, tmp_path) as m:
        result = m.backfill_trades("BTC/USD", since=since, progress=events.append)
        assert result.stopped_because == "realtime"
        assert result.pages == len(walk) // PAGE_SIZE + 1
        assert result.fetched == result.stored == len(walk)
        assert _stored(m, "XBTUSD") == _expected(walk)  # ids, µs times, exact decimals
        assert result.first == from_epoch_us(int(walk[0][7]) // 1000) >= since
        assert result.last == from_epoch_us(int(walk[-1][7]) // 1000)
        status = {r["data_type"]: r for r in m.store.get_sync_status("XBTUSD")}
        assert status["trades"]["last_kraken_since"] == result.cursor == int(walk[-1][7])
    pages = [e.pages for e in events]  # one event per write (pages fetched ahead share one)
    assert pages == sorted(set(pages)) and pages[-1] == result.pages
    assert events[-1].fetched == len(walk) and events[0].started == since


class _CrashAfter(httpx.BaseTransport):
    """The simulator's transport, until the ``after``-th Trades call: that one dies (as a kill
    or Ctrl-C would, mid-request)."""

    def __init__(self, inner: httpx.BaseTransport, after: int) -> None:
        self.inner, self.after, self.calls = inner, after, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Trades"):
            self.calls += 1
            if self.calls > self.after:
                raise KeyboardInterrupt
        return self.inner.handle_request(request)


def _assert_contiguous(stored: list[tuple[Any, ...]]) -> None:
    ids = [r[0] for r in stored]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no duplicate, no hole


def test_a_crash_mid_run_then_resume_gives_every_trade_once(
        sim: Simulator, tmp_path: Path, db_url: str) -> None:
    since = NOW - timedelta(days=3)
    crashing = _CrashAfter(sim.transport(), after=2)
    with _market(sim, tmp_path, db_url, transport=crashing) as m, \
            pytest.raises(KeyboardInterrupt):
        m.backfill_trades("XBTUSD", since=since)
    with _market(sim, tmp_path, db_url) as m:
        assert len(_stored(m, "XBTUSD")) == 2 * PAGE_SIZE  # the two committed pages
        cursor = get_resume_point(m.store, "XBTUSD")
        result = m.backfill_trades("XBTUSD", resume=True)
        assert result.stopped_because == "realtime"
        stored = _stored(m, "XBTUSD")
        _assert_contiguous(stored)
        assert stored == _expected(_walk(sim, "XXBTZUSD", since))
        assert result.fetched == len(stored) - 2 * PAGE_SIZE  # nothing fetched twice
        assert cursor is not None and result.first is not None
        assert epoch_us(result.first) * 1000 > cursor


def test_max_pages_stops_and_rerunning_the_same_command_continues(
        sim: Simulator, tmp_path: Path) -> None:
    since = NOW - timedelta(days=3)
    with _market(sim, tmp_path) as m:
        first = m.backfill_trades("XBTUSD", since=since, max_pages=2)
        assert (first.stopped_because, first.pages, first.stored) == ("max_pages", 2,
                                                                      2 * PAGE_SIZE)
        again = m.backfill_trades("XBTUSD", since=since)  # the same --since, not --resume
        assert any("joined the stored history" in n for n in again.notes)
        assert again.fetched == again.stored  # it continued: nothing fetched twice
        stored = _stored(m, "XBTUSD")
        _assert_contiguous(stored)
        assert stored == _expected(_walk(sim, "XXBTZUSD", since))


def test_auto_stop_at_real_time_then_only_new_trades_next_time(
        sim: Simulator, tmp_path: Path, clock: SimClock) -> None:
    with _market(sim, tmp_path) as m:
        first = m.backfill_trades("XBTUSD", since=NOW - timedelta(hours=6))
        assert first.stopped_because == "realtime"
        clock.advance(3600)
        later = m.backfill_trades("XBTUSD")  # no since: continues from what is stored
        new = [r for r in _walk(sim, "XXBTZUSD", NOW - timedelta(hours=6))
               if int(r[7]) > first.cursor]  # type: ignore[operator]
        assert later.stopped_because == "realtime" and later.pages == 1
        assert later.fetched == later.stored == len(new) > 0
        assert later.first == from_epoch_us(int(new[0][7]) // 1000)


def test_no_auto_stop_keeps_polling_until_the_stop_event(
        sim: Simulator, tmp_path: Path, clock: SimClock) -> None:
    stop = threading.Event()
    polls: list[TradesProgress] = []

    def progress(event: TradesProgress) -> None:
        if event.waiting:  # caught up: time passes while it waits to poll again
            polls.append(event)
            if len(polls) == 3:
                stop.set()
            else:
                clock.advance(600)

    since = NOW - timedelta(hours=2)
    with _market(sim, tmp_path) as m:
        result = m.backfill_trades("XBTUSD", since=since, auto_stop=False, stop=stop,
                                   progress=progress, poll_seconds=0.01)
        assert result.stopped_because == "interrupted" and len(polls) == 3
        walk = _walk(sim, "XXBTZUSD", since)  # now = NOW + 20 min
        assert _stored(m, "XBTUSD") == _expected(walk)
        assert result.last == from_epoch_us(int(walk[-1][7]) // 1000) > NOW + timedelta(
            minutes=10)


def test_until_stores_the_trades_before_it_and_resume_continues_without_a_hole(
        sim: Simulator, tmp_path: Path) -> None:
    since, until = NOW - timedelta(days=2), NOW - timedelta(days=1)
    with _market(sim, tmp_path) as m:
        result = m.backfill_trades("XBTUSD", since=since, until=until)
        walk = _walk(sim, "XXBTZUSD", since)
        before = [r for r in walk if int(r[7]) // 1000 < epoch_us(until)]
        assert result.stopped_because == "until"
        assert _stored(m, "XBTUSD") == _expected(before)
        m.backfill_trades("XBTUSD", resume=True)
        _assert_contiguous(_stored(m, "XBTUSD"))
        assert _stored(m, "XBTUSD") == _expected(walk)


def test_pages_are_paced_by_the_public_limiter_and_nothing_else(
        sim: Simulator, tmp_path: Path, clock: SimClock) -> None:
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    pacer = PublicLimiter(1.0, 1, clock=clock.monotonic, sleep=clock.sleep)  # 1 call/s
    client = SpotClient(settings=settings, transport=sim.transport(), public_limiter=pacer)
    started = clock.now()
    with Market(f"duckdb:///{tmp_path / 'm.duckdb'}", settings=settings, client=client) as m:
        result = m.backfill_trades("XBTUSD", since=NOW - timedelta(days=3))
    waited = clock.now() - started  # the fake clock moves only when something sleeps on it
    calls = client.stats.requests  # AssetPairs, then the Trades pages
    assert result.pages >= 4 and calls == result.pages + 1
    assert calls - 1 <= waited < (calls - 1) * 1.05  # the pacing minimum, no sleep added


def test_the_store_can_be_read_while_a_backfill_runs(sim: Simulator, tmp_path: Path) -> None:
    from krakked.store import open_store

    url = f"duckdb:///{tmp_path / 'm.duckdb'}"
    seen: list[int] = []

    def read_between_pages(event: TradesProgress) -> None:
        with open_store(url, read_only=True) as reader:  # another reader, e.g. krakked candles
            seen.append(reader.read_trades("XBTUSD").num_rows)

    with _market(sim, tmp_path, url) as m:
        m.backfill_trades("XBTUSD", since=NOW - timedelta(days=2), progress=read_between_pages)
    assert seen and seen == sorted(set(seen)) and seen[0] % PAGE_SIZE == 0
    assert seen[-1] == len(_walk(sim, "XXBTZUSD", NOW - timedelta(days=2)))


def test_filling_older_history_keeps_the_stored_cursor_at_the_tail(
        sim: Simulator, tmp_path: Path, clock: SimClock) -> None:
    with _market(sim, tmp_path) as m:
        tail = m.backfill_trades("XBTUSD", since=NOW - timedelta(hours=6))
        older = m.backfill_trades("XBTUSD", since=NOW - timedelta(days=3),
                                  until=NOW - timedelta(days=2))
        assert older.stopped_because == "until" and older.stored > PAGE_SIZE
        assert older.cursor == tail.cursor == get_resume_point(m.store, "XBTUSD")
        clock.advance(600)
        new = m.backfill_trades("XBTUSD", resume=True)  # the tail, not the older stretch
        assert new.pages == 1 and new.first is not None and new.first > NOW


def test_without_since_or_anything_stored_it_starts_at_kraken_s_first_trade(
        sim: Simulator, tmp_path: Path) -> None:
    with _market(sim, tmp_path) as m:
        result = m.backfill_trades("XBTUSD", max_pages=1)
        ids = m.store.read_trades("XBTUSD")["id"].to_pylist()
    assert ids == list(range(1, PAGE_SIZE + 1))  # the simulator's tape starts at id 1
    assert result.first == datetime(2026, 1, 1, tzinfo=UTC)  # at its origin
    assert any("started at Kraken's first trade" in n for n in result.notes)


def test_bad_windows_are_usage_errors(sim: Simulator, tmp_path: Path) -> None:
    with _market(sim, tmp_path) as m:
        with pytest.raises(UsageError, match="in the future"):
            m.backfill_trades("XBTUSD", since=datetime.now(UTC) + timedelta(days=1))
        with pytest.raises(UsageError, match="not after since"):
            m.backfill_trades("XBTUSD", since=NOW - timedelta(hours=1),
                              until=NOW - timedelta(hours=2))


# -- candles from trades -----------------------------------------------------------------------


def _sim_minutes(sim: Simulator) -> dict[datetime, list[Any]]:
    with SpotClient(transport=sim.transport(), public_limiter=PublicLimiter(1000, 1000)) as c:
        result = c.get_ohlc("XXBTZUSD", 1)
    rows = result["XXBTZUSD"][:-1]  # the last row is the running minute
    return {datetime.fromtimestamp(int(r[0]), UTC): r for r in rows}


def _assert_same_as_kraken(sim: Simulator, ours: dict[datetime, Any], since: datetime,
                           end: datetime) -> int:
    """Every closed minute of Kraken's (the simulator's) 1m OHLC in ``[since, end)``, from the
    first with trades on (before it no close is known to carry), equals ours: open, high, low,
    close, volume, count exactly, vwap to the pair's 1 decimal; minutes without trades are
    zero-volume candles at the carried close in both. Returns the minutes compared."""
    window = sorted((t, r) for t, r in _sim_minutes(sim).items() if since <= t < end)
    first = next(i for i, (_, r) in enumerate(window) if int(r[7]))
    kraken = dict(window[first:])
    assert set(ours) == set(kraken)  # every closed minute, none extra
    for t, row in kraken.items():
        candle = ours[t]
        assert (candle.open, candle.high, candle.low, candle.close) == tuple(
            Decimal(v) for v in row[1:5]), t
        assert (candle.volume, candle.trade_count) == (Decimal(row[6]), int(row[7])), t
        if int(row[7]):
            assert candle.vwap.quantize(Decimal("0.1"), ROUND_HALF_UP) == Decimal(row[5]), t
    return len(kraken)


def _since_with_a_page_boundary_near(sim: Simulator, at: datetime) -> tuple[datetime, datetime]:
    """A minute to backfill from whose first page ends near ``at`` (so a page seam lies inside
    the minutes compared), and the time of that page's last trade."""
    walk = _walk(sim, "XXBTZUSD", at - timedelta(days=2))
    i = next(k for k, r in enumerate(walk) if int(r[7]) // 1000 >= epoch_us(at))
    since = from_epoch_us(int(walk[i - PAGE_SIZE][7]) // 1000).replace(second=0, microsecond=0)
    page = _walk(sim, "XXBTZUSD", since)[:PAGE_SIZE]
    return since, from_epoch_us(int(page[-1][7]) // 1000)


def test_candles_built_from_trades_equal_kraken_s_ohlc_for_every_closed_minute(
        sim: Simulator, tmp_path: Path, db_url: str) -> None:
    since, seam = _since_with_a_page_boundary_near(sim, NOW - timedelta(hours=5))
    start = NOW.replace(second=0) - timedelta(minutes=700)  # inside OHLC's 720 minutes
    with _market(sim, tmp_path, db_url) as m:
        result = m.backfill_trades("XBTUSD", since=since)
        end = result.last.replace(second=0, microsecond=0)  # type: ignore[union-attr]
        ours = {c.timestamp: c for c in m.get_candles("XBTUSD", "1m", start, end)}
        stored = m.store.read_stored_candles("XBTUSD", 1, start, end).to_pylist()
    assert result.pages >= 2 and start < seam < end - timedelta(minutes=1)
    assert _assert_same_as_kraken(sim, ours, start, end) >= 680
    # minutes without trades produce no candle: the store holds the traded minutes only
    traded = {t for t, r in _sim_minutes(sim).items() if start <= t < end and int(r[7])}
    assert {r["timestamp"] for r in stored} == traded
    assert {r["source"] for r in stored} == {"trades"}


def test_no_candles_then_building_them_gives_the_same_candles(
        sim: Simulator, tmp_path: Path, db_url: str) -> None:
    since = NOW.replace(second=0) - timedelta(hours=3)
    with _market(sim, tmp_path, db_url) as m:
        result = m.backfill_trades("XBTUSD", since=since, build_candles=False)
        end = result.last.replace(second=0, microsecond=0)  # type: ignore[union-attr]
        assert m.store.read_stored_candles("XBTUSD", 1, since, end).num_rows == 0
        built = m.build_candles_from_trades("BTC/USD")
        ours = {c.timestamp: c for c in m.get_candles("XBTUSD", "1m", since, end)}
    traded = [t for t, r in _sim_minutes(sim).items() if since <= t < end and int(r[7])]
    assert built == len(traded) > 0
    assert _assert_same_as_kraken(sim, ours, since, end) > 150


# -- Kraken's CSV files and the API tail -------------------------------------------------------


def test_resume_after_csv_trades_refetches_their_last_second_and_stores_each_trade_once(
        sim: Simulator, tmp_path: Path) -> None:
    import pyarrow as pa

    from krakked.store.arrow import TRADE_SCHEMA

    since = NOW - timedelta(hours=8)
    walk = _walk(sim, "XXBTZUSD", since)
    seam = int(walk[len(walk) // 2][7]) // 1000 // 1_000_000  # a second in the middle
    csv_rows = [r for r in walk if int(r[7]) // 1000 // 1_000_000 <= seam]
    # what Kraken's time-and-sales CSV holds: whole seconds, price, volume, no id, no side
    table = pa.table({
        "id": pa.array([None] * len(csv_rows), pa.int64()),
        "symbol": ["XBTUSD"] * len(csv_rows),
        "timestamp": [from_epoch_us(int(r[7]) // 1000 // 1_000_000 * 1_000_000)
                      for r in csv_rows],
        "price": [Decimal(r[0]) for r in csv_rows], "volume": [Decimal(r[1]) for r in csv_rows],
        "side": pa.array([None] * len(csv_rows), pa.string()),
        "order_type": pa.array([None] * len(csv_rows), pa.string()),
        "misc": pa.array([None] * len(csv_rows), pa.string()),
        "source": ["csv"] * len(csv_rows),
    }, schema=TRADE_SCHEMA)
    with _market(sim, tmp_path) as m:
        m.store.upsert_trades(table)
        point = get_resume_point(m.store, "XBTUSD")
        assert point == seam * 10**9 - 1  # inside the file's last second
        m.backfill_trades("XBTUSD", resume=True)
        stored = m.store.read_trades("XBTUSD").to_pylist()
    assert len(stored) == len(walk)  # each trade once across the seam
    api = [r for r in stored if r["source"] == "rest"]
    assert [r["id"] for r in api] == [int(r[6]) for r in walk
                                      if int(r[7]) // 1000 // 1_000_000 >= seam]


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with served_cli(tmp_path, monkeypatch, NOW) as (home, _, _, _):
        yield home


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_backfill_build_and_read_higher_timeframes(cli_env: Path) -> None:
    since = (NOW - timedelta(hours=6)).replace(second=0).isoformat()
    done = cli("trades", "backfill", "XBTUSD", "--since", since, "--no-candles", "--json")
    assert done.exit_code == 0, done.output
    [result] = json.loads(done.stdout)
    assert result["symbol"] == "XBTUSD" and result["stopped_because"] == "realtime"
    assert result["stored"] == result["fetched"] > 100
    assert cli("candles", "XBTUSD", "--tf", "5m").exit_code == 21  # none yet: --no-candles
    built = cli("candles", "build", "BTC/USD", "--from-trades", "--json")
    assert built.exit_code == 0, built.output
    [row] = json.loads(built.stdout)
    assert row["symbol"] == "XBTUSD" and row["timeframe"] == "1m" and row["candles"] > 100
    five = json.loads(cli("candles", "XBTUSD", "--tf", "5m", "--format", "json").stdout)
    ones = json.loads(cli("candles", "XBTUSD", "--tf", "1m", "--format", "json").stdout)
    assert len(five) >= 60 and five[0]["interval_minutes"] == 5
    first = [c for c in ones if c["timestamp"] < five[1]["timestamp"]]
    assert Decimal(five[0]["volume"]) == sum(Decimal(c["volume"]) for c in first)
    assert five[0]["open"] == first[0]["open"] and five[0]["close"] == first[-1]["close"]


def test_cli_without_a_terminal_logs_progress_lines_and_ends_with_a_summary(
        cli_env: Path) -> None:
    since = (NOW - timedelta(days=2)).isoformat()
    done = cli("trades", "backfill", "ETH/USD", "--since", since)
    assert done.exit_code == 0, done.output
    assert "ETHUSD: 1 page, 1000 trades (1000 new), up to 2026-11-2" in done.stderr
    assert "stopped: realtime" in done.stderr
    assert "Trades backfill" in done.stdout and "realtime" in done.stdout


def test_on_a_terminal_each_pair_gets_a_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    import krakked.cli.trades as trades_cli

    screen = Console(record=True, force_terminal=True, width=140)
    monkeypatch.setattr(trades_cli.common, "err", screen)
    with trades_cli._Display(show_bar=True, quiet=False) as display:
        for pages in (1, 2):
            display(TradesProgress("XBTUSD", pages, pages * 1000, pages * 1000, 1, NOW,
                                   NOW + timedelta(hours=pages)))
        display(TradesProgress("ETHUSD", 1, 10, 10, 1, NOW, NOW + timedelta(hours=1)))
    text = screen.export_text()
    assert "XBTUSD" in text and "2 pages · 2000 trades" in text
    assert "ETHUSD" in text and "1 page · 10 trades" in text and "/s" in text


def test_cli_until_stops_before_it(cli_env: Path) -> None:
    since, until = NOW - timedelta(days=2), NOW - timedelta(days=1)
    done = cli("trades", "backfill", "XBTUSD", "--since", since.isoformat(), "--until",
               until.isoformat(), "--json")
    assert done.exit_code == 0, done.output
    [result] = json.loads(done.stdout)
    assert result["stopped_because"] == "until" and result["stored"] > PAGE_SIZE
    assert since <= datetime.fromisoformat(result["first"])
    assert datetime.fromisoformat(result["last"]) < until


def test_cli_symbols_flag_and_default_symbols(cli_env: Path) -> None:
    since = (NOW - timedelta(hours=2)).isoformat()
    flagged = cli("trades", "backfill", "--symbols", "XRP/USDT", "BTC/USDT", "--since", since,
                  "--json")
    assert flagged.exit_code == 0, flagged.output
    assert [r["symbol"] for r in json.loads(flagged.stdout)] == ["XRPUSDT", "XBTUSDT"]
    default = cli("trades", "backfill", "--since", since, "--json")
    assert default.exit_code == 0, default.output
    assert [r["symbol"] for r in json.loads(default.stdout)] == [
        "XRPUSDT", "XBTUSDT", "XRPXBT"]  # the original tool's DEFAULT_SYMBOLS


def test_cli_a_failing_pair_is_one_line_and_the_others_continue(
        cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from krakked.cli import main

    since = (NOW - timedelta(hours=2)).isoformat()
    with pytest.raises(SystemExit) as info:
        main(["trades", "backfill", "NOPEUSD", "ETH/USD", "--since", since, "--json"])
    assert info.value.code == 19  # UnknownPairError's code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NOPEUSD" in errors[0]
    results = json.loads(captured.out)
    assert results[0]["symbol"] == "ETHUSD" and results[0]["stored"] > 0
    assert results[1]["symbol"] == "NOPEUSD" and results[1]["exit_code"] == 19


@pytest.mark.parametrize(("args", "fragment"), [
    (["candles", "build", "XBTUSD"], "needs --from-trades"),
    (["candles", "build", "XBTUSD", "--from-trades", "--tf", "5m"], "only 1m candles"),
    (["trades", "backfill", "XBTUSD", "--since", "2026-11-22", "--until", "2026-11-21"],
     "is not after --since"),
])
def test_cli_bad_arguments_exit_2_with_one_line(cli_env: Path, capsys: Any, args: list[str],
                                                fragment: str) -> None:
    from krakked.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err


def test_cli_candles_build_without_stored_trades_fails_naming_the_pair(
        cli_env: Path, capsys: Any) -> None:
    from krakked.cli import main

    assert cli("ohlc", "backfill", "XBTUSD", "--tf", "1h").exit_code == 0  # creates the store
    with pytest.raises(SystemExit) as info:
        main(["candles", "build", "XBTUSD", "--from-trades"])
    assert info.value.code == 21
    assert "no trades stored for XBTUSD" in capsys.readouterr().err


def test_cli_help_explains_both_candles_commands(cli_env: Path) -> None:
    group = cli("candles", "--help").output
    assert "build" in group and "show" in group and "--from-trades" in group
    build = cli("candles", "build", "--help").output
    assert "--from-trades" in build and "derive" in build
    show = cli("candles", "show", "--help").output
    assert "--tf" in show and "--format" in show


@contextlib.contextmanager
def _ctrl_c_on_first_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Press Ctrl-C (a real SIGINT) right after the first page is stored."""
    import krakked.cli.trades as trades_cli

    shown = trades_cli._Display.__call__
    pressed: list[bool] = []

    def display(self: Any, event: TradesProgress) -> None:
        shown(self, event)
        if not pressed:
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trades_cli._Display, "__call__", display)
    yield


def test_cli_ctrl_c_stops_after_the_page_and_rerunning_continues(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    since = (NOW - timedelta(days=3)).isoformat()
    with monkeypatch.context() as patch, _ctrl_c_on_first_page(patch):
        stopped = cli("trades", "backfill", "XBTUSD", "--since", since, "--json")
    assert stopped.exit_code == 130
    [first] = json.loads(stopped.stdout)
    assert first["stopped_because"] == "interrupted" and first["pages"] < 4
    assert first["stored"] == first["pages"] * PAGE_SIZE  # whole pages, with their cursor
    again = cli("trades", "backfill", "XBTUSD", "--since", since, "--json")
    assert again.exit_code == 0, again.output
    [rest] = json.loads(again.stdout)
    assert rest["stopped_because"] == "realtime" and rest["fetched"] == rest["stored"] > 0
    from krakked.store import open_store

    with open_store(None, settings=load_settings(), read_only=True) as store:
        ids = store.read_trades("XBTUSD")["id"].to_pylist()
    assert len(ids) == first["stored"] + rest["stored"]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no duplicate, no hole


def test_cli_no_auto_stop_polls_until_ctrl_c(cli_env: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import krakked.cli.trades as trades_cli

    shown = trades_cli._Display.__call__
    events: list[TradesProgress] = []

    def display(self: Any, event: TradesProgress) -> None:
        shown(self, event)
        events.append(event)
        if len(events) == 6:  # three polls of each pair: press Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trades_cli._Display, "__call__", display)
    since = (NOW - timedelta(hours=1)).isoformat()
    done = cli("trades", "backfill", "XBTUSD", "ETHUSD", "--since", since, "--no-auto-stop",
               "--poll-seconds", "0.01", "--json")
    assert done.exit_code == 0, done.output  # Ctrl-C is how a --no-auto-stop run ends
    results = json.loads(done.stdout)
    assert [r["symbol"] for r in results] == ["XBTUSD", "ETHUSD"]
    assert [(r["stopped_because"], r["pages"]) for r in results] == [("interrupted", 3)] * 2
    assert [e.symbol for e in events] == ["XBTUSD", "ETHUSD"] * 3


# -- the original async facade -----------------------------------------------------------------


def test_kraken_trades_backfill_facade_keeps_the_original_api(
        cli_env: Path, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'facade.duckdb'}"
    since_s = int((NOW - timedelta(hours=20)).timestamp())
    assert KrakenTradesBackfill.BASE_URL == "https://api.kraken.com"
    assert KrakenTradesBackfill.RATE_LIMIT_DELAY == 1.1

    async def go() -> tuple[Any, ...]:
        async with KrakenTradesBackfill(url, rate_limit_delay=0, max_retries=1) as bf:
            assert await bf.get_resume_point("XRP/USDT") == 0  # nothing stored yet
            rows, last = await bf.fetch_trades_page("XRP/USDT", since_s * 10**9)
            pages = [p async for p in bf.fetch_all_trades("XRP/USDT", since_s * 10**9)]
            await bf.store_trades("XRP/USDT", rows[:10])
            stored = await bf.backfill_symbol("XRP/USDT", since=since_s)
            point = await bf.get_resume_point("XRP/USDT")
            await bf.build_candles_from_trades("XRP/USDT", None, None)
            assert bf._market is not None
            candles = bf._market.get_candles("XRPUSDT", "1m")
            return rows, last, pages, stored, point, bf._market.store.read_trades("XRPUSDT"), \
                candles

    rows, last, pages, stored, point, table, candles = asyncio.run(go())
    assert rows and last == int(rows[-1][7])  # the sim's rows carry their ns stamp
    total = sum(len(p) for p in pages)
    assert total == table.num_rows > 10 and stored == total - 10  # store_trades kept 10
    assert point == int(pages[-1][-1][7])
    assert table["id"].to_pylist() == [int(r[6]) for p in pages for r in p]
    assert candles and candles[0].source == "trades"
