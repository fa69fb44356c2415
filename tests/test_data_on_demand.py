"""Data on demand: `gridbot backtest --download-url` over coins and dates the cache lacks
fetches them from the venue over loopback (ccxt, resumable: only the missing span), with the
funding history, and then backtests exactly as on the source candles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.download import read_rows
from backtest.funding import read_funding
from backtest.venue.server import Venue, VenueConfig, VenueThread

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/sample/binance_spot_1m"
DAY = parse_date_ms("2021-05-18")
HOUR = 3_600_000


def backtest(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "backtest", str(cfg), "--no-plots", "--json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_backtest_downloads_missing_coins_and_dates_then_matches_the_source(tmp_path):
    candles = load_candles(SAMPLE, ["BTCUSDT", "ETHUSDT"], start_ms=DAY, end_ms=DAY + 12 * HOUR)
    venue = Venue(candles, VenueConfig(start_index=len(candles.timestamps), funding_rate=0.0001))
    cache = tmp_path / "cache"
    cfg = tmp_path / "config.json"
    from tests.test_live_replay import TIGHT_GRID_SIDE

    cfg.write_text(json.dumps({
        "bot": {"long": TIGHT_GRID_SIDE, "short": {**TIGHT_GRID_SIDE, "enabled": True}},
        "backtest": {"symbols": ["BTCUSDT", "ETHUSDT"], "results_dir": str(tmp_path / "results")},
    }))  # fmt: skip
    window = ["--symbols", "BTCUSDT,ETHUSDT", "--end", "2021-05-18T10:00"]
    with VenueThread(venue) as v:
        url = ["--download-url", v.rest_url, "--download-retries", "0"]
        first = backtest(cfg, "--data", str(cache), "--start", "2021-05-18T06:00", *window, *url)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "downloaded into" in first.stderr and "BTCUSDT, ETHUSDT" in first.stderr
        rows = read_rows(cache / "BTCUSDT.csv.gz")
        assert min(rows) == DAY + 6 * HOUR and max(rows) == DAY + 10 * HOUR - 60_000
        # earlier dates: only the two missing hours are fetched, the rest is kept
        second = backtest(cfg, "--data", str(cache), "--start", "2021-05-18T04:00", *window, *url)
        assert second.returncode == 0, second.stderr[-3000:]
        rows = read_rows(cache / "BTCUSDT.csv.gz")
        assert min(rows) == DAY + 4 * HOUR and len(rows) == 6 * 60
        # nothing missing: nothing downloaded
        third = backtest(cfg, "--data", str(cache), "--start", "2021-05-18T04:00", *window, *url)
        assert third.returncode == 0 and "downloaded into" not in third.stderr
    # the funding history came along (the venue's 08:00 charge), and the report says it is used
    times, rates = read_funding(cache / "funding" / "ETHUSDT.csv")
    assert list(times) == [DAY + 8 * HOUR] and list(rates) == [0.0001]
    got = json.loads(second.stdout)
    assert got["funding"]["source"] == {"BTCUSDT": "history", "ETHUSDT": "history"}
    # the same backtest on the source candles (constant 0.0001 per 8 h: the same charge)
    src = backtest(cfg, "--data", str(SAMPLE), "--start", "2021-05-18T04:00", *window)
    want = json.loads(src.stdout)
    assert want["funding"]["source"] == {"BTCUSDT": "constant", "ETHUSDT": "constant"}
    assert want["n_fills"] > 0
    for key in ("final_balance", "final_equity", "n_fills", "funding_paid"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key


def test_download_refuses_the_source_tree_and_needs_dates(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"backtest": {"results_dir": str(tmp_path / "results")}}))
    p = backtest(cfg, "--data", str(SAMPLE), "--symbols", "SOLUSDT", "--start", "2021-05-18",
                 "--download-url", "http://127.0.0.1:9", "--download-retries", "0")  # fmt: skip
    assert p.returncode == 2 and "give --data FOLDER" in p.stderr and "Traceback" not in p.stderr
    p = backtest(cfg, "--data", str(tmp_path / "new"), "--symbols", "SOLUSDT",
                 "--download-url", "http://127.0.0.1:9")  # fmt: skip
    assert p.returncode == 2 and "give --start" in p.stderr
    p = backtest(cfg, "--data", str(tmp_path / "new"), "--symbols", "SOLUSDT", "--start",
                 "2021-05-18", "--download-url", "http://127.0.0.1:9", "--download-retries", "0")  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
