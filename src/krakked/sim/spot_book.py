"""A simulated Spot account's history, made from the seed and the API key: own trades, the orders
behind them, canceled orders, ledger entries with running balances, deposits and withdrawals.

The history is generated once, over ``config.origin`` .. origin + ``SPAN_DAYS`` days; callers
show only what lies at or before ``config.clock()``, so entries appear as a test clock moves
forward. ``spot_private`` renders it as Kraken's Spot private endpoints.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

from krakked.sim.config import SPAN_DAYS, AccountSpec, SimConfig
from krakked.sim.market import SimMarket

__all__ = [
    "FundingEntry",
    "LedgerEntry",
    "PairInfo",
    "SpotBook",
    "SpotOrder",
    "SpotTrade",
    "asset_decimals",
    "asset_id",
    "pair_info",
]

DAY = 86_400.0

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ASSET_DECIMALS = {
    "ZUSD": 4, "USD": 4, "ZEUR": 4, "EUR": 4, "ZGBP": 4, "GBP": 4, "ZCAD": 4, "CAD": 4,
    "ZJPY": 2, "JPY": 2, "CHF": 4, "AUD": 4, "USDT": 8, "USDC": 8,
}
_ASSET_ALIASES = {"XBT": "XXBT", "BTC": "XXBT", "ETH": "XETH", "USD": "ZUSD", "EUR": "ZEUR",
                  "GBP": "ZGBP", "CAD": "ZCAD", "JPY": "ZJPY", "LTC": "XLTC", "XRP": "XXRP"}


def asset_decimals(asset: str) -> int:
    """Decimals Kraken uses for ``asset`` in ledgers and balances (fiat 4, crypto 10)."""
    return _ASSET_DECIMALS.get(asset, 10)


def asset_id(name: str) -> str:
    """``XBT``/``BTC`` -> ``XXBT``, ``USD`` -> ``ZUSD``; other names unchanged (upper-cased)."""
    upper = name.strip().upper()
    return _ASSET_ALIASES.get(upper, upper)


def _q(value: Decimal, places: int, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=rounding)


# --- pairs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairInfo:
    """What the books need of a Spot pair (read from the market's pair record)."""

    id: str  # Kraken pair id, e.g. XXBTZUSD
    altname: str  # XBTUSD
    base: str  # XXBT
    quote: str  # ZUSD
    pair_decimals: int
    lot_decimals: int
    cost_decimals: int
    price_places: int  # places shown for prices in history rows ("30010.00000" for XBTUSD)

    @property
    def value_places(self) -> int:
        """Places to which costs and fees are rounded (so ledger legs match trades exactly)."""
        return min(self.cost_decimals, asset_decimals(self.quote))


def _field(record: Any, *names: str) -> Any:
    for name in names:
        if isinstance(record, Mapping):
            if record.get(name) is not None:
                return record[name]
        else:
            value = getattr(record, name, None)
            if value is not None:
                return value
    return None


def pair_info(market: SimMarket, name: str) -> PairInfo:
    """Resolve ``name`` through ``market.pair`` (KeyError if unknown) into a PairInfo."""
    record = market.pair(name)
    altname = str(_field(record, "altname", "rest_symbol") or name)
    pid = str(_field(record, "pair_id", "id", "raw_name", "key", "name") or altname)
    base = asset_id(str(_field(record, "base") or "XXBT"))
    quote = asset_id(str(_field(record, "quote") or "ZUSD"))
    pair_dec = _field(record, "pair_decimals", "price_decimals")
    lot_dec = _field(record, "lot_decimals", "volume_decimals")
    cost_dec = _field(record, "cost_decimals")
    shown = _field(record, "price_decimals")
    pair_dec = 1 if pair_dec is None else int(pair_dec)
    cost_dec = max(pair_dec, 5) if cost_dec is None else int(cost_dec)
    return PairInfo(
        id=pid, altname=altname, base=base, quote=quote, pair_decimals=pair_dec,
        lot_decimals=8 if lot_dec is None else int(lot_dec), cost_decimals=cost_dec,
        price_places=max(pair_dec, cost_dec) if shown is None else int(shown),
    )


def _price(market: SimMarket, pair_id: str, t: float) -> Decimal:
    return Decimal(str(market.price_at(pair_id, t)))


# --- Spot -------------------------------------------------------------------------------------


@dataclass(slots=True)
class SpotTrade:
    """One own fill (TradesHistory row)."""

    txid: str
    ordertxid: str
    postxid: str
    pair: PairInfo
    time: float
    type: str  # buy | sell
    ordertype: str  # limit | market
    price: Decimal
    vol: Decimal
    cost: Decimal
    fee: Decimal
    trade_id: int
    maker: bool
    seq: int
    ledgers: tuple[str, ...] = ()


@dataclass(slots=True)
class SpotOrder:
    """One closed or canceled order (ClosedOrders row)."""

    txid: str
    pair: PairInfo
    type: str
    ordertype: str
    opentm: float
    closetm: float
    status: str  # closed | canceled
    vol: Decimal
    limit_price: Decimal | None  # None for market orders
    seq: int
    userref: int = 0
    reason: str | None = None
    trades: list[str] = field(default_factory=list)
    vol_exec: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)


