"""The simulator's deterministic market: Kraken-like pairs and assets, and one trade tape per pair
(a pure function of seed, pair and time) from which Trades, OHLC, Ticker, Depth and Spread derive.

Tapes are made lazily, one UTC day at a time, from ``random.Random(hash(seed, pair, day))``; a
day's trade count is a hash too, so trade ids (dense, per pair, starting at 1 at
``SimConfig.origin``) are known without generating earlier days. Only trades at or before the
clock's "now" are served, so the tape grows with wall time. Choices where Kraken's behaviour is
UNCONFIRMED (see ``shared/kraken/rest.md``):

* Trades ``since``: a value below ``10**11`` is Unix seconds and *inclusive* (trades at or after
  it); anything larger is Kraken's nanosecond cursor and *exclusive* (trades strictly after it).
  Every trade has a distinct nanosecond stamp (its microsecond time * 1000 + its rank among trades
  sharing that microsecond), so ``since=last`` never skips nor repeats a trade. Without ``since``
  the most recent ``count`` trades are returned.
* OHLC ``since``: bars whose open time is strictly after it (the running bar is always present);
  ``last`` is the open time of the last committed bar. Empty intervals carry the previous close
  (vwap = close) with volume 0 and count 0. Weekly bars open Monday 00:00 UTC; 15-day bars open at
  multiples of 15 days since the epoch.
* Prices on Trades, Ticker, Depth and Spread of the legacy X/Z pairs carry at least 5 decimals
  (``"30243.40000"`` for XBTUSD, as recorded responses do); OHLC uses ``pair_decimals``.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from operator import mul
from typing import Any

from krakked.sim.config import SimConfig

__all__ = [
    "ASSETS",
    "OHLC_INTERVALS",
    "PAIRS",
    "Market",
    "SimAsset",
    "SimPair",
    "parse_since_ns",
]

DAY_US = 86_400_000_000
DAY_S = 86_400
OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
_MONDAY = 4 * DAY_S  # 1970-01-05 was the first Monday after the epoch
_SHARED = 0.05  # share of trades that reuse the previous trade's timestamp
_NOISE = 0.00015  # per-trade price noise (relative, times the asset's volatility)

Agg = tuple[int, int, int, int, int, int, int]  # open, high, low, close, volume, sum(p*v), count


# --- the pair and asset tables ----------------------------------------------------------------


@dataclass(frozen=True)
class SimAsset:
    """One asset as Kraken's ``Assets`` lists it, plus the tape's price level (``usd``)."""

    id: str
    altname: str
    usd: float  # typical value in USD (centre of the price curve)
    decimals: int = 10
    display_decimals: int = 5
    vol: float = 1.0  # volatility multiplier of the price curve (0 = constant)
    collateral_value: float | None = None
    status: str = "enabled"

    def row(self) -> dict[str, Any]:
        """The asset's ``Assets`` entry."""
        out: dict[str, Any] = {"aclass": "currency", "altname": self.altname,
                               "decimals": self.decimals,
                               "display_decimals": self.display_decimals}
        if self.collateral_value is not None:
            out["collateral_value"] = self.collateral_value
        out["status"] = self.status
        return out


_FEES = ((0, 0.26), (50000, 0.24), (100000, 0.22), (250000, 0.2), (500000, 0.18),
         (1000000, 0.16), (2500000, 0.14), (5000000, 0.12), (10000000, 0.1))
_FEES_MAKER = ((0, 0.16), (50000, 0.14), (100000, 0.12), (250000, 0.1), (500000, 0.08),
               (1000000, 0.06), (2500000, 0.04), (5000000, 0.02), (10000000, 0.0))
_STABLE_FEES = ((0, 0.2), (50000, 0.16), (100000, 0.12), (250000, 0.08), (500000, 0.04),
                (1000000, 0.0))


