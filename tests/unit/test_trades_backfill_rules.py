"""The trades backfill's pure rules: reading Kraken's Trades rows exactly, start points, and where
a resumed backfill starts (the stored cursor, or inside the last second of CSV trades)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from krakked.errors import MalformedResponseError, UsageError
from krakked.sync.trades import get_resume_point, parse_trades, since_cursor

# Kraken's documented example row, with the time as SpotClient decodes it (a Decimal).
ROW = ["30243.40000", "0.34507674", Decimal("1688669597.8277369"), "b", "m", "", 61044952]


def test_trades_rows_are_read_exactly_with_time_rounded_half_even_to_the_microsecond() -> None:
    page = parse_trades({"XXBTZUSD": [ROW, ["30243.5", "1.0", Decimal("1688669597.8277385"),
                                            "s", "l", "x", 61044953]],
                         "last": "1688669597827738500"}, "XBTUSD")
    rows = page.table.to_pylist()
    assert rows[0] == {
        "id": 61044952, "symbol": "XBTUSD",
        "timestamp": datetime(2023, 7, 6, 18, 53, 17, 827737, tzinfo=UTC),
        "price": Decimal("30243.40000"), "volume": Decimal("0.34507674"),
        "side": "buy", "order_type": "market", "misc": "", "source": "rest"}
    # .8277385 s = 827738.5 µs -> half-even -> 827738 (half-up would say 827739)
    assert rows[1]["timestamp"].microsecond == 827738
    assert (rows[1]["side"], rows[1]["order_type"], rows[1]["misc"]) == ("sell", "limit", "x")
    assert page.last == 1688669597827738500
    assert (page.first_us, page.last_us) == (1688669597827737, 1688669597827738)


def test_prices_and_volumes_keep_every_digit_kraken_sent() -> None:
    page = parse_trades({"P": [["0.000000012345", "123456789.123456789", Decimal("1700000000"),
                                "b", "m", "", 1]], "last": "1700000000000000000"}, "PEPEUSD")
    row = page.table.to_pylist()[0]
    assert row["price"] == Decimal("0.000000012345")
    assert row["volume"] == Decimal("123456789.123456789")


def test_an_empty_page_keeps_kraken_s_cursor() -> None:
    page = parse_trades({"XXBTZUSD": [], "last": "1700000000000000000"}, "XBTUSD")
    assert page.rows == 0 and page.last == 1700000000000000000 and page.last_us is None


@pytest.mark.parametrize("row", [
    ["1", "1", Decimal(1), "x", "m", "", 1],  # side neither b nor s
    ["1", "1", Decimal(1), "b", "m", ""],  # no trade id
    ["one", "1", Decimal(1), "b", "m", "", 1],  # price not a decimal
    ["1", "1", None, "b", "m", "", 1],  # no time
])
def test_a_malformed_row_is_an_error_naming_the_pair(row: list[Any]) -> None:
    with pytest.raises(MalformedResponseError, match="Trades row for XBTUSD"):
        parse_trades({"XXBTZUSD": [row], "last": "1"}, "XBTUSD")


def test_a_result_without_one_pair_key_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="no single pair key"):
        parse_trades({"last": "1"}, "XBTUSD")


def test_start_points_include_trades_at_since() -> None:
    assert since_cursor(datetime(2024, 1, 1, tzinfo=UTC)) == 1704067200 * 10**9 - 1
    assert since_cursor("2024-01-01") == 1704067200 * 10**9 - 1
    assert since_cursor(1704067200) == 1704067200 * 10**9 - 1  # Unix seconds
    assert since_cursor(1704067200123456789) == 1704067200123456789  # Kraken's own cursor
    assert since_cursor(0) == -1  # Kraken's first trade
    with pytest.raises(UsageError):
        since_cursor(-5)


class _Store:
    """What ``get_resume_point`` reads of a store."""

    def __init__(self, cursor: int | None, summary: dict[str, Any] | None) -> None:
        self.cursor = cursor
        self.summary = summary

    def read_sync_status(self, symbol: str) -> list[dict[str, Any]]:
        rows = [{"symbol": symbol, "data_type": "candles_1h", "last_kraken_since": 5}]
        if self.cursor is not None:
            rows.append({"symbol": symbol, "data_type": "trades",
                         "last_kraken_since": self.cursor})
        return rows

    def trades_summary(self, symbol: str) -> dict[str, Any] | None:
        return self.summary


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_resume_point_is_the_stored_cursor_of_the_api_backfill() -> None:
    newest = _t("2024-03-01T10:00:00.123456")
    store = _Store(1709287200123456999, {"first": newest, "last": newest, "rows": 5,
                                         "last_id": 9, "last_api_time": newest})
    assert get_resume_point(store, "XBTUSD") == 1709287200123456999  # type: ignore[arg-type]


def test_resume_point_is_nothing_when_nothing_is_stored() -> None:
    assert get_resume_point(_Store(None, None), "XBTUSD") is None  # type: ignore[arg-type]


def test_resume_starts_inside_the_last_second_of_csv_trades_newer_than_the_cursor() -> None:
    csv_last = _t("2024-03-31T23:59:59")  # Kraken's CSV files have whole seconds
    store = _Store(1709287200123456999, {"first": _t("2013-10-06T21:34:15"), "last": csv_last,
                                         "rows": 10**6, "last_id": 9,
                                         "last_api_time": _t("2024-03-01T10:00:00.123456")})
    assert get_resume_point(store, "XBTUSD") == (  # type: ignore[arg-type]
        int(csv_last.timestamp()) * 10**9 - 1)
    only_csv = _Store(None, {"first": csv_last, "last": csv_last, "rows": 3, "last_id": None,
                             "last_api_time": None})
    assert get_resume_point(only_csv, "XBTUSD") == (  # type: ignore[arg-type]
        int(csv_last.timestamp()) * 10**9 - 1)


def test_csv_trades_older_than_the_api_tail_do_not_move_the_resume_point() -> None:
    api_last = _t("2024-05-01T00:00:00.5")
    store = _Store(1714521600500000000, {"first": _t("2013-10-06T21:34:15"), "last": api_last,
                                         "rows": 10, "last_id": 9, "last_api_time": api_last})
    assert get_resume_point(store, "XBTUSD") == 1714521600500000000  # type: ignore[arg-type]
