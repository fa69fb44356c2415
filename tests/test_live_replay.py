"""The one-rule test: the live bot, fed the sample candles as a price stream through the
simulated venue (real ccxt HTTP, real websockets, lockstep), fills exactly what the backtester
fills on the same candles."""

from __future__ import annotations

import asyncio

import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.replay import compare_fills, replay
from bot.config import Config, parse_config

DATA = "data/sample/binance_spot_1m"
SYMBOLS = ["BTCUSDT", "DOGEUSDT"]


# Short EMAs, tight grids: trades often (hundreds of fills a day). Shared by the replay, Bybit
# and engine-reference tests.
TIGHT_GRID_SIDE = {
    "total_wallet_exposure_limit": 1.0,
    "n_positions": 2,
    "ema_span_0": 30,
    "ema_span_1": 60,
    "entry_initial_ema_dist": 0.0,
    "entry_initial_qty_pct": 0.1,
    "entry_grid_spacing_pct": 0.005,
    "close_grid_min_markup": 0.002,
    "close_grid_markup_range": 0.004,
    "close_grid_qty_pct": 0.5,
}


def trading_config(**live: object) -> Config:
    """The tight grid on both sides of BTCUSDT and DOGEUSDT, 1000 USDT."""
    side = TIGHT_GRID_SIDE
    return parse_config(
        {
            "bot": {"long": side, "short": {**side, "enabled": True}},
            "live": {"leverage": 10, **live},
            "backtest": {"symbols": SYMBOLS, "starting_balance": 1000},
        }
    )


def sample(hours: float, day: str = "2021-05-18", warmup_min: int = 60):
    start = parse_date_ms(day)
    return load_candles(
        DATA, SYMBOLS, start_ms=start - warmup_min * 60_000, end_ms=start + int(hours * 3.6e6)
    )


def test_compare_fills_is_a_multiset_match():
    a = [{"k": 1, "symbol": "X", "side": 1, "price": 1.0, "qty": 2.0}] * 2
    b = [{"k": 1, "symbol": "X", "side": 1, "price": 1.0, "qty": 2.0}]
    matched, mism = compare_fills(a, b)
    assert matched == 1 and len(mism) == 1 and mism[0]["where"] == "live_only"


@pytest.mark.slow
def test_replay_one_day_every_fill_matches_the_backtester():
    result = asyncio.run(replay(trading_config(), sample(24)))
    assert len(result.fills_backtest) >= 20, "the config should trade often"
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence  # in order, fees, balance
    assert result.matched == len(result.fills_live) == len(result.fills_backtest)
    assert result.open_orders_ok
    assert result.bot_errors == []


@pytest.mark.slow
def test_replay_through_the_crash_of_2021_05_19_every_fill_matches():
    # The day BTC touched 30,000: re-entries land above the market and rest at the bid,
    # unstuck closes and re-entries fill in the same candle; the live bot must still do
    # exactly what the backtester does.
    result = asyncio.run(replay(trading_config(), sample(24, day="2021-05-19")))
    assert len(result.fills_backtest) > 500
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence  # in order, fees, balance
    assert result.matched == len(result.fills_live) == len(result.fills_backtest)
    assert result.bot_errors == []
