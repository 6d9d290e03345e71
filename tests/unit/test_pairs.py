"""Pair universe and symbol resolution: metadata from AssetPairs, the USD spot universe rules,
liquidity floor, aliases of every form, offline tables."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from krakked.config import RegionProfile, UniverseSettings
from krakked.errors import StoreError, UnknownPairError, UsageError
from krakked.market.names import _offline_resolver
from krakked.market.pairs import (
    CSV_SYMBOL_MAP,
    DEFAULT_SYMBOLS,
    PAIR_MAP,
    REVERSE_PAIR_MAP,
    PairMetadata,
    PairResolver,
    Universe,
    build_universe,
    estimate_24h_volume_usd,
    parse_asset_pairs,
    resolve_offline,
)
from krakked.sim.config import SimConfig
from krakked.sim.market import SimMarket

US = RegionProfile()
MARGIN = RegionProfile(code="INTL", supports_margin=True)
NONE = UniverseSettings()
PAIR_COLUMNS = [  # krakked.store.base.PAIR_SCHEMA.names
    "canonical", "base", "quote", "rest_symbol", "ws_symbol", "wsname", "raw_name",
    "price_decimals", "volume_decimals", "lot_size", "ordermin", "costmin", "tick_size",
    "status", "updated_at",
]


def _row(alt: str, ws: str, base: str, quote: str, *, pd: int = 2, ld: int = 8,
         status: str | None = "online", lev: bool = False, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "altname": alt, "wsname": ws, "aclass_base": "currency", "base": base,
        "aclass_quote": "currency", "quote": quote, "lot": "unit", "cost_decimals": 5,
        "pair_decimals": pd, "lot_decimals": ld, "lot_multiplier": 1,
        "leverage_buy": [2, 3, 4, 5] if lev else [], "leverage_sell": [2, 3, 4, 5] if lev else [],
        "ordermin": "0.0001", "costmin": "0.5", "tick_size": str(Decimal(1).scaleb(-pd)),
    }
    if status is not None:
        row["status"] = status
    row.update(extra)
    return row


ASSET_PAIRS: dict[str, Any] = {
    "XXBTZUSD": _row("XBTUSD", "XBT/USD", "XXBT", "ZUSD", pd=1, lev=True,
                     long_position_limit=250, short_position_limit=200),
    "XETHZUSD": _row("ETHUSD", "ETH/USD", "XETH", "ZUSD"),
    "XDGUSD": _row("XDGUSD", "XDG/USD", "XXDG", "ZUSD", pd=7, ordermin="30"),
    "SOLUSD": _row("SOLUSD", "SOL/USD", "SOL", "ZUSD", status=None),  # status omitted
    "MATICUSD": _row("MATICUSD", "MATIC/USD", "MATIC", "ZUSD", status="cancel_only"),
    "ADAUSD": _row("ADAUSD", "ADA/USD", "ADA", "ZUSD", status="post_only"),
    "XBTUSDT": _row("XBTUSDT", "XBT/USDT", "XXBT", "USDT", pd=1),
    "USDTZUSD": _row("USDTUSD", "USDT/USD", "USDT", "ZUSD", pd=4),
    "XXRPXXBT": _row("XRPXBT", "XRP/XBT", "XXRP", "XXBT", pd=8),
    "XXBTZEUR": _row("XBTEUR", "XBT/EUR", "XXBT", "ZEUR", pd=1),
}


@pytest.fixture
def pairs() -> dict[str, PairMetadata]:
    return parse_asset_pairs(ASSET_PAIRS)


def _names(universe: list[PairMetadata]) -> list[str]:
    return [m.canonical for m in universe]


# --- metadata ----------------------------------------------------------------------------------


def test_metadata_uses_altname_as_canonical_and_keeps_kraken_names(pairs) -> None:
    btc = pairs["XBTUSD"]
    assert btc.canonical == btc.rest_symbol == "XBTUSD"
    assert btc.raw_name == "XXBTZUSD"
    assert btc.wsname == "XBT/USD"
    assert btc.ws_symbol == "BTC/USD"
    assert (btc.base, btc.quote, btc.base_id, btc.quote_id) == ("XBT", "USD", "XXBT", "ZUSD")
    assert btc.price_decimals == 1 and btc.volume_decimals == 8 and btc.cost_decimals == 5
    assert btc.tick_size == Decimal("0.1")
    assert btc.lot_size == Decimal("0.00000001")
    assert btc.ordermin == Decimal("0.0001") and str(btc.ordermin) == "0.0001"
    assert btc.costmin == Decimal("0.5")
    assert btc.leverage_buy == (2, 3, 4, 5) and btc.margin
    assert btc.status == "online"


def test_ws_symbol_is_the_v2_name_per_asset(pairs) -> None:
    assert pairs["XDGUSD"].ws_symbol == "DOGE/USD"
    assert pairs["XDGUSD"].wsname == "XDG/USD"
    assert pairs["XRPXBT"].ws_symbol == "XRP/BTC"
    assert pairs["XBTUSDT"].ws_symbol == "BTC/USDT"
    assert pairs["ETHUSD"].ws_symbol == "ETH/USD"


def test_parsing_tolerates_missing_fields_and_numbers_as_decimals() -> None:
    row = {"altname": "FOOUSD", "wsname": "FOO/USD", "base": "FOO", "quote": "ZUSD",
           "pair_decimals": "3", "lot_decimals": 4, "ordermin": Decimal("1.50"),
           "leverage_buy": [], "leverage_sell": []}
    meta = parse_asset_pairs({"FOOUSD": row})["FOOUSD"]
    assert meta.status == "online"
    assert meta.lot_size == Decimal("0.0001")
    assert meta.tick_size == Decimal("0.001")
    assert meta.ordermin == Decimal("1.50") and meta.costmin is None
    assert meta.cost_decimals == 3


def test_unreadable_entries_are_skipped_with_a_warning(caplog) -> None:
    bad = {"BAD": {"wsname": "B/A"}, "ALSO": "nope", "XETHZUSD": ASSET_PAIRS["XETHZUSD"]}
    with caplog.at_level(logging.WARNING, "krakked.market.pairs"):
        assert list(parse_asset_pairs(bad)) == ["ETHUSD"]
    assert "BAD" in caplog.text and "ALSO" in caplog.text


def test_missing_wsname_falls_back_to_assets_altnames() -> None:
    row = {k: v for k, v in ASSET_PAIRS["XXBTZUSD"].items() if k != "wsname"}
    assets = {"XXBT": {"altname": "XBT"}, "ZUSD": {"altname": "USD"}}
    meta = parse_asset_pairs({"XXBTZUSD": row}, assets)["XBTUSD"]
    assert (meta.base, meta.quote, meta.wsname, meta.ws_symbol) == (
        "XBT", "USD", "XBT/USD", "BTC/USD")


def test_to_row_matches_the_pairs_table_columns(pairs) -> None:
    row = pairs["XBTUSD"].to_row()
    assert list(row) == PAIR_COLUMNS
    assert row["ws_symbol"] == "BTC/USD" and row["wsname"] == "XBT/USD"
    assert row["updated_at"] is None


def test_from_row_rebuilds_the_stored_columns_of_any_pair(pairs) -> None:
    taken = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    for meta in pairs.values():
        row = meta.to_row(taken)
        back = PairMetadata.from_row(row)
        assert back.to_row(taken) == row
        assert (back.canonical, back.raw_name, back.ws_symbol) == (
            meta.canonical, meta.raw_name, meta.ws_symbol)


def test_from_row_tidies_the_stores_decimal_scale() -> None:
    row = {**parse_asset_pairs(ASSET_PAIRS)["XDGUSD"].to_row(),
           "tick_size": Decimal("1.000000000000000000E-7"),
           "lot_size": Decimal("0.000000010000000000"),
           "ordermin": Decimal("30.000000000000000000")}
    meta = PairMetadata.from_row(row)
    assert format(meta.tick_size, "f") == "0.0000001"
    assert format(meta.lot_size, "f") == "0.00000001"
    assert format(meta.ordermin, "f") == "30"
    assert meta.leverage_buy == () and not meta.margin  # the pairs table keeps no leverage


def test_from_row_refuses_a_row_without_canonical() -> None:
    with pytest.raises(StoreError, match="canonical"):
        PairMetadata.from_row({"canonical": None})


# --- universe rules ----------------------------------------------------------------------------


def test_universe_keeps_spot_pairs_that_also_offer_margin(pairs) -> None:
    universe = build_universe(pairs, US, NONE)
    # XBTUSD offers leverage but is a spot pair; MATIC cancel_only; ADA post_only;
    # USDT/XBT/EUR quotes excluded
    assert _names(universe) == ["ETHUSD", "SOLUSD", "USDTUSD", "XBTUSD", "XDGUSD"]
    assert all(m.quote == "USD" for m in universe)


def test_leverage_is_never_available_where_the_region_has_no_margin(pairs) -> None:
    us = {m.canonical: m for m in build_universe(pairs, US, NONE)}
    assert us["XBTUSD"].margin and us["XBTUSD"].margin_available is False
    margin = {m.canonical: m for m in build_universe(pairs, MARGIN, NONE)}
    assert margin["XBTUSD"].margin_available is True
    assert margin["ETHUSD"].margin_available is False  # no leverage offered
    assert not pairs["XBTUSD"].margin_available  # parsed metadata: no region applied yet


def test_exclude_leveraged_pairs_restores_the_strict_rule(pairs) -> None:
    strict = UniverseSettings(exclude_leveraged_pairs=True)
    assert _names(build_universe(pairs, US, strict)) == ["ETHUSD", "SOLUSD", "USDTUSD", "XDGUSD"]
    assert "XBTUSD" not in _names(build_universe(pairs, MARGIN, strict))


def test_include_pairs_wins_over_exclude_leveraged_pairs(pairs) -> None:
    settings = UniverseSettings(exclude_leveraged_pairs=True, include_pairs=("BTC/USD",))
    assert "XBTUSD" in _names(build_universe(pairs, US, settings))


def test_margin_pairs_are_included_when_the_region_supports_margin(pairs) -> None:
    universe = build_universe(pairs, MARGIN, NONE)
    assert "XBTUSD" in _names(universe)
    assert "XBTEUR" not in _names(universe)


def test_status_other_than_online_is_excluded(pairs) -> None:
    names = _names(build_universe(pairs, MARGIN, NONE))
    assert "MATICUSD" not in names and "ADAUSD" not in names


def test_default_quote_may_be_a_kraken_asset_id_or_another_currency(pairs) -> None:
    zusd = RegionProfile(default_quote="ZUSD")
    assert _names(build_universe(pairs, zusd, NONE)) == _names(build_universe(pairs, US, NONE))
    eur = RegionProfile(code="EU", supports_margin=True, default_quote="EUR")
    assert _names(build_universe(pairs, eur, NONE)) == ["XBTEUR"]


def test_exclude_pairs_removes_by_any_spelling(pairs) -> None:
    settings = UniverseSettings(exclude_pairs=("DOGEUSD", "eth/usd"))
    assert _names(build_universe(pairs, US, settings)) == ["SOLUSD", "USDTUSD", "XBTUSD"]


def test_include_pairs_adds_existing_pairs_whatever_their_quote_or_leverage(pairs) -> None:
    settings = UniverseSettings(include_pairs=("BTC/USD", "XRP/BTC", "XBTUSD"))
    names = _names(build_universe(pairs, US, settings))
    assert names == ["ETHUSD", "SOLUSD", "USDTUSD", "XBTUSD", "XDGUSD", "XRPXBT"]
    assert len(names) == len(set(names))


def test_include_pairs_absent_from_asset_pairs_is_ignored_with_a_warning(pairs, caplog) -> None:
    settings = UniverseSettings(include_pairs=("NOPEUSD",))
    with caplog.at_level(logging.WARNING, "krakked.market.pairs"):
        names = _names(build_universe(pairs, US, settings))
    assert "NOPEUSD" not in names and "NOPEUSD" in caplog.text


def test_a_pair_both_included_and_excluded_is_excluded(pairs) -> None:
    settings = UniverseSettings(include_pairs=("XBTUSD",), exclude_pairs=("XXBTZUSD",))
    assert "XBTUSD" not in _names(build_universe(pairs, US, settings))


# --- liquidity ---------------------------------------------------------------------------------


def _ticker(last: str, volume_24h: str, vwap_24h: str) -> dict[str, Any]:
    return {"a": [last, "1", "1.000"], "b": [last, "1", "1.000"], "c": [last, "0.1"],
            "v": ["0", volume_24h], "p": [last, vwap_24h], "t": [1, 1],
            "l": [last, last], "h": [last, last], "o": last}


TICKERS = {
    "XXBTZUSD": _ticker("100000.0", "50", "99000.0"),      # 4.95 M USD
    "XETHZUSD": _ticker("3000.00", "100", "3000.00"),      # 300 k USD
    "XDGUSD": _ticker("0.1600000", "1000", "0.1500000"),   # 150 USD
    # SOLUSD has no ticker row
    "USDTZUSD": _ticker("1.0000", "2000000", "1.0001"),
    "XXRPXXBT": _ticker("0.00002000", "100000", "0.00002000"),  # 2 XBT = 200 k USD
    "XBTUSDT": _ticker("100000.0", "1", "100000.0"),
}


def test_volume_estimate_converts_non_usd_quotes_through_their_usd_pair(pairs) -> None:
    volumes = estimate_24h_volume_usd(pairs, TICKERS)
    assert volumes["XBTUSD"] == Decimal("4950000.0")
    assert volumes["XDGUSD"] == Decimal("150")
    assert volumes["XRPXBT"] == Decimal("2") * Decimal("100000.0")
    assert volumes["XBTUSDT"] == Decimal("100000.0") * Decimal("1.0000")  # via USDTUSD
    assert "SOLUSD" not in volumes


def test_pairs_below_the_liquidity_floor_or_without_ticker_are_dropped(pairs) -> None:
    settings = UniverseSettings(min_24h_volume_usd=100_000.0)
    assert _names(build_universe(pairs, MARGIN, settings, TICKERS)) == [
        "ETHUSD", "USDTUSD", "XBTUSD"]


def test_included_pairs_bypass_the_liquidity_floor(pairs) -> None:
    settings = UniverseSettings(min_24h_volume_usd=100_000.0, include_pairs=("SOLUSD",))
    assert "SOLUSD" in _names(build_universe(pairs, US, settings, TICKERS))


def test_a_floor_without_ticker_data_is_an_error(pairs) -> None:
    with pytest.raises(UsageError, match="Ticker"):
        build_universe(pairs, US, UniverseSettings(min_24h_volume_usd=1.0))


def test_ticker_rows_keyed_by_altname_are_matched(pairs) -> None:
    tickers = {"ETHUSD": TICKERS["XETHZUSD"]}
    assert estimate_24h_volume_usd(pairs, tickers) == {"ETHUSD": Decimal("300000.0000")}


# --- refresh ----------------------------------------------------------------------------------


def test_refresh_refetches_and_reapplies_every_rule() -> None:
    payloads = [dict(ASSET_PAIRS), {k: v for k, v in ASSET_PAIRS.items() if k != "SOLUSD"}]
    calls: list[int] = []

    def fetch() -> dict[str, Any]:
        calls.append(1)
        return payloads[len(calls) - 1]

    universe = Universe(fetch, region=US, settings=UniverseSettings(exclude_pairs=("ETHUSD",)))
    assert len(universe) == 0 and universe.resolve("BTC/USDT") == "XBTUSDT"  # offline
    assert universe.refresh() == list(universe)
    assert universe.canonicals == ["SOLUSD", "USDTUSD", "XBTUSD", "XDGUSD"]
    assert "sol/usd" in universe and "BTC/USD" in universe and "ETH/USD" not in universe
    universe.refresh()
    assert universe.canonicals == ["USDTUSD", "XBTUSD", "XDGUSD"]
    assert universe.metadata("XRP/BTC").raw_name == "XXRPXXBT"


def test_a_failed_refresh_keeps_the_previous_universe() -> None:
    state = {"fail": False}

    def fetch() -> dict[str, Any]:
        if state["fail"]:
            raise RuntimeError("down")
        return ASSET_PAIRS

    universe = Universe(fetch)
    before = universe.refresh()
    state["fail"] = True
    with pytest.raises(RuntimeError):
        universe.refresh()
    assert list(universe) == before


def test_refresh_fetches_tickers_only_for_a_floor() -> None:
    universe = Universe(lambda: ASSET_PAIRS, region=MARGIN,
                        settings=UniverseSettings(min_24h_volume_usd=100_000.0),
                        fetch_tickers=lambda: TICKERS)
    assert universe.refresh() and universe.canonicals == ["ETHUSD", "USDTUSD", "XBTUSD"]


# --- resolution --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "canonical"), [
    ("BTC/USD", "XBTUSD"), ("XBT/USD", "XBTUSD"), ("BTCUSD", "XBTUSD"), ("XXBTZUSD", "XBTUSD"),
    ("XBTUSD", "XBTUSD"), ("btc-usd", "XBTUSD"), ("btc_usd", "XBTUSD"), (" xbtusd ", "XBTUSD"),
    ("BTC/USDT", "XBTUSDT"), ("XBT/USDT", "XBTUSDT"), ("BTCUSDT", "XBTUSDT"),
    ("XRP/BTC", "XRPXBT"), ("XRP/XBT", "XRPXBT"), ("XXRPXXBT", "XRPXBT"),
    ("DOGE/USD", "XDGUSD"), ("DOGEUSD", "XDGUSD"), ("XDG/USD", "XDGUSD"),
    ("USDT/USD", "USDTUSD"), ("USDTZUSD", "USDTUSD"), ("MATIC/USD", "MATICUSD"),
])
def test_every_alias_resolves_through_asset_pairs(pairs, name: str, canonical: str) -> None:
    assert PairResolver(pairs).resolve(name) == canonical


@pytest.mark.parametrize(("name", "canonical"), [
    ("BTC/USD", "XBTUSD"), ("XBT/USD", "XBTUSD"), ("BTCUSD", "XBTUSD"), ("XXBTZUSD", "XBTUSD"),
    ("XBTUSD", "XBTUSD"), ("btc-usd", "XBTUSD"), ("BTC/USDT", "XBTUSDT"), ("XRP/BTC", "XRPXBT"),
    ("XRPBTC", "XRPXBT"), ("XXRPXXBT", "XRPXBT"), ("DOGE/USD", "XDGUSD"), ("XDGUSD", "XDGUSD"),
    ("eth/btc", "ETHXBT"), ("USDTZUSD", "USDTUSD"),
])
def test_resolve_offline_works_without_asset_pairs(name: str, canonical: str) -> None:
    assert resolve_offline(name) == canonical
    assert PairResolver({}).resolve(name) == canonical


def test_unknown_pair_raises_with_close_matches(pairs) -> None:
    with pytest.raises(UnknownPairError) as err:
        PairResolver(pairs).resolve("XBTUS")
    assert "XBTUSD" in err.value.close_matches
    assert len(err.value.close_matches) <= 3
    assert "XBTUSD" in str(err.value)
    with pytest.raises(UnknownPairError) as err:
        resolve_offline("XBTUS")
    assert "XBTUSD" in err.value.close_matches
    with pytest.raises(UnknownPairError) as err:
        resolve_offline("QQQQQQQQ")
    assert err.value.close_matches == ()


def test_metadata_is_found_by_any_alias_and_unknown_offline(pairs) -> None:
    assert PairResolver(pairs).metadata("xbt-usd").raw_name == "XXBTZUSD"
    with pytest.raises(UnknownPairError):
        PairResolver({}).metadata("BTC/USD")


def test_v2_names_of_any_spelling(pairs) -> None:
    offline = _offline_resolver()
    assert offline.v2_symbol("XBTUSD") == "BTC/USD"
    assert offline.v2_symbol("XXRPXXBT") == "XRP/BTC"
    assert offline.v2_symbol("XDGUSD") == "DOGE/USD"
    assert PairResolver(pairs).v2_symbol("MATICUSD") == "MATIC/USD"
    with pytest.raises(UnknownPairError):
        offline.v2_symbol("NOPE")


# --- offline tables ----------------------------------------------------------------------------


def test_pair_map_keeps_the_original_entries_and_default_symbols() -> None:
    original = {
        "XRP/USDT": "XRPUSDT", "BTC/USDT": "XBTUSDT", "XRP/BTC": "XRPXBT",
        "ETH/USDT": "ETHUSDT", "SOL/USDT": "SOLUSDT", "ETH/BTC": "ETHXBT",
        "LTC/USDT": "LTCUSDT", "DOT/USDT": "DOTUSDT", "ADA/USDT": "ADAUSDT",
        "LINK/USDT": "LINKUSDT",
    }
    assert list(PAIR_MAP.items())[: len(original)] == list(original.items())
    assert PAIR_MAP["BTC/USD"] == "XBTUSD" and PAIR_MAP["DOGE/USD"] == "XDGUSD"
    assert DEFAULT_SYMBOLS == ["XRP/USDT", "BTC/USDT", "XRP/BTC"]


def test_offline_maps_round_trip() -> None:
    assert {v: k for k, v in REVERSE_PAIR_MAP.items()} == PAIR_MAP
    assert len(REVERSE_PAIR_MAP) == len(PAIR_MAP)
    assert all(v in PAIR_MAP for v in CSV_SYMBOL_MAP.values())
    assert CSV_SYMBOL_MAP["XBTUSDT"] == CSV_SYMBOL_MAP["BTCUSDT"] == "BTC/USDT"
    assert CSV_SYMBOL_MAP["XRPXBT"] == CSV_SYMBOL_MAP["XRPBTC"] == "XRP/BTC"
    assert CSV_SYMBOL_MAP["XBTUSD"] == CSV_SYMBOL_MAP["BTCUSD"] == "BTC/USD"
    for stem, internal in CSV_SYMBOL_MAP.items():
        assert resolve_offline(stem) == PAIR_MAP[internal]
    for internal, alt in PAIR_MAP.items():
        assert resolve_offline(internal) == alt and REVERSE_PAIR_MAP[alt] == internal


def test_offline_v2_names_agree_with_the_simulators_asset_pairs() -> None:
    sim_pairs = parse_asset_pairs(SimMarket(SimConfig()).asset_pairs_result())
    online = PairResolver(sim_pairs)
    for internal, alt in PAIR_MAP.items():
        if alt in sim_pairs:
            assert sim_pairs[alt].ws_symbol == internal
            assert online.resolve(internal) == resolve_offline(internal) == alt


# --- the simulator's AssetPairs ----------------------------------------------------------------

SIM_RESULT = SimMarket(SimConfig()).asset_pairs_result()
SIM_PAIRS = parse_asset_pairs(SIM_RESULT)
SIM_RESOLVER = PairResolver(SIM_PAIRS)


def test_sim_asset_pairs_parse_completely_and_give_the_us_universe() -> None:
    assert len(SIM_PAIRS) == len(SIM_RESULT) == 50
    universe = _names(build_universe(SIM_PAIRS, US, NONE))
    assert "XBTUSD" in universe and "ETHUSD" in universe  # spot pairs that offer margin
    assert "MATICUSD" not in universe  # cancel_only
    assert "SOLUSD" in universe and "XDGUSD" in universe and "USDTUSD" in universe
    assert all(SIM_PAIRS[c].quote == "USD" for c in universe)
    assert len(universe) == 42  # 40 USD pairs without leverage + XBTUSD, ETHUSD
    assert {c for c, m in SIM_PAIRS.items() if m.margin} == {"XBTUSD", "ETHUSD", "ETHXBT",
                                                             "XBTEUR"}
    with_margin = build_universe(SIM_PAIRS, MARGIN, NONE)
    assert _names(with_margin) == universe
    assert {m.canonical for m in with_margin if m.margin_available} == {"XBTUSD", "ETHUSD"}
    strict = _names(build_universe(SIM_PAIRS, US, UniverseSettings(exclude_leveraged_pairs=True)))
    assert set(universe) - set(strict) == {"XBTUSD", "ETHUSD"} and len(strict) == 40


def _aliases(meta: PairMetadata) -> list[str]:
    v2 = meta.ws_symbol
    return [meta.canonical, meta.raw_name, meta.wsname, v2, v2.replace("/", ""),
            v2.replace("/", "-"), v2.replace("/", "_"), meta.wsname.replace("/", "-")]


@given(
    meta=st.sampled_from(sorted(SIM_PAIRS.values(), key=lambda m: m.canonical)),
    pick=st.integers(min_value=0, max_value=7),
    lower=st.booleans(),
)
def test_any_alias_of_any_sim_pair_resolves_to_its_canonical(
    meta: PairMetadata, pick: int, lower: bool
) -> None:
    alias = _aliases(meta)[pick]
    assert SIM_RESOLVER.resolve(alias.lower() if lower else alias) == meta.canonical


def test_sim_pairs_have_the_simulators_v2_names() -> None:
    market = SimMarket(SimConfig())
    for p in market.pairs():
        assert SIM_PAIRS[p.altname].ws_symbol == p.v2name
        assert SIM_PAIRS[p.altname].tick_size == Decimal(p.tick_size)
