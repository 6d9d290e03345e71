"""The simulated Spot pairs and assets: Kraken's ``AssetPairs`` and ``Assets`` fields, plus what
each trade tape is made from (an asset's price level and volatility, a pair's daily activity)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["ASSETS", "PAIRS", "SimAsset", "SimPair"]


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
