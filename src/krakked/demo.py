"""``krakked demo``: krakked at work against the in-process simulator — no keys, no network.

Gathers what exists so far (Spot and Futures status, tickers, a balance, closed candles, the
Futures account) through the same clients a user points at Kraken; the CLI renders it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from krakked.config import Settings, load_settings
from krakked.credentials import KeyPair
from krakked.kraken.futures import FuturesClient
from krakked.kraken.health import check_futures, check_spot
from krakked.kraken.limits import PublicLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimConfig, Simulator

__all__ = ["DEMO_PAIRS", "DemoReport", "run_demo"]

DEMO_PAIRS = ("XBTUSD", "ETHUSD", "SOLUSD", "XRPUSD", "ADAUSD", "DOTUSD")
SIM_LABEL_URL = "http://in-process-simulator.invalid"


@dataclass
class DemoReport:
    """What the demo found, section by section (JSON-ready through ``to_dict``)."""

    seed: int
    sim_time: str
    spot_status: dict[str, Any] = field(default_factory=dict)
    futures_status: dict[str, Any] = field(default_factory=dict)
    tickers: list[dict[str, Any]] = field(default_factory=list)
    balance: dict[str, str] = field(default_factory=dict)
    candles: list[dict[str, Any]] = field(default_factory=list)
    futures_account: dict[str, Any] = field(default_factory=dict)
    steps: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ran_against": "krakked simulator (offline; nothing reached Kraken)",
            "seed": self.seed,
            "sim_time": self.sim_time,
            "spot_status": self.spot_status,
            "futures_status": self.futures_status,
            "tickers": self.tickers,
            "balance": self.balance,
            "candles": self.candles,
            "futures_account": self.futures_account,
            "steps": [{"step": s, "seconds": round(t, 3)} for s, t in self.steps],
        }


def run_demo(
    *,
    seed: int = 7,
    home: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoReport:
    """Start a simulator in-process and exercise krakked's clients against it.

    Nothing is written to the user's directories unless ``home`` is given: a temporary
    ``KRAKKED_HOME`` holds the demo's files.
    """
    if home is None:
        with tempfile.TemporaryDirectory(prefix="krakked-demo-") as tmp:
            return run_demo(seed=seed, home=Path(tmp), progress=progress)
    sim = Simulator(SimConfig(seed=seed, public_rate=0))
    settings: Settings = load_settings({
        "KRAKKED_HOME": str(home),
        # The transport answers in-process; these names only label the reports.
        "KRAKKED_SPOT_URL": SIM_LABEL_URL,
        "KRAKKED_FUTURES_URL": SIM_LABEL_URL,
    })
    transport = sim.transport()
    spot_spec, fut_spec = sim.config.account("spot"), sim.config.account("futures")
    spot_keys = KeyPair.create("spot", spot_spec.api_key, spot_spec.api_secret, "simulator")
    fut_keys = KeyPair.create("futures", fut_spec.api_key, fut_spec.api_secret, "simulator")
    report = DemoReport(seed=seed, sim_time=datetime.fromtimestamp(sim.now(), UTC).isoformat())

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if progress:
            progress(name)
        start = time.perf_counter()
        value = fn()
        report.steps.append((name, time.perf_counter() - start))
        return value

    report.spot_status = step("Spot status", lambda: check_spot(
        settings, spot_keys, transport=transport))
    report.futures_status = step("Futures status", lambda: check_futures(
        settings, fut_keys, transport=transport))
    # The simulator is local: pace public calls as fast as it answers.
    spot = SpotClient(spot_keys, settings=settings, transport=transport,
                      public_limiter=PublicLimiter(1000.0, 1000))
    with spot:
        ticker = step("Ticker", lambda: spot.get_ticker(list(DEMO_PAIRS)))
        pairs = step("AssetPairs", lambda: spot.get_asset_pairs(list(DEMO_PAIRS)))
        by_altname = {info["altname"]: pid for pid, info in pairs.items()}
        for alt in DEMO_PAIRS:
            row = ticker.get(by_altname.get(alt, alt))
            if row:
                report.tickers.append({
                    "pair": alt, "last": row["c"][0], "bid": row["b"][0], "ask": row["a"][0],
                    "volume_24h": row["v"][1], "trades_24h": row["t"][1],
                })
        report.balance = step("Balance", spot.get_balance)
        ohlc = step("OHLC XBTUSD 1h", lambda: spot.get_ohlc("XBTUSD", interval=60))
        rows = next(v for k, v in ohlc.items() if k != "last")[:-1]  # drop the running bar
        for r in rows[-5:]:
            report.candles.append({
                "pair": "XBTUSD", "interval": "1h",
                "open_time": datetime.fromtimestamp(int(r[0]), UTC).isoformat(),
                "open": r[1], "high": r[2], "low": r[3], "close": r[4], "volume": r[6],
                "trades": int(r[7]),
            })
    futures = FuturesClient(fut_keys, settings=settings, transport=transport)
    with futures:
        accounts = step("Futures accounts", futures.get_accounts)
        positions = step("Futures open positions", futures.get_open_positions)
        execs = step("Futures executions (1 page)",
                     lambda: futures.get_executions(sort="desc", count=100))
        report.futures_account = {
            "accounts": sorted(accounts.get("accounts", {})),
            "open_positions": len(positions.get("openPositions", [])),
            "recent_executions": len(execs.get("elements", [])),
        }
    return report
