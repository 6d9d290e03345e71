"""A simulated Futures account's history, made from the seed and the API key: executions, the
position updates they cause (plus daily funding realisations) and the account log.

The history is generated once, over ``config.origin`` .. origin + ``SPAN_DAYS`` days, in compact
integer columns; callers show only what lies at or before ``config.clock()``. ``futures``
renders it as Kraken's Futures REST and history endpoints.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import uuid
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime

from krakked.sim.config import SPAN_DAYS, AccountSpec, SimConfig
from krakked.sim.market import SimMarket

__all__ = [
    "ACTION_INFO",
    "CONTRACTS",
    "EXEC_CASH",
    "EXEC_POSITION",
    "FUNDING",
    "SCALE",
    "TRANSFER",
    "Contract",
    "FuturesBook",
    "PriceSource",
    "fmt_scaled",
    "iso_ms",
]


def iso_ms(ts_ms: int) -> str:
    """Unix ms -> ``2026-04-04T16:10:46.260Z``."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ts_ms % 1000:03d}Z")


def _make_uuid(*parts: object) -> str:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


SCALE = 10**8
"""Futures amounts are kept as integers in units of 1e-8."""


def fmt_scaled(n: int) -> str:
    """An integer in 1e-8 units as a plain decimal string without trailing zeros."""
    sign = "-" if n < 0 else ""
    whole, frac = divmod(abs(n), SCALE)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:08d}".rstrip("0")


