"""Gaps against krakked.sim, on DuckDB and PostgreSQL: detection of crafted holes (between
coverage ranges, in the trade-id sequence, the candle tail; never a quiet minute inside
coverage), filling small recent candle gaps from OHLC and the rest from Trades until the stored
1m candles equal the simulator's own OHLC, gaps Kraken cannot fill reported once, bounded
concurrency across pairs, the front door, the CLI and the original async facade."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from krakked.cli import app
from krakked.config import load_settings
from krakked.errors import UsageError
from krakked.kraken.http import RetryPolicy
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.market.candles import Candle, HistoricalTrade, epoch_us, from_epoch_us
from krakked.market.gaps import DataGap
from krakked.market_data import Market
from krakked.sim import SimClock, SimConfig, Simulator
from krakked.sim.server import running
from krakked.store import MarketStore, open_store
from krakked.store.base import Coverage, TradeCoverage
from krakked.sync.gaps import detect_gaps, fill_gaps, fill_pair

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
S, RAW = "XBTUSD", "XXBTZUSD"
T0 = datetime(2026, 3, 7, tzinfo=UTC)  # stored trades start here ...
T1 = datetime(2026, 3, 9, tzinfo=UTC)  # ... and end here
HOLE_A = (datetime(2026, 3, 7, 20, tzinfo=UTC), datetime(2026, 3, 8, 10, tzinfo=UTC))  # 14 h
OHLC_FROM = datetime(2026, 3, 10, 0, 1, tzinfo=UTC)  # the oldest 1m bar OHLC serves at NOW
HOLE_B = (datetime(2026, 3, 10, 6, tzinfo=UTC), datetime(2026, 3, 10, 6, 20, tzinfo=UTC))
LAST_CLOSED = datetime(2026, 3, 10, 12, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


@pytest.fixture
def store(url: str) -> Iterator[MarketStore]:
    with open_store(url) as s:
        yield s


def now() -> datetime:
    return NOW


# -- the simulator's own data ------------------------------------------------------------------


def sim_trades(sim: Simulator, start: datetime, end: datetime, raw: str = RAW,
               symbol: str = S) -> list[HistoricalTrade]:
    """Every trade of the simulator's tape with start <= time < end (time exact, from its ns)."""
    out: list[HistoricalTrade] = []
    cursor = epoch_us(start) * 1000 - 1
    while True:
        rows, last = sim.market.trades_since(raw, cursor, 1000)
        for row in rows:
            ts = from_epoch_us(int(row[7]) // 1000)
            if ts >= end:
                return out
            out.append(HistoricalTrade(int(row[6]), symbol, ts, Decimal(row[0]),
                                       Decimal(row[1]), "buy" if row[3] == "b" else "sell",
                                       "market" if row[4] == "m" else "limit"))
        if len(rows) < 1000:
            return out
        cursor = int(last)


def sim_ohlc(sim: Simulator, clock: SimClock, start: datetime, end: datetime,
             raw: str = RAW) -> list[tuple]:
    """The simulator's own 1m OHLC bars opening in [start, end): asked at moments where its
    720-bar window holds them, as (time, open, high, low, close, volume, count)."""
    saved = clock.t
    bars: dict[datetime, tuple] = {}
    at = start
    try:
        while at < end:
            window_end = min(end, at + 700 * MINUTE)
            clock.t = window_end.timestamp() + 30
            for row in sim.market.ohlc(raw, 1)[0][:-1]:
                ts = datetime.fromtimestamp(row[0], UTC)
                if start <= ts < end:
                    bars[ts] = (ts, *(Decimal(v) for v in row[1:5]), Decimal(row[6]), row[7])
            at = window_end
    finally:
        clock.t = saved
    return [bars[t] for t in sorted(bars)]


def stored_1m(store: MarketStore, start: datetime, end: datetime, symbol: str = S
              ) -> list[tuple]:
    """The 1m candles the store serves in [start, end) (quiet covered minutes filled)."""
    return [(c["timestamp"], c["open"], c["high"], c["low"], c["close"], c["volume"],
             c["trade_count"]) for c in store.read_candles(symbol, 1, start, end).to_pylist()]


# -- writing crafted history -------------------------------------------------------------------


def load_trades(store: MarketStore, trades: list[HistoricalTrade], start: datetime,
                end: datetime, *, hole: tuple[datetime, datetime] | None = None,
                drop_ids: frozenset[int] = frozenset(), symbol: str = S) -> None:
    """Write ``trades`` hour by hour, each hour with the coverage it vouches for, as a backfill
    would — leaving out ``hole`` (no rows, no coverage) and the ``drop_ids`` rows (coverage
    kept: a hole in the id sequence)."""
    edges = {start, end}
    at = start
    while at < end:
        edges.add(at)
        at += timedelta(hours=1)
    if hole:
        edges |= set(hole)
    edges_sorted = sorted(e for e in edges if start <= e <= end)
    for a, b in pairwise(edges_sorted):
        if hole and hole[0] <= a < hole[1]:
            continue
        rows = [t for t in trades if a <= t.timestamp < b and t.id not in drop_ids]
        store.upsert_trades(rows, coverage=[TradeCoverage(symbol, a, b)])


def ohlc_candles(sim: Simulator) -> list[Candle]:
    """The closed 1m bars the simulator's OHLC serves now, as candles."""
    rows = sim.market.ohlc(RAW, 1)[0][:-1]
    return [Candle(S, datetime.fromtimestamp(r[0], UTC), 1, Decimal(r[1]), Decimal(r[2]),
                   Decimal(r[3]), Decimal(r[4]), Decimal(r[6]), Decimal(r[5]) * Decimal(r[6]),
                   r[7], Decimal(r[5]) if Decimal(r[6]) else None, "rest") for r in rows]


def crafted(store: MarketStore, sim: Simulator) -> dict[str, Any]:
    """XBTUSD with: trades 03-07 .. 03-09 less a 14 h hole (A) and three trades of 03-08 15:xx
    (an id hole inside coverage); Kraken's 1m OHLC of the last 12 h less 20 minutes (B); nothing
    between 03-09 and the OHLC window (C, 24 h)."""
    trades = sim_trades(sim, T0, T1)
    middle = [t for t in trades if t.timestamp >= datetime(2026, 3, 8, 15, tzinfo=UTC)]
    dropped = frozenset(t.id for t in middle[5:8])
    load_trades(store, trades, T0, T1, hole=HOLE_A, drop_ids=dropped)
    before, after = middle[4], middle[8]
    bars = ohlc_candles(sim)
    assert bars[0].timestamp == OHLC_FROM and bars[-1].close_time == LAST_CLOSED
    store.upsert_candles([b for b in bars if not HOLE_B[0] <= b.timestamp < HOLE_B[1]],
                         coverage=[Coverage(S, 1, OHLC_FROM, HOLE_B[0]),
                                   Coverage(S, 1, HOLE_B[1], LAST_CLOSED)])
    return {"trades": trades, "dropped": middle[5:8],
            "id_hole": (before.timestamp, after.timestamp + timedelta(microseconds=1))}


# -- detection ---------------------------------------------------------------------------------


def test_detection_finds_coverage_holes_id_holes_and_no_quiet_minute(
        store: MarketStore, sim: Simulator) -> None:
    made = crafted(store, sim)
    dropped = made["dropped"]
    # 30 s: a quiet minute (no trades, no candle) inside coverage is longer, and still no gap
    gaps = detect_gaps(store, S, min_gap=timedelta(seconds=30), now=NOW)
    assert [(g.data_type, g.start_time, g.end_time) for g in gaps] == [
        ("candles_1m", *HOLE_A),
        ("trades", *HOLE_A),
        ("trades", *made["id_hole"]),
        ("candles_1m", T1, OHLC_FROM),
        ("candles_1m", *HOLE_B),
    ]
    stored = {r[0] for r in stored_1m(store, T0, HOLE_A[0])}
    quiet = [T0 + k * MINUTE for k in range(20 * 60) if T0 + k * MINUTE not in stored]
    assert quiet  # XBTUSD trades about once a minute: many minutes have none
    ids = gaps[2]
    assert ids.detail == f"trade ids {dropped[0].id}..{dropped[-1].id} missing (3)"
    a, _, _, c, b = gaps
    assert (a.is_small, a.candles_needed, a.hours) == (False, 14 * 60, 14.0)
    assert (b.is_small, b.candles_needed, b.duration) == (True, 20, timedelta(minutes=20))
    assert c.detail == "no 1m candle coverage"


def test_the_candle_tail_up_to_the_last_closed_minute_is_a_gap(store: MarketStore,
                                                                 sim: Simulator) -> None:
    bars = ohlc_candles(sim)[:-30]  # stored until 30 minutes ago
    store.upsert_candles(bars)
    (tail,) = detect_gaps(store, S, now=NOW)
    assert (tail.data_type, tail.start_time, tail.end_time) == (
        "candles_1m", LAST_CLOSED - 30 * MINUTE, LAST_CLOSED)
    assert tail.detail == "nothing stored after the last covered minute"
    # two minutes is not longer than the default min_gap of 2m; three is
    assert detect_gaps(store, S, now=LAST_CLOSED - 28 * MINUTE + timedelta(seconds=59)) == []
    assert len(detect_gaps(store, S, now=LAST_CLOSED - 27 * MINUTE)) == 1


def test_an_id_hole_bridged_by_csv_trades_is_no_gap(store: MarketStore, sim: Simulator) -> None:
    from krakked.store.arrow import trades_to_arrow

    trades = sim_trades(sim, T0, T0 + timedelta(hours=2))
    cut = trades[30:40]
    store.upsert_trades(trades[:30] + trades[40:],
                        coverage=[TradeCoverage(S, T0, T0 + timedelta(hours=2))])
    assert [g.data_type for g in detect_gaps(store, S, now=T0 + timedelta(hours=2))] == [
        "trades"]
    csv_rows = [HistoricalTrade(None, S, t.timestamp.replace(microsecond=0), t.price, t.volume,
                                None) for t in cut[1:-1]]  # type: ignore[arg-type]
    store.upsert_trades(trades_to_arrow(csv_rows, source="csv"))
    assert detect_gaps(store, S, now=T0 + timedelta(hours=2)) == []


# -- filling -----------------------------------------------------------------------------------


def test_fill_closes_every_gap_and_the_candles_equal_the_sims_ohlc(
        store: MarketStore, sim: Simulator, clock: SimClock, client: SpotClient) -> None:
    made = crafted(store, sim)
    result = fill_pair(client, store, S, rest_symbol=RAW, now=now)
    # OHLC first (its window moves on), then trades, then the other candle gaps
    assert [(g.data_type, g.start_time) for g in result.filled] == [
        ("candles_1m", HOLE_B[0]), ("trades", HOLE_A[0]), ("trades", made["id_hole"][0]),
        ("candles_1m", HOLE_A[0]), ("candles_1m", T1)]
    assert result.unfillable == [] and result.errors == [] and result.remaining == []
    assert result.ohlc_calls == 1 and sim.requests["OHLC"] == 1  # hole B only
    assert detect_gaps(store, S, min_gap=timedelta(seconds=1), now=NOW) == []
    # every minute from the first stored trade's to the last closed one: the sim's own OHLC
    first_bar = stored_1m(store, T0, T0 + timedelta(hours=1))[0][0]
    assert stored_1m(store, first_bar, LAST_CLOSED) == sim_ohlc(sim, clock, first_bar,
                                                                LAST_CLOSED)
    # the trades of the filled ranges are the sim's, each once, ids unbroken
    assert store.trade_id_holes(S) == []
    in_a = sim_trades(sim, *HOLE_A)
    got = store.read_trades(S, *HOLE_A).column("id").to_pylist()
    assert got == [t.id for t in in_a]
    c_trades = sim_trades(sim, T1, OHLC_FROM)
    in_ids = sim_trades(sim, *made["id_hole"])
    assert len(in_ids) >= 5
    assert result.trades_processed == len(in_a) + len(c_trades) + len(in_ids)
    assert result.trades_inserted == len(in_a) + len(c_trades) + 3
    assert result.candles_inserted > 14 * 60 // 2
    # nothing left: a second run asks Kraken nothing
    calls = dict(sim.requests)
    again = fill_pair(client, store, S, rest_symbol=RAW, now=now)
    assert again.detected == [] and dict(sim.requests) == calls


def test_a_candle_gap_over_stored_trades_is_built_without_asking_kraken(
        store: MarketStore, sim: Simulator, clock: SimClock, client: SpotClient) -> None:
    trades = sim_trades(sim, T0, T1)
    cut = (T0 + timedelta(hours=5), T0 + timedelta(hours=6))
    load_trades(store, trades, T0, T1, hole=cut)
    store.upsert_trades([t for t in trades if cut[0] <= t.timestamp < cut[1]],
                        coverage=[TradeCoverage(S, *cut)], build_candles=False)
    at = T1 + timedelta(seconds=30)
    assert [(g.data_type, g.start_time, g.end_time) for g in detect_gaps(store, S, now=at)] \
        == [("candles_1m", *cut)]
    result = fill_pair(client, store, S, rest_symbol=RAW, now=lambda: at)
    assert [g.start_time for g in result.filled] == [cut[0]] and result.remaining == []
    assert sim.requests["Trades"] == sim.requests["OHLC"] == 0
    assert result.candles_inserted > 0
    assert stored_1m(store, *cut) == sim_ohlc(sim, clock, *cut)


def test_a_gap_kraken_has_no_trades_for_is_reported_once_and_not_retried(
        store: MarketStore, sim: Simulator, clock: SimClock, client: SpotClient) -> None:
    at = datetime(2026, 1, 2, 12, 0, 30, tzinfo=UTC)
    clock.t = at.timestamp()
    last = datetime(2026, 1, 2, 12, tzinfo=UTC)
    early = datetime(2025, 12, 1, tzinfo=UTC)  # before the sim's first trade (2026-01-01)
    store.upsert_candles([], coverage=[Coverage(S, 1, early, early + timedelta(hours=1)),
                                       Coverage(S, 1, datetime(2025, 12, 20, tzinfo=UTC),
                                                last)])
    (gap,) = detect_gaps(store, S, now=at)
    assert gap.start_time == early + timedelta(hours=1) and not gap.is_small
    result = fill_pair(client, store, S, rest_symbol=RAW, now=lambda: at)
    assert result.filled == [] and result.errors == [] and result.remaining == []
    ((same, reason, still_open),) = result.unfillable
    assert same == gap and still_open is False
    assert reason == ("Kraken has no trades in it (its next trade is at "
                      "2026-01-01T00:00:00+00:00): recorded as quiet, not reported again")
    assert result.trades_processed == 0 and sim.requests["Trades"] == 1
    again = fill_pair(client, store, S, rest_symbol=RAW, now=lambda: at)
    assert again.detected == [] and sim.requests["Trades"] == 1  # not retried


def test_a_pair_kraken_does_not_know_leaves_its_gaps_open_and_asks_once(
        store: MarketStore, sim: Simulator, client: SpotClient) -> None:
    trades = sim_trades(sim, T0, T1)
    load_trades(store, trades, T0, T1, hole=HOLE_A)
    result = fill_pair(client, store, S, rest_symbol="NOPEUSD", now=now)
    # trade gap A first, then candle gap A and the candle tail (T1 .. now)
    assert [(g.data_type, g.start_time) for g, _, _ in result.unfillable] == [
        ("trades", HOLE_A[0]), ("candles_1m", HOLE_A[0]), ("candles_1m", T1)]
    assert all(still and "Kraken does not know the pair NOPEUSD" in why
               for _, why, still in result.unfillable)
    assert result.filled == [] and result.errors == [] and result.codes == [19]
    assert [g.data_type for g in result.remaining] == ["candles_1m", "trades", "candles_1m"]
    assert sim.requests["Trades"] == 1  # the second gap was not tried


def test_an_error_stops_the_pair_and_names_the_gap(store: MarketStore, sim: Simulator,
                                                  tmp_path: Path) -> None:
    trades = sim_trades(sim, T0, T1)
    load_trades(store, trades, T0, T1, hole=HOLE_A)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with SpotClient(settings=load_settings({"KRAKKED_HOME": str(tmp_path)}),
                    transport=httpx.MockTransport(refuse), retry=RetryPolicy(max_attempts=1),
                    public_limiter=PublicLimiter(1000, 1000)) as dead:
        result = fill_pair(dead, store, S, rest_symbol=RAW, now=now)
    (line,) = result.errors
    assert line.startswith(f"XBTUSD trades gap {HOLE_A[0].isoformat()} .. "
                           f"{HOLE_A[1].isoformat()}: spot:Trades: cannot connect")
    assert result.codes == [16]
    assert [(g.data_type, g.start_time) for g, _, _ in result.unfillable] == [
        ("candles_1m", HOLE_A[0]), ("candles_1m", T1)]  # the candle gaps after it
    assert all(still and why.startswith("not tried") for _, why, still in result.unfillable)
    assert len(result.remaining) == 3


class Watching(httpx.BaseTransport):
    """The sim's transport, slowed down, recording how many calls are in flight at once: in
    all and per pair."""

    def __init__(self, inner: httpx.BaseTransport, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.lock = threading.Lock()
        self.flying: dict[str, int] = {}
        self.peak = 0
        self.peak_per_pair = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pair = request.url.params.get("pair", "")
        with self.lock:
            self.flying[pair] = self.flying.get(pair, 0) + 1
            self.peak = max(self.peak, sum(self.flying.values()))
            self.peak_per_pair = max(self.peak_per_pair, self.flying[pair])
        try:
            time.sleep(self.delay)
            return self.inner.handle_request(request)
        finally:
            with self.lock:
                self.flying[pair] -= 1


def test_pairs_are_filled_in_parallel_up_to_max_concurrent_each_one_in_order(
        sim: Simulator, tmp_path: Path) -> None:
    pairs = [("XBTUSD", "XXBTZUSD"), ("ETHUSD", "XETHZUSD"), ("SOLUSD", "SOLUSD")]
    day = datetime(2026, 3, 9, tzinfo=UTC)
    holes = [(day + timedelta(hours=h), day + timedelta(hours=h + 1)) for h in (3, 9)]
    with open_store(f"duckdb:///{tmp_path / 'p.duckdb'}") as store:
        for symbol, raw in pairs:
            trades = sim_trades(sim, day, day + timedelta(hours=12), raw, symbol)
            store.upsert_trades([t for t in trades if not any(a <= t.timestamp < b
                                                              for a, b in holes)],
                                coverage=[TradeCoverage(symbol, day, holes[0][0]),
                                          TradeCoverage(symbol, holes[0][1], holes[1][0]),
                                          TradeCoverage(symbol, holes[1][1],
                                                        day + timedelta(hours=12))])
        watch = Watching(sim.transport(), 0.15)
        with SpotClient(settings=load_settings({"KRAKKED_HOME": str(tmp_path)}),
                        transport=watch, public_limiter=PublicLimiter(1000, 1000)) as client:
            report = fill_gaps(client, store, pairs, max_concurrent=2, now=now)
        # per pair: 2 trade gaps, their 2 candle gaps, the candle tail up to NOW
        assert report.to_dict()["gaps_filled"] == 15
        assert report.remaining == []
        assert watch.peak == 2 and watch.peak_per_pair == 1
        with pytest.raises(UsageError, match="max_concurrent"):
            fill_gaps(client, store, pairs, max_concurrent=0)


# -- the front door ----------------------------------------------------------------------------


def test_market_detects_and_fills_gaps_of_any_alias_with_the_original_summary(
        store: MarketStore, sim: Simulator, client: SpotClient, tmp_path: Path) -> None:
    crafted(store, sim)
    settings = load_settings({"KRAKKED_HOME": str(tmp_path)})
    m = Market(store, settings=settings, client=client)
    scan = m.detect_gaps(["BTC/USD", "XXBTZUSD", "XRP/USDT"], "90s", now=NOW)
    assert scan.symbols == ["XBTUSD", "XRPUSDT"] and scan.empty == ["XRPUSDT"]
    assert len(scan.gaps) == 5 and scan.min_gap == timedelta(seconds=90)
    fills = {g["start_time"]: g["fill"] for g in scan.to_dict()["gaps"]}
    assert fills[HOLE_B[0].isoformat()] == "ohlc" and fills[T1.isoformat()] == "trades"
    default = m.detect_gaps(now=NOW)  # the original's DEFAULT_SYMBOLS
    assert default.symbols == ["XRPUSDT", "XBTUSDT", "XRPXBT"] and default.gaps == []
    summary = m.fill_gaps(["BTC/USD"], now=lambda: NOW).to_dict()
    assert list(summary)[:5] == ["gaps_detected", "gaps_filled", "candles_inserted",
                                 "trades_processed", "errors"]
    assert (summary["gaps_detected"], summary["gaps_filled"], summary["errors"],
            summary["unfillable"], summary["remaining"]) == (5, 5, [], [], [])
    assert summary["candles_inserted"] > 0 and summary["trades_processed"] > 0
    assert m.detect_gaps(["XBTUSD"], now=NOW).gaps == []
    with pytest.raises(UsageError, match="min_gap"):
        m.detect_gaps(["XBTUSD"], "2 minutes")


# -- the CLI and the original facade, against a served simulator on the real clock ------------


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
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
        yield sim


def recent_history(sim: Simulator, url: str) -> dict[str, datetime]:
    """XBTUSD trades from 30 h ago for 20 h, less one hour 22 h ago (older than OHLC reaches),
    and nothing for the last 10 h (which OHLC still serves)."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    hole = (base + timedelta(hours=8), base + timedelta(hours=9))
    end = base + timedelta(hours=20)
    with open_store(url) as store:
        load_trades(store, sim_trades(sim, base, end), base, end, hole=hole)
    return {"hole": hole[0], "tail": end}


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_detect_lists_the_gaps_and_fill_closes_them(served: Simulator,
                                                        tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    at = recent_history(served, url)
    found = cli("gaps", "detect", "BTC/USD", "--store", url, "--json")
    assert found.exit_code == 0, found.output
    gaps = json.loads(found.stdout)["gaps"]
    assert [(g["data_type"], g["start_time"], g["fill"]) for g in gaps] == [
        ("candles_1m", at["hole"].isoformat(), "trades"),
        ("trades", at["hole"].isoformat(), "trades"),
        ("candles_1m", at["tail"].isoformat(), "ohlc")]
    table = cli("gaps", "detect", "--symbols", "XBTUSD", "--min-gap", "90s", "--db-url", url)
    assert table.exit_code == 0
    assert "Gaps longer than 1m 30s: 3" in table.stdout
    assert "OHLC" in table.stdout and "Trades" in table.stdout and "14h" not in table.stdout
    filled = cli("gaps", "fill", "XBTUSD", "--store", url, "--json")
    assert filled.exit_code == 0, filled.output
    summary = json.loads(filled.stdout)
    assert (summary["gaps_detected"], summary["gaps_filled"], summary["remaining"],
            summary["errors"]) == (3, 3, [], [])
    assert summary["trades_processed"] > 0 and summary["candles_inserted"] > 0
    none = cli("gaps", "detect", "XBTUSD", "--store", url)
    assert none.exit_code == 0 and none.stdout.startswith("no gaps longer than 2m in XBTUSD")


def test_cli_fill_exits_non_zero_naming_the_gaps_left_open(
        served: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from krakked.cli import main

    monkeypatch.setattr("krakked.kraken.http.RetryPolicy.backoff",
                        lambda self, n, rng=None: 0.01)
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    at = recent_history(served, url)
    served.inject("unavailable", "Trades", times=1000)
    with pytest.raises(SystemExit) as info:
        main(["gaps", "fill", "XBTUSD", "--store", url])
    assert info.value.code == 15  # EService:Unavailable's code
    captured = capsys.readouterr()
    assert "XBTUSD" in captured.out and "Gaps filled" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: 2 gaps left open: XBTUSD candles_1m "
                           f"{at['hole'].isoformat()[:19].replace('T', ' ')}")
    assert "XBTUSD trades" in last and "not tried" in last


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (("gaps", "detect"), 21, "nothing stored for XRPUSDT, XBTUSDT, XRPXBT"),
    (("gaps", "fill", "--symbols", "XRP/USDT"), 21, "nothing stored for XRPUSDT"),
    (("gaps", "detect", "XBTUSD", "--min-gap", "2x"), 2, "--min-gap: '2x' is not a span"),
    (("gaps", "fill", "XBTUSD", "--max-concurrent", "0"), 2, "--max-concurrent"),
    (("gaps", "detect", "NOPEUSD"), 19, "unknown pair 'NOPEUSD'"),
])
def test_cli_gaps_bad_input_is_one_line_with_its_exit_code(
        served: Simulator, tmp_path: Path, capsys, args: tuple[str, ...], code: int,
        fragment: str) -> None:
    from krakked.cli import main

    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    with open_store(url):
        pass  # an empty store
    with pytest.raises(SystemExit) as info:
        main([*args, "--store", url])
    assert info.value.code == code
    err = capsys.readouterr().err.strip()
    assert fragment in err and "Traceback" not in err


def test_gap_filler_keeps_the_original_async_api(served: Simulator, tmp_path: Path) -> None:
    from krakked.history import DataGap as HistoryDataGap
    from krakked.history import GapFiller, run_gap_filler

    assert HistoryDataGap is DataGap
    url = f"duckdb:///{tmp_path / 'facade.duckdb'}"
    at = recent_history(served, url)

    async def go() -> tuple:
        async with GapFiller(url, symbols=["BTC/USD"], rate_limit_delay=0) as filler:
            gaps = await filler.detect_gaps(min_gap_minutes=2)
            tail = next(g for g in gaps if g.start_time == at["tail"])
            candles = await filler.fill_gap_ohlc(tail)
            hole = next(g for g in gaps if g.data_type == "trades")
            trades = await filler.fill_gap_trades(hole)
            await filler.update_sync_status("BTC/USD", datetime.now(UTC))
            await filler.refresh_continuous_aggregates()
            left = await filler.detect_gaps()
            summary = await filler.fill_all_gaps(max_concurrent=2)
        return gaps, candles, trades, left, summary

    gaps, candles, trades, left, summary = asyncio.run(go())
    assert len(gaps) == 3 and candles >= 10 * 60 - 1 and trades > 0
    assert left == []  # the trade gap's fill also built the candles of its hour
    assert {k: summary[k] for k in ("gaps_detected", "gaps_filled", "candles_inserted",
                                    "trades_processed", "errors")} == {
        "gaps_detected": 0, "gaps_filled": 0, "candles_inserted": 0, "trades_processed": 0,
        "errors": []}
    with open_store(url) as store:
        status = {r["data_type"]: r for r in store.read_sync_status("XBTUSD")}
        newest = store.read_candles("XBTUSD", 1, limit=1, newest_first=True).to_pylist()
    assert status["candles_1m"]["newest_timestamp"] == newest[0]["timestamp"]
    other = f"duckdb:///{tmp_path / 'other.duckdb'}"
    recent_history(served, other)
    done = asyncio.run(run_gap_filler(other, ["XBTUSD"]))  # paced 1.1 s a call, as the original
    assert (done["gaps_detected"], done["gaps_filled"], done["remaining"]) == (3, 3, [])


def test_gap_filler_update_sync_status_describes_the_stored_candles(
        served: Simulator, tmp_path: Path) -> None:
    from krakked.history import GapFiller

    url = f"duckdb:///{tmp_path / 'status.duckdb'}"
    bars = [Candle(S, datetime(2026, 3, 2, 10, k, tzinfo=UTC), 1, Decimal(1), Decimal(2),
                   Decimal(1), Decimal(2), Decimal(k + 1)) for k in range(5)]
    with open_store(url) as store:
        store.upsert_candles(bars)  # written without a status row
        assert store.read_sync_status(S) == []

    async def go() -> None:
        async with GapFiller(url, rate_limit_delay=0) as filler:
            await filler.update_sync_status("BTC/USD", datetime(2030, 1, 1, tzinfo=UTC))

    asyncio.run(go())
    with open_store(url) as store:
        (row,) = store.read_sync_status(S)
    assert (row["data_type"], row["oldest_timestamp"], row["newest_timestamp"],
            row["total_records"]) == ("candles_1m", bars[0].timestamp, bars[-1].timestamp, 5)
