"""Candle loading: what a backtest is fed must be what the market did, or a clear refusal."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from backtest import data
from backtest.data import (
    format_ms,
    infer_timeframe_ms,
    load_candles,
    load_candles_with_report,
    parse_date_ms,
)
from bot.errors import ConfigError, DataError

HEADER = "timestamp_ms,open,high,low,close,volume"
T0 = 1_621_382_400_000  # 2021-05-19T00:00:00Z
MIN = 60_000
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "binance_spot_1m"


def candle_rows(start_ms: int, n: int, tf_ms: int = MIN, price: float = 100.0) -> list[str]:
    """Valid, distinct candles: open = previous close, wicks around the body."""
    rows = []
    close = price
    for i in range(n):
        o = close
        close = round(o * (1.01 if i % 3 else 0.995), 6)
        hi, lo = max(o, close) + 0.5, min(o, close) - 0.5
        rows.append(f"{start_ms + i * tf_ms},{o},{hi},{lo},{close},{10 + i}")
    return rows


def write(path: Path, rows: list[str], header: str | None = HEADER) -> Path:
    text = "\n".join(([header] if header is not None else []) + rows) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def as_array(rows: list[str]) -> np.ndarray:
    return np.array([[float(v) for v in r.split(",")] for r in rows])


# ----------------------------------------------------------------------------- timeframe


@pytest.mark.parametrize("tf_ms", [MIN, 5 * MIN])
def test_timeframe_is_inferred_from_the_data(tmp_path, tf_ms):
    rows = candle_rows(T0, 12, tf_ms)
    del rows[4]  # a gap must not change the inferred timeframe
    c = load_candles(write(tmp_path / "BTCUSDT.csv", rows))
    assert c.timeframe_ms == tf_ms
    assert c.symbols == ("BTCUSDT",)
    assert c.timestamps.dtype == np.int64
    np.testing.assert_array_equal(c.timestamps, T0 + np.arange(12) * tf_ms)
    assert c.ohlcv.shape == (1, 12, 5) and c.ohlcv.dtype == np.float64
    assert c.ohlcv.flags.c_contiguous


def test_infer_timeframe_uses_most_common_step_not_smallest_or_first():
    ts = np.array([0, 5, 10, 20, 25, 30, 35, 37]) * MIN
    assert infer_timeframe_ms(ts) == 5 * MIN


def test_gzip_and_plain_csv_give_identical_candles(tmp_path):
    rows = candle_rows(T0, 30)
    a = load_candles(write(tmp_path / "a" / "ETHUSDT.csv", rows))
    b = load_candles(write(tmp_path / "b" / "ETHUSDT.csv.gz", rows))
    np.testing.assert_array_equal(a.ohlcv, b.ohlcv)
    np.testing.assert_array_equal(a.ohlcv[0], as_array(rows)[:, 1:])
    assert b.sources["ETHUSDT"].endswith("ETHUSDT.csv.gz")


# ----------------------------------------------------------------------------- gaps


def test_gaps_are_filled_flat_at_previous_close_with_zero_volume(tmp_path):
    rows = candle_rows(T0, 10)
    kept = rows[:3] + rows[5:7] + rows[9:]  # missing: 3,4 and 7,8
    c, report = load_candles_with_report(write(tmp_path / "X.csv", kept))
    assert c.filled_candles == {"X": 4}
    assert len(c.timestamps) == 10
    real = as_array(kept)
    x = c.ohlcv[0]
    for missing, prev_row in [(3, 2), (4, 2), (7, 4), (8, 4)]:
        prev_close = real[prev_row, 4]
        np.testing.assert_array_equal(x[missing], [prev_close] * 4 + [0.0])
    # real candles are untouched
    np.testing.assert_array_equal(x[[0, 1, 2, 5, 6, 9]], real[:, 1:])
    assert [(g.first_ms, g.last_ms, g.n_candles) for g in report.gaps] == [
        (T0 + 3 * MIN, T0 + 4 * MIN, 2),
        (T0 + 7 * MIN, T0 + 8 * MIN, 2),
    ]
    assert any("X: 2 gap(s), 4 missing candles" in n for n in report.notes)


def test_gap_longer_than_tolerance_is_refused_with_its_times(tmp_path):
    rows = candle_rows(T0, 20)
    kept = rows[:5] + rows[9:]  # 4 missing candles, 00:05 .. 00:08
    path = write(tmp_path / "BTCUSDT.csv", kept)
    with pytest.raises(DataError) as err:
        load_candles(path, max_gap_minutes=3)
    msg = str(err.value)
    assert str(path) in msg
    assert "4 missing candles" in msg
    assert "2021-05-19T00:05:00Z" in msg and "2021-05-19T00:08:00Z" in msg
    # exactly at the tolerance is accepted and filled
    assert load_candles(path, max_gap_minutes=4).filled_candles == {"BTCUSDT": 4}


def test_default_tolerance_is_one_day(tmp_path):
    rows = candle_rows(T0, 300, 5 * MIN)  # a day is 288 five-minute candles
    ok = rows[:5] + rows[5 + 288 :]
    too_long = rows[:5] + rows[5 + 289 :]
    assert load_candles(write(tmp_path / "a" / "S.csv", ok)).filled_candles == {"S": 288}
    with pytest.raises(DataError, match="289 missing candles"):
        load_candles(write(tmp_path / "b" / "S.csv", too_long))


# ----------------------------------------------------------------------------- malformed files


def _edit(rows: list[str], row: int, col: int, value: str) -> list[str]:
    """Replace column `col` of 1-based data row `row`."""
    out = list(rows)
    parts = out[row - 1].split(",")
    parts[col] = value
    out[row - 1] = ",".join(parts)
    return out


BASE = candle_rows(T0, 6)
MALFORMED = {
    "unparsable": (_edit(BASE, 3, 2, "12x.5"), 3, "unparsable number '12x.5' in column high"),
    "empty field": (_edit(BASE, 2, 5, ""), 2, "unparsable number '' in column volume"),
    "columns": (BASE[:3] + [BASE[3].rsplit(",", 1)[0]] + BASE[4:], 4, "expected 6 columns"),
    "nan": (_edit(BASE, 5, 4, "nan"), 5, "NaN or inf in close"),
    "inf": (_edit(BASE, 2, 2, "inf"), 2, "NaN or inf in high"),
    "zero price": (_edit(BASE, 4, 3, "0"), 4, "non-positive price"),
    "high below body": (_edit(BASE, 3, 2, "1"), 3, "high 1.0 below max(open, close)"),
    "low above body": (_edit(BASE, 6, 3, "1000"), 6, "low 1000.0 above min(open, close)"),
    "negative volume": (_edit(BASE, 2, 5, "-3"), 2, "negative volume -3.0"),
    "duplicate": (_edit(BASE, 4, 0, str(T0 + 2 * MIN)), 4, "duplicate timestamp"),
    "out of order": (_edit(BASE, 5, 0, str(T0 + MIN)), 5, "timestamp out of order"),
    "off grid": (_edit(BASE, 3, 0, str(T0 + 2 * MIN + 30_000)), 3, "not on the 1m grid"),
    "fractional ts": (_edit(BASE, 2, 0, f"{T0 + MIN}.5"), 2, "not a whole number"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_row_names_file_row_and_problem(tmp_path, case):
    rows, row, problem = MALFORMED[case]
    path = write(tmp_path / "BAD.csv", rows)
    with pytest.raises(DataError) as err:
        load_candles(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"row {row} (line {row + 1}" in msg
    assert problem in msg


def test_bad_row_message_carries_its_timestamp(tmp_path):
    path = write(tmp_path / "BAD.csv", _edit(BASE, 4, 5, "-1"))
    with pytest.raises(DataError, match=r"row 4 .*2021-05-19T00:03:00Z.*negative volume"):
        load_candles(path)


def test_earliest_bad_row_is_reported_first(tmp_path):
    rows = _edit(_edit(BASE, 5, 5, "-1"), 2, 2, "1")  # row 2 high too low, row 5 volume
    with pytest.raises(DataError, match=r"row 2 .*high 1.0 below"):
        load_candles(write(tmp_path / "BAD.csv", rows))


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("time,open,high,low,close,volume", "wrong header"),
        ("timestamp_ms,open,high,low,close", "wrong header"),
        (None, "missing header"),
    ],
)
def test_bad_header_is_refused(tmp_path, header, problem):
    path = write(tmp_path / "BAD.csv", BASE, header=header)
    with pytest.raises(DataError, match=problem) as err:
        load_candles(path)
    assert str(path) in str(err.value) and "line 1" in str(err.value)


@pytest.mark.parametrize("content", [b"", HEADER.encode() + b"\n", gzip.compress(b"")])
def test_empty_file_is_refused(tmp_path, content):
    path = tmp_path / "EMPTY.csv.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty file") as err:
        load_candles(path)
    assert str(path) in str(err.value)


def test_missing_symbol_lists_what_is_available(tmp_path):
    write(tmp_path / "BTCUSDT.csv", BASE)
    write(tmp_path / "ETHUSDT.csv.gz", BASE)
    with pytest.raises(DataError) as err:
        load_candles(tmp_path, ["BTCUSDT", "SOLUSDT"])
    msg = str(err.value)
    assert "SOLUSDT" in msg and "available: BTCUSDT, ETHUSDT" in msg
    with pytest.raises(DataError, match="no such candle file or folder"):
        load_candles(tmp_path / "nope.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no candle files"):
        load_candles(tmp_path / "empty_dir")


def test_symbols_with_different_timeframes_are_refused(tmp_path):
    write(tmp_path / "A.csv", candle_rows(T0, 10, MIN))
    write(tmp_path / "B.csv", candle_rows(T0, 10, 5 * MIN))
    with pytest.raises(DataError, match="different timeframes: A 1m .* B 5m"):
        load_candles(tmp_path)


# ----------------------------------------------------------------------------- alignment


def test_symbols_are_aligned_to_their_common_range(tmp_path):
    a_rows = candle_rows(T0, 10, price=100.0)  # 00:00 .. 00:09
    b_rows = candle_rows(T0 + 3 * MIN, 10, price=7.0)  # 00:03 .. 00:12
    write(tmp_path / "AAA.csv", a_rows)
    write(tmp_path / "BBB.csv.gz", b_rows)
    c, report = load_candles_with_report(tmp_path)
    assert c.symbols == ("AAA", "BBB")
    np.testing.assert_array_equal(c.timestamps, T0 + np.arange(3, 10) * MIN)
    np.testing.assert_array_equal(c.ohlcv[0], as_array(a_rows)[3:10, 1:])
    np.testing.assert_array_equal(c.ohlcv[1], as_array(b_rows)[0:7, 1:])
    assert report.common_range == (T0 + 3 * MIN, T0 + 9 * MIN)
    assert report.file_ranges["BBB"] == (T0 + 3 * MIN, T0 + 12 * MIN)
    assert any("ranges differ" in n for n in report.notes)
    # asking for one symbol in a given order works too
    assert load_candles(tmp_path, ["BBB"]).timestamps[-1] == T0 + 12 * MIN


def test_filled_counts_only_cover_the_returned_range(tmp_path):
    a_rows = candle_rows(T0, 20)
    write(tmp_path / "A.csv", a_rows[:2] + a_rows[5:])  # 3 filled at 00:02..00:04
    write(tmp_path / "B.csv", candle_rows(T0 + 4 * MIN, 10))
    c = load_candles(tmp_path)
    assert c.timestamps[0] == T0 + 4 * MIN
    assert c.filled_candles == {"A": 1, "B": 0}


def test_non_overlapping_symbols_are_refused(tmp_path):
    write(tmp_path / "A.csv", candle_rows(T0, 5))
    write(tmp_path / "B.csv", candle_rows(T0 + 60 * MIN, 5))
    with pytest.raises(DataError, match="do not overlap"):
        load_candles(tmp_path)


# ----------------------------------------------------------------------------- slicing


def test_start_is_inclusive_and_end_exclusive(tmp_path):
    rows = candle_rows(T0, 30)
    path = write(tmp_path / "S.csv", rows)
    c = load_candles(path, start_ms=T0 + 5 * MIN, end_ms=T0 + 10 * MIN)
    np.testing.assert_array_equal(c.timestamps, T0 + np.arange(5, 10) * MIN)
    np.testing.assert_array_equal(c.ohlcv[0], as_array(rows)[5:10, 1:])
    # an end between grid points keeps the candle that opened before it
    assert load_candles(path, end_ms=T0 + 10 * MIN + 1).timestamps[-1] == T0 + 10 * MIN
    assert load_candles(path, start_ms=T0 + 5 * MIN + 1).timestamps[0] == T0 + 6 * MIN


def test_empty_slice_names_range_and_coverage(tmp_path):
    path = write(tmp_path / "S.csv", candle_rows(T0, 30))
    with pytest.raises(DataError) as err:
        load_candles(path, start_ms=T0 + 31 * MIN, end_ms=T0 + 40 * MIN)
    msg = str(err.value)
    assert "2021-05-19T00:31:00Z" in msg and "2021-05-19T00:40:00Z" in msg
    assert "covers 2021-05-19T00:00:00Z to 2021-05-19T00:29:00Z" in msg


# ----------------------------------------------------------------------------- cache


def _memmapped(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return False


def test_cache_is_used_on_second_load_without_reparsing(tmp_path, monkeypatch):
    rows = candle_rows(T0, 50)
    path = write(tmp_path / "in" / "BTCUSDT.csv.gz", rows[:10] + rows[12:])
    cache = tmp_path / "cache"
    first, r1 = load_candles_with_report(path, cache_dir=cache)
    assert r1.from_cache == {"BTCUSDT": False}
    assert list(cache.glob("BTCUSDT-*.ohlcv.npy")) and list(cache.glob("BTCUSDT-*.json"))
    assert not list(cache.glob("*.tmp"))

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed the CSV although a cache entry exists")

    monkeypatch.setattr(data, "_parse_csv", no_parse)
    second, r2 = load_candles_with_report(path, cache_dir=cache)
    assert r2.from_cache == {"BTCUSDT": True}
    np.testing.assert_array_equal(second.ohlcv, first.ohlcv)
    np.testing.assert_array_equal(second.timestamps, first.timestamps)
    assert second.filled_candles == first.filled_candles == {"BTCUSDT": 2}
    assert second.timeframe_ms == first.timeframe_ms
    # one symbol: a view of the shared mapping, not a copy, and nobody may write into it
    assert _memmapped(second.ohlcv) and second.ohlcv.flags.c_contiguous
    with pytest.raises(ValueError):
        second.ohlcv[0, 0, 0] = 1.0


def test_edited_file_or_stricter_gap_limit_is_not_served_from_cache(tmp_path):
    rows = candle_rows(T0, 50)
    path = write(tmp_path / "S.csv", rows[:10] + rows[15:])  # 5 missing
    cache = tmp_path / "cache"
    assert load_candles(path, cache_dir=cache).filled_candles == {"S": 5}
    # the cached, accepted entry must not bypass a stricter tolerance
    with pytest.raises(DataError, match="5 missing candles"):
        load_candles(path, cache_dir=cache, max_gap_minutes=4)
    # edited data is re-read
    write(path, rows)
    c, report = load_candles_with_report(path, cache_dir=cache)
    assert report.from_cache == {"S": False} and c.filled_candles == {"S": 0}
    np.testing.assert_array_equal(c.ohlcv[0], as_array(rows)[:, 1:])


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    rows = candle_rows(T0, 50)
    path = write(tmp_path / "S.csv", rows)
    cache = tmp_path / "cache"
    load_candles(path, cache_dir=cache)
    (npy,) = cache.glob("*.ohlcv.npy")
    npy.write_bytes(npy.read_bytes()[:100])  # as if a crash had cut it (os.replace prevents it)
    c, report = load_candles_with_report(path, cache_dir=cache)
    assert report.from_cache == {"S": False}
    np.testing.assert_array_equal(c.ohlcv[0], as_array(rows)[:, 1:])


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-05-19", T0),
        ("2021-05-19T13:10", T0 + (13 * 60 + 10) * MIN),
        ("2021-05-19 13:10:00", T0 + (13 * 60 + 10) * MIN),
        ("2021-05-19T13:10:00Z", T0 + (13 * 60 + 10) * MIN),
        (str(T0 + 5), T0 + 5),
    ],
)
def test_parse_date_ms_reads_utc(text, expected):
    assert parse_date_ms(text) == expected


@pytest.mark.parametrize("text", ["19/05/2021", "yesterday", "", "2021-13-01", "1621382400"])
def test_parse_date_ms_rejects_bad_text_naming_it(text):
    with pytest.raises(ConfigError) as err:
        parse_date_ms(text)
    assert repr(text) in str(err.value)


# ----------------------------------------------------------------------------- bundled sample


def test_bundled_sample_covers_the_may_2021_crash():
    c, report = load_candles_with_report(SAMPLE)
    assert c.symbols == ("BTCUSDT", "DOGEUSDT", "ETHUSDT")
    assert c.timeframe_ms == MIN
    assert format_ms(c.timestamps[0]) == "2021-05-10T00:00:00Z"
    assert format_ms(c.timestamps[-1]) == "2021-05-20T20:38:00Z"  # ETH ends first
    assert len(c.timestamps) == 15_639
    assert c.filled_candles == {"BTCUSDT": 0, "DOGEUSDT": 0, "ETHUSDT": 0}
    assert any("ranges differ" in n for n in report.notes)
    btc_low = c.ohlcv[c.symbols.index("BTCUSDT"), :, 2]
    i = int(np.argmin(btc_low))
    assert btc_low[i] == 30000.0
    assert format_ms(c.timestamps[i]) == "2021-05-19T13:10:00Z"
