"""Wallet exposure, per-position limits and bankruptcy: the numbers of the seeds'
wallet_exposure.md, exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import SideConfig, side_params_array
from bot.core import bankruptcy_price, unrealized_pnl, wallet_exposure, wallet_exposure_limit
from bot.core.params import LONG, P_WALLET_EXPOSURE_LIMIT, SHORT


def test_seed_example_wallet_exposure_3_5() -> None:
    # Balance $1000, long 100 coins @ 35 -> 100*35/1000 = 3.5.
    assert wallet_exposure(100.0, 35.0, 1000.0) == 3.5
    assert wallet_exposure(0.0, 35.0, 1000.0) == 0.0
    # Sizes are magnitudes; a signed short size gives the same exposure.
    assert wallet_exposure(-100.0, 35.0, 1000.0) == 3.5
    # 100% of the balance in position.
    assert wallet_exposure(10.0, 100.0, 1000.0) == 1.0


def test_wallet_exposure_with_no_balance_is_infinite_not_an_error() -> None:
    assert wallet_exposure(1.0, 100.0, 0.0) == math.inf
    assert wallet_exposure(0.0, 100.0, 0.0) == 0.0


# Seed table: WE 1 -> 0, WE 2 -> 50% lower, WE 3 -> 33.33% lower, WE 10 -> 10% lower.
@pytest.mark.parametrize(
    ("we", "long_bankruptcy", "short_bankruptcy"),
    [
        # balance 1000, price 100, size = WE*1000/100 = 10*WE coins.
        # long: (10*WE*100 - 1000) / (10*WE); short: (-10*WE*100 - 1000) / (-10*WE).
        (1.0, 0.0, 200.0),  # (1000-1000)/10 = 0;          (-1000-1000)/-10 = 200 (+100%)
        (2.0, 50.0, 150.0),  # (2000-1000)/20 = 50 (-50%);  (-2000-1000)/-20 = 150 (+50%)
        (3.0, 100 * 2 / 3, 100 * 4 / 3),  # 2000/30 = 66.67 (-33.33%); 4000/30 = 133.33
        (10.0, 90.0, 110.0),  # 9000/100 = 90 (-10%);       11000/100 = 110 (+10%)
    ],
)
def test_seed_bankruptcy_table(we: float, long_bankruptcy: float, short_bankruptcy: float) -> None:
    size = 10.0 * we
    assert wallet_exposure(size, 100.0, 1000.0) == we
    assert bankruptcy_price(1000.0, size, 100.0, 0.0, 0.0) == pytest.approx(long_bankruptcy)
    assert bankruptcy_price(1000.0, 0.0, 0.0, size, 100.0) == pytest.approx(short_bankruptcy)
    # The seed's percentages: long P*(1 - 1/WE), short P*(1 + 1/WE).
    assert long_bankruptcy == pytest.approx(100.0 * (1 - 1 / we), abs=1e-12)
    assert short_bankruptcy == pytest.approx(100.0 * (1 + 1 / we))


def test_seed_percentages_hold_at_any_price() -> None:
    # WE 3 at BTC prices: 33.33% lower; WE 2 short: 50% higher.
    p = 61234.5
    b = 2500.0
    assert bankruptcy_price(b, 3 * b / p, p, 0.0, 0.0) / p == pytest.approx(1 - 1 / 3)
    assert bankruptcy_price(b, 0.0, 0.0, 2 * b / p, p) / p == pytest.approx(1.5)


def test_long_below_one_times_never_goes_bankrupt_on_a_fall() -> None:
    # WE 0.5: equity at price 0 is 1000 - 500 = 500 > 0, so the answer is 0 (not negative).
    assert bankruptcy_price(1000.0, 5.0, 100.0, 0.0, 0.0) == 0.0


def test_cross_margin_long_and_short_by_hand() -> None:
    # Balance 50; long 2 @ 100, short 1 @ 120 in one account:
    # (L*P_L - S*P_S - balance)/(L - S) = (200 - 120 - 50)/(2 - 1) = 30.
    p = bankruptcy_price(50.0, 2.0, 100.0, 1.0, 120.0)
    assert p == pytest.approx(30.0)
    # Check: equity at 30 = 50 + 2*(30-100) + 1*(120-30) = 50 - 140 + 90 = 0.
    assert 50.0 + unrealized_pnl(LONG, 2.0, 100.0, p) + unrealized_pnl(SHORT, 1.0, 120.0, p) == (
        pytest.approx(0.0, abs=1e-9)
    )
    # Net short: balance 100, long 1 @ 100, short 3 @ 110:
    # (100 - 330 - 100)/(1 - 3) = -330/-2 = 165; the account dies on a rise to 165.
    assert bankruptcy_price(100.0, 1.0, 100.0, 3.0, 110.0) == pytest.approx(165.0)


def test_net_short_already_under_water_is_bankrupt_at_any_price() -> None:
    # Balance 10, long 2 @ 7, short 3 @ 1: equity(p) = 10 + 2(p-7) + 3(1-p) = -1 - p < 0 at
    # every price. The formula gives (14 - 3 - 10)/(2 - 3) = -1: a net short is bankrupt above
    # the returned price, so the answer is 0.0 (bankrupt now), never "inf" (never bankrupt).
    assert bankruptcy_price(10.0, 2.0, 7.0, 3.0, 1.0) == 0.0


def test_fully_hedged_account_has_no_bankruptcy_price() -> None:
    # Long 1 @ 100 and short 1 @ 110: equity is 100 + 10 at every price.
    assert math.isnan(bankruptcy_price(100.0, 1.0, 100.0, 1.0, 110.0))
    assert math.isnan(bankruptcy_price(100.0, 0.0, 0.0, 0.0, 0.0))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    balance=st.floats(10.0, 1e7),
    long_size=st.floats(0.0, 1e4),
    long_price=st.floats(1e-4, 1e5),
    short_size=st.floats(0.0, 1e4),
    short_price=st.floats(1e-4, 1e5),
)
def test_equity_is_zero_at_the_bankruptcy_price(
    balance: float, long_size: float, long_price: float, short_size: float, short_price: float
) -> None:
    net = long_size - short_size
    p = bankruptcy_price(balance, long_size, long_price, short_size, short_price)
    if abs(net) < 1e-9 * max(long_size, short_size, 1.0):
        return
    assert 0.0 <= p < math.inf
    if p == 0.0:
        equity_at_zero = balance - long_size * long_price + short_size * short_price
        if net > 0:
            assert equity_at_zero >= 0  # a net long covered by the balance: never bankrupt
        else:
            assert equity_at_zero <= 0  # a net short under water at every price: bankrupt now
        return
    equity = (
        balance
        + unrealized_pnl(LONG, long_size, long_price, p)
        + unrealized_pnl(SHORT, short_size, short_price, p)
    )
    scale = balance + long_size * long_price + short_size * short_price
    assert equity == pytest.approx(0.0, abs=1e-9 * scale)


def test_wallet_exposure_limit_is_total_over_n_positions() -> None:
    assert wallet_exposure_limit(1.5, 3) == pytest.approx(0.5)
    assert wallet_exposure_limit(2.0, 1) == 2.0
    assert wallet_exposure_limit(1.0, 0) == 0.0
    side = SideConfig(total_wallet_exposure_limit=1.5, n_positions=3)
    assert side.wallet_exposure_limit == pytest.approx(0.5)
    # The core gets the per-position limit, not the total.
    assert side_params_array(side)[P_WALLET_EXPOSURE_LIMIT] == pytest.approx(0.5)
