"""Benchmark: sync 100,000 Futures executions and 100,000 account-log entries from krakked.sim
into DuckDB through ``krakked.account.runner.run_sync``: wall time against the pacing minimum
of Kraken's history token pool, and peak RSS.

Setup. One simulated Futures account with N executions (its account log holds 2 rows per
execution plus daily funding rows and 3 transfers: about 2N + 1,000 entries). Two runs of the
same pipeline, as a user syncs two resources: ``executions`` (all N; 1000 a page, 1 token a call),
then ``account_log`` seeded with ``--since`` at the time that leaves the newest N entries.

Kraken's model: a pool of 100 history tokens per key, refilled at 100 per 10 minutes (1/6 token a
second), starting full. Calls costing T tokens in all cannot send their last call before
``(T - 100) / (1/6)`` seconds: the **pacing minimum**. No client finishes before its last call
plus the work that must follow it (normalising and loading that call's rows), nor faster than the
same sync with no rate limit at all. So the paced run is held to

    floor = max(rate-limit-free wall time, pacing minimum + paced run's tail after its last call)
    ratio = paced wall time / floor                                    (target: <= 1.15)

Page sizes. Tokens favour big account-log pages (count <= 100,000 costs 10 tokens, <= 5,000 costs
6), memory favours small ones (a page arrives as one JSON body, ~6-10 KB of Python objects per
entry while it is turned into rows). 100,000 entries at count 5,000 cost 120 tokens: with the
executions' 100 that is a 12-minute pacing minimum. So the paced case (and its rate-limit-free
twin) use count 100,000 (2 calls, 20 tokens: a 2-minute minimum) and peak RSS is measured apart,
rate-limit free, with count 5,000 at N and at the smaller size (default 20,000): flat means the
two peaks match (target: under 400 MB whatever the row count). Every case runs in a fresh process
so ``ru_maxrss`` is that case's own peak.

Run: ``uv run python bench/account.py [--executions 100000] [--small 20000]`` (about 5 minutes,
2 of them the pacing minimum); ``--case free|paced --executions N --count C`` runs one case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HISTORY_CAPACITY = 100.0
HISTORY_REFILL = 100.0 / 600.0
EXECUTIONS_PAGE = 1000
BIG_PAGE = 100_000  # account-log count that spends the fewest tokens per entry
SMALL_PAGE = 5_000  # account-log count for the memory cases
ORIGIN = datetime(2025, 1, 1, tzinfo=UTC)  # the whole simulated history lies in the past


class _TimedTransport(httpx.BaseTransport):
    """Wraps the simulator's transport: history calls made, their tokens, when the last ended."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        from krakked.kraken.limits import history_cost

        self.inner = inner
        self.cost = history_cost
        self.calls: dict[str, int] = {}
        self.tokens = 0.0
        self.last_end = 0.0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = request.url.path
        if path.startswith("/api/history/") and response.status_code != 429:
            name = path.rsplit("/", 1)[-1]
            count = request.url.params.get("count")
            self.calls[name] = self.calls.get(name, 0) + 1
            self.tokens += self.cost(path, int(count) if count else None)
            self.last_end = time.monotonic()
        return response