@dataclass(frozen=True)
class SimPair:
    """One pair: Kraken's ``AssetPairs`` fields plus the tape's activity (trades per day)."""

    id: str
    altname: str
    wsname: str
    base: str
    quote: str
    pair_decimals: int
    lot_decimals: int
    cost_decimals: int
    ordermin: str
    costmin: str
    activity: int = 100
    status: str = "online"
    leverage_buy: tuple[int, ...] = ()
    leverage_sell: tuple[int, ...] = ()
    stable: bool = False
    long_position_limit: int | None = None
    short_position_limit: int | None = None
    margin_call: int = 80
    margin_stop: int = 40

    @property
    def tick_size(self) -> str:
        """One unit of the last price decimal (Kraken's ``tick_size``), a plain decimal string
        as Kraken sends it (``0.0000000001``, never ``1E-10``)."""
        return format(Decimal(1).scaleb(-self.pair_decimals), "f")

    @property
    def legacy(self) -> bool:
        """An old X/Z-coded pair (``XXBTZUSD``, ``XETHXXBT``)."""
        return len(self.id) == 8 and self.id[0] == "X" and self.id[4] in "XZ"

    @property
    def price_decimals(self) -> int:
        """Decimals of prices on Trades, Ticker, Depth and Spread (OHLC uses pair_decimals)."""
        return max(self.pair_decimals, 5) if self.legacy else self.pair_decimals

    @property
    def margin(self) -> bool:
        return bool(self.leverage_buy or self.leverage_sell)

    @property
    def v2name(self) -> str:
        """The WS v2 style name (``BTC/USD``, ``DOGE/USD``)."""
        base, quote = self.wsname.split("/")
        swap = {"XBT": "BTC", "XDG": "DOGE"}
        return f"{swap.get(base, base)}/{swap.get(quote, quote)}"

    def row(self, info: str = "info") -> dict[str, Any]:
        """The pair's ``AssetPairs`` entry for ``info`` (info | leverage | fees | margin)."""
        fees = [list(f) for f in (_STABLE_FEES if self.stable else _FEES)]
        maker = [list(f) for f in (_STABLE_FEES if self.stable else _FEES_MAKER)]
        if info == "leverage":
            return {"leverage_buy": list(self.leverage_buy),
                    "leverage_sell": list(self.leverage_sell)}
        if info == "fees":
            return {"fees": fees, "fees_maker": maker, "fee_volume_currency": "ZUSD"}
        if info == "margin":
            return {"margin_call": self.margin_call, "margin_stop": self.margin_stop}
        out: dict[str, Any] = {
            "altname": self.altname, "wsname": self.wsname, "aclass_base": "currency",
            "base": self.base, "aclass_quote": "currency", "quote": self.quote, "lot": "unit",
            "cost_decimals": self.cost_decimals, "pair_decimals": self.pair_decimals,
            "lot_decimals": self.lot_decimals, "lot_multiplier": 1,
            "leverage_buy": list(self.leverage_buy), "leverage_sell": list(self.leverage_sell),
            "fees": fees, "fees_maker": maker, "fee_volume_currency": "ZUSD",
            "margin_call": self.margin_call, "margin_stop": self.margin_stop,
            "ordermin": self.ordermin, "costmin": self.costmin, "tick_size": self.tick_size,
            "status": self.status,
        }
        if self.long_position_limit is not None:
            out["long_position_limit"] = self.long_position_limit
        if self.short_position_limit is not None:
            out["short_position_limit"] = self.short_position_limit
        return out


def _a(id: str, altname: str, usd: float, decimals: int = 10, display: int = 5,
       vol: float = 1.0, collateral: float | None = None) -> SimAsset:
    return SimAsset(id, altname, usd, decimals, display, vol, collateral)


ASSETS: tuple[SimAsset, ...] = (
    _a("ZUSD", "USD", 1.0, 4, 2, 0.0, 1),
    _a("ZEUR", "EUR", 1.16, 4, 2, 0.05, 1),
    _a("XXBT", "XBT", 90000.0, 10, 5, 1.0, 1),
    _a("XETH", "ETH", 3000.0, 10, 5, 1.2, 1),
    _a("USDT", "USDT", 1.0, 8, 4, 0.004, 1),
    _a("USDC", "USDC", 1.0, 8, 4, 0.003, 1),
    _a("DAI", "DAI", 1.0, 10, 5, 0.004, 0.95),
    _a("XXRP", "XRP", 2.2, 8, 5, 1.5, 0.9),
    _a("XLTC", "LTC", 85.0, 10, 5, 1.3, 0.9),
    _a("XXLM", "XLM", 0.25, 8, 5, 1.4, 0.8),
    _a("XZEC", "ZEC", 400.0, 10, 5, 1.8),
    _a("XETC", "ETC", 14.0, 10, 5, 1.4, 0.7),
    _a("XXMR", "XMR", 380.0, 10, 5, 1.2),
    _a("XXDG", "XDG", 0.16, 8, 2, 1.7, 0.8),
    _a("SOL", "SOL", 140.0, 10, 5, 1.5, 0.9),
    _a("DOT", "DOT", 2.6, 10, 8, 1.5, 0.8),
    _a("ADA", "ADA", 0.45, 8, 6, 1.5, 0.8),
    _a("LINK", "LINK", 13.0, 10, 5, 1.5, 0.8),
    _a("AVAX", "AVAX", 14.0, 10, 5, 1.6, 0.8),
    _a("ATOM", "ATOM", 2.5, 8, 6, 1.5, 0.7),
    _a("UNI", "UNI", 6.0, 10, 5, 1.6, 0.7),
    _a("AAVE", "AAVE", 180.0, 10, 5, 1.6, 0.7),
    _a("ALGO", "ALGO", 0.14, 8, 5, 1.5, 0.7),
    _a("FIL", "FIL", 1.6, 10, 5, 1.6),
    _a("NEAR", "NEAR", 1.9, 10, 5, 1.7),
    _a("ARB", "ARB", 0.22, 10, 5, 1.7),
    _a("OP", "OP", 0.35, 10, 5, 1.7),
    _a("SHIB", "SHIB", 0.0000085, 5, 5, 1.8),
    _a("PEPE", "PEPE", 0.0000045, 5, 5, 2.0),
    _a("TRX", "TRX", 0.28, 8, 6, 1.0, 0.7),
    _a("BCH", "BCH", 520.0, 10, 5, 1.3, 0.8),
    _a("XTZ", "XTZ", 0.55, 8, 5, 1.4),
    _a("GRT", "GRT", 0.05, 10, 5, 1.7),
    _a("COMP", "COMP", 30.0, 10, 5, 1.6),
    _a("SNX", "SNX", 0.5, 10, 5, 1.7),
    _a("CRV", "CRV", 0.4, 10, 5, 1.8),
    _a("SAND", "SAND", 0.15, 10, 5, 1.7),
    _a("MANA", "MANA", 0.16, 10, 5, 1.7),
    _a("INJ", "INJ", 6.0, 10, 5, 1.8),
    _a("SUI", "SUI", 1.6, 10, 5, 1.9),
    _a("TIA", "TIA", 0.6, 10, 5, 1.9),
    _a("KSM", "KSM", 9.0, 10, 5, 1.5),
    _a("APT", "APT", 2.2, 8, 5, 1.7),
    _a("POL", "POL", 0.13, 10, 5, 1.7),
    _a("MATIC", "MATIC", 0.2, 10, 5, 0.6),
)


