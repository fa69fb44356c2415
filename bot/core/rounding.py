"""Rounding to an exchange's qty and price steps.

Steps are floats (0.001, 0.01, 1e-5): rounding counts whole steps k, then turns k back into a
price or qty without float noise (0.1 + 0.2 style), so a value is never a hair off its step (the
exchange would reject it). For the usual decimal steps 1/step is a whole number n and k / n is
the double nearest to the decimal value, exactly what parsing its text gives; other steps round
the product k * step to the step's decimals.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True)
def _from_steps(k: float, step: float) -> float:
    """k whole steps as a clean float."""
    inv = 1.0 / step
    n = round(inv)
    if n >= 1.0 and abs(inv - n) <= 1e-9 * n:
        return k / n  # one correctly rounded division: the nearest double to the decimal
    x = k * step
    decimals = max(0, int(math.ceil(-math.log10(step))) + 2)
    return round(x, min(decimals, 15))


@njit(cache=True)
def round_up(x: float, step: float) -> float:
    """Smallest multiple of ``step`` that is >= x (within float noise)."""
    if step <= 0.0:
        return x
    k = x / step
    # Noise in x / step grows with k (228.0 / 1e-5 = 22799999.999999996): relative slack too.
    return _from_steps(math.ceil(k - 1e-9 - 1e-12 * abs(k)), step)


@njit(cache=True)
def round_dn(x: float, step: float) -> float:
    """Largest multiple of ``step`` that is <= x (within float noise)."""
    if step <= 0.0:
        return x
    k = x / step
    return _from_steps(math.floor(k + 1e-9 + 1e-12 * abs(k)), step)


@njit(cache=True)
def round_nearest(x: float, step: float) -> float:
    """Nearest multiple of ``step``."""
    if step <= 0.0:
        return x
    return _from_steps(round(x / step), step)


@njit(cache=True)
def min_entry_qty(price: float, qty_step: float, min_qty: float, min_cost: float) -> float:
    """Smallest qty the exchange accepts at ``price``: at least min_qty and min_cost, on the step."""
    by_cost = round_up(min_cost / price, qty_step) if price > 0.0 else 0.0
    return max(round_up(min_qty, qty_step), by_cost)


def is_on_step(x: float, step: float) -> bool:
    """True when x is a whole multiple of step (within float noise)."""
    if step <= 0:
        return True
    k = x / step
    return abs(k - round(k)) < 1e-6