def run_case(case: str, executions: int, count: int) -> dict[str, Any]:
    """Build the simulator, sync both resources, return the figures (in this process)."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    from krakked.account.runner import run_sync
    from krakked.config import load_settings
    from krakked.credentials import KeyPair
    from krakked.kraken.futures import FuturesClient
    from krakked.kraken.limits import FuturesLimiter
    from krakked.sim import SimConfig, Simulator

    paced = case == "paced"
    sim = Simulator(SimConfig(seed=7, origin=ORIGIN, futures_executions=executions,
                              rate_limits=paced, public_rate=0))
    spec = sim.config.account("futures")
    t_build = time.monotonic()
    book = sim.book(spec)  # built before timing: the simulator's cost, not the sync's
    build_seconds = time.monotonic() - t_build
    entries = len(book.log_ts)
    cut_index = max(0, entries - executions)
    since = datetime.fromtimestamp(book.log_ts[cut_index] / 1000, UTC)
    expected_log = entries - next(i for i in range(entries) if book.log_ts[i] >= book.log_ts[
        cut_index])

    limiter = FuturesLimiter() if paced else FuturesLimiter(
        derivatives_capacity=1e12, derivatives_per_second=1e12,
        history_capacity=1e12, history_per_second=1e12)
    transport = _TimedTransport(sim.transport())
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({"KRAKKED_HOME": home})
        client = FuturesClient(KeyPair.create("futures", spec.api_key, spec.api_secret, "bench"),
                               settings=settings, transport=transport, limiter=limiter,
                               persist_nonce=False)
        with client:
            start = time.monotonic()
            first = run_sync("futures", resources=["executions"], settings=settings,
                             client=client, source_options={"page_size": EXECUTIONS_PAGE})
            second = run_sync("futures", resources=["account_log"], since=since,
                              settings=settings, client=client,
                              source_options={"account_log_count": count})
            wall = time.monotonic() - start
            api = client.stats.to_dict()
        db = Path(home) / "data"
        size_mb = sum(p.stat().st_size for p in db.glob("*.duckdb")) / 2**20
    return {
        "case": case,
        "executions": executions,
        "account_log_count": count,
        "rows": {"executions": first.rows["executions"],
                 "account_log": second.rows["account_log"]},
        "account_log_expected": expected_log,
        "history_calls": transport.calls,
        "history_tokens": transport.tokens,
        "wall_seconds": round(wall, 3),
        "tail_after_last_call_seconds": round(start + wall - transport.last_end, 3),
        "last_call_at_seconds": round(transport.last_end - start, 3),
        "http_429_from_kraken": sim.history.rejections,
        "client_rate_limited": api["rate_limited"],
        "status": [first.status, second.status],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "duckdb_mb": round(size_mb, 1),
        "sim_build_seconds": round(build_seconds, 3),
    }


def _spawn(case: str, executions: int, count: int) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603 - this very script, fixed arguments
        [sys.executable, __file__, "--case", case, "--executions", str(executions),
         "--count", str(count)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20_000,
                        help="the smaller size whose peak RSS is compared")
    parser.add_argument("--case", choices=("free", "paced"),
                        help="run one case in this process and print its JSON")
    parser.add_argument("--count", type=int, default=BIG_PAGE, help="account-log page (--case)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.executions, args.count)))
        return

    n = args.executions
    paced = _spawn("paced", n, BIG_PAGE)
    free = _spawn("free", n, BIG_PAGE)
    flat_big = _spawn("free", n, SMALL_PAGE)
    flat_small = _spawn("free", args.small, SMALL_PAGE)
    tokens = paced["history_tokens"]
    pacing_min = max(0.0, tokens - HISTORY_CAPACITY) / HISTORY_REFILL
    floor = max(free["wall_seconds"], pacing_min + paced["tail_after_last_call_seconds"])
    ratio = paced["wall_seconds"] / floor
    rss = {f"{n}_count_{SMALL_PAGE}": flat_big["peak_rss_mb"],
           f"{args.small}_count_{SMALL_PAGE}": flat_small["peak_rss_mb"],
           f"{n}_count_{BIG_PAGE}_paced": paced["peak_rss_mb"],
           f"{n}_count_{BIG_PAGE}_free": free["peak_rss_mb"]}
    result = {
        "benchmark": "account",
        "executions": n,
        "rows": paced["rows"],
        "history_calls": paced["history_calls"],
        "history_tokens": tokens,
        "pacing_minimum_seconds": round(pacing_min, 3),
        "rate_limit_free_wall_seconds": free["wall_seconds"],
        "paced_wall_seconds": paced["wall_seconds"],
        "paced_last_call_at_seconds": paced["last_call_at_seconds"],
        "paced_tail_seconds": paced["tail_after_last_call_seconds"],
        "floor_seconds": round(floor, 3),
        "ratio_to_floor": round(ratio, 4),
        "pacing_target_met": ratio <= 1.15,
        "http_429_from_kraken": paced["http_429_from_kraken"],
        "peak_rss_mb": rss,
        "rss_flat_ratio": round(flat_big["peak_rss_mb"] / flat_small["peak_rss_mb"], 3),
        "rss_target_met_small_pages": max(flat_big["peak_rss_mb"],
                                          flat_small["peak_rss_mb"]) < 400,
        "cases": [paced, free, flat_big, flat_small],
        "machine": f"{platform.machine()} {os.cpu_count()} cores "
                   f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
