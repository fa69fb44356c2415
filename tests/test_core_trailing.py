"""Trailing entries and closes (bot.core.trailing through bot.core.ideal_orders): hand-worked
examples of the extremes, the triggers, the grid/trailing split, and a backtest that trails."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import F_KIND, F_PRICE
from backtest.runner import run_backtest
from bot.config import SideConfig, parse_config, side_params_array
from bot.core import ideal_orders
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_CLOSE_TRAILING,
    KIND_ENTRY_GRID,
    KIND_ENTRY_TRAILING,
    LONG,
    SHORT,
)
from bot.core.trailing import (
    PHASE_GRID,
    PHASE_TRAILING,
    T_MAX_SINCE_MIN,
    T_MAX_SINCE_OPEN,
    T_MIN_SINCE_MAX,
    T_MIN_SINCE_OPEN,
    close_split,
    entry_phase,
    entry_triggered,
    trail_empty,
    trail_update,
)
from tests.test_live_replay import TIGHT_GRID_SIDE, sample

MARKET = np.array([0.01, 0.1, 0.01, 0.0])  # qty step, price step, min qty, min cost
EMAS = np.array([100.0, 100.0, 100.0])


def trail_of(*candles: tuple[float, float, float]) -> np.ndarray:
    t = trail_empty()
    for high, low, close in candles:
        trail_update(t, high, low, close)
    return t


def params(**kw: float) -> np.ndarray:
    base = {
        "total_wallet_exposure_limit": 1.0,
        "entry_initial_qty_pct": 0.05,
        "unstuck_close_pct": 0,
    }
    return side_params_array(SideConfig(**{**base, **kw}))


# A long at 100 sees a low of 98 (after a first candle 101 / 99), then a bounce to 99.5.
DIP = ((101.0, 99.0, 100.0), (100.5, 98.0, 98.5))
BOUNCE = (99.5, 98.2, 99.4)


def closes(rows: np.ndarray) -> np.ndarray:
    return rows[np.isin(rows[:, 2], (KIND_CLOSE_GRID, KIND_CLOSE_TRAILING))]


def test_extremes_since_the_change_by_hand():
    t = trail_of(DIP[0])
    # the first candle: its low and high, and only its close is surely after either
    assert list(t) == [99.0, 100.0, 101.0, 100.0]
    t = trail_of(*DIP)
    # a new low restarts the high after it at the close; the high is not new, so the low
    # after the high is the lowest low since (98)
    assert t[T_MIN_SINCE_OPEN] == 98.0 and t[T_MAX_SINCE_MIN] == 98.5
    assert t[T_MAX_SINCE_OPEN] == 101.0 and t[T_MIN_SINCE_MAX] == 98.0
    t = trail_of(*DIP, BOUNCE)
    assert t[T_MIN_SINCE_OPEN] == 98.0 and t[T_MAX_SINCE_MIN] == 99.5
    assert t[T_MIN_SINCE_MAX] == 98.0


def test_entry_trigger_needs_the_threshold_then_the_retracement():
    # threshold 1.5%: low < 98.5 (98 is); retracement 1%: a high after it > 98.98
    assert not entry_triggered(LONG, 100.0, trail_of(*DIP), 0.015, 0.01)  # 98.5 < 98.98
    assert entry_triggered(LONG, 100.0, trail_of(*DIP, BOUNCE), 0.015, 0.01)  # 99.5 > 98.98
    assert not entry_triggered(LONG, 100.0, trail_of(*DIP, BOUNCE), 0.025, 0.01)  # 98 > 97.5
    assert not entry_triggered(LONG, 100.0, trail_of(*DIP, BOUNCE), 0.015, 0.02)  # 99.5 < 99.96
    # threshold <= 0: the retracement alone; retracement 0 as well: at once
    assert entry_triggered(LONG, 100.0, trail_of(*DIP, BOUNCE), 0.0, 0.01)
    assert entry_triggered(LONG, 100.0, trail_empty(), 0.0, 0.0)
    assert not entry_triggered(LONG, 100.0, trail_empty(), 0.0, 0.01)  # no candle yet
    # a short mirrored: the high since (101) above 100 x 1.005, the low after it (98) below
    # 101 x (1 - 0.01) = 99.99
    assert entry_triggered(SHORT, 100.0, trail_of(*DIP), 0.005, 0.01)
    assert not entry_triggered(SHORT, 100.0, trail_of(*DIP), 0.02, 0.01)  # 101 < 102


def test_trailing_only_entry_is_one_order_at_the_bid_once_triggered():
    p = params(
        entry_trailing_grid_ratio=1.0,
        entry_trailing_threshold_pct=0.015,
        entry_trailing_retracement_pct=0.01,
    )
    # long 1 @ 100, balance 1000 (WE 0.1); bid 99.4
    args = (LONG, 1000.0, 1000.0, 1.0, 100.0, 99.4, 99.5, EMAS, MARKET, p)
    waiting = ideal_orders(*args, True, trail_of(*DIP))
    assert not np.isin(waiting[:, 2], (KIND_ENTRY_GRID, KIND_ENTRY_TRAILING)).any()
    rows = ideal_orders(*args, True, trail_of(*DIP, BOUNCE))
    entries = rows[rows[:, 2] == KIND_ENTRY_TRAILING]
    # qty: max(initial 1000 x 1 x 0.05 / 99.4 = 0.50, size x double_down 1 = 1.00) = 1.00
    assert entries.tolist() == [[1.0, 99.4, KIND_ENTRY_TRAILING]]
    assert (rows[:, 2] == KIND_ENTRY_GRID).sum() == 0


def test_trailing_close_at_the_ask_after_the_high_and_the_retracement():
    p = params(
        close_trailing_grid_ratio=1.0,
        close_trailing_threshold_pct=0.01,
        close_trailing_retracement_pct=0.005,
        close_trailing_qty_pct=0.5,
    )
    # long 8 @ 100, balance 1000, WEL 1: a full position is 10 coins, a trailing close 5
    up = (102.0, 100.5, 101.8)  # high 102 > 101: threshold met; the low after it 101.8
    back = (101.9, 101.3, 101.4)  # the low after the high 101.3 < 102 x 0.995 = 101.49
    args = (LONG, 1000.0, 1000.0, 8.0, 100.0, 101.4, 101.4, EMAS, MARKET, p)
    rows = closes(ideal_orders(*args, False, trail_of(up)))
    assert len(rows) == 0  # trailing only, not triggered yet: no close at all
    rows = closes(ideal_orders(*args, False, trail_of(up, back)))
    assert rows.tolist() == [[-5.0, 101.4, KIND_CLOSE_TRAILING]]  # max(ask 101.4, 101.0)
    # with the ask below pos_price x (1 + threshold), the close waits there
    rows = closes(ideal_orders(LONG, 1000.0, 1000.0, 8.0, 100.0, 100.6, 100.6, EMAS, MARKET, p,
                               False, trail_of(up, back)))  # fmt: skip
    assert rows.tolist() == [[-5.0, 101.0, KIND_CLOSE_TRAILING]]


def test_grid_ratio_splits_the_limit_and_the_position():
    # entries: trailing first (0.5): trailing while WE / WEL < 0.5, capped there
    assert entry_phase(0.5, 0.3) == (PHASE_TRAILING, 0.5)
    assert entry_phase(0.5, 0.6) == (PHASE_GRID, 1.0)
    # grid first (-0.5): the grid up to 0.5 of the limit, then trailing
    assert entry_phase(-0.5, 0.3) == (PHASE_GRID, 0.5)
    assert entry_phase(-0.5, 0.6) == (PHASE_TRAILING, 1.0)
    assert entry_phase(0.0, 0.3) == (PHASE_GRID, 1.0)
    assert entry_phase(-1.0, 0.0) == (PHASE_TRAILING, 1.0)
    # closes of 8 coins, full position 10: trailing first 0.3 takes the top slice above 7
    assert close_split(0.3, 8.0, 10.0) == pytest.approx(1.0)
    assert close_split(0.3, 6.0, 10.0) == 0.0
    # grid first -0.3: trailing takes the last 3 coins
    assert close_split(-0.3, 8.0, 10.0) == pytest.approx(3.0)
    assert close_split(-0.3, 2.0, 10.0) == 2.0
    assert close_split(1.0, 8.0, 10.0) == 8.0 and close_split(0.0, 8.0, 10.0) == 0.0


def test_split_close_puts_the_grid_over_the_rest():
    p = params(
        close_trailing_grid_ratio=-0.3,
        close_trailing_threshold_pct=0.01,
        close_trailing_retracement_pct=0.005,
        close_trailing_qty_pct=0.5,
        close_grid_qty_pct=0.5,
    )
    rows = closes(ideal_orders(LONG, 1000.0, 1000.0, 8.0, 100.0, 99.0, 99.0, EMAS, MARKET, p,
                               False, trail_of(DIP[0])))  # fmt: skip
    # not triggered: only the grid, over 8 - 3 = 5 coins
    assert (rows[:, 2] == KIND_CLOSE_GRID).all()
    assert -rows[:, 0].sum() == pytest.approx(5.0)


def test_grid_first_ladder_ends_on_its_share_of_the_limit():
    p = params(entry_trailing_grid_ratio=-0.5, entry_grid_spacing_pct=0.01)
    rows = ideal_orders(LONG, 1000.0, 1000.0, 1.0, 100.0, 99.9, 99.9, EMAS, MARKET, p)
    entries = rows[rows[:, 2] == KIND_ENTRY_GRID]
    size = 1.0 + entries[:, 0].sum()
    cost = 100.0 + (entries[:, 0] * entries[:, 1]).sum()
    assert len(entries) >= 2
    assert cost / 1000.0 == pytest.approx(0.5, abs=0.01)  # WE ends on 0.5 x WEL, not 1
    assert size > 1.0


def test_grid_first_hands_over_to_trailing_when_its_share_is_full():
    p = params(
        entry_trailing_grid_ratio=-0.5,
        entry_trailing_threshold_pct=0.015,
        entry_trailing_retracement_pct=0.01,
    )
    # 4.999 @ 100: WE 0.4999, just under the grid's share 0.5, but the room left (0.1 USDT)
    # takes no order (min qty 0.01 ~ 1 USDT): the trailing phase has begun
    rows = ideal_orders(LONG, 1000.0, 1000.0, 4.999, 100.0, 99.4, 99.4, EMAS, MARKET, p, True,
                        trail_of(*DIP, BOUNCE))  # fmt: skip
    entries = rows[np.isin(rows[:, 2], (KIND_ENTRY_GRID, KIND_ENTRY_TRAILING))]
    # qty max(initial 0.50, 4.999 x 1 -> 5.00), room under the full limit 5.03 coins
    assert entries.tolist() == [[5.0, 99.4, KIND_ENTRY_TRAILING]]


@pytest.mark.slow
def test_backtest_trails_and_trailing_off_changes_nothing():
    side = {
        **TIGHT_GRID_SIDE,
        "entry_trailing_grid_ratio": 0.5,
        "entry_trailing_threshold_pct": 0.003,
        "entry_trailing_retracement_pct": 0.002,
        "close_trailing_grid_ratio": -0.5,
        "close_trailing_threshold_pct": 0.002,
        "close_trailing_retracement_pct": 0.001,
        "close_trailing_qty_pct": 0.5,
    }
    candles = sample(12)
    cfg = parse_config({"bot": {"long": side}, "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"]}})
    fills = run_backtest(cfg, candles).output.fills
    kinds = set(fills[:, F_KIND].astype(int))
    assert {KIND_ENTRY_TRAILING, KIND_CLOSE_TRAILING} <= kinds
    off = {k: v for k, v in side.items() if "trailing" not in k}
    base = parse_config({"bot": {"long": off}, "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"]}})
    # the trailing thresholds alone (grid ratios 0) change nothing
    zero = parse_config(
        {
            "bot": {
                "long": {**side, "entry_trailing_grid_ratio": 0, "close_trailing_grid_ratio": 0}
            },
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"]},
        }
    )
    a = run_backtest(base, candles).output.fills
    b = run_backtest(zero, candles).output.fills
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:, F_PRICE], fills[: len(a), F_PRICE]) or len(a) != len(fills)
