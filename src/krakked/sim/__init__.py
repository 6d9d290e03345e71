"""krakked.sim: an offline Kraken (Spot REST, Futures REST) for tests, demos and benchmarks.

It speaks Kraken's documented API (https://docs.kraken.com/api/): the same paths, payload
shapes, error strings, signatures, nonce rules and rate-limit models, over a deterministic market
and account made from a seed. Use it in-process (``Simulator(...).transport()`` for httpx) or
served on 127.0.0.1 (``krakked sim serve``).
"""

from __future__ import annotations

from krakked.sim.app import Simulator
from krakked.sim.config import FaultRule, SimClock, SimConfig, parse_faults

__all__ = ["FaultRule", "SimClock", "SimConfig", "Simulator", "parse_faults"]