@dataclass(slots=True)
class LedgerEntry:
    """One ledger row; ``balance`` is the asset's running balance after it."""

    id: str
    refid: str
    time: float
    type: str
    subtype: str
    aclass: str
    asset: str
    amount: Decimal
    fee: Decimal
    seq: int
    balance: Decimal = Decimal(0)


@dataclass(slots=True)
class FundingEntry:
    """A deposit or withdrawal (DepositStatus / WithdrawStatus row) with its ledger entry."""

    kind: str  # deposit | withdrawal
    method: str
    aclass: str
    asset: str
    refid: str
    txid: str
    info: str
    amount: Decimal
    fee: Decimal
    time: float
    seq: int
    key: str = ""
    status: str = "Success"


class SpotBook:
    """A Spot account's history: own trades, the orders behind them (some with two fills), some
    canceled orders, ledger entries (two per trade, deposits, a withdrawal, a staking reward) and
    the running balances they imply. Deterministic for (``config.seed``, ``spec.api_key``).

    Lists are kept sorted by (time, seq) — orders by (closetm, seq) — and callers filter on
    ``config.clock()`` with the ``visible_*`` helpers.
    """

    RESERVE = Decimal(3000)  # USD the generator never trades below (headroom for add_trade)

    def __init__(self, spec: AccountSpec, market: SimMarket, config: SimConfig) -> None:
        self.spec = spec
        self.market = market
        self.config = config
        self.rng = random.Random(f"krakked-sim:{config.seed}:{spec.api_key}:spot")
        self.origin = config.origin.timestamp()
        self.trades: list[SpotTrade] = []
        self.orders: list[SpotOrder] = []
        self.ledger: list[LedgerEntry] = []
        self.deposits: list[FundingEntry] = []
        self.withdrawals: list[FundingEntry] = []
        self._ids: set[str] = set()
        self._seq = 0
        self._trade_ids: dict[str, int] = {}
        self.pairs = self._choose_pairs()
        self.trade_by_id: dict[str, SpotTrade] = {}
        self.order_by_id: dict[str, SpotOrder] = {}
        self.ledger_by_id: dict[str, LedgerEntry] = {}
        self._build(spec.history_size or 300)

    # -- construction --------------------------------------------------------------------------

    def _choose_pairs(self) -> list[tuple[PairInfo, float]]:
        chosen: list[tuple[PairInfo, float]] = []
        for name, weight in (("XBTUSD", 0.6), ("ETHUSD", 0.25), ("SOLUSD", 0.15)):
            try:
                info = pair_info(self.market, name)
            except KeyError:
                continue
            if info.quote == "ZUSD" and all(p.id != info.id for p, _ in chosen):
                chosen.append((info, weight))
        if not chosen:
            for record in self.market.pairs():
                name = str(_field(record, "altname", "pair_id", "id") or "")
                try:
                    info = pair_info(self.market, name)
                except KeyError:
                    continue
                if info.quote == "ZUSD":
                    chosen.append((info, 1.0))
                if len(chosen) >= 3:
                    break
        if not chosen:
            raise ValueError("the simulated market has no USD-quoted pair for the Spot account")
        return chosen

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _ident(self, prefix: str, parts: tuple[int, int, int] = (5, 5, 6)) -> str:
        """A fresh Kraken-style id: ``prefix`` + 5 chars, ``-`` 5 chars, ``-`` 6 chars
        (``THVRQM-33VKH-UCI7BS``); ``parts`` changes the group lengths."""
        rng = self.rng
        a, b, c = parts
        while True:
            raw = "".join(rng.choices(_ID_CHARS, k=a + b + c))
            ident = f"{prefix}{raw[:a]}-{raw[a:a + b]}-{raw[a + b:]}"
            if ident not in self._ids:
                self._ids.add(ident)
                return ident

    def _trade_id(self, pair: PairInfo) -> int:
        last = self._trade_ids.get(pair.id)
        if last is None:
            last = self.rng.randint(10_000_000, 90_000_000)
        last += self.rng.randint(1, 5000)
        self._trade_ids[pair.id] = last
        return last

    def _build(self, n_trades: int) -> None:
        rng = self.rng
        origin = self.origin
        lo, hi = origin + DAY, origin + (SPAN_DAYS - 1) * DAY
        fills: list[int] = []
        total = 0
        while total < n_trades:
            k = 2 if n_trades - total >= 2 and rng.random() < 0.15 else 1
            fills.append(k)
            total += k
        opens = sorted(round(rng.uniform(lo, hi), 4) for _ in fills)
        usd = Decimal(50_000 + 5 * n_trades)
        events: list[tuple[float, int, str]] = [
            (round(origin + 3600 + rng.uniform(0, 600), 4), 0, "deposit_usd"),
            (round(origin + 45 * DAY + rng.uniform(0, DAY), 4), 0, "deposit_xbt"),
            (round(origin + 150 * DAY + rng.uniform(0, DAY), 4), 0, "staking"),
            (round(origin + 200 * DAY + rng.uniform(0, DAY), 4), 0, "withdrawal_usd"),
        ]
        events += [(t, i + 1, "order") for i, t in enumerate(opens)]
        events += [(round(rng.uniform(lo, hi), 4), -1, "cancel")
                   for _ in range(max(1, n_trades // 12))]
        events.sort()
        order_times = [t for t, i, kind in events if kind == "order"]
        balances: dict[str, Decimal] = {}
        next_order = 0
        for t, _, kind in events:
            if kind == "order":
                next_order += 1
                gap = (order_times[next_order] if next_order < len(order_times) else hi + DAY) - t
                self._gen_order(t, gap, fills[next_order - 1], balances)
            elif kind == "cancel":
                self._gen_canceled(t)
            else:
                self._gen_funding(t, kind, balances, usd)
        self.ledger.sort(key=lambda e: (e.time, e.seq))
        self.trades.sort(key=lambda e: (e.time, e.seq))
        self.orders.sort(key=lambda o: (o.closetm, o.seq))
        self._recompute_balances()

    def _gen_funding(self, t: float, kind: str, balances: dict[str, Decimal],
                     usd: Decimal) -> None:
        rng = self.rng
        refid = self._ident("Q", (6, 6, 6))  # funding refids look like QSB7IFM-Q3LT3X-NVAOKE
        if kind == "staking":
            self._ledger(refid, t, "staking", "", "XBT.M",
                         _q(Decimal(rng.uniform(0.00001, 0.0002)), 10), Decimal(0), balances)
            return
        if kind == "deposit_xbt":
            asset, amount, fee, method = "XXBT", Decimal("0.5000000000"), Decimal(0), "Bitcoin"
            txid = f"{rng.getrandbits(256):064x}"
            info = "bc1q" + "".join(rng.choices("023456789acdefghjklmnpqrstuvwxyz", k=38))
        else:
            asset, method = "ZUSD", "Bank Frick (SWIFT)"
            amount = _q(usd, 4) if kind == "deposit_usd" else Decimal("1000.0000")
            fee = Decimal(0) if kind == "deposit_usd" else Decimal("5.0000")
            txid = "".join(rng.choices("0123456789ABCDEF", k=16))
            info = "Bank Frick (SWIFT)"
        is_deposit = kind.startswith("deposit")
        entry = FundingEntry(
            kind="deposit" if is_deposit else "withdrawal", method=method, aclass="currency",
            asset=asset, refid=refid, txid=txid, info=info, amount=amount, fee=fee, time=t,
            seq=self._next_seq(), key="" if is_deposit else "my bank",
        )
        (self.deposits if is_deposit else self.withdrawals).append(entry)
        self._ledger(refid, t, entry.kind, "", asset, amount if is_deposit else -amount, fee,
                     balances)

    def _ledger(self, refid: str, t: float, type_: str, subtype: str, asset: str,
                amount: Decimal, fee: Decimal, balances: dict[str, Decimal]) -> LedgerEntry:
        entry = LedgerEntry(self._ident("L"), refid, t, type_, subtype, "currency", asset,
                            amount, fee, self._next_seq())
        balances[asset] = balances.get(asset, Decimal(0)) + amount - fee
        self.ledger.append(entry)
        self.ledger_by_id[entry.id] = entry
        return entry

    def _pick_pair(self) -> PairInfo:
        pairs = [p for p, _ in self.pairs]
        return self.rng.choices(pairs, weights=[w for _, w in self.pairs])[0]

    def _gen_order(self, t: float, gap: float, n_fills: int,
                   balances: dict[str, Decimal]) -> None:
        rng = self.rng
        pair = self._pick_pair()
        ordertype = "limit" if rng.random() < 0.7 else "market"
        if ordertype == "market":
            first = t + rng.uniform(0.05, 1.0)
        else:
            first = t + rng.uniform(0.5, max(0.6, min(7200.0, gap * 0.4)))
        times = [round(first, 4)]
        if n_fills == 2:
            times.append(round(first + rng.uniform(0.5, max(0.6, min(600.0, gap * 0.2))), 4))
        price = _q(_price(self.market, pair.id, times[0]), pair.pair_decimals)
        unit = Decimal(1).scaleb(-pair.lot_decimals)
        notional = Decimal(str(round(math.exp(rng.uniform(math.log(50), math.log(2500))), 2)))
        vol = max(_q(notional / price, pair.lot_decimals, ROUND_DOWN), unit * n_fills)
        quote_free = balances.get(pair.quote, Decimal(0)) - self.RESERVE
        base_held = balances.get(pair.base, Decimal(0))
        side = "buy" if rng.random() < 0.55 else "sell"
        can_buy = quote_free >= vol * price * Decimal("1.02")
        can_sell = base_held >= vol
        if side == "buy" and not can_buy:
            side = "sell" if can_sell else side
        elif side == "sell" and not can_sell:
            side = "buy" if can_buy else side
        if side == "sell" and not can_sell:
            half = _q(base_held / 2, pair.lot_decimals, ROUND_DOWN)
            if half >= unit * n_fills:
                vol = half
            else:
                side = "buy"
        if side == "buy" and not (quote_free >= vol * price * Decimal("1.02")):
            vol = max(_q(max(quote_free, Decimal(0)) / 20 / price, pair.lot_decimals,
                         ROUND_DOWN), unit * n_fills)
        parts = [vol]
        if n_fills == 2:
            first_part = _q(vol * Decimal(str(round(rng.uniform(0.3, 0.7), 3))),
                            pair.lot_decimals, ROUND_DOWN)
            first_part = min(max(first_part, unit), vol - unit)
            parts = [first_part, vol - first_part]
        order = SpotOrder(
            txid=self._ident("O"), pair=pair, type=side, ordertype=ordertype, opentm=round(t, 4),
            closetm=times[-1], status="closed", vol=vol,
            limit_price=price if ordertype == "limit" else None, seq=self._next_seq(),
            userref=0 if rng.random() < 0.8 else rng.randint(1, 10**6),
        )
        for when, part in zip(times, parts, strict=True):
            fill_price = price if ordertype == "limit" else _q(
                _price(self.market, pair.id, when), pair.pair_decimals)
            maker = ordertype == "limit" and rng.random() < 0.8
            self._fill(order, when, fill_price, part, maker, balances)
        self.orders.append(order)
        self.order_by_id[order.txid] = order

    def _fill(self, order: SpotOrder, when: float, price: Decimal, vol: Decimal, maker: bool,
              balances: dict[str, Decimal]) -> SpotTrade:
        pair = order.pair
        cost = _q(price * vol, pair.value_places)
        fee = _q(cost * (Decimal("0.0025") if maker else Decimal("0.0040")), pair.value_places)
        trade = SpotTrade(
            txid=self._ident("T"), ordertxid=order.txid, postxid=self._ident("T"), pair=pair,
            time=when, type=order.type, ordertype=order.ordertype, price=price, vol=vol,
            cost=cost, fee=fee, trade_id=self._trade_id(pair), maker=maker,
            seq=self._next_seq(),
        )
        sign = 1 if order.type == "buy" else -1
        base_leg = self._ledger(trade.txid, when, "trade", "", pair.base, sign * vol, Decimal(0),
                                balances)
        quote_leg = self._ledger(trade.txid, when, "trade", "", pair.quote, -sign * cost, fee,
                                 balances)
        trade.ledgers = (base_leg.id, quote_leg.id)
        order.trades.append(trade.txid)
        order.vol_exec += vol
        order.cost += cost
        order.fee += fee
        self.trades.append(trade)
        self.trade_by_id[trade.txid] = trade
        return trade

    def _gen_canceled(self, t: float) -> None:
        rng = self.rng
        pair = self._pick_pair()
        side = "buy" if rng.random() < 0.5 else "sell"
        market_price = _price(self.market, pair.id, t)
        away = Decimal(str(round(rng.uniform(0.02, 0.08), 4)))
        limit = _q(market_price * (1 - away if side == "buy" else 1 + away), pair.pair_decimals)
        notional = Decimal(str(round(rng.uniform(50, 2000), 2)))
        vol = max(_q(notional / limit, pair.lot_decimals, ROUND_DOWN),
                  Decimal(1).scaleb(-pair.lot_decimals))
        order = SpotOrder(
            txid=self._ident("O"), pair=pair, type=side, ordertype="limit", opentm=t,
            closetm=round(t + rng.uniform(10, 3 * 3600), 4), status="canceled", vol=vol,
            limit_price=limit, seq=self._next_seq(), reason="User requested",
        )
        self.orders.append(order)
        self.order_by_id[order.txid] = order

    def _recompute_balances(self) -> None:
        running: dict[str, Decimal] = {}
        for entry in self.ledger:
            value = running.get(entry.asset, Decimal(0)) + entry.amount - entry.fee
            running[entry.asset] = value
            entry.balance = value

    # -- what handlers use ---------------------------------------------------------------------

    def now(self) -> float:
        """The simulator clock (Unix seconds)."""
        return self.config.clock()

    def visible_trades(self, now: float | None = None) -> list[SpotTrade]:
        """Trades with time <= now, oldest first."""
        t = self.now() if now is None else now
        return self.trades[: bisect.bisect_right(self.trades, t, key=lambda e: e.time)]

    def visible_ledger(self, now: float | None = None) -> list[LedgerEntry]:
        """Ledger entries with time <= now, oldest first."""
        t = self.now() if now is None else now
        return self.ledger[: bisect.bisect_right(self.ledger, t, key=lambda e: e.time)]

    def visible_orders(self, now: float | None = None) -> list[SpotOrder]:
        """Orders closed (or canceled) at or before now, oldest close first."""
        t = self.now() if now is None else now
        return self.orders[: bisect.bisect_right(self.orders, t, key=lambda o: o.closetm)]

    def balances(self, now: float | None = None) -> dict[str, Decimal]:
        """Each asset's balance after its last visible ledger entry."""
        result: dict[str, Decimal] = {}
        for entry in self.visible_ledger(now):
            result[entry.asset] = entry.balance
        return result

    def add_trade(self, now: float | None = None) -> SpotTrade:
        """Append a new own trade (a small market buy of the first pair) at ``now`` (default:
        the clock), with its closed order and its two ledger legs; later balances follow."""
        t = round(self.now() if now is None else now, 4)
        pair = self.pairs[0][0]
        price = _q(_price(self.market, pair.id, t), pair.pair_decimals)
        unit = Decimal(1).scaleb(-pair.lot_decimals)
        vol = max(_q(Decimal(50) / price, pair.lot_decimals, ROUND_DOWN), unit)
        order = SpotOrder(
            txid=self._ident("O"), pair=pair, type="buy", ordertype="market",
            opentm=round(t - 0.25, 4), closetm=t, status="closed", vol=vol, limit_price=None,
            seq=self._next_seq(),
        )
        scratch: dict[str, Decimal] = {}
        before_ledger = len(self.ledger)
        trade = self._fill(order, t, price, vol, False, scratch)
        new_entries = self.ledger[before_ledger:]
        del self.ledger[before_ledger:]
        for entry in new_entries:
            bisect.insort(self.ledger, entry, key=lambda e: (e.time, e.seq))
        self.trades.pop()
        bisect.insort(self.trades, trade, key=lambda e: (e.time, e.seq))
        bisect.insort(self.orders, order, key=lambda o: (o.closetm, o.seq))
        self.order_by_id[order.txid] = order
        self._recompute_balances()
        return trade
