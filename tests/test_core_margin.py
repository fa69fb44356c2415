"""Maintenance margin, liquidation price and the leverage check, against Binance's real BTCUSDT
leverage tiers (bot/data/binance_leverage_tiers.json), worked by hand.

BTCUSDT tiers used below (notional floor, cap, maintenance rate, max leverage, maint amount):
    tier 1:       0 ..    50,000   0.4%   125x      0
    tier 2:  50,000 ..   600,000   0.5%   100x     50
    tier 3: 600,000 .. 3,000,000   0.65%   75x    950
    tier 4: 3,000,000 .. 12,000,000  1%    50x  11450
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core import (
    account_equity_margin,
    account_liquidation,
    check_leverage,
    liquidation_price,
    maintenance_margin,
    max_leverage_for_notional,
    stack_tiers,
    tier_index,
)


def _tiers(symbol: str) -> np.ndarray:
    # Read the file directly, so these tests do not lean on bot.markets.
    text = resources.files("bot.data").joinpath("binance_leverage_tiers.json").read_text()
    return np.array(json.loads(text)["tiers"][symbol], dtype=np.float64)


BTC = _tiers("BTCUSDT")
ETH = _tiers("ETHUSDT")


def hand_mm(notional: float, tiers: np.ndarray) -> float:
    """Maintenance margin by reading the table, independent of the core."""
    n = abs(notional)
    for floor, cap, mmr, _lev, amt in tiers:
        if floor <= n < cap:
            return n * mmr - amt
    return n * tiers[-1, 2] - tiers[-1, 4]


def test_the_bundled_btc_tiers_are_the_ones_worked_here() -> None:
    assert BTC[:4].tolist() == [
        [0.0, 50000.0, 0.004, 125.0, 0.0],
        [50000.0, 600000.0, 0.005, 100.0, 50.0],
        [600000.0, 3000000.0, 0.0065, 75.0, 950.0],
        [3000000.0, 12000000.0, 0.01, 50.0, 11450.0],
    ]


@pytest.mark.parametrize(
    ("notional", "tier", "mm"),
    [
        (10_000.0, 0, 40.0),  # 10000 * 0.4% - 0
        (49_999.0, 0, 199.996),  # 49999 * 0.4%
        (50_000.0, 1, 200.0),  # the floor belongs to tier 2: 50000 * 0.5% - 50 = 200
        (100_000.0, 1, 450.0),  # 100000 * 0.5% - 50
        (1_000_000.0, 2, 5550.0),  # 1e6 * 0.65% - 950
        (5_000_000.0, 3, 38550.0),  # 5e6 * 1% - 11450
        (-100_000.0, 1, 450.0),  # a short's notional counts by magnitude
        (0.0, 0, 0.0),
    ],
)
def test_maintenance_margin_per_tier(notional: float, tier: int, mm: float) -> None:
    assert tier_index(BTC, abs(notional)) == tier
    assert maintenance_margin(notional, BTC) == pytest.approx(mm, rel=1e-12, abs=1e-12)


def test_maintenance_margin_is_continuous_at_tier_borders() -> None:
    # maint_amount is the cumulative amount that makes the margin continuous: Binance's design.
    for floor in BTC[1:, 0]:
        below = maintenance_margin(floor * (1 - 1e-12), BTC)
        assert maintenance_margin(floor, BTC) == pytest.approx(below, rel=1e-9)


def test_liquidation_long_tier_1_by_hand() -> None:
    # Balance 1000, long 1 BTC @ 20000 (WE 20).
    # equity(p) = 1000 + 1*(p - 20000); mm(p) = 1*p*0.004 (notional < 50000: tier 1)
    # 1000 + p - 20000 = 0.004 p  ->  0.996 p = 19000  ->  p = 19076.3052...
    p = liquidation_price(1000.0, 1.0, 20000.0, 0.0, 0.0, BTC)
    assert p == pytest.approx(19000.0 / 0.996, rel=1e-12)
    # Bankruptcy would be 20000 - 1000 = 19000: liquidation comes first, 76.31 above it.
    assert p > 19000.0


def test_liquidation_long_in_tier_2_by_hand() -> None:
    # Balance 10000, long 2 BTC @ 60000 (notional 120000, WE 12).
    # Try tier 1: 10000 + 2p - 120000 = 0.008 p -> p = 110000/1.992 = 55220.9 -> notional
    #   110441.8 is not in tier 1, so use tier 2 (0.5%, maint amount 50):
    # 10000 + 2p - 120000 = 2p*0.005 - 50 -> 1.99 p = 109950 -> p = 55251.2563
    # notional at p: 110502.5, in tier 2 [50000, 600000).
    p = liquidation_price(10000.0, 2.0, 60000.0, 0.0, 0.0, BTC)
    assert p == pytest.approx(109950.0 / 1.99, rel=1e-12)
    assert tier_index(BTC, 2.0 * p) == 1
    # Without the 50 of maint amount the answer would differ by 50/1.99 = 25.1.
    assert abs(p - 110000.0 / 1.99) > 20


def test_liquidation_long_where_the_tier_changes_on_the_way_down() -> None:
    # Balance 10000, long 1 BTC @ 55000: the entry notional 55000 is in tier 2, but at the
    # liquidation price the notional is in tier 1.
    # Tier 1: 10000 + p - 55000 = 0.004 p -> 0.996 p = 45000 -> p = 45180.7229 (< 50000, ok).
    # Had the entry's tier been used: 10000 + p - 55000 = 0.005 p - 50 -> p = 44950/0.995
    # = 45175.88, which is wrong by 4.8.
    p = liquidation_price(10000.0, 1.0, 55000.0, 0.0, 0.0, BTC)
    assert tier_index(BTC, 55000.0) == 1 and tier_index(BTC, p) == 0
    assert p == pytest.approx(45000.0 / 0.996, rel=1e-12)
    assert abs(p - 44950.0 / 0.995) > 4


def test_liquidation_short_where_the_tier_changes_on_the_way_up() -> None:
    # Balance 10000, short 1 BTC @ 45000 (entry notional in tier 1).
    # equity(p) = 10000 + (45000 - p)
    # Tier 1: 55000 - p = 0.004 p -> p = 55000/1.004 = 54780.9 -> notional above 50000: tier 2.
    # Tier 2: 55000 - p = 0.005 p - 50 -> 1.005 p = 55050 -> p = 54776.1194 (in tier 2).
    p = liquidation_price(10000.0, 0.0, 0.0, 1.0, 45000.0, BTC)
    assert p == pytest.approx(55050.0 / 1.005, rel=1e-12)
    assert tier_index(BTC, p) == 1


def test_liquidation_short_tier_1_by_hand() -> None:
    # Balance 1000, short 1 BTC @ 20000: 1000 + 20000 - p = 0.004 p -> p = 21000/1.004.
    p = liquidation_price(1000.0, 0.0, 0.0, 1.0, 20000.0, BTC)
    assert p == pytest.approx(21000.0 / 1.004, rel=1e-12)
    assert p < 21000.0  # before bankruptcy (20000 + 1000)


def test_liquidation_long_and_short_together_by_hand() -> None:
    # Balance 1000, long 2 @ 20000, short 1 @ 21000 (both notionals < 50000 near p: tier 1).
    # equity = 1000 + 2(p - 20000) + (21000 - p) = p - 18000
    # mm     = 2p*0.004 + p*0.004 = 0.012 p     ->  0.988 p = 18000  ->  p = 18218.6235
    p = liquidation_price(1000.0, 2.0, 20000.0, 1.0, 21000.0, BTC)
    assert p == pytest.approx(18000.0 / 0.988, rel=1e-12)


def test_liquidation_edge_cases() -> None:
    # WE 0.5 long: equity at price 0 is 500 > mm 0 -> never liquidated on a fall.
    assert liquidation_price(1000.0, 0.025, 20000.0, 0.0, 0.0, BTC) == 0.0
    assert math.isnan(liquidation_price(1000.0, 0.0, 0.0, 0.0, 0.0, BTC))
    # Balance 10, long 2 @ 7, short 3 @ 1: equity -1 - p is below the margin at every price:
    # a net short liquidated above 0.0, i.e. now (not "inf", never).
    assert liquidation_price(10.0, 2.0, 7.0, 3.0, 1.0, BTC) == 0.0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    balance=st.floats(10.0, 1e7),
    we=st.floats(1.05, 50.0),
    price=st.floats(1e-4, 1e5),
    short=st.booleans(),
)
def test_equity_equals_maintenance_margin_at_the_liquidation_price(
    balance: float, we: float, price: float, short: bool
) -> None:
    size = we * balance / price
    if short:
        p = liquidation_price(balance, 0.0, 0.0, size, price, BTC)
        equity = balance + size * (price - p)
    else:
        p = liquidation_price(balance, size, price, 0.0, 0.0, BTC)
        equity = balance + size * (p - price)
    assert 0.0 < p < math.inf
    assert equity == pytest.approx(hand_mm(size * p, BTC), rel=1e-6, abs=1e-9 * size * price)
    # Liquidation always comes before bankruptcy.
    bankrupt = price * (1 + 1 / we) if short else price * (1 - 1 / we)
    assert (p < bankrupt) if short else (p > bankrupt)


# ---------------------------------------------------------------------------------------------
# The whole account within a candle (the backtester's and the venue's liquidation check).


def test_account_liquidation_on_one_coin_equals_liquidation_price() -> None:
    tiers = stack_tiers([BTC])
    one = np.array
    # Long 1 @ 20000, balance 1000, the candle falls from 20000 to 18000.
    prices = account_liquidation(
        1000.0,
        one([1.0]),
        one([20000.0]),
        one([0.0]),
        one([0.0]),
        one([20000.0]),
        one([18000.0]),
        one([20100.0]),
        tiers,
    )
    assert prices.shape == (1,)
    assert prices[0] == pytest.approx(
        liquidation_price(1000.0, 1.0, 20000.0, 0.0, 0.0, BTC), rel=1e-6
    )
    # Short 1 @ 45000, balance 10000, the candle rises to 56000 (tier change on the way).
    prices = account_liquidation(
        10000.0,
        one([0.0]),
        one([0.0]),
        one([1.0]),
        one([45000.0]),
        one([50000.0]),
        one([49000.0]),
        one([56000.0]),
        tiers,
    )
    assert prices[0] == pytest.approx(55050.0 / 1.005, rel=1e-6)
    # A candle whose low stays above the liquidation price liquidates nothing.
    none = account_liquidation(
        1000.0,
        one([1.0]),
        one([20000.0]),
        one([0.0]),
        one([0.0]),
        one([20000.0]),
        one([19100.0]),
        one([20100.0]),
        tiers,
    )
    assert none.shape == (0,)


def test_account_liquidation_two_coins_equity_meets_maintenance_margin() -> None:
    # Balance 2000: long 0.5 BTC @ 60000 (notional 30000), short 5 ETH @ 3000 (15000).
    # The candle: BTC 60000 -> low 50000, ETH 3000 -> high 3500. At the extremes:
    # equity = 2000 + 0.5*(50000-60000) + 5*(3000-3500) = 2000 - 5000 - 2500 < 0: liquidated.
    tiers = stack_tiers([BTC, ETH])
    balance = 2000.0
    ls, lp = np.array([0.5, 0.0]), np.array([60000.0, 0.0])
    ss, sp = np.array([0.0, 5.0]), np.array([0.0, 3000.0])
    ref = np.array([60000.0, 3000.0])
    lows = np.array([50000.0, 2900.0])
    highs = np.array([60500.0, 3500.0])
    prices = account_liquidation(balance, ls, lp, ss, sp, ref, lows, highs, tiers)
    assert prices.shape == (2,)
    btc, eth = prices
    # By hand, not through the core: equity and maintenance margin at the returned prices.
    equity = balance + 0.5 * (btc - 60000.0) + 5.0 * (3000.0 - eth)
    mm = hand_mm(0.5 * btc, BTC) + hand_mm(5.0 * eth, ETH)
    assert equity == pytest.approx(mm, rel=1e-6)
    eq_core, mm_core = account_equity_margin(balance, ls, lp, ss, sp, prices, tiers)
    assert (eq_core, mm_core) == pytest.approx((equity, mm), rel=1e-9)
    # Both coins moved the same fraction of the way to their adverse extreme, within the candle.
    t_btc = (btc - 60000.0) / (50000.0 - 60000.0)
    t_eth = (eth - 3000.0) / (3500.0 - 3000.0)
    assert 0.0 < t_btc < 1.0
    assert t_btc == pytest.approx(t_eth, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Leverage sufficiency.


def test_leverage_must_exceed_the_sum_of_the_limits() -> None:
    # TWEL long 1.5 + short 0.5 = 2: leverage 2 is not enough (must exceed), 1.5 neither.
    for lev in (1.5, 2.0):
        check = check_leverage(lev, 1.5, 0.5)
        assert not check.ok
        assert check.required_above == 2.0
        assert "total_wallet_exposure_limit" in check.reason
        assert "(2)" in check.reason  # names the sum
        assert f"leverage {lev:g}" in check.reason
    assert check_leverage(2.5, 1.5, 0.5).ok


def test_disabled_sides_do_not_count() -> None:
    # Short disabled: only the long's 1.5 counts, so leverage 2 is enough.
    assert check_leverage(2.0, 1.5, 0.5, short_enabled=False).ok
    assert check_leverage(2.0, 1.5, 0.5, short_enabled=False).required_above == 1.5
    check = check_leverage(1.5, 1.5, 0.5, short_enabled=False)
    assert not check.ok and "(1.5)" in check.reason
    # Long disabled: only the short's 0.5.
    assert check_leverage(1.0, 1.5, 0.5, long_enabled=False).ok


def test_leverage_above_the_exchange_maximum_for_the_notional_is_refused() -> None:
    # Balance 10,000,000 with WEL 1.0: a position may reach a notional of 10,000,000, which is in
    # tier 4 (3M..12M) where BTCUSDT allows at most 50x.
    assert max_leverage_for_notional(10_000_000.0, BTC) == 50.0
    check = check_leverage(
        75.0,
        3.0,
        0.0,
        short_enabled=False,
        balance=10_000_000.0,
        wallet_exposure_limit_long=1.0,
        tiers=BTC,
    )
    assert not check.ok
    assert check.max_allowed == 50.0
    assert "maximum 50" in check.reason and "leverage 75" in check.reason
    # 50x itself is allowed, and so is 10x.
    for lev in (50.0, 10.0):
        ok = check_leverage(
            lev,
            3.0,
            0.0,
            short_enabled=False,
            balance=10_000_000.0,
            wallet_exposure_limit_long=1.0,
            tiers=BTC,
        )
        assert ok.ok and ok.reason == ""


def test_leverage_ok_for_a_small_account() -> None:
    # Balance 10000, WEL 0.5 long / 0.1667 short: notionals 5000 and 1667 are in tier 1 (125x).
    check = check_leverage(
        10.0,
        1.5,
        0.5,
        balance=10_000.0,
        wallet_exposure_limit_long=0.5,
        wallet_exposure_limit_short=0.5 / 3,
        tiers=BTC,
    )
    assert check.ok
    assert check.required_above == 2.0
    assert check.max_allowed == 125.0
