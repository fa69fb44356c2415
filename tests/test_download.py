"""`gridbot download` against the simulated venue on 127.0.0.1: paging, resume, retries."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from backtest.data import load_candles
from backtest.download import DownloadError, download_candles, read_rows
from backtest.venue.server import Venue, VenueConfig, VenueThread
from bot.errors import ConfigError

SAMPLE = "data/sample/binance_spot_1m"
T0 = 1_620_604_800_000  # first sample candle
N = 3_200  # three pages of 1500


@pytest.fixture(scope="module")
def vt():
    candles = load_candles(SAMPLE, ["BTCUSDT", "ETHUSDT"], end_ms=T0 + N * 60_000)
    venue = Venue(candles, VenueConfig(start_index=N))  # all of it is history
    thread = VenueThread(venue)
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def venue(vt):
    yield vt.venue
    vt.call(vt.venue.clear_faults)


def check_file(path, candles, row):
    with gzip.open(path, "rt") as f:
        assert f.readline().strip() == "timestamp_ms,open,high,low,close,volume"
    got = np.loadtxt(path, delimiter=",", skiprows=1)
    assert len(got) == N
    np.testing.assert_array_equal(got[:, 0], candles.timestamps)  # no gaps, no duplicates
    np.testing.assert_array_equal(got[:, 1:], candles.ohlcv[row])


def test_download_pages_and_matches_the_source(venue, tmp_path):
    res = download_candles(["BTCUSDT", "ETH/USDT:USDT"], T0, T0 + N * 60_000, tmp_path,
                           base_url=venue.rest_url, progress=False, enable_rate_limit=False, backoff_seconds=0.01)  # fmt: skip
    assert res["BTCUSDT"].rows_added == N and res["ETHUSDT"].rows_total == N
    check_file(tmp_path / "BTCUSDT.csv.gz", venue.candles, 0)
    check_file(tmp_path / "ETHUSDT.csv.gz", venue.candles, 1)
    # the same rows as the bundled file, text for text
    src = read_rows(__import__("pathlib").Path(SAMPLE) / "BTCUSDT.csv.gz")
    mine = read_rows(tmp_path / "BTCUSDT.csv.gz")
    assert all(mine[t] == src[t] for t in mine)
    again = download_candles(
        ["BTCUSDT"],
        T0,
        T0 + N * 60_000,
        tmp_path,
        base_url=venue.rest_url,
        progress=False,
        enable_rate_limit=False,
    )
    assert again["BTCUSDT"].rows_added == 0


def test_interrupted_download_resumes_without_duplicates_or_gaps(vt, venue, tmp_path):
    vt.call(venue.fail_rest, 503, 100, path="/fapi/v1/klines", skip=1)  # page 1 ok, then down
    with pytest.raises(DownloadError):
        download_candles(["BTCUSDT"], T0, T0 + N * 60_000, tmp_path, base_url=venue.rest_url,
                         progress=False, enable_rate_limit=False, max_retries=2, backoff_seconds=0.01)  # fmt: skip
    assert len(read_rows(tmp_path / "BTCUSDT.csv.gz")) == 1500  # page 1 saved, file intact
    vt.call(venue.clear_faults)
    res = download_candles(
        ["BTCUSDT"],
        T0,
        T0 + N * 60_000,
        tmp_path,
        base_url=venue.rest_url,
        progress=False,
        enable_rate_limit=False,
    )
    assert res["BTCUSDT"].rows_before == 1500 and res["BTCUSDT"].rows_added == N - 1500
    check_file(tmp_path / "BTCUSDT.csv.gz", venue.candles, 0)
    assert not list(tmp_path.glob("*.tmp"))


def test_download_retries_through_429_and_418(vt, venue, tmp_path):
    vt.call(venue.rate_limit_next, 2, 1, path="/fapi/v1/klines")
    res = download_candles(["ETHUSDT"], T0, T0 + N * 60_000, tmp_path, base_url=venue.rest_url,
                           progress=False, enable_rate_limit=False, backoff_seconds=0.01)  # fmt: skip
    assert res["ETHUSDT"].retries == 3
    check_file(tmp_path / "ETHUSDT.csv.gz", venue.candles, 1)


def test_bad_symbol_lists_the_available_ones(venue, tmp_path):
    with pytest.raises(ConfigError, match="unknown symbol.*NOPEUSDT.*available: BTCUSDT, ETHUSDT"):
        download_candles(
            ["NOPEUSDT"],
            T0,
            T0 + 60_000,
            tmp_path,
            base_url=venue.rest_url,
            progress=False,
            enable_rate_limit=False,
        )


def test_cli_download(venue, tmp_path, capsys):
    from bot.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["download", "--symbols", "BTCUSDT", "--start", str(T0), "--end", str(T0 + 100 * 60_000),
              "--out", str(tmp_path), "--base-url", venue.rest_url, "--quiet"])  # fmt: skip
    assert exc.value.code == 0
    assert len(read_rows(tmp_path / "BTCUSDT.csv.gz")) == 100
    assert "+100 candles" in capsys.readouterr().err