def _p(id: str, altname: str, wsname: str, base: str, quote: str, pd: int, ordermin: str,
       activity: int, *, ld: int = 8, cd: int = 5, costmin: str = "0.5", **kw: Any) -> SimPair:
    return SimPair(id, altname, wsname, base, quote, pd, ld, cd, ordermin, costmin, activity,
                   **kw)


_LEV = (2, 3, 4, 5)

PAIRS: tuple[SimPair, ...] = (
    # legacy X/Z USD pairs (XBT and ETH are margin pairs, like the real ones)
    _p("XXBTZUSD", "XBTUSD", "XBT/USD", "XXBT", "ZUSD", 1, "0.00005", 1500,
       leverage_buy=_LEV, leverage_sell=_LEV, long_position_limit=250,
       short_position_limit=200),
    _p("XETHZUSD", "ETHUSD", "ETH/USD", "XETH", "ZUSD", 2, "0.002", 900,
       leverage_buy=_LEV, leverage_sell=_LEV, long_position_limit=3000,
       short_position_limit=2500),
    _p("XXRPZUSD", "XRPUSD", "XRP/USD", "XXRP", "ZUSD", 5, "2", 350, cd=8),
    _p("XLTCZUSD", "LTCUSD", "LTC/USD", "XLTC", "ZUSD", 2, "0.05", 200),
    _p("XXLMZUSD", "XLMUSD", "XLM/USD", "XXLM", "ZUSD", 6, "12", 120, cd=8),
    _p("XZECZUSD", "ZECUSD", "ZEC/USD", "XZEC", "ZUSD", 2, "0.03", 90),
    _p("XETCZUSD", "ETCUSD", "ETC/USD", "XETC", "ZUSD", 3, "0.3", 40),
    _p("XXMRZUSD", "XMRUSD", "XMR/USD", "XXMR", "ZUSD", 2, "0.03", 60),
    # newer plain USD pairs (DOGE is XDG at Kraken)
    _p("XDGUSD", "XDGUSD", "XDG/USD", "XXDG", "ZUSD", 7, "30", 300, cd=8),
    _p("SOLUSD", "SOLUSD", "SOL/USD", "SOL", "ZUSD", 2, "0.02", 400),
    _p("DOTUSD", "DOTUSD", "DOT/USD", "DOT", "ZUSD", 4, "2", 150),
    _p("ADAUSD", "ADAUSD", "ADA/USD", "ADA", "ZUSD", 6, "10", 250, cd=8),
    _p("LINKUSD", "LINKUSD", "LINK/USD", "LINK", "ZUSD", 5, "0.4", 200),
    _p("AVAXUSD", "AVAXUSD", "AVAX/USD", "AVAX", "ZUSD", 2, "0.4", 150),
    _p("ATOMUSD", "ATOMUSD", "ATOM/USD", "ATOM", "ZUSD", 4, "2", 100),
    _p("UNIUSD", "UNIUSD", "UNI/USD", "UNI", "ZUSD", 3, "0.8", 80),
    _p("AAVEUSD", "AAVEUSD", "AAVE/USD", "AAVE", "ZUSD", 2, "0.03", 70),
    _p("ALGOUSD", "ALGOUSD", "ALGO/USD", "ALGO", "ZUSD", 5, "30", 60, cd=8),
    _p("FILUSD", "FILUSD", "FIL/USD", "FIL", "ZUSD", 3, "3", 60),
    _p("NEARUSD", "NEARUSD", "NEAR/USD", "NEAR", "ZUSD", 3, "2.5", 80),
    _p("ARBUSD", "ARBUSD", "ARB/USD", "ARB", "ZUSD", 4, "20", 70),
    _p("OPUSD", "OPUSD", "OP/USD", "OP", "ZUSD", 4, "12", 50),
    _p("SHIBUSD", "SHIBUSD", "SHIB/USD", "SHIB", "ZUSD", 9, "500000", 150, ld=5, cd=8),
    _p("PEPEUSD", "PEPEUSD", "PEPE/USD", "PEPE", "ZUSD", 10, "1000000", 200, ld=5, cd=8),
    _p("TRXUSD", "TRXUSD", "TRX/USD", "TRX", "ZUSD", 6, "20", 50, cd=8),
    _p("BCHUSD", "BCHUSD", "BCH/USD", "BCH", "ZUSD", 2, "0.01", 120),
    _p("XTZUSD", "XTZUSD", "XTZ/USD", "XTZ", "ZUSD", 4, "10", 30),
    _p("GRTUSD", "GRTUSD", "GRT/USD", "GRT", "ZUSD", 5, "100", 40, cd=8),
    _p("COMPUSD", "COMPUSD", "COMP/USD", "COMP", "ZUSD", 2, "0.2", 25),
    _p("SNXUSD", "SNXUSD", "SNX/USD", "SNX", "ZUSD", 3, "10", 25),
    _p("CRVUSD", "CRVUSD", "CRV/USD", "CRV", "ZUSD", 4, "12", 40),
    _p("SANDUSD", "SANDUSD", "SAND/USD", "SAND", "ZUSD", 5, "30", 30, cd=8),
    _p("MANAUSD", "MANAUSD", "MANA/USD", "MANA", "ZUSD", 5, "30", 30, cd=8),
    _p("INJUSD", "INJUSD", "INJ/USD", "INJ", "ZUSD", 3, "0.8", 60),
    _p("SUIUSD", "SUIUSD", "SUI/USD", "SUI", "ZUSD", 4, "3", 150),
    _p("TIAUSD", "TIAUSD", "TIA/USD", "TIA", "ZUSD", 4, "8", 50),
    _p("KSMUSD", "KSMUSD", "KSM/USD", "KSM", "ZUSD", 2, "0.5", 20),
    _p("APTUSD", "APTUSD", "APT/USD", "APT", "ZUSD", 4, "2.5", 50),
    _p("POLUSD", "POLUSD", "POL/USD", "POL", "ZUSD", 4, "40", 60),
    # stablecoins against USD
    _p("USDTZUSD", "USDTUSD", "USDT/USD", "USDT", "ZUSD", 4, "5", 300, stable=True),
    _p("USDCUSD", "USDCUSD", "USDC/USD", "USDC", "ZUSD", 4, "5", 150, stable=True),
    _p("DAIUSD", "DAIUSD", "DAI/USD", "DAI", "ZUSD", 5, "5", 30, stable=True),
    # not online: MATIC was migrated to POL; its pair only accepts cancels
    _p("MATICUSD", "MATICUSD", "MATIC/USD", "MATIC", "ZUSD", 4, "25", 5,
       status="cancel_only"),
    # USDT, XBT and EUR quotes
    _p("XBTUSDT", "XBTUSDT", "XBT/USDT", "XXBT", "USDT", 1, "0.00005", 400),
    _p("ETHUSDT", "ETHUSDT", "ETH/USDT", "XETH", "USDT", 2, "0.002", 250),
    _p("XRPUSDT", "XRPUSDT", "XRP/USDT", "XXRP", "USDT", 5, "2", 120, cd=8),
    _p("XXRPXXBT", "XRPXBT", "XRP/XBT", "XXRP", "XXBT", 8, "2", 30, cd=10,
       costmin="0.00002"),
    _p("XETHXXBT", "ETHXBT", "ETH/XBT", "XETH", "XXBT", 5, "0.002", 100, cd=10,
       costmin="0.00002", leverage_buy=_LEV, leverage_sell=_LEV, long_position_limit=1000,
       short_position_limit=600),
    _p("XXBTZEUR", "XBTEUR", "XBT/EUR", "XXBT", "ZEUR", 1, "0.00005", 700, costmin="0.45",
       leverage_buy=_LEV, leverage_sell=_LEV, long_position_limit=200,
       short_position_limit=150),
    _p("XETHZEUR", "ETHEUR", "ETH/EUR", "XETH", "ZEUR", 2, "0.002", 300, costmin="0.45"),
)


