"""Funding as the exchange charges it: per-symbol history (1 h / 4 h / 8 h) next to the candle
files, charged by the backtest at the funding times on the position notional, served and
charged by the venue, downloaded with ccxt over loopback; the constant rate only as fallback,
and the report says which was used."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.download_funding import download_funding
from backtest.funding import funding_matrix, read_funding, write_funding
from backtest.runner import run_backtest
from backtest.venue.server import Venue, VenueConfig, VenueThread
from bot.config import parse_config
from bot.core.account import funding_payment
from tests.test_live_replay import TIGHT_GRID_SIDE

SAMPLE = Path(__file__).resolve().parents[1] / "data/sample/binance_spot_1m"
DAY = parse_date_ms("2021-05-18")
HOUR = 3_600_000


@pytest.fixture
def data(tmp_path):
    """BTCUSDT and ETHUSDT candles; BTCUSDT has an hourly funding history, ETHUSDT none."""
    for s in ("BTCUSDT", "ETHUSDT"):
        shutil.copy(SAMPLE / f"{s}.csv.gz", tmp_path / f"{s}.csv.gz")
    # hourly, alternating sign, at :00 of every hour of 2021-05-17 .. 2021-05-19
    rows = {DAY - 24 * HOUR + h * HOUR: f"{(0.0003 if h % 2 else -0.0002):.8f}" for h in range(72)}
    write_funding(tmp_path / "funding" / "BTCUSDT.csv", rows)
    return tmp_path


def config(**bt):
    return parse_config({
        "bot": {"long": TIGHT_GRID_SIDE, "short": {**TIGHT_GRID_SIDE, "enabled": True}},
        "backtest": {"symbols": ["BTCUSDT", "ETHUSDT"], "starting_balance": 1000,
                     "funding_rate_8h": 0.0001, **bt},
    })  # fmt: skip


def test_matrix_puts_the_history_at_its_times_and_falls_back_per_symbol(data):
    c = load_candles(data, ["BTCUSDT", "ETHUSDT"], start_ms=DAY, end_ms=DAY + 10 * HOUR)
    plan = funding_matrix(c.symbols, c.timestamps, c.timeframe_ms, 0.0001, c.sources)
    assert plan.source == {"BTCUSDT": "history", "ETHUSDT": "constant"}
    assert plan.interval_hours == {"BTCUSDT": 1.0, "ETHUSDT": 8.0}
    btc, eth = plan.rates
    hours = np.flatnonzero(btc)
    assert list(c.timestamps[hours]) == [DAY + h * HOUR for h in range(10)]  # each hour's top
    assert btc[hours[0]] == pytest.approx(-0.0002) and btc[hours[1]] == pytest.approx(0.0003)
    assert list(c.timestamps[np.flatnonzero(eth)]) == [DAY, DAY + 8 * HOUR]  # 00:00, 08:00
    assert eth[np.flatnonzero(eth)[0]] == 0.0001


def test_backtest_charges_the_history_on_the_notional_and_says_so(data):
    cfg = config(data=str(data))
    c = load_candles(data, ["BTCUSDT", "ETHUSDT"], start_ms=DAY, end_ms=DAY + 12 * HOUR)
    run = run_backtest(cfg, c)
    assert run.funding.source == {"BTCUSDT": "history", "ETHUSDT": "constant"}
    # by hand: at each funding candle k, each position held coming into it pays size x open x rate
    out, ts = run.output, c.timestamps
    want = 0.0
    for k in range(max(1, run.inputs.trade_start), len(ts)):
        for i in range(2):
            rate = run.funding.rates[i, k]
            if rate:
                pos = out.positions[k - 1, i]
                open_ = c.ohlcv[i, k, 0]
                want += funding_payment(1, pos[0], open_, rate) + funding_payment(
                    -1, pos[2], open_, rate
                )
    assert want != 0.0 and out.funding_paid == pytest.approx(want, rel=1e-12)
    # without the history file: the constant rate, and a different bill
    shutil.rmtree(data / "funding")
    const = run_backtest(cfg, load_candles(data, ["BTCUSDT", "ETHUSDT"], start_ms=DAY,
                                           end_ms=DAY + 12 * HOUR))  # fmt: skip
    assert const.funding.source == {"BTCUSDT": "constant", "ETHUSDT": "constant"}
    assert const.output.funding_paid != pytest.approx(out.funding_paid)


def test_venue_serves_its_history_and_ccxt_downloads_it_resumably(data, tmp_path_factory):
    c = load_candles(data, ["BTCUSDT", "ETHUSDT"], start_ms=DAY, end_ms=DAY + 6 * HOUR)
    venue = Venue(c, VenueConfig(start_index=len(c.timestamps)))  # all of it replayed
    plan = funding_matrix(c.symbols, c.timestamps, c.timeframe_ms, 0.0001, c.sources)
    venue.engine.funding_table = plan.rates
    out = tmp_path_factory.mktemp("cache")
    with VenueThread(venue) as v:
        kw = {"base_url": v.rest_url, "enable_rate_limit": False, "backoff_seconds": 0.01}
        got = download_funding(["BTCUSDT"], DAY + 3 * HOUR, DAY + 6 * HOUR, out, **kw)
        assert got == {"BTCUSDT": 3}
        got = download_funding(["BTCUSDT", "ETHUSDT"], DAY, DAY + 6 * HOUR, out, **kw)
        assert got == {"BTCUSDT": 3, "ETHUSDT": 1}  # only the missing hours; ETH at 00:00
        # Bybit's face serves the same history, newest first
        import json
        import urllib.request

        q = "category=linear&symbol=BTCUSDT&limit=2"
        with urllib.request.urlopen(f"{v.rest_url}/v5/market/funding/history?{q}") as r:
            bybit = json.loads(r.read())["result"]["list"]
        assert [int(x["fundingRateTimestamp"]) for x in bybit] == [DAY + 5 * HOUR, DAY + 4 * HOUR]
        assert [float(x["fundingRate"]) for x in bybit] == [0.0003, -0.0002]
    times, rates = read_funding(out / "funding" / "BTCUSDT.csv")
    src_t, src_r = read_funding(data / "funding" / "BTCUSDT.csv")
    inside = (src_t >= DAY) & (src_t < DAY + 6 * HOUR)
    np.testing.assert_array_equal(times, src_t[inside])
    np.testing.assert_allclose(rates, src_r[inside])
    assert read_funding(out / "funding" / "ETHUSDT.csv")[1].tolist() == [0.0001]


@pytest.mark.slow
def test_replay_with_history_matches_the_backtest(data):
    from backtest.replay import replay

    cfg = config(data=str(data), symbols=["BTCUSDT"])
    c = load_candles(data, ["BTCUSDT"], start_ms=DAY - HOUR, end_ms=DAY + 3 * HOUR)
    result = asyncio.run(replay(cfg, c))
    assert result.first_divergence is None, result.first_divergence
    assert result.ok  # fills, fees, and the final balance with the hourly funding in it
    bt = run_backtest(cfg, c)
    assert bt.funding.source == {"BTCUSDT": "history"} and bt.output.funding_paid != 0.0
