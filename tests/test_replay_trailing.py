"""Trailing entries and closes in the live bot (real ccxt HTTP and websockets to the venue,
lockstep) fill exactly what the backtester fills, also across a clean restart and a kill (the
price extremes since each position's last change are kept in the bot's state)."""

from __future__ import annotations

import asyncio

import pytest

from backtest.replay import replay
from bot.config import parse_config
from bot.core.params import KIND_CLOSE_TRAILING, KIND_ENTRY_TRAILING, KIND_NAMES
from tests.test_live_replay import SYMBOLS, TIGHT_GRID_SIDE, sample

TRAILING_SIDE = {
    **TIGHT_GRID_SIDE,
    "entry_trailing_grid_ratio": 0.5,  # trailing entries first, then the grid
    "entry_trailing_threshold_pct": 0.003,
    "entry_trailing_retracement_pct": 0.002,
    "close_trailing_grid_ratio": -0.5,  # the grid first, the last half trails
    "close_trailing_threshold_pct": 0.002,
    "close_trailing_retracement_pct": 0.001,
    "close_trailing_qty_pct": 0.5,
}


def trailing_config():
    return parse_config(
        {
            "bot": {"long": TRAILING_SIDE, "short": {**TRAILING_SIDE, "enabled": True}},
            "live": {"leverage": 10},
            "backtest": {"symbols": SYMBOLS, "starting_balance": 1000},
        }
    )


def _check(result) -> None:
    kinds = {f["kind"] for f in result.fills_backtest}
    assert {KIND_NAMES[KIND_ENTRY_TRAILING], KIND_NAMES[KIND_CLOSE_TRAILING]} <= kinds, (
        kinds
    )  # both trailing kinds filled
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence
    assert result.matched == len(result.fills_live) == len(result.fills_backtest)
    assert result.bot_errors == []


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_replay_with_trailing_matches_fill_for_fill(exchange: str):
    result = asyncio.run(replay(trailing_config(), sample(8), exchange=exchange))
    _check(result)
    assert result.open_orders_ok


@pytest.mark.slow
def test_replay_with_trailing_across_a_restart_and_a_kill():
    # mid-run the bot is stopped and resumed, and later killed while a candle passes: the
    # extremes since each position's last change come back from its state (and the klines
    # it missed), so its trailing orders stay the backtester's
    candles = sample(8)
    k0 = 60 + 150
    result = asyncio.run(replay(trailing_config(), candles, restart_at={k0}, kill_at={k0 + 120}))
    _check(result)
