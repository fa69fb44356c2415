"""The exchange's published ADL quantile, served by the venue from its ranking and read by
`gridbot risk --exchange` through ccxt over loopback (Binance ``/fapi/v1/adlQuantile``, Bybit
``adlRankIndicator`` in ``/v5/position/list``).

The scenario's longs at BTC ~45000 (2021-05-18 10:00): a 10x long from 30000 (score 12.5),
a small long from 44000 (score ~0.01) and a losing long from 46000 (below 0). Our account:
10000 USDT, long 0.5 @ 40000: leverage 0.5 x 45000 / 12500 = 1.8, ROE 2500 / 10000 = 0.25,
score 1.8 x 0.5 x 0.25 = 0.225, second of four longs: the second fifth of the queue from the
top, Binance quantile 3 (of 0..4), Bybit 4 (of 1..5). A losing short is in the lowest bucket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.venue.risk_loop import VenueRisk, quantile_of_rank
from backtest.venue.scenario import parse_scenario
from backtest.venue.server import Venue, VenueConfig, VenueThread

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "adl-test-key", "adl-test-secret-0123456789"
SCENARIO = {
    "symbol": "BTCUSDT",
    "traders": [
        {"name": "whale", "side": "long", "size": 1, "entry_price": 30000, "leverage": 10},
        {"name": "small", "side": "long", "size": 0.1, "entry_price": 44000, "leverage": 2},
        {"name": "late", "side": "long", "size": 0.1, "entry_price": 46000, "leverage": 2},
        {"name": "bear", "side": "short", "size": 2, "entry_price": 47000, "leverage": 5},
    ],
}


def test_quantile_buckets():
    # first fifth of the queue -> 4, last -> 0; losing positions are last whatever their rank
    assert [quantile_of_rank(r, 5, 1.0) for r in range(1, 6)] == [4, 3, 2, 1, 0]
    assert quantile_of_rank(2, 4, 0.225) == 3 and quantile_of_rank(1, 1, 0.5) == 4
    assert quantile_of_rank(1, 3, 0.0) == 0 and quantile_of_rank(1, 3, -2.0) == 0


def risk_cli(exchange: str, url: str) -> dict:
    env = {**os.environ, "GRIDBOT_API_KEY": KEY, "GRIDBOT_API_SECRET": SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "risk", "--exchange", exchange, "--base-url", url,
         "--symbol", "BTCUSDT", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert KEY not in proc.stdout + proc.stderr and SECRET not in proc.stdout + proc.stderr
    return orjson.loads(proc.stdout)


@pytest.mark.parametrize("exchange,hedge", [("binance", False), ("binance", True), ("bybit", True)])
def test_risk_reads_the_venues_adl_quantile(exchange: str, hedge: bool):
    start = parse_date_ms("2021-05-18T10:00")
    candles = load_candles(ROOT / "data/sample/binance_spot_1m", ["BTCUSDT"], start_ms=start,
                           end_ms=start + 30 * 60_000)  # fmt: skip
    venue = Venue(candles, VenueConfig(start_index=1))
    venue.risk = VenueRisk(venue, parse_scenario(SCENARIO))
    venue.add_account(KEY, SECRET, 10_000.0, hedge_mode=hedge)
    price = float(candles.ohlcv[0, 0, 3])
    assert 44_500 < price < 46_000  # the hand-worked scores above hold here
    with VenueThread(venue) as v:
        v_thread = venue  # noqa: F841 - the venue runs on its own loop
        venue.change_position(KEY, "BTCUSDT", "LONG" if hedge else "BOTH", 0.5, 40_000.0)
        r = risk_cli(exchange, v.rest_url)
        assert r["balance"] == pytest.approx(10_000.0) and r["long_size"] == 0.5
        assert r["reference_price"] == pytest.approx(price)
        assert r["deleverage_score_long"] == pytest.approx(
            0.5 * price / (10_000 + 0.5 * (price - 40_000)) * 0.5
            * 0.5 * (price - 40_000) / 10_000
        )  # fmt: skip
        # second of four longs: Binance 3 of 0..4, Bybit 4 of 1..5; no short: null
        want = 3 if exchange == "binance" else 4
        assert r["adl_quantile_long"] == want and r["adl_quantile_short"] is None
        assert r["adl_scale"] == ([0, 4] if exchange == "binance" else [1, 5])
        assert "2nd fifth" in r["adl_queue_long"]
        if hedge:  # a losing short beside it: the lowest bucket
            venue.change_position(KEY, "BTCUSDT", "SHORT", 0.1, 44_000.0)
            r = risk_cli(exchange, v.rest_url)
            assert r["adl_quantile_short"] == (0 if exchange == "binance" else 1)
            assert r["adl_quantile_long"] == want
            assert "deleveraged last" in r["adl_queue_short"]


def test_risk_exchange_flags_need_each_other():
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", "risk", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    p = run("--long", "1@100")
    assert p.returncode == 2 and "--balance" in p.stderr and "Traceback" not in p.stderr
    p = run("--balance", "100", "--base-url", "http://127.0.0.1:9")
    assert p.returncode == 2 and "--exchange" in p.stderr
    p = run("--exchange", "binance", "--base-url", "http://127.0.0.1:9")
    assert p.returncode == 2 and "--symbol" in p.stderr
