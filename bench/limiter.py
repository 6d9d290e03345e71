"""Benchmark: 40 private Spot calls at Starter tier against krakked.sim enforcing Kraken's counter.

Kraken's model (Starter: max 15, decay 0.33/s) allows 15 calls at once, then one per 1/0.33 s.
The theoretical minimum for N calls of cost 1 is therefore (N - 15) / 0.33 seconds. We report the
wall time through krakked's SpotClient as built by default (real clock, real signing, nonce state
and the key's call counter persisted under the same file lock), its ratio to that minimum
(target: within 5 %), and the number of rate-limit errors (target: 0).

Run: ``uv run python bench/limiter.py [--calls 40] [--tier starter]``
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

from krakked.config import load_settings
from krakked.credentials import KeyPair
from krakked.kraken.limits import SPOT_TIERS
from krakked.kraken.spot import SpotClient
from krakked.sim import SimConfig, Simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--tier", default="starter", choices=sorted(SPOT_TIERS))
    args = parser.parse_args()

    max_counter, decay = SPOT_TIERS[args.tier]
    minimum = max(0, args.calls - max_counter) / decay
    sim = Simulator(SimConfig(tier=args.tier, public_rate=0))
    spec = sim.config.account("spot")
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({"KRAKKED_HOME": home, "KRAKKED_TIER": args.tier})
        client = SpotClient(
            KeyPair.create("spot", spec.api_key, spec.api_secret, "bench"),
            settings=settings,
            transport=sim.transport(),
        )
        shared = client.limiter.state is not None
        start = time.monotonic()
        for _ in range(args.calls):
            client.get_balance()
        wall = time.monotonic() - start
    result = {
        "benchmark": "limiter",
        "tier": args.tier,
        "calls": args.calls,
        "wall_seconds": round(wall, 3),
        "theoretical_minimum_seconds": round(minimum, 3),
        "ratio_to_minimum": round(wall / minimum, 4) if minimum else None,
        "rate_limit_errors": sim.counter.rejections,
        "client_rate_limited": client.stats.rate_limited,
        "client_rate_limit_waits": client.stats.rate_limit_waits,
        "counter_persisted": shared,
        "max_counter_seen_by_kraken": round(sim.counter.peak, 3),
        "machine": f"{platform.machine()} {platform.python_implementation()} "
                   f"{platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    ok = result["rate_limit_errors"] == 0 and (minimum == 0 or wall / minimum <= 1.05)
    print("target met" if ok else "TARGET MISSED: within 5 % of the minimum, 0 rate-limit errors")


if __name__ == "__main__":
    main()