@dataclass(frozen=True)
class Contract:
    """A simulated Futures contract."""

    symbol: str
    pair: str  # XBT:USD
    underlyings: tuple[str, ...]  # Spot pair ids/names tried for the price
    ratio: float  # price relative to XBT when no Spot pair exists
    tick: int  # price step, 1e-8 units
    step: int  # quantity step, 1e-8 units
    index: str

    @property
    def mark_step(self) -> int:
        return max(1, self.tick // 100)


CONTRACTS: tuple[Contract, ...] = (
    Contract("PF_XBTUSD", "XBT:USD", ("XXBTZUSD", "XBTUSD"), 1.0, SCALE, 10**4, "in_xbtusd"),
    Contract("PF_ETHUSD", "ETH:USD", ("XETHZUSD", "ETHUSD"), 1 / 30, SCALE // 10, 10**5,
             "in_ethusd"),
    Contract("PF_SOLUSD", "SOL:USD", ("SOLUSD",), 1 / 600, SCALE // 100, 10**6, "in_solusd"),
)
"""The contracts the simulated account trades (flex, linear, margined in USD)."""

_CONTRACT_CUMULATIVE = (0.55, 0.85, 1.0)  # PF_XBTUSD 55 %, PF_ETHUSD 30 %, PF_SOLUSD 15 %

_X_COLUMNS = (
    ("x_ts", "q"), ("x_contract", "b"), ("x_dir", "b"), ("x_maker", "b"), ("x_qty", "q"),
    ("x_price", "q"), ("x_mark", "q"), ("x_fee", "q"), ("x_old_pos", "q"), ("x_new_pos", "q"),
    ("x_old_avg", "q"), ("x_new_avg", "q"), ("x_pnl", "q"), ("x_cash_old", "q"),
    ("x_cash_new", "q"), ("x_order", "q"), ("x_filled", "q"),
)
"""Execution columns, in the order of the rows ``_execute`` builds."""

# Futures action kinds (also the low bits of the timeline codes).
EXEC_CASH, EXEC_POSITION, FUNDING, TRANSFER = 0, 1, 2, 3
ACTION_INFO = {EXEC_CASH: "futures trade", EXEC_POSITION: "futures trade",
               FUNDING: "funding rate change", TRANSFER: "transfer"}


class PriceSource:
    """Contract prices from the Spot market: hourly samples of ``market.price_at``, linearly
    interpolated (so 100,000 executions need at most one market call per hour of history)."""

    def __init__(self, market: SimMarket) -> None:
        self.market = market
        self._cache: dict[tuple[str, int], float] = {}
        self._pairs: dict[str, tuple[str, float]] = {}

    def _resolve(self, contract: Contract) -> tuple[str, float]:
        """(Spot pair id, multiplier) behind ``contract``: its own pair, else XBT x ratio."""
        hit = self._pairs.get(contract.symbol)
        if hit is None:
            hit = self._lookup(contract.underlyings, 1.0)
            if hit is None:
                hit = self._lookup(CONTRACTS[0].underlyings, contract.ratio) or (
                    "XXBTZUSD", contract.ratio)
            self._pairs[contract.symbol] = hit
        return hit

    def _lookup(self, names: tuple[str, ...], ratio: float) -> tuple[str, float] | None:
        for name in names:
            try:
                return self.market.pair(name).id, ratio
            except KeyError:
                continue
        return None

    def _hour(self, pid: str, hour: int) -> float:
        key = (pid, hour)
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = float(self.market.price_at(pid, hour * 3600.0))
        return value

    def at(self, contract: Contract, t: float) -> float:
        """The contract's index price at ``t`` (Unix seconds), interpolated hourly."""
        pid, ratio = self._resolve(contract)
        hour, rest = divmod(t, 3600.0)
        lo = self._hour(pid, int(hour))
        hi = self._hour(pid, int(hour) + 1)
        return (lo + (hi - lo) * rest / 3600.0) * ratio

    def exact(self, contract: Contract, t: float) -> float:
        """The contract's index price at ``t`` straight from the market (for tickers)."""
        pid, ratio = self._resolve(contract)
        return float(self.market.price_at(pid, t)) * ratio


def _round_to(value: float, step: int) -> int:
    """``value`` (a float in whole units) as a multiple of ``step`` in 1e-8 units (>= step)."""
    return max(step, round(value * SCALE / step) * step)


class FuturesBook:
    """A Futures account's history: executions (some orders fill twice, some fills share a
    millisecond), the position updates they cause plus daily funding realisations, and the
    account log — two rows per execution (cash leg with fee/PnL, position leg with old/new
    size), daily "funding rate change" rows per open position and a few "transfer" rows.

    Rows live in compact integer columns (``array``), 1e-8 units; uids are derived on demand.
    All three timelines are in time order; account-log ids are the 1-based row positions.
    """

    MAKER_FEE = (2, 10_000)  # 0.02 %
    TAKER_FEE = (5, 10_000)  # 0.05 %

    def __init__(self, spec: AccountSpec, market: SimMarket, config: SimConfig) -> None:
        self.spec = spec
        self.market = market
        self.config = config
        self.contracts = CONTRACTS
        self.prices = PriceSource(market)
        self.seed_text = f"krakked-sim:{config.seed}:{spec.api_key}:futures"
        self.rng = random.Random(self.seed_text)
        self.account_uid = _make_uuid(self.seed_text, "account")
        self.origin_ms = int(config.origin.timestamp() * 1000)
        n = spec.history_size or 500
        # executions: one array per column of _X_COLUMNS (filled at the end of _build)
        self.x_ts = array("q")
        self.x_contract = array("b")
        self.x_dir = array("b")  # +1 buy, -1 sell
        self.x_maker = array("b")
        self.x_qty = array("q")
        self.x_price = array("q")
        self.x_mark = array("q")
        self.x_fee = array("q")
        self.x_old_pos = array("q")
        self.x_new_pos = array("q")
        self.x_old_avg = array("q")
        self.x_new_avg = array("q")
        self.x_pnl = array("q")
        self.x_cash_old = array("q")
        self.x_cash_new = array("q")
        self.x_order = array("q")
        self.x_filled = array("q")  # the order's cumulative fill after this execution
        self._xrows: list[tuple[int, ...]] = []  # pending rows, moved to the arrays in chunks
        self._xcount = 0
        # orders (ours)
        self.o_ts = array("q")
        self.o_qty = array("q")
        self.o_limit = array("q")
        # funding realisations
        self.f_ts = array("q")
        self.f_contract = array("b")
        self.f_rate = array("d")
        self.f_pos = array("q")
        self.f_avg = array("q")
        self.f_mark = array("q")
        self.f_amount = array("q")
        self.f_cash_old = array("q")
        self.f_cash_new = array("q")
        # transfers
        self.t_ts = array("q")
        self.t_amount = array("q")
        self.t_cash_old = array("q")
        self.t_cash_new = array("q")
        # timelines: code = index << 2 | kind
        self.log_code = array("q")
        self.log_ts = array("q")
        self.pos_code = array("q")
        self.pos_ts = array("q")
        self._build(n)

    # -- construction --------------------------------------------------------------------------

    def _build(self, n: int) -> None:
        rng = self.rng
        day_ms = 86_400_000
        lo, hi = self.origin_ms + day_ms, self.origin_ms + (SPAN_DAYS - 1) * day_ms
        fills: list[int] = []
        total = 0
        while total < n:
            k = 2 if n - total >= 2 and rng.random() < 0.12 else 1
            fills.append(k)
            total += k
        opens = sorted(rng.randint(lo, hi) for _ in fills)
        first_day = (lo // day_ms) * day_ms
        ticks = list(range(first_day + day_ms, hi + day_ms, day_ms))
        base = 25_000 + 2 * n
        transfers = [
            (self.origin_ms + 3_600_000 + rng.randint(0, 600_000), base * SCALE),
            (self.origin_ms + 120 * day_ms + rng.randint(0, day_ms), 10_000 * SCALE),
            (self.origin_ms + 250 * day_ms + rng.randint(0, day_ms), -5_000 * SCALE),
        ]
        # side events in time order: (ts, kind, payload)
        side: list[tuple[int, int, int]] = [(t, TRANSFER, amt) for t, amt in transfers]
        side += [(t, FUNDING, 0) for t in ticks]
        side.sort()
        self._cash = 0
        self._pos = [0] * len(self.contracts)
        self._avg = [0] * len(self.contracts)
        si = 0
        for oi, ts in enumerate(opens):
            while si < len(side) and side[si][0] <= ts:
                self._side_event(*side[si])
                si += 1
            next_ts = min(opens[oi + 1] if oi + 1 < len(opens) else hi + day_ms,
                          side[si][0] if si < len(side) else hi + day_ms)
            self._gen_order(ts, next_ts, fills[oi])
        while si < len(side):
            self._side_event(*side[si])
            si += 1
        self._flush()
        del self._cash, self._pos, self._avg, self._xrows, self._xcount

    def _flush(self) -> None:
        """Move the pending execution rows into the column arrays."""
        if self._xrows:
            for (name, _), values in zip(_X_COLUMNS, zip(*self._xrows, strict=True),
                                         strict=True):
                getattr(self, name).extend(values)
            self._xrows.clear()

    def _side_event(self, ts: int, kind: int, payload: int) -> None:
        if kind == TRANSFER:
            index = len(self.t_ts)
            self.t_ts.append(ts)
            self.t_amount.append(payload)
            self.t_cash_old.append(self._cash)
            self._cash += payload
            self.t_cash_new.append(self._cash)
            self.log_code.append(index << 2 | TRANSFER)
            self.log_ts.append(ts)
            return
        for ci, contract in enumerate(self.contracts):
            pos = self._pos[ci]
            if not pos:
                continue
            mark = _round_to(self.prices.at(contract, ts / 1000), contract.mark_step)
            rate = round(self.rng.gauss(1.5e-5, 6e-5), 10)
            amount = -round(pos * mark * rate / SCALE)
            index = len(self.f_ts)
            self.f_ts.append(ts)
            self.f_contract.append(ci)
            self.f_rate.append(rate)
            self.f_pos.append(pos)
            self.f_avg.append(self._avg[ci])
            self.f_mark.append(mark)
            self.f_amount.append(amount)
            self.f_cash_old.append(self._cash)
            self._cash += amount
            self.f_cash_new.append(self._cash)
            self.log_code.append(index << 2 | FUNDING)
            self.log_ts.append(ts)
            self.pos_code.append(index << 2 | FUNDING)
            self.pos_ts.append(ts)

    def _gen_order(self, ts: int, next_ts: int, n_fills: int) -> None:
        rng = self.rng
        ci = bisect.bisect_right(_CONTRACT_CUMULATIVE, rng.random())
        contract = self.contracts[ci]
        index_price = self.prices.at(contract, ts / 1000)
        pos = self._pos[ci]
        step = contract.step
        qty = _round_to(math.exp(rng.uniform(math.log(200), math.log(3000))) / index_price,
                        step)
        pos_notional = abs(pos) / SCALE * index_price
        r = rng.random()
        if pos == 0:
            direction = 1 if rng.random() < 0.5 else -1
        elif pos_notional > 15_000 or r < 0.3:  # reduce (sometimes close exactly)
            direction = -1 if pos > 0 else 1
            qty = abs(pos) if rng.random() < 0.35 or qty >= abs(pos) else qty
        elif r < 0.4:  # reverse
            direction = -1 if pos > 0 else 1
            qty = abs(pos) + qty
        else:
            direction = 1 if rng.random() < 0.5 else -1
        if qty < step * n_fills:
            qty = step * n_fills
        maker = rng.random() < 0.4
        order = len(self.o_ts)
        self.o_ts.append(ts - (1_000 + int(rng.random() * 3_599_000) if maker
                               else 5 + int(rng.random() * 395)))
        self.o_qty.append(qty)
        # makers rest at or better than the index; takers cross with an IoC limit 0.5 % away
        slip = -rng.uniform(0, 0.0006) if maker else 0.005
        limit = _round_to(index_price * (1 + direction * slip), contract.tick)
        self.o_limit.append(limit)
        parts = [qty]
        if n_fills == 2:
            first = max(step, min(qty - step, round(qty * rng.uniform(0.3, 0.7) / step) * step))
            parts = [first, qty - first]
        filled = 0
        fill_ts = ts
        for k, part in enumerate(parts):
            if k:
                room = next_ts - fill_ts - 1
                fill_ts += 0 if not maker or room < 2 else 1 + int(
                    rng.random() * (min(30_000, room) - 1))
            mark = _round_to(self.prices.at(contract, fill_ts / 1000), contract.mark_step)
            if maker:
                price = limit
            else:
                price = _round_to(mark / SCALE * (1 + direction * rng.uniform(0, 0.0004)),
                                  contract.tick)
            filled += part
            self._execute(ci, fill_ts, direction, part, price, mark, maker, order, filled)

    def _execute(self, ci: int, ts: int, direction: int, qty: int, price: int, mark: int,
                 maker: bool, order: int, filled: int) -> None:
        old = self._pos[ci]
        avg = self._avg[ci]
        new = old + direction * qty
        pnl = 0
        if old == 0 or (old > 0) == (direction > 0):
            new_avg = price if old == 0 else (abs(old) * avg + qty * price) // abs(new)
        else:
            closed = min(qty, abs(old))
            pnl = closed * (price - avg) * (1 if old > 0 else -1) // SCALE
            new_avg = avg if qty < abs(old) else (0 if qty == abs(old) else price)
        num, den = self.MAKER_FEE if maker else self.TAKER_FEE
        fee = qty * price * num // (SCALE * den)
        rows = self._xrows
        index = self._xcount
        self._xcount = index + 1
        cash = self._cash
        self._cash = cash + pnl - fee
        rows.append((ts, ci, direction, 1 if maker else 0, qty, price, mark, fee, old, new, avg,
                     new_avg, pnl, cash, self._cash, order, filled))
        if len(rows) >= 4096:
            self._flush()
        self._pos[ci] = new
        self._avg[ci] = new_avg
        self.log_code.append(index << 2 | EXEC_CASH)
        self.log_code.append(index << 2 | EXEC_POSITION)
        self.log_ts.append(ts)
        self.log_ts.append(ts)
        self.pos_code.append(index << 2 | EXEC_CASH)
        self.pos_ts.append(ts)

    # -- what handlers use ---------------------------------------------------------------------

    def now_ms(self) -> int:
        """The simulator clock in Unix milliseconds."""
        return int(self.config.clock() * 1000)

    def uid(self, kind: str, index: int) -> str:
        """A stable uuid for row ``index`` of ``kind`` (``exec``, ``element``, ``order``, ...)."""
        return _make_uuid(self.seed_text, kind, index)

    def counterparty(self, index: int) -> str:
        """The other side's account uid of execution ``index`` (a pool of 40 accounts)."""
        return _make_uuid(self.seed_text, "counterparty", index * 7919 % 40)

    def position_at(self, now_ms: int | None = None) -> list[tuple[int, int, int, int]]:
        """Per contract with a non-zero position at ``now_ms``: (contract index, signed size,
        average entry price, last fill ms), from the last visible execution of that contract."""
        t = self.now_ms() if now_ms is None else now_ms
        end = bisect.bisect_right(self.x_ts, t)
        seen: dict[int, tuple[int, int, int, int]] = {}
        for i in range(end - 1, -1, -1):
            ci = self.x_contract[i]
            if ci not in seen:
                seen[ci] = (ci, self.x_new_pos[i], self.x_new_avg[i], self.x_ts[i])
                if len(seen) == len(self.contracts):
                    break
        return [seen[ci] for ci in sorted(seen) if seen[ci][1]]

    def cash_at(self, now_ms: int | None = None) -> int:
        """The flex USD cash balance after the last visible account-log row."""
        t = self.now_ms() if now_ms is None else now_ms
        end = bisect.bisect_right(self.log_ts, t)
        if not end:
            return 0
        code = self.log_code[end - 1]
        index, kind = code >> 2, code & 3
        if kind in (EXEC_CASH, EXEC_POSITION):
            return self.x_cash_new[index]
        if kind == FUNDING:
            return self.f_cash_new[index]
        return self.t_cash_new[index]

    def index_price(self, contract: Contract, t: float) -> float:
        """The contract's current price (Spot market, exact) at ``t`` seconds."""
        return self.prices.exact(contract, t)