# --- helpers ----------------------------------------------------------------------------------


def _fmt(units: int, decimals: int, out: int | None = None) -> str:
    """``units`` * 10**-decimals as a decimal string with ``out`` (>= decimals) decimals."""
    if decimals == 0:
        text = str(units)
        return text if not out else f"{text}.{'0' * out}"
    q, r = divmod(units, 10 ** decimals)
    text = f"{q}.{r:0{decimals}d}"
    if out is not None and out > decimals:
        text += "0" * (out - decimals)
    return text


def _div_round(a: int, b: int) -> int:
    """a / b rounded half up (b > 0)."""
    return (2 * a + b) // (2 * b)


def _merge(a: Agg, b: Agg) -> Agg:
    return (a[0], max(a[1], b[1]), min(a[2], b[2]), b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6])


def parse_since_ns(value: str | int | float | Decimal) -> int:
    """Trades ``since`` as a nanosecond cursor: trades strictly after the returned value are due.

    Below ``10**11`` the value is Unix seconds (fractions allowed) and inclusive; otherwise it
    is Kraken's nanosecond cursor. Raises ``ValueError`` if it is not a non-negative number.
    """
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"since {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"since {value!r} is not a non-negative number")
    if number < 10 ** 11:
        return int(number * 10 ** 9) - 1
    return int(number)


class _LRU:
    """A bounded mapping that forgets the least recently used entries beyond ``capacity``
    total weight."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def get(self, key: Any) -> Any:
        hit = self._data.get(key)
        if hit is None:
            return None
        self._data.move_to_end(key)
        return hit[0]

    def put(self, key: Any, value: Any, weight: int) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self._data[key] = (value, weight)
        self.weight += weight
        while self.weight > self.capacity and len(self._data) > 1:
            _, (_, w) = self._data.popitem(last=False)
            self.weight -= w


@dataclass(slots=True)
class _Day:
    """One pair's trades of one UTC day (all of them, also those after "now")."""

    first_id: int
    us: array  # microseconds since the epoch
    ns: array  # distinct nanosecond stamps (the Trades cursor)
    px: array  # price in units of 10**-pair_decimals
    vol: array  # volume in units of 10**-lot_decimals
    side: bytes  # b"b" / b"s" per trade
    kind: bytes  # b"m" / b"l" per trade


_PERIODS = (43 * DAY_S, 11.3 * DAY_S, 2.7 * DAY_S, 14.6 * 3600, 2.9 * 3600, 2460.0, 430.0)
_AMPS = (0.12, 0.05, 0.025, 0.012, 0.005, 0.002, 0.0008)


# --- the market -------------------------------------------------------------------------------


