"""The simulator's settings: seed, tier, clocks, rate-limit parameters, faults, demo accounts."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "DEFAULT_SPOT_COSTS",
    "FAULT_KINDS",
    "SPAN_DAYS",
    "AccountSpec",
    "FaultRule",
    "SimClock",
    "SimConfig",
    "parse_faults",
]

FAULT_KINDS = {
    "http500": "HTTP 500 with an HTML body (Cloudflare-style)",
    "http502": "HTTP 502 with an HTML body",
    "timeout": "no answer in time (the client sees a read timeout)",
    "unavailable": "EService:Unavailable (Spot) / Unavailable (Futures)",
    "busy": "EService:Busy (Spot)",
    "toomany": "EGeneral:Too many requests on HTTP 200 (Spot)",
    "ratelimit": "EAPI:Rate limit exceeded (Spot) / apiLimitExceeded / HTTP 429 (Futures)",
    "malformed": "a truncated JSON body",
    "notoken": "a full history page without its continuation token (Futures history)",
    "permission": "permission denied on the endpoint",
}
"""Fault kinds and what each does; ``--faults kind[:endpoint]=probability,...``."""


DEFAULT_SPOT_COSTS: dict[str, int] = {
    "Ledgers": 4, "TradesHistory": 4, "ClosedOrders": 4, "QueryLedgers": 4,
}
"""Spot private calls the counter charges more than 1 for (Kraken says +2 or +4: UNCONFIRMED)."""


@dataclass(frozen=True)
class FaultRule:
    """Inject ``kind`` with ``probability`` on ``endpoint`` (``None`` = every endpoint)."""

    kind: str
    probability: float
    endpoint: str | None = None


def parse_faults(spec: str | None) -> tuple[FaultRule, ...]:
    """Parse ``http500=0.05,unavailable=0.02,permission:Ledgers=1`` into rules.

    Raises ``ValueError`` naming the bad part.
    """
    rules: list[FaultRule] = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        kind, _, endpoint = name.partition(":")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault {kind!r} in {part!r}; known: {', '.join(sorted(FAULT_KINDS))}"
            )
        try:
            probability = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"fault probability in {part!r} is not a number") from None
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault probability in {part!r} must be within 0..1")
        rules.append(FaultRule(kind, probability, endpoint.strip() or None))
    return tuple(rules)


class SimClock:
    """A settable clock for tests: ``now()`` wall seconds, ``monotonic()``, ``sleep`` advances."""

    def __init__(self, start: float | datetime) -> None:
        self.t = start.timestamp() if isinstance(start, datetime) else float(start)

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    sleep = advance


SPAN_DAYS = 330
"""Account histories are generated over ``SimConfig.origin`` .. origin + SPAN_DAYS days."""


@dataclass(frozen=True)
class AccountSpec:
    """One simulated account: its key pair and how much history it has."""

    name: str
    api_key: str
    api_secret: str
    product: str  # "spot" | "futures"
    history_size: int = 0  # 0 = the default size for the product


def _derive(seed: int, label: str, nbytes: int) -> bytes:
    return hashlib.sha512(f"krakked-sim:{seed}:{label}".encode()).digest()[:nbytes]


def demo_account(seed: int, product: str, *, history_size: int = 0) -> AccountSpec:
    """The deterministic demo key pair for ``seed`` (printed by ``krakked sim serve``)."""
    prefix = "SIMSPOT" if product == "spot" else "SIMFUT"
    key = prefix + base64.b32encode(_derive(seed, f"{product}-key", 30)).decode().rstrip("=")
    secret = base64.b64encode(_derive(seed, f"{product}-secret", 64)).decode()
    return AccountSpec(f"demo-{product}", key, secret, product, history_size)


@dataclass
class SimConfig:
    """Everything that shapes a simulator; all defaults give a Kraken-like Starter account."""

    seed: int = 7
    tier: str = "starter"
    origin: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # first trade of every tape
    clock: Callable[[], float] = time.time  # "now" for tapes and timestamps
    monotonic: Callable[[], float] = time.monotonic  # for rate limits
    faults: tuple[FaultRule, ...] = ()
    # Spot public pacing per client IP: bucket of ``public_burst`` refilled at ``public_rate``/s
    # (0 disables). Kraken: ~1 req/s sustained is safe, bursts of ~30 observed (UNCONFIRMED).
    public_rate: float = 1.0
    public_burst: int = 20
    spot_costs: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SPOT_COSTS))
    rate_limits: bool = True  # False: no Spot counter, no Futures budgets (benchmarks of I/O)
    derivatives_budget: float = 500.0  # units per 10 s
    history_capacity: float = 100.0
    history_refill_per_second: float = 100.0 / 600.0
    history_page_max: int = 1000  # executions / positions page size ceiling
    timeout_seconds: float = 35.0  # how long a "timeout" fault stalls when served over HTTP
    spot_trades: int = 0  # own trades in the demo Spot account (0 = default)
    futures_executions: int = 0  # executions in the demo Futures account (0 = default)
    accounts: list[AccountSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tier not in ("starter", "intermediate", "pro"):
            raise ValueError(f"unknown tier {self.tier!r}: starter, intermediate or pro")
        if not self.accounts:
            self.accounts = [
                demo_account(self.seed, "spot", history_size=self.spot_trades),
                demo_account(self.seed, "futures", history_size=self.futures_executions),
            ]

    def account(self, product: str) -> AccountSpec:
        """The first account of ``product`` (the demo one unless accounts were given)."""
        return next(a for a in self.accounts if a.product == product)
