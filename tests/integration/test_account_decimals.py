"""Every amount Kraken sends as a decimal is stored as an exact decimal: the account runner against
the simulator (responses edited on the wire to carry ``0.1``-style values) into real DuckDB and a
real PostgreSQL, read back with the column types the destination created."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import dlt
import duckdb
import httpx
import psycopg
import pytest

from krakked.account.destinations import default_duckdb_path, make_pipeline
from krakked.account.runner import run_sync
from krakked.config import Settings, load_settings
from krakked.credentials import KeyPair
from krakked.kraken.futures import FuturesClient
from krakked.kraken.limits import FuturesLimiter, PublicLimiter, SpotCounterLimiter
from krakked.kraken.spot import SpotClient
from krakked.sim import SimClock, SimConfig, Simulator

NOW = datetime(2026, 11, 22, tzinfo=UTC)
TENTH = Decimal("0.1")
FEE = Decimal("0.00012345")
UNKNOWN = Decimal("1.123456789012345")  # a numeric field krakked has no hint for: 15 places
TINY = Decimal("1.2345678901234567E-9")  # 25 places: more than DECIMAL(38,18) holds
TINY_STORED = Decimal("0.000000001234567890")  # rounded at the 18th place, the load not failed
PLACES = Decimal(1).scaleb(-18)


@pytest.fixture(autouse=True)
def _offline_dlt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


# --- a simulator whose answers carry chosen values --------------------------------------------


_MARK = re.compile(r'"\\u0000D(.*?)\\u0000"')


def _dumps(payload: Any) -> bytes:
    """JSON with Decimals written as the exact numbers they are (as Kraken writes them)."""
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"\0D{value}\0"
        raise TypeError(type(value).__name__)

    return _MARK.sub(r"\1", json.dumps(payload, default=default)).encode()


class Edited(httpx.BaseTransport):
    """The simulator's transport; the JSON answers of the named endpoints (last path segment)
    pass through an edit function first, and every edited account-log entry is kept."""

    def __init__(self, sim: Simulator, edits: dict[str, Callable[[Any, dict[str, Any]], None]]
                 ) -> None:
        self.inner = sim.transport()
        self.edits = edits
        self.memo: dict[str, Any] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        edit = self.edits.get(request.url.path.rstrip("/").rsplit("/", 1)[-1])
        if edit is None or response.status_code != 200:
            return response
        payload = json.loads(response.read(), parse_float=Decimal)
        edit(payload, self.memo)
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-encoding")}
        return httpx.Response(response.status_code, headers=headers, content=_dumps(payload))


def _first(memo: dict[str, Any], name: str, items: list[Any], ident: Callable[[Any], Any],
           usable: Callable[[Any], bool] = lambda _: True) -> Any:
    """The item to edit: the first usable one the first page showed, found again by id."""
    if name not in memo:
        memo[name] = next((ident(i) for i in items if usable(i)), None)
    return next((i for i in items if ident(i) == memo[name]), None)


def _edit_account_log(payload: Any, memo: dict[str, Any]) -> None:
    entry = _first(memo, "account_log", payload["logs"], lambda e: e["booking_uid"],
                   lambda e: e.get("fee") is not None)
    if entry is not None:
        entry.update(fee=FEE, realized_pnl=TENTH, new_balance=Decimal("25099.1"),
                     funding_rate=TINY, liquidation_fee=UNKNOWN, rebate_amount=UNKNOWN)
    memo.setdefault("account_log_entries", {}).update(
        {e["booking_uid"]: e for e in payload["logs"]})


def _edit_executions(payload: Any, memo: dict[str, Any]) -> None:
    element = _first(memo, "executions", payload["elements"], lambda e: e["uid"])
    if element is not None:
        execution = element["event"]["Execution"]["execution"]
        execution.update(quantity="0.1", price="0.00012345")
        for side in ("makerOrderData", "takerOrderData"):
            if execution[side].get("fee") is not None:
                execution[side]["fee"] = "0.00012345"


def _edit_positions(payload: Any, memo: dict[str, Any]) -> None:
    element = _first(memo, "positions", payload["elements"], lambda e: e["uid"])
    if element is not None:
        element["event"]["PositionUpdate"].update(realizedPnL="0.1", fee="0.00012345")


def _edit_tickers(payload: Any, memo: dict[str, Any]) -> None:
    ticker = payload["tickers"][0]
    memo["ticker"] = ticker["symbol"]
    ticker.update(markPrice=TENTH, fundingRate=FEE, openInterest=UNKNOWN)


def _edit_open_positions(payload: Any, memo: dict[str, Any]) -> None:
    position = payload["openPositions"][0]
    memo["open_position"] = position["symbol"]
    position.update(price=TENTH, size=FEE)


def _spot_editor(name: str, key: str, fields: dict[str, str]
                 ) -> Callable[[Any, dict[str, Any]], None]:
    def edit(payload: Any, memo: dict[str, Any]) -> None:
        entries = (payload.get("result") or {}).get(key) or {}  # an error answer has none
        ident = _first(memo, name, list(entries), lambda i: i)
        if ident is not None:
            entries[ident].update(fields)
    return edit


FUTURES_EDITS = {"account-log": _edit_account_log, "executions": _edit_executions,
                 "positions": _edit_positions, "tickers": _edit_tickers,
                 "openpositions": _edit_open_positions}
SPOT_EDITS = {
    "Ledgers": _spot_editor("ledgers", "ledger", {"amount": "0.1", "fee": "0.00012345"}),
    "TradesHistory": _spot_editor("trades_history", "trades",
                                  {"price": "0.1", "fee": "0.00012345", "vol": "0.00012345"}),
    "ClosedOrders": _spot_editor("closed_orders", "closed", {"vol": "0.1", "fee": "0.00012345"}),
}


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW)


@pytest.fixture
def sim(clock: SimClock) -> Simulator:
    return Simulator(SimConfig(seed=7, clock=clock.now, monotonic=clock.monotonic, public_rate=0,
                               futures_executions=60, spot_trades=40))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"KRAKKED_HOME": str(tmp_path / "home")})


def _sync_futures(sim: Simulator, clock: SimClock, settings: Settings, destination: Any
                  ) -> Edited:
    transport = Edited(sim, FUTURES_EDITS)
    spec = sim.config.account("futures")
    with FuturesClient(KeyPair.create("futures", spec.api_key, spec.api_secret, "sim"),
                       settings=settings, transport=transport,
                       limiter=FuturesLimiter(clock=clock.monotonic, sleep=clock.sleep),
                       sleep=clock.sleep, persist_nonce=False) as client:
        report = run_sync("futures", settings=settings, client=client, destination=destination,
                          now=lambda: datetime.fromtimestamp(clock.now(), UTC))
    assert report.status == "ok" and all(report.rows.values()), report.resources
    return transport


def _sync_spot(sim: Simulator, clock: SimClock, settings: Settings, destination: Any) -> Edited:
    transport = Edited(sim, SPOT_EDITS)
    spec = sim.config.account("spot")
    with SpotClient(KeyPair.create("spot", spec.api_key, spec.api_secret, "sim"),
                    settings=settings, transport=transport,
                    limiter=SpotCounterLimiter("pro", clock=clock.monotonic, sleep=clock.sleep),
                    public_limiter=PublicLimiter(clock=clock.monotonic, sleep=clock.sleep),
                    sleep=clock.sleep, persist_nonce=False) as client:
        report = run_sync("spot", settings=settings, client=client, destination=destination,
                          resources=["ledgers", "trades_history", "closed_orders"],
                          now=lambda: datetime.fromtimestamp(clock.now(), UTC))
    assert report.status == "ok" and all(report.rows.values()), report.resources
    return transport


# --- reading back -------------------------------------------------------------------------------


class Reader:
    """Queries and column types of one destination, the same way for DuckDB and PostgreSQL."""

    def __init__(self, query: Callable[[str, list[Any]], list[tuple[Any, ...]]]) -> None:
        self.query = query

    def types(self, dataset: str, table: str) -> dict[str, tuple[str, Any, Any]]:
        rows = self.query(
            "SELECT column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            [dataset, table])
        return {name: (str(kind).lower(), precision, scale)
                for name, kind, precision, scale in rows}

    def row(self, dataset: str, table: str, key: str, value: Any, columns: list[str]
            ) -> dict[str, Any]:
        (found,) = self.query(
            f"SELECT {', '.join(columns)} FROM {dataset}.{table} WHERE {key} = %s",  # noqa: S608
            [value])
        return dict(zip(columns, found, strict=True))

    def rows(self, dataset: str, table: str, key: str, columns: list[str]
             ) -> dict[Any, dict[str, Any]]:
        found = self.query(
            f"SELECT {key}, {', '.join(columns)} FROM {dataset}.{table}", [])  # noqa: S608
        return {r[0]: dict(zip(columns, r[1:], strict=True)) for r in found}


def _duckdb_reader(path: Path) -> Reader:
    def query(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(path), read_only=True) as con:
            return con.execute(sql.replace("%s", "?"), params).fetchall()
    return Reader(query)


def _postgres_reader(url: str) -> Reader:
    def query(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as con:
            return con.execute(sql, params).fetchall()  # type: ignore[arg-type]
    return Reader(query)


def dlt_postgres_url(url: str) -> str:
    """The test server's URL as dlt wants it: host (a percent-encoded socket directory) and a
    password (unused: the server trusts local connections) in the URL itself."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = quote(query.get("host", [parts.hostname or "localhost"])[0], safe="")
    port = query.get("port", [str(parts.port or 5432)])[0]
    return f"postgresql://postgres:unused@{host}:{port}{parts.path}"


