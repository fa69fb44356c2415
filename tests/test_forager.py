"""The forager (bot.core.forager): hand-worked rankings, the config's coin lists, and replay
parity with it on (the live bot on the venue picks the same coins, fill for fill)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.engine import F_K, F_KIND, F_SYMBOL
from backtest.replay import replay
from backtest.runner import run_backtest
from bot.config import parse_config
from bot.core.forager import (
    candle_values,
    eligible_from_ms,
    forager_alphas,
    forager_seed,
    forager_slots,
    forager_update,
)
from bot.core.grid import opening_slots
from bot.core.params import KIND_ENTRY_INITIAL
from bot.errors import ConfigError
from tests.test_live_replay import DATA, TIGHT_GRID_SIDE

ALL = np.ones(4, dtype=np.bool_)
# four coins: [quote volume EMA, range EMA]
STATE = np.array([[100.0, 0.010], [400.0, 0.002], [300.0, 0.030], [200.0, 0.020]])
FLAT = np.zeros(4)


def slots(sizes=FLAT, n=2, eligible=ALL, vol_w=60.0, volat_w=60.0, drop=0.0) -> list[int]:
    return list(np.flatnonzero(forager_slots(sizes, n, eligible, STATE, vol_w, volat_w, drop)))


def test_ranking_by_hand():
    # by volatility: coin 2 (3%), coin 3 (2%), coin 0 (1%), coin 1 (0.2%)
    assert slots() == [2, 3]
    # drop the lowest 25% by volume (one of four: coin 0, 100), then by volatility
    assert slots(n=3, drop=0.25) == [1, 2, 3]
    # drop half (coins 0 and 3): the rest by volatility
    assert slots(n=1, drop=0.5) == [2]
    # no volatility window: by volume (coin 1 400, coin 2 300)
    assert slots(volat_w=0.0) == [1, 2]
    # neither: symbol order, exactly the grid's opening_slots
    assert slots(vol_w=0.0, volat_w=0.0) == [0, 1]
    assert slots(vol_w=0.0, volat_w=0.0) == list(np.flatnonzero(opening_slots(FLAT, 2)))


def test_positions_keep_their_slot_and_ineligible_coins_get_none():
    held = np.array([0.0, 1.0, 0.0, 0.0])  # coin 1 (the least volatile) holds a position
    assert slots(sizes=held) == [1, 2]
    assert slots(sizes=held, n=1) == [1]  # no free slot: nothing else, however it ranks
    not_2 = np.array([True, True, False, True])
    assert slots(eligible=not_2) == [0, 3]
    # a held coin keeps its slot even when it is no longer eligible
    assert slots(sizes=held, eligible=np.array([True, False, True, True])) == [1, 2]


def test_emas_of_volume_and_range_by_hand():
    a = forager_alphas(3.0, 1.0)  # 2 / (3 + 1) = 0.5; span 1: alpha 1 (the last candle)
    assert list(a) == [0.5, 1.0]
    rows = np.array([[0, 11.0, 9.0, 10.0, 2.0], [0, 12.0, 10.0, 11.0, 4.0]])  # o h l c v
    s = forager_seed(rows, a)
    # volume x close: 20 then 44 -> 20 x 0.5 + 44 x 0.5 = 32; range (12 - 10) / 11
    assert s[0] == pytest.approx(32.0) and s[1] == pytest.approx(2.0 / 11.0)
    v = np.empty(2)
    candle_values(11.0, 9.0, 10.0, 2.0, v)
    assert list(v) == [20.0, 0.2]
    forager_update(v, a, 12.0, 10.0, 11.0, 4.0)
    assert list(v) == list(s)


def test_eligibility_from_the_coin_lists_and_age():
    first = np.array([0, 1_000, 2_000], dtype=np.int64)
    never = np.iinfo(np.int64).max
    day = 86_400_000
    got = eligible_from_ms(("A", "B", "C"), ("A", "B"), ("B",), first, 1.0)
    assert list(got) == [day, never, never]
    assert list(eligible_from_ms(("A", "B"), "all", (), first[:2], 0.0)) == [0, 1_000]


def test_config_validates_the_coin_lists():
    cfg = parse_config({"live": {"approved_coins": ["btcusdt"], "ignored_coins": ["DOGEUSDT"]}})
    assert cfg.live.approved_coins == ("BTCUSDT",)
    assert parse_config({}).live.approved_coins == "all"
    for bad, says in (
        ({"live": {"approved_coins": []}}, "at least one"),
        ({"live": {"approved_coins": "some"}}, "approved_coins"),
        ({"live": {"minimum_coin_age_days": -1}}, "minimum_coin_age_days"),
        ({"bot": {"long": {"filter_volume_drop_pct": 0.5}}}, "filter_volume_rolling_window"),
        ({"bot": {"long": {"filter_volume_drop_pct": 1.0}}}, "filter_volume_drop_pct"),
    ):
        with pytest.raises(ConfigError, match=says):
            parse_config(bad)


FORAGER_SIDE = {
    **TIGHT_GRID_SIDE,
    "n_positions": 2,
    "filter_volume_rolling_window": 60,
    "filter_volatility_rolling_window": 30,
    "filter_volume_drop_pct": 0.34,  # one of three coins dropped by volume
}
SYMBOLS3 = ["BTCUSDT", "ETHUSDT", "DOGEUSDT"]


def forager_config(**live):
    return parse_config(
        {
            "bot": {"long": FORAGER_SIDE, "short": {**FORAGER_SIDE, "enabled": True}},
            "live": {"leverage": 10, "minimum_coin_age_days": 0.05, **live},  # 72 minutes
            "backtest": {"symbols": SYMBOLS3, "starting_balance": 1000},
        }
    )


def candles3(hours: float):
    start = parse_date_ms("2021-05-18")
    return load_candles(
        DATA, SYMBOLS3, start_ms=start - 3_600_000, end_ms=start + int(hours * 3.6e6)
    )


def test_backtest_opens_only_eligible_ranked_coins():
    candles = candles3(12)
    fills = run_backtest(forager_config(ignored_coins=["ETHUSDT"]), candles).output.fills
    entries = fills[fills[:, F_KIND] == KIND_ENTRY_INITIAL]
    assert len(entries) > 0
    assert 1 not in set(entries[:, F_SYMBOL].astype(int))  # ETH ignored: never opened
    # not before the minimum age: 72 minutes from the first candle
    assert entries[:, F_K].min() >= 72
    both = run_backtest(forager_config(), candles).output.fills
    opened = set(both[both[:, F_KIND] == KIND_ENTRY_INITIAL][:, F_SYMBOL].astype(int))
    assert opened != {0, 1}, "the ranking, not the symbol order, picks the coins"


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_replay_with_the_forager_matches_fill_for_fill(exchange: str):
    result = asyncio.run(replay(forager_config(), candles3(8), exchange=exchange))
    assert len(result.fills_backtest) >= 20
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence
    assert result.matched == len(result.fills_live) == len(result.fills_backtest)
    assert result.bot_errors == []
    assert result.open_orders_ok


@pytest.mark.slow
def test_replay_with_the_forager_across_a_restart_and_a_kill():
    # the volume and range EMAs come back from the bot's state (and the klines it missed
    # while killed), so the ranking after the restarts is still the backtester's
    candles = candles3(6)
    result = asyncio.run(replay(forager_config(), candles, restart_at={150}, kill_at={260}))
    assert len(result.fills_backtest) >= 20
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence
    assert result.bot_errors == []