class Market:
    """Pairs, assets and per-pair trade tapes for ``config.seed``, served up to ``config.clock()``.

    Construction is instant; tapes are generated on first use and a bounded amount is cached.
    All methods are thread-safe. Pair arguments named ``pair_id`` also accept an altname or
    wsname; unknown names raise ``KeyError``.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.seed = config.seed
        self._clock = config.clock
        self._origin_us = round(config.origin.timestamp() * 1_000_000)
        self._origin_day = self._origin_us // DAY_US
        self._pairs = PAIRS
        self._assets = {a.id: a for a in ASSETS}
        self._asset_names: dict[str, SimAsset] = {}
        for a in ASSETS:
            self._asset_names[a.id] = a
            self._asset_names.setdefault(a.altname, a)
        self._names: dict[str, SimPair] = {}
        for p in PAIRS:
            for name in (p.id, p.altname, p.wsname, p.v2name, p.v2name.replace("/", "")):
                self._names.setdefault(name.upper(), p)
        self._lock = threading.RLock()
        self._cum: dict[str, list[int]] = {}
        self._curves: dict[str, Callable[[float], float]] = {}
        self._tapes = _LRU(1_000_000)  # trades
        self._aggs = _LRU(400_000)  # bucket aggregates of complete days
        self._summary: dict[tuple[str, int], Agg] = {}  # daily aggregates of complete days

    # -- tables --------------------------------------------------------------------------------

    def pairs(self) -> tuple[SimPair, ...]:
        """Every pair, in table order."""
        return self._pairs

    def assets(self) -> tuple[SimAsset, ...]:
        """Every asset, in table order."""
        return ASSETS

    def pair(self, name: str) -> SimPair:
        """The pair named by its id, altname or wsname (or v2 name); ``KeyError`` if unknown."""
        found = self._names.get(str(name).strip().upper())
        if found is None:
            raise KeyError(name)
        return found

    def asset(self, name: str) -> SimAsset:
        """The asset named by its id or altname; ``KeyError`` if unknown."""
        found = self._asset_names.get(str(name).strip().upper())
        if found is None:
            raise KeyError(name)
        return found

    def asset_pairs_result(self, pair: str | None = None, info: str | None = None
                           ) -> dict[str, Any]:
        """``AssetPairs`` result for a comma list of pair names (None = all).

        ``KeyError`` for an unknown pair, ``ValueError`` for an unknown ``info``.
        """
        info = info or "info"
        if info not in ("info", "leverage", "fees", "margin"):
            raise ValueError(f"info {info!r}")
        chosen = self._pairs if not pair else [self.pair(n) for n in _split(pair)]
        return {p.id: p.row(info) for p in chosen}

    def assets_result(self, asset: str | None = None) -> dict[str, Any]:
        """``Assets`` result for a comma list of asset ids or altnames (None = all);
        ``KeyError`` for an unknown asset."""
        chosen = ASSETS if not asset else [self.asset(n) for n in _split(asset)]
        return {a.id: a.row() for a in chosen}

    # -- prices --------------------------------------------------------------------------------

    def _h(self, *parts: object) -> int:
        text = "|".join(str(p) for p in (self.seed, *parts))
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def _curve(self, asset_id: str) -> Callable[[float], float]:
        curve = self._curves.get(asset_id)
        if curve is not None:
            return curve
        asset = self._assets[asset_id]
        level = math.log(asset.usd)
        if asset.vol == 0:
            value = asset.usd

            def curve(t: float) -> float:
                return value
        else:
            terms = tuple(
                (amp * asset.vol, period, 2 * math.pi / period,
                 (self._h("phase", asset_id, k) % 1_000_000) / 1_000_000 * 2 * math.pi)
                for k, (amp, period) in enumerate(zip(_AMPS, _PERIODS, strict=True))
            )
            sin, exp = math.sin, math.exp

            def curve(t: float) -> float:
                s = level
                for amp, period, omega, phase in terms:
                    s += amp * sin((t % period) * omega + phase)
                return exp(s)
        self._curves[asset_id] = curve
        return curve

    def _fair(self, p: SimPair) -> Callable[[float], float]:
        base, quote = self._curve(p.base), self._curve(p.quote)
        if self._assets[p.quote].vol == 0:
            q = self._assets[p.quote].usd
            return base if q == 1.0 else (lambda t: base(t) / q)
        return lambda t: base(t) / quote(t)

    def price_at(self, pair_id: str, t: float) -> Decimal:
        """The tape's price level at Unix time ``t`` (no per-trade noise), rounded to the pair's
        ``pair_decimals``; trades near ``t`` scatter a few basis points around it."""
        p = self.pair(pair_id)
        ticks = max(1, round(self._fair(p)(t) * 10 ** p.pair_decimals))
        return Decimal(ticks).scaleb(-p.pair_decimals)

    # -- tapes ---------------------------------------------------------------------------------

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    def _count(self, p: SimPair, d: int) -> int:
        u = (self._h("n", p.id, d) % 1_000_003) / 1_000_003
        n = p.activity * (0.55 + 0.9 * u)
        if (d + 3) % 7 >= 5:  # Saturday, Sunday
            n *= 0.7
        if d == self._origin_day:
            n *= ((d + 1) * DAY_US - self._origin_us) / DAY_US
        return max(1, int(n))

    def _first_id(self, p: SimPair, d: int) -> int:
        cum = self._cum.setdefault(p.id, [0])
        while len(cum) <= d - self._origin_day:
            cum.append(cum[-1] + self._count(p, self._origin_day + len(cum) - 1))
        return cum[d - self._origin_day] + 1

    def _day(self, p: SimPair, d: int) -> _Day:
        key = (p.id, d)
        tape = self._tapes.get(key)
        if tape is None:
            tape = self._generate(p, d)
            self._tapes.put(key, tape, len(tape.us) + 50)
        return tape

    def _generate(self, p: SimPair, d: int) -> _Day:
        n = self._count(p, d)
        start = max(d * DAY_US, self._origin_us)
        span = (d + 1) * DAY_US - start
        rng = random.Random(self._h("day", p.id, d))
        rand = rng.random
        offs = sorted([int(rand() * span) for _ in range(n)])
        if start == self._origin_us:
            offs[0] = 0  # the tape opens at the origin
        fair = self._fair(p)
        scale = 10 ** p.pair_decimals
        lscale = 10 ** p.lot_decimals
        base_usd = self._curve(p.base)((start + span // 2) / 1_000_000)
        noise = _NOISE * max(self._assets[p.base].vol, self._assets[p.quote].vol, 0.05)
        us = array("q", bytes(8 * n))
        ns = array("q", bytes(8 * n))
        px = array("q", bytes(8 * n))
        vol = array("q", bytes(8 * n))
        side = bytearray(n)
        kind = bytearray(n)
        prev_t, rank, prev_px, s, k = -1, 0, 0, 98, 109
        for i in range(n):
            if i and rand() < _SHARED:
                offs[i] = offs[i - 1]
            t = start + offs[i]
            if t == prev_t:  # one taker filling the next maker: same side, same or worse price
                rank += 1
                step = 1 if rand() < 0.3 else 0
                price = prev_px + step if s == 98 else max(1, prev_px - step)
            else:
                rank = 0
                s = 98 if rand() < 0.5 else 115  # b / s
                k = 108 if rand() < 0.35 else 109  # l / m
                price = max(1, round(fair(t / 1_000_000) * (1 + noise * (2 * rand() - 1))
                                     * scale))
            notional = 10 ** (1.0 + 3.3 * rand() ** 2)
            us[i] = t
            ns[i] = t * 1000 + rank
            px[i] = price
            vol[i] = max(1, int(notional / base_usd * lscale))
            side[i] = s
            kind[i] = k
            prev_t, prev_px = t, price
        return _Day(self._first_id(p, d), us, ns, px, vol, bytes(side), bytes(kind))

    def _visible(self, p: SimPair, d: int, now_us: int) -> tuple[_Day, int]:
        """Day ``d``'s tape and how many of its trades are at or before now."""
        tape = self._day(p, d)
        if (d + 1) * DAY_US <= now_us:
            return tape, len(tape.us)
        return tape, bisect_right(tape.us, now_us)

    def _row(self, p: SimPair, tape: _Day, i: int) -> list[Any]:
        return [
            _fmt(tape.px[i], p.pair_decimals, p.price_decimals),
            _fmt(tape.vol[i], p.lot_decimals),
            tape.us[i] / 1_000_000,
            chr(tape.side[i]),
            chr(tape.kind[i]),
            "",
            tape.first_id + i,
            str(tape.ns[i]),
        ]

    def _days(self, now_us: int) -> range:
        return range(self._origin_day, now_us // DAY_US + 1)

    # -- Trades --------------------------------------------------------------------------------

    def trades_since(self, pair_id: str, since_ns: int | None, count: int = 1000
                     ) -> tuple[list[list[Any]], str]:
        """Up to ``count`` trades strictly after the nanosecond cursor ``since_ns`` (oldest first,
        none after now) and the cursor to pass next time: the last trade's ns stamp, else
        ``since_ns`` (or now in ns when ``since_ns`` is None). ``since_ns`` None = the most
        recent ``count`` trades."""
        p = self.pair(pair_id)
        count = max(0, min(int(count), 1000))
        with self._lock:
            now_us = self._now_us()
            if since_ns is None:
                rows = self._latest(p, count, now_us)
                return rows, (rows[-1][7] if rows else str(now_us * 1000))
            rows: list[list[Any]] = []
            first = max(self._origin_day, since_ns // (DAY_US * 1000))
            for d in range(first, now_us // DAY_US + 1):
                if len(rows) >= count:
                    break
                tape, hi = self._visible(p, d, now_us)
                lo = bisect_right(tape.ns, since_ns, 0, hi) if d == first else 0
                for i in range(lo, min(hi, lo + count - len(rows))):
                    rows.append(self._row(p, tape, i))
            return rows, (rows[-1][7] if rows else str(since_ns))

    def _latest(self, p: SimPair, count: int, now_us: int) -> list[list[Any]]:
        chunks: list[list[list[Any]]] = []
        need = count
        for d in reversed(self._days(now_us)):
            if need <= 0:
                break
            tape, hi = self._visible(p, d, now_us)
            lo = max(0, hi - need)
            chunks.append([self._row(p, tape, i) for i in range(lo, hi)])
            need -= hi - lo
        return [row for chunk in reversed(chunks) for row in chunk]

    def _last_trade(self, p: SimPair, now_us: int) -> tuple[_Day, int] | None:
        for d in reversed(self._days(now_us)):
            tape, hi = self._visible(p, d, now_us)
            if hi:
                return tape, hi - 1
        return None

    def last_trade(self, pair_id: str) -> list[Any] | None:
        """The most recent trade at or before now, as a Trades row (None before the origin)."""
        p = self.pair(pair_id)
        with self._lock:
            found = self._last_trade(p, self._now_us())
            return None if found is None else self._row(p, *found)

    # -- aggregates ----------------------------------------------------------------------------

    @staticmethod
    def _agg(tape: _Day, i: int, j: int) -> Agg:
        prices = tape.px[i:j]
        vols = tape.vol[i:j]
        return (prices[0], max(prices), min(prices), prices[-1], sum(vols),
                sum(map(mul, prices, vols)), j - i)

    def _buckets(self, tape: _Day, hi: int, gran_s: int) -> list[tuple[int, Agg]]:
        out: list[tuple[int, Agg]] = []
        g = gran_s * 1_000_000
        us = tape.us
        i = 0
        while i < hi:
            key = us[i] // g
            j = bisect_left(us, (key + 1) * g, i, hi)
            out.append((key * gran_s, self._agg(tape, i, j)))
            i = j
        return out

    def _day_summary(self, p: SimPair, d: int, now_us: int) -> Agg | None:
        if (d + 1) * DAY_US <= now_us:
            hit = self._summary.get((p.id, d))
            if hit is None:
                tape = self._day(p, d)
                hit = self._summary[(p.id, d)] = self._agg(tape, 0, len(tape.us))
            return hit
        tape, hi = self._visible(p, d, now_us)
        return self._agg(tape, 0, hi) if hi else None

    def _day_buckets(self, p: SimPair, d: int, gran_s: int, now_us: int
                     ) -> list[tuple[int, Agg]]:
        if gran_s == DAY_S:
            agg = self._day_summary(p, d, now_us)
            return [] if agg is None else [(d * DAY_S, agg)]
        if (d + 1) * DAY_US <= now_us:
            key = (p.id, d, gran_s)
            hit = self._aggs.get(key)
            if hit is None:
                tape = self._day(p, d)
                hit = self._buckets(tape, len(tape.us), gran_s)
                self._aggs.put(key, hit, len(hit) + 1)
            return hit
        tape, hi = self._visible(p, d, now_us)
        return self._buckets(tape, hi, gran_s)

    def _last_price_before(self, p: SimPair, t_us: int, now_us: int) -> int | None:
        """Price of the last trade strictly before ``t_us`` (None if there is none)."""
        d = min(t_us, now_us + 1) // DAY_US
        if d >= self._origin_day:
            tape, hi = self._visible(p, d, now_us)
            i = bisect_left(tape.us, t_us, 0, hi)
            if i:
                return tape.px[i - 1]
        for e in range(d - 1, self._origin_day - 1, -1):
            agg = self._day_summary(p, e, now_us)
            if agg is not None:
                return agg[3]
        return None

    # -- OHLC ----------------------------------------------------------------------------------

    def ohlc(self, pair_id: str, interval_minutes: int = 1, since: int | None = None
             ) -> tuple[list[list[Any]], int]:
        """At most 720 most recent bars ``[time, o, h, l, c, vwap, volume, count]`` of
        ``interval_minutes`` ending with the running bar (always present), only bars opening
        after ``since``; and ``last``, the open time of the last committed bar.
        ``ValueError`` for an interval Kraken does not serve."""
        p = self.pair(pair_id)
        if interval_minutes not in OHLC_INTERVALS:
            raise ValueError(f"interval {interval_minutes!r}")
        width = interval_minutes * 60
        offset = _MONDAY if interval_minutes == 10080 else 0

        def bucket(t: int) -> int:
            return (t - offset) // width * width + offset

        with self._lock:
            now_us = self._now_us()
            running = bucket(now_us // 1_000_000)
            last = running - width
            if now_us < self._origin_us:
                return [], last
            start = max(bucket(self._origin_us // 1_000_000), running - 719 * width)
            gran = width if width <= 4 * 3600 else DAY_S
            bars: dict[int, Agg] = {}
            for d in range(max(self._origin_day, start // DAY_S), now_us // DAY_US + 1):
                for t, agg in self._day_buckets(p, d, gran, now_us):
                    if t < start:
                        continue
                    b = bucket(t)
                    prev = bars.get(b)
                    bars[b] = agg if prev is None else _merge(prev, agg)
            close = self._last_price_before(p, start * 1_000_000, now_us)
            pd, ld = p.pair_decimals, p.lot_decimals
            rows: list[list[Any]] = []
            for t in range(start, running + width, width):
                agg = bars.get(t)
                if agg is not None:
                    o, h, lo, c, v, pv, n = agg
                    close = c
                    if since is None or t > since or t == running:
                        rows.append([t, _fmt(o, pd), _fmt(h, pd), _fmt(lo, pd), _fmt(c, pd),
                                     _fmt(_div_round(pv, v), pd), _fmt(v, ld), n])
                elif close is not None and (since is None or t > since or t == running):
                    text = _fmt(close, pd)
                    rows.append([t, text, text, text, text, text, _fmt(0, ld), 0])
            return rows, last

    # -- Ticker, Depth, Spread -----------------------------------------------------------------

    def _quote(self, p: SimPair, tape: _Day, i: int) -> tuple[int, int]:
        """(bid, ask) in price units right after trade ``i``: a taker buy lifted the ask at the
        trade price, a taker sell hit the bid."""
        price = tape.px[i]
        width = 1 + (tape.first_id + i + self.seed) * 2654435761 % 3
        if tape.side[i] == 98:
            return max(1, price - width), price
        return price, price + width

    def ticker(self, pair_id: str) -> dict[str, Any]:
        """The pair's ``Ticker`` entry derived from the tape (``a``/``b`` = Depth's best)."""
        p = self.pair(pair_id)
        with self._lock:
            now_us = self._now_us()
            found = self._last_trade(p, now_us)
            pd, ld, out = p.pair_decimals, p.lot_decimals, p.price_decimals

            def price(units: int) -> str:
                return _fmt(units, pd, out)

            if found is None:
                zero = price(0)
                return {"a": [zero, "0", "0.000"], "b": [zero, "0", "0.000"], "c": [zero, "0"],
                        "v": ["0", "0"], "p": [zero, zero], "t": [0, 0], "l": [zero, zero],
                        "h": [zero, zero], "o": zero}
            tape, i = found
            last = tape.px[i]
            today = now_us // DAY_US
            aggs: list[Agg | None] = [None, None]
            t_tape, t_hi = self._visible(p, today, now_us)
            if t_hi:
                aggs[0] = self._agg(t_tape, 0, t_hi)
            day_ago = now_us - DAY_US
            if today - 1 >= self._origin_day:
                y_tape, y_hi = self._visible(p, today - 1, now_us)
                lo = bisect_right(y_tape.us, day_ago, 0, y_hi)
                if lo < y_hi:
                    aggs[1] = self._agg(y_tape, lo, y_hi)
            if aggs[0] is not None:
                aggs[1] = aggs[0] if aggs[1] is None else _merge(aggs[1], aggs[0])

            def vwap(agg: Agg | None) -> str:
                if agg is None:
                    return price(last)
                return _fmt(_div_round(agg[5] * 10 ** (out - pd), agg[4]), out)

            asks, bids = self._book(p, tape, i, 1)
            return {
                "a": self._top(asks[0]), "b": self._top(bids[0]),
                "c": [price(last), _fmt(tape.vol[i], ld)],
                "v": [_fmt(a[4] if a else 0, ld) for a in aggs],
                "p": [vwap(a) for a in aggs],
                "t": [a[6] if a else 0 for a in aggs],
                "l": [price(a[2] if a else last) for a in aggs],
                "h": [price(a[1] if a else last) for a in aggs],
                "o": price(aggs[0][0] if aggs[0] else last),
            }

    @staticmethod
    def _top(level: list[Any]) -> list[str]:
        volume = Decimal(level[1])
        whole = max(1, int(volume.to_integral_value()))
        return [level[0], str(whole), f"{volume:.3f}"]

    def _book(self, p: SimPair, tape: _Day, i: int, count: int
              ) -> tuple[list[list[Any]], list[list[Any]]]:
        bid, ask = self._quote(p, tape, i)
        pd, out = p.pair_decimals, p.price_decimals
        vdec = 3 if p.legacy else max(3, p.lot_decimals)
        base_usd = self._curve(p.base)(tape.us[i] / 1_000_000)
        stamp = tape.us[i] // 1_000_000
        origin = self._origin_us // 1_000_000
        trade_id = tape.first_id + i
        sides: list[list[list[Any]]] = []
        for name, first, sign in (("asks", ask, 1), ("bids", bid, -1)):
            rng = random.Random(self._h("book", p.id, trade_id, name))
            levels: list[list[Any]] = []
            level = first
            for n in range(count):
                if level <= 0:
                    break
                notional = 10 ** (2.0 + 2.5 * rng.random() ** 2)
                thousandths = max(1, int(notional / base_usd * 1000))
                age = 0 if n == 0 else rng.randrange(3600)
                levels.append([_fmt(level, pd, out), _fmt(thousandths, 3, vdec),
                               max(origin, stamp - age)])
                level += sign * (1 + int(rng.random() ** 3 * 3))
            sides.append(levels)
        return sides[0], sides[1]

    def depth(self, pair_id: str, count: int = 100) -> dict[str, Any]:
        """``{"asks": [...], "bids": [...]}`` with up to ``count`` (1..500) levels each side,
        asks ascending from the best ask, bids descending from the best bid."""
        p = self.pair(pair_id)
        count = max(1, min(int(count), 500))
        with self._lock:
            found = self._last_trade(p, self._now_us())
            if found is None:
                return {"asks": [], "bids": []}
            asks, bids = self._book(p, *found, count)
            return {"asks": asks, "bids": bids}

    def spread(self, pair_id: str, since: int | None = None) -> tuple[list[list[Any]], int]:
        """About the last 200 top-of-book changes ``[time, bid, ask]`` (one per trade, oldest
        first, only rows after ``since``) and ``last``, the time of the last row."""
        p = self.pair(pair_id)
        with self._lock:
            now_us = self._now_us()
            picked: list[tuple[_Day, int]] = []
            for d in reversed(self._days(now_us)):
                tape, hi = self._visible(p, d, now_us)
                for i in range(hi - 1, -1, -1):
                    picked.append((tape, i))
                    if len(picked) >= 200:
                        break
                if len(picked) >= 200:
                    break
            pd, out = p.pair_decimals, p.price_decimals
            rows: list[list[Any]] = []
            for tape, i in reversed(picked):
                t = tape.us[i] // 1_000_000
                if since is not None and t <= since:
                    continue
                bid, ask = self._quote(p, tape, i)
                rows.append([t, _fmt(bid, pd, out), _fmt(ask, pd, out)])
            if not rows:
                return rows, (since if since is not None else now_us // 1_000_000)
            return rows, rows[-1][0]

    def warm(self, pair_ids: Iterable[str]) -> None:
        """Generate and cache the daily aggregates of ``pair_ids`` (for demos and benchmarks)."""
        for pid in pair_ids:
            self.ohlc(pid, 1440)


def _split(names: str) -> list[str]:
    return [n.strip() for n in str(names).split(",") if n.strip()]
