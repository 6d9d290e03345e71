"""Reading Kraken's CSV files: names, sources (directories, zip members), layout sniffing, exact
parsing, bad rows with their line numbers, skipped rows and the coverage holes they leave."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from krakked.errors import ImportFormatError, UsageError
from krakked.sync.csv_import import check_file
from krakked.sync.csv_parse import sniff
from krakked.sync.csv_sources import CsvSource, find_sources, parse_name

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC
MAX = 2_000_000_000


def _source(path: Path) -> CsvSource:
    return CsvSource(path, None, path.stat().st_size)


def _check(tmp_path: Path, text: str | bytes, kind: str = "trades", interval: int | None = None,
           *, skip_bad: bool = False, name: str = "XBTUSD.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    checked = check_file(_source(path), kind, interval, skip_bad=skip_bad, max_seconds=MAX)
    assert checked is not None
    layout, scan, spool = checked
    with spool:
        batches = list(spool.batches())
    table = pa.Table.from_batches(batches) if batches else None
    return layout, scan, table


def _bad_line(tmp_path: Path, text: str, kind: str = "trades", interval: int | None = None
              ) -> ImportFormatError:
    with pytest.raises(ImportFormatError) as caught:
        _check(tmp_path, text, kind, interval)
    return caught.value


def _trades(n: int, per_second: int = 3) -> list[str]:
    return [f"{T0 + i // per_second},{100 + i % 5}.5,0.{i + 1:08d}" for i in range(n)]


# -- names and sources ---------------------------------------------------------------------------


def test_file_names_say_pair_and_interval() -> None:
    assert parse_name("XBTUSD_1.csv") == parse_name("XBTUSD_1.CSV")
    assert (parse_name("XBTUSD_1.csv").stem, parse_name("XBTUSD_1.csv").interval) == ("XBTUSD", 1)
    assert parse_name("XBTUSD_720.csv").interval == 720
    assert (parse_name("XBTUSD.csv").stem, parse_name("XBTUSD.csv").interval) == ("XBTUSD", None)
    assert parse_name("._XBTUSD.csv") is None  # a macOS resource fork in a zip
    assert parse_name("readme.txt") is None


def test_directories_are_searched_recursively_and_zip_members_matched_by_basename(
        tmp_path: Path) -> None:
    (tmp_path / "q1" / "deep").mkdir(parents=True)
    (tmp_path / "q1" / "deep" / "ETHUSD_5.csv").write_text(f"{T0},1,1,1,1,1,1\n")
    (tmp_path / "q1" / "notes.txt").write_text("hello")
    with zipfile.ZipFile(tmp_path / "q1" / "Kraken_OHLCVT_Q4_2020.zip", "w") as z:
        z.writestr("Kraken_OHLCVT_Q4_2020/XBTUSD_1.csv", f"{T0},1,1,1,1,1,1\n")
        z.writestr("__MACOSX/Kraken_OHLCVT_Q4_2020/._XBTUSD_1.csv", "junk")
        z.writestr("Kraken_OHLCVT_Q4_2020/", "")
    found = find_sources(directory=tmp_path)
    assert [s.basename for s in found] == ["XBTUSD_1.csv", "ETHUSD_5.csv"]
    member = found[0]
    assert member.member == "Kraken_OHLCVT_Q4_2020/XBTUSD_1.csv"
    assert member.display.endswith("Kraken_OHLCVT_Q4_2020.zip:Kraken_OHLCVT_Q4_2020/XBTUSD_1.csv")
    with member.open() as stream:
        assert stream.read() == f"{T0},1,1,1,1,1,1\n".encode()


def test_a_missing_path_or_a_file_of_another_kind_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or directory"):
        find_sources([tmp_path / "nope.zip"])
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(UsageError, match=r"not a \.csv file, a \.zip archive or a directory"):
        find_sources([tmp_path / "data.parquet"])
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable zip archive"):
        find_sources([tmp_path / "broken.zip"])


# -- layouts -------------------------------------------------------------------------------------


def test_layouts_are_sniffed_from_the_first_lines() -> None:
    three = sniff([b"1700000000,100.5,0.1"], "trades", "f")
    assert (three.columns, three.header, three.fractional) == (
        ("timestamp", "price", "volume"), False, False)
    assert sniff([b"1700000000.25,100.5,0.1"], "trades", "f").fractional
    quarterly = sniff([b"price,volume,timestamp,side,ordertype,misc,trade_id",
                       b"100.5,0.1,1700000000.1234,b,l,,42"], "trades", "f")
    assert quarterly.header and quarterly.has_ids and quarterly.fractional
    assert quarterly.columns == ("price", "volume", "timestamp", "side", "order_type", "misc",
                                 "id")
    assert sniff([b"price,volume,timestamp(s),side(b/s),ordertype(m/l),misc,trade_id"],
                 "trades", "f").has_ids
    headerless = sniff([b"100.5,0.1,1700000000,s,m,,7"], "trades", "f")
    assert headerless.has_ids and not headerless.header
    assert sniff([b"1700000000,1,2,0.5,1.5,10,3"], "candles", "f").name == "ohlcvt"


@pytest.mark.parametrize(("kind", "line", "reason"), [
    ("trades", b"1700000000,1,2,3,4", "expected 3 fields"),
    ("candles", b"1700000000,1,2,3", "expected 7 fields"),
    ("trades", b"timestamp,amount", "lacks price"),
    ("trades", b"price,price,timestamp,volume", "names price twice"),
    ("candles", b"price,volume,timestamp", "a trades file's"),
])
def test_an_unknown_layout_stops_the_file_at_line_1(kind: str, line: bytes, reason: str) -> None:
    with pytest.raises(ImportFormatError, match=reason) as caught:
        sniff([line], kind, "archive.zip:XBTUSD.csv")
    assert caught.value.line == 1 and str(caught.value).startswith("archive.zip:XBTUSD.csv:1: ")


# -- exact values --------------------------------------------------------------------------------


def test_prices_and_volumes_are_exact_decimals(tmp_path: Path) -> None:
    _, scan, table = _check(tmp_path, f"{T0},0.1,0.000000000000000001\n"
                                      f"{T0 + 1},99999999999999999999.999999999999999999,3\n"
                                      f"{T0 + 2},30306.1,0.00012345\n")
    assert table["price"].to_pylist() == [
        Decimal("0.1"), Decimal("99999999999999999999.999999999999999999"), Decimal("30306.1")]
    assert table["volume"][0].as_py() == Decimal("1E-18")
    assert table["timestamp"][2].as_py() == datetime(2023, 11, 14, 22, 13, 22, tzinfo=UTC)
    assert (scan.rows, scan.bad) == (3, 0)


def test_fractional_seconds_round_half_even_to_the_microsecond(tmp_path: Path) -> None:
    _, _, table = _check(tmp_path, f"{T0}.0000005,1,1\n{T0}.0000015,1,1\n{T0}.123456789,1,1\n")
    micros = table["timestamp"].cast(pa.int64()).to_pylist()
    assert micros == [T0 * 10**6, T0 * 10**6 + 2, T0 * 10**6 + 123457]


def test_a_fraction_after_the_first_block_is_read_exactly(tmp_path: Path) -> None:
    rows = _trades(200_000)
    rows.append(f"{T0 + 70_000}.25,1,1")  # ~7 MB in: integer seconds stop parsing there
    _, scan, table = _check(tmp_path, "\n".join(rows) + "\n")
    assert scan.rows == table.num_rows == 200_001
    assert table["timestamp"][200_000].as_py() == datetime.fromtimestamp(T0 + 70_000.25, UTC)


def test_the_quarterly_variant_keeps_kraken_ids_side_and_order_type(tmp_path: Path) -> None:
    layout, _, table = _check(tmp_path, (
        "price,volume,timestamp,side,ordertype,misc,trade_id\r\n"
        f"100.5,0.1,{T0}.1234,b,l,,41\r\n"
        f"100.6,0.2,{T0}.5,s,m,x,42\r\n"))
    assert layout.name == "time-and-sales with ids"
    assert table.to_pydict() == {
        "timestamp": [datetime(2023, 11, 14, 22, 13, 20, 123400, tzinfo=UTC),
                      datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)],
        "price": [Decimal("100.5"), Decimal("100.6")], "volume": [Decimal("0.1"), Decimal("0.2")],
        "id": [41, 42], "side": ["buy", "sell"], "order_type": ["limit", "market"],
        "misc": ["", "x"]}


def test_ohlcvt_rows_become_candles_with_their_trade_count(tmp_path: Path) -> None:
    _, scan, table = _check(tmp_path, f"{T0 + 40},1.5,2,1,1.75,10.25,7\n"
                                      f"{T0 + 160},1,1,1,1,0.5,1\n", "candles", 1,
                            name="XBTUSD_1.csv")
    assert table.column_names == ["timestamp", "open", "high", "low", "close", "volume",
                                  "trade_count"]
    assert table["trade_count"].to_pylist() == [7, 1]
    assert table["close"][0].as_py() == Decimal("1.75")
    assert (scan.first_us, scan.last_us) == ((T0 + 40) * 10**6, (T0 + 160) * 10**6)


def test_a_byte_order_mark_and_trailing_blank_lines_are_not_rows(tmp_path: Path) -> None:
    _, scan, table = _check(tmp_path, b"\xef\xbb\xbf" + f"{T0},1,1\n{T0},2,1\n\n\n".encode())
    assert (scan.rows, scan.bad, table.num_rows) == (2, 0, 2)


# -- bad rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "reason"), [
    (f"{T0},abc,1", "price 'abc' is not a decimal number"),
    (f"{T0},0.1234567890123456789,1", "price has more than 18 decimal places"),
    (f"{T0},100000000000000000000,1", "price 100000000000000000000 does not fit DECIMAL(38,18)"),
    (f"{T0},nan,1", "price 'nan' is not a decimal number"),
    (f"{T0},1,1,1", "expected 3 fields, got 4"),
    (f"{T0},1", "expected 3 fields, got 2"),
    (f"{T0},,1", "no price value"),
    (f"{T0},0,1", "price 0 is not positive"),
    (f"{T0},1,-0.5", "volume -0.5 is negative"),
    (f"{T0 * 1000},1,1", "is not a Unix time in seconds"),
    (f"{T0 - 5},1,1", "time goes back: second 2023-11-14T22:13:15+00:00 after"),
    ("", "empty line"),
])
def test_a_bad_row_stops_the_file_naming_its_line_and_reason(tmp_path: Path, row: str,
                                                             reason: str) -> None:
    error = _bad_line(tmp_path, f"{T0},1,1\n{T0},1,1\n{row}\n{T0 + 1},1,1\n")
    assert error.line == 3 and reason in error.reason
    assert str(error).startswith(f"{tmp_path / 'XBTUSD.csv'}:3: ")


@pytest.mark.parametrize(("row", "reason"), [
    (f"{T0 + 30},1,1,1,1,1,1", "is not the start of a 1m interval"),
    (f"{T0 + 40},1,1,1,1,1,1", "is not after the previous row's"),
    (f"{T0 + 100},1,1,1,1,1,-1", "trades -1 is negative"),
    (f"{T0 + 100}.5,1,1,1,1,1,1", "is not the start of a 1m interval"),
])
def test_a_bad_ohlcvt_row_names_its_line(tmp_path: Path, row: str, reason: str) -> None:
    error = _bad_line(tmp_path, f"{T0 + 40},1,1,1,1,1,1\n{row}\n", "candles", 1)
    assert (error.line, reason in error.reason) == (2, True), error


@pytest.mark.parametrize(("row", "reason"), [
    (f"1,1,{T0},x,l,,3", "side 'x' is not b or s"),
    (f"1,1,{T0},b,q,,3", "ordertype 'q' is not m or l"),
    (f"1,1,{T0},b,l,,", "no trade_id value"),
])
def test_a_bad_quarterly_row_counts_the_header_as_line_1(tmp_path: Path, row: str,
                                                         reason: str) -> None:
    error = _bad_line(tmp_path, "price,volume,timestamp,side,ordertype,misc,trade_id\n"
                                f"1,1,{T0},b,l,,2\n{row}\n")
    assert error.line == 3 and reason in error.reason


def test_line_numbers_hold_deep_into_a_file_read_in_many_blocks(tmp_path: Path) -> None:
    rows = _trades(300_000)  # ~9 MB: several blocks of the threaded reader
    rows[250_000] = f"{T0 + 83_333},1,oops"  # a parse error: found by the careful reader
    assert _bad_line(tmp_path, "\n".join(rows) + "\n").line == 250_001
    rows[250_000] = f"{T0 + 83_333},1,-1"  # parses; fails a check of the fast reader
    assert _bad_line(tmp_path, "\n".join(rows) + "\n").line == 250_001


def test_skip_bad_counts_the_bad_rows_and_keeps_the_first_lines(tmp_path: Path) -> None:
    rows = _trades(30)
    for i in (4, 9, 20):
        rows[i] = f"{T0 + i // 3},bad,1"
    rows[25] = ""  # a blank line inside the file is a bad row too
    _, scan, table = _check(tmp_path, "\n".join(rows) + "\n\n", skip_bad=True)
    assert (scan.rows, scan.bad, table.num_rows) == (30, 4, 26)
    assert [b.line for b in scan.samples] == [5, 10, 21, 26]
    assert scan.samples[0].reason.startswith("price 'bad' is not a decimal number")


def test_a_skipped_row_leaves_its_seconds_out_of_the_coverage(tmp_path: Path) -> None:
    rows = [f"{T0},1,1", f"{T0 + 10},1,1", "garbage", f"{T0 + 12},1,1", f"{T0 + 20},1,1"]
    _, scan, _ = _check(tmp_path, "\n".join(rows) + "\n", skip_bad=True)
    assert scan.holes == [((T0 + 10) * 10**6, (T0 + 13) * 10**6)]
    _, scan, _ = _check(tmp_path, "x,1,1\n" + "\n".join(rows[:2]) + "\n", skip_bad=True)
    assert scan.holes == [(None, (T0 + 1) * 10**6)]  # before the first good row: open start


def test_a_skipped_ohlcvt_row_leaves_its_intervals_out_of_the_coverage(tmp_path: Path) -> None:
    rows = [f"{T0 + 40},1,1,1,1,1,1", f"{T0 + 100},1,1,1,1,1,1", "bad,1,1,1,1,1,1",
            f"{T0 + 400},1,1,1,1,1,1"]
    _, scan, table = _check(tmp_path, "\n".join(rows) + "\n", "candles", 1, skip_bad=True)
    assert table.num_rows == 3
    assert scan.holes == [((T0 + 160) * 10**6, (T0 + 400) * 10**6)]



def test_a_file_of_nothing_but_bad_rows_stops_even_when_skipping(tmp_path: Path) -> None:
    text = "".join(f"{T0 + i},x,1\n" for i in range(1500))
    with pytest.raises(ImportFormatError, match=r"the first 1000 rows are all bad .*line 1, "
                                                r"price 'x' is not a decimal number"):
        _check(tmp_path, text, skip_bad=True)


def _patched_zip(tmp_path: Path, patch: bytes, at_data: bool) -> CsvSource:
    """A one-member stored zip with bytes changed: the compression method (both headers) or
    the member's data."""
    archive = tmp_path / "k.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("XBTUSD.csv", f"{T0},1,1\n" * 10)
    raw = bytearray(archive.read_bytes())
    if at_data:
        start = 30 + len("XBTUSD.csv")
        raw[start:start + len(patch)] = patch
    else:
        for header in (b"PK\x03\x04", b"PK\x01\x02"):
            at = raw.index(header)
            offset = 8 if header == b"PK\x03\x04" else 10
            raw[at + offset:at + offset + 2] = patch
    archive.write_bytes(bytes(raw))
    return find_sources([archive])[0]


def test_a_member_zipfile_cannot_inflate_or_a_damaged_one_fails_its_file(tmp_path: Path) -> None:
    deflate64 = _patched_zip(tmp_path, b"\x09\x00", at_data=False)
    with pytest.raises(ImportFormatError, match=r"k\.zip:XBTUSD\.csv: cannot decompress .* "
                                                r"extract the archive"):
        check_file(deflate64, "trades", None, max_seconds=MAX)
    damaged = _patched_zip(tmp_path, b"9", at_data=True)
    with pytest.raises(ImportFormatError, match=r"k\.zip:XBTUSD\.csv: cannot be read \(Bad CRC"):
        check_file(damaged, "trades", None, max_seconds=MAX)