@pytest.fixture(params=["duckdb", "postgres"])
def destination(request: pytest.FixtureRequest, settings: Settings
                ) -> Iterator[tuple[Any, Callable[[str], Reader]]]:
    """(destination for run_sync, source kind -> a reader of what it loaded)."""
    if request.param == "duckdb":
        yield None, lambda kind: _duckdb_reader(default_duckdb_path(kind, settings))
        return
    url = request.getfixturevalue("postgres_db_url")
    yield (dlt.destinations.postgres(credentials=dlt_postgres_url(url)),
           lambda kind: _postgres_reader(url))


def _is_exact_decimal(column: tuple[str, Any, Any]) -> bool:
    kind, precision, scale = column
    return kind.startswith(("decimal", "numeric")) and (precision, scale) == (38, 18)


def _stored(value: Decimal) -> Decimal:
    """What DECIMAL(38,18) holds of ``value``: itself, rounded at the 18th place if finer."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -18:
        return value.quantize(PLACES)
    return value


# --- the tests ----------------------------------------------------------------------------------


ACCOUNT_LOG_MONEY = ("fee", "funding_rate", "mark_price", "trade_price", "old_balance",
                     "new_balance", "old_average_entry_price", "new_average_entry_price",
                     "realized_pnl", "realized_funding", "conversion_spread_percentage",
                     "liquidation_fee")


def test_futures_amounts_are_exact_decimals_at_the_destination(
        sim, clock, settings, destination) -> None:
    target, reader_of = destination
    transport = _sync_futures(sim, clock, settings, target)
    read = reader_of("futures")
    memo = transport.memo

    expected_decimals = {
        "account_log": ACCOUNT_LOG_MONEY,
        "executions": ("quantity", "price", "fee", "usd_value", "mark_price"),
        "position_history": ("realized_pnl", "fee", "new_position", "execution_price"),
        "tickers": ("mark_price", "funding_rate", "open_interest", "bid", "ask"),
        "open_positions": ("price", "size"),
    }
    for table, columns in expected_decimals.items():
        types = read.types("kraken_futures", table)
        for column in columns:
            assert _is_exact_decimal(types[column]), (table, column, types.get(column))

    cash = read.row("kraken_futures", "account_log", "booking_uid", memo["account_log"],
                    ["fee", "realized_pnl", "new_balance", "funding_rate", "liquidation_fee",
                     "rebate_amount"])
    assert cash == {"fee": FEE, "realized_pnl": TENTH, "new_balance": Decimal("25099.1"),
                    "funding_rate": TINY_STORED, "liquidation_fee": UNKNOWN,
                    "rebate_amount": UNKNOWN}  # a field krakked does not know: exact too
    assert _is_exact_decimal(read.types("kraken_futures", "account_log")["rebate_amount"])
    # every amount of every account-log entry is what Kraken sent, digit for digit
    entries = memo["account_log_entries"]
    columns = list(ACCOUNT_LOG_MONEY)
    table = read.rows("kraken_futures", "account_log", "booking_uid", columns)
    assert set(table) == set(entries)
    for uid, entry in entries.items():
        stored = table[uid]
        for column in columns:
            sent = entry.get(column)
            assert stored[column] == (None if sent is None else _stored(Decimal(sent))), (
                uid, column, sent, stored[column])

    fill = read.row("kraken_futures", "executions", "uid", memo["executions"],
                    ["quantity", "price", "fee"])
    assert fill == {"quantity": TENTH, "price": FEE, "fee": FEE}
    update = read.row("kraken_futures", "position_history", "element_uid", memo["positions"],
                      ["realized_pnl", "fee"])
    assert update == {"realized_pnl": TENTH, "fee": FEE}
    ticker = read.row("kraken_futures", "tickers", "symbol", memo["ticker"],
                      ["mark_price", "funding_rate", "open_interest"])
    assert ticker == {"mark_price": TENTH, "funding_rate": FEE, "open_interest": UNKNOWN}
    position = read.row("kraken_futures", "open_positions", "symbol", memo["open_position"],
                        ["price", "size"])
    assert position == {"price": TENTH, "size": FEE}


def test_spot_amounts_are_exact_decimals_at_the_destination(
        sim, clock, settings, destination) -> None:
    target, reader_of = destination
    transport = _sync_spot(sim, clock, settings, target)
    read = reader_of("spot")
    memo = transport.memo

    checks = {
        "ledgers": ("ledger_id", {"amount": TENTH, "fee": FEE}, ("balance",)),
        "trades_history": ("txid", {"price": TENTH, "fee": FEE, "vol": FEE}, ("cost",)),
        "closed_orders": ("txid", {"vol": TENTH, "fee": FEE}, ("price", "cost")),
    }
    for table, (key, values, others) in checks.items():
        types = read.types("kraken_spot", table)
        for column in (*values, *others):
            assert _is_exact_decimal(types[column]), (table, column, types.get(column))
        assert read.row("kraken_spot", table, key, memo[table], list(values)) == values


def test_amount_columns_an_earlier_version_stored_as_double_are_named_with_the_fix(
        sim, clock, settings, caplog) -> None:
    # what an earlier krakked left behind: the account log's amounts in DOUBLE columns
    old = make_pipeline("futures", settings=settings)
    old.run(dlt.resource(
        [{"booking_uid": "old-1", "id": 1, "fee": 0.5, "realized_pnl": 0.25,
          "timestamp": datetime(2026, 1, 1)}],
        name="account_log", write_disposition="merge", primary_key="booking_uid",
        columns={"fee": {"data_type": "double"}, "realized_pnl": {"data_type": "double"}}))

    _sync_futures(sim, clock, settings, None)
    types = _duckdb_reader(default_duckdb_path("futures", settings)).types(
        "kraken_futures", "account_log")
    assert types["fee"][0] == "double"  # dlt never changes a column's type
    (warning,) = [r.getMessage() for r in caplog.records
                  if "floating point" in r.getMessage()]
    assert "account_log" in warning and "fee" in warning and "realized_pnl" in warning
    assert "krakked account reset account_log" in warning
    assert "executions" not in warning
