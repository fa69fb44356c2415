"""Rounding to exchange steps: what the exchange would reject must never leave the core."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core import is_on_step, min_entry_qty, round_dn, round_nearest, round_up
from bot.markets import market_spec


def test_float_noise_does_not_move_a_value_off_its_step() -> None:
    noisy = 0.1 + 0.2  # 0.30000000000000004
    assert round_up(noisy, 0.1) == 0.3  # not 0.4
    assert round_dn(noisy, 0.1) == 0.3
    assert round_dn(0.7, 0.1) == 0.7  # 0.7/0.1 = 6.999999999999999 must not floor to 6
    assert round_up(0.7, 0.1) == 0.7
    assert round_nearest(0.7, 0.1) == 0.7


def test_rounding_directions_by_hand() -> None:
    assert round_up(60000.01, 0.1) == 60000.1
    assert round_dn(60000.09, 0.1) == 60000.0
    assert round_nearest(60000.06, 0.1) == 60000.1
    assert round_dn(0.0012345, 1e-5) == 0.00123
    assert round_up(0.0012345, 1e-5) == 0.00124
    assert round_dn(57.9, 1.0) == 57.0
    assert round_up(57.1, 1.0) == 58.0
    # A zero step means no rounding.
    assert round_dn(1.2345, 0.0) == 1.2345


def test_min_entry_qty_by_hand() -> None:
    btc = market_spec("BTCUSDT")
    # $100 min cost at 60000: 100/60000 = 0.001667 -> up to 0.002 (above min_qty 0.001).
    assert min_entry_qty(60000.0, btc.qty_step, btc.min_qty, btc.min_cost) == 0.002
    # At 200000 the cost needs 0.0005 -> 0.001, which is also min_qty.
    assert min_entry_qty(200000.0, btc.qty_step, btc.min_qty, btc.min_cost) == 0.001
    doge = market_spec("DOGEUSDT")
    # $5 at 0.1 -> 50 coins; at 0.123 -> 40.65 -> 41.
    assert min_entry_qty(0.1, doge.qty_step, doge.min_qty, doge.min_cost) == 50.0
    assert min_entry_qty(0.123, doge.qty_step, doge.min_qty, doge.min_cost) == 41.0


def test_is_on_step() -> None:
    assert is_on_step(0.3, 0.1)
    assert is_on_step(0.1 + 0.2, 0.1)
    assert not is_on_step(0.35, 0.1)
    assert is_on_step(1.5, 0.0)


steps = st.sampled_from([1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 100.0])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(x=st.floats(0.0, 1e6), step=steps)
def test_rounding_lands_on_the_step_on_the_right_side(x: float, step: float) -> None:
    if x / step > 1e11:  # beyond float precision for a step count
        return
    dn, up, near = round_dn(x, step), round_up(x, step), round_nearest(x, step)
    for v in (dn, up, near):
        # The decimal text the exchange would get is a whole multiple of the step.
        assert Decimal(repr(v)) % Decimal(repr(step)) == 0, (v, step)
    tol = 1e-9 * step + 1e-12 * x
    assert dn <= x + tol and x - dn < step + tol
    assert up >= x - tol and up - x < step + tol
    assert abs(near - x) <= step / 2 + tol
    # A value already on the step stays put in every direction.
    assert round_dn(dn, step) == dn and round_up(dn, step) == dn


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    price=st.floats(1e-4, 1e5),
    qty_step=steps,
    min_qty_steps=st.integers(1, 10),
    min_cost=st.sampled_from([0.0, 1.0, 5.0, 100.0]),
)
def test_min_entry_qty_meets_min_qty_and_min_cost(
    price: float, qty_step: float, min_qty_steps: int, min_cost: float
) -> None:
    min_qty = min_qty_steps * qty_step
    q = min_entry_qty(price, qty_step, min_qty, min_cost)
    assert q >= min_qty * (1 - 1e-12)
    assert q * price >= min_cost * (1 - 1e-9)
    # ... and is the smallest such qty on the step.
    smaller = q - qty_step
    # (one step can be under 1e-9 of the qty: compare with float noise only)
    assert smaller < min_qty * (1 - 1e-12) or smaller * price < min_cost * (1 - 1e-12)
    assert math.isclose(q / qty_step, round(q / qty_step), abs_tol=1e-6)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "DOGEUSDT"])
def test_bundled_market_steps_are_sane(symbol: str) -> None:
    spec = market_spec(symbol)
    assert spec.qty_step > 0 and spec.price_step > 0
    assert is_on_step(spec.min_qty, spec.qty_step)
    assert spec.as_array().tolist() == [spec.qty_step, spec.price_step, spec.min_qty, spec.min_cost]
