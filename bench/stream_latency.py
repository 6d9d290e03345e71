"""The loopback half of ``bench/stream.py``: send -> cache-update latency against the simulator.

A child process serves ``krakked.sim`` on 127.0.0.1 and, once a client is connected, pushes
ticker frames at ``rate`` frames/s (each carrying ``time.perf_counter_ns()`` at the push: the
clock is system-wide, so both processes read the same one). This process runs the real
``Market.live`` (a ``LiveMarket``: ``KrakenWS`` + ``LiveCache``, the universe from the child's
REST) and records, for every pushed frame, the time from the push to the end of the cache
update. Run directly with ``--serve`` only as that child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

SYMBOL = "BTC/USD"


def _frame(i: int) -> bytes:
    return (b'{"channel":"ticker","type":"update","data":[{"symbol":"' + SYMBOL.encode()
            + b'","bid":45283.5,"bid_qty":0.10000000,"ask":45285.2,"ask_qty":0.00100000,'
            b'"last":45284.1,"volume":1234.56789012,"vwap":45000.0,"low":44000.0,'
            b'"high":46000.0,"change":120.5,"change_pct":0.27,'
            b'"timestamp":"2026-12-08T10:00:00.123456Z","seq":' + str(i).encode()
            + b',"sent":' + str(time.perf_counter_ns()).encode() + b'}]}')


def serve(rate: int, seconds: float) -> None:
    """The child: serve the simulator, wait for one client, push ``rate`` frames/s."""
    from krakked.sim import Simulator
    from krakked.sim.server import running

    sim = Simulator()
    with running(sim) as info:
        print(json.dumps({"ws_url": info["ws_url"], "spot_url": info["spot_url"]}), flush=True)
        while sim.ws.connections < 1:
            time.sleep(0.01)
        time.sleep(1.0)  # let the client subscribe
        total = int(rate * seconds)
        start = time.perf_counter()
        i = 0
        while i < total:  # every frame due so far, then sleep (never spin: the GIL is shared)
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while i < due:
                sim.ws.push(_frame(i))
                i += 1
            time.sleep(0.0005)
        time.sleep(0.5)
        sim.ws.push(b'{"channel":"ticker","type":"update","data":[{"symbol":"END"}]}')
        time.sleep(1.0)


def latency(rate: int, seconds: float) -> dict[str, Any]:
    """Spawn the serving child and measure; p50/p99/max in milliseconds."""
    child = subprocess.Popen(  # noqa: S603 - this very script
        [sys.executable, __file__, "--serve", "--rate", str(rate), "--seconds", str(seconds)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        return asyncio.run(_measure(urls["ws_url"], urls["spot_url"], rate, seconds))
    finally:
        child.wait(timeout=30)


async def _measure(url: str, spot_url: str, rate: int, seconds: float) -> dict[str, Any]:
    import tempfile

    from krakked.config import load_settings
    from krakked.market_data import Market

    home = tempfile.mkdtemp(prefix="krakked-bench-")
    settings = load_settings({"KRAKKED_HOME": home, "KRAKKED_SPOT_URL": spot_url})
    market = Market("duckdb:///:memory:", settings=settings)
    live = market.live(["XBTUSD"], channels=("ticker",), ws_url=url)
    samples: list[int] = []
    done = asyncio.Event()
    apply = live.cache.apply
    clock = time.perf_counter_ns

    def timed_apply(frame: dict[str, Any]) -> None:  # LiveMarket calls cache.apply per frame
        item = frame["data"][0]
        if item.get("symbol") == "END":
            done.set()
            return
        apply(frame)
        sent = item.get("sent")
        if sent is not None:
            samples.append(clock() - sent)

    live.cache.apply = timed_apply  # type: ignore[method-assign]
    await live.start()
    await asyncio.wait_for(done.wait(), timeout=seconds + 60)
    await live.stop()
    market.close()
    samples.sort()
    n = len(samples)

    def pct(q: float) -> float:
        return round(samples[min(n - 1, int(q * n))] / 1e6, 3)

    return {"rate_frames_per_s": rate, "seconds": seconds, "frames_pushed": int(rate * seconds),
            "frames_measured": n, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(samples[-1] / 1e6, 3), "target_p99_ms": 5.0}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    if a.serve:
        serve(a.rate, a.seconds)
    else:
        print(json.dumps(latency(a.rate, a.seconds), indent=2))
