"""Rounding to an exchange's qty and price steps.

Steps are floats (0.001, 0.01, 1e-5): rounding divides by the step, rounds, and multiplies back,
then rounds to 12 significant decimals so that 0.1 + 0.2 style noise never leaves a value a hair
off its step (the exchange would reject it).
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True)
def _clean(x: float, step: float) -> float:
    # Keep enough decimals for the step, drop float noise beyond it.
    decimals = max(0, int(math.ceil(-math.log10(step))) + 2) if step > 0.0 else 12
    return round(x, min(decimals, 15))


@njit(cache=True)
def round_up(x: float, step: float) -> float:
    """Smallest multiple of ``step`` that is >= x (within float noise)."""
    if step <= 0.0:
        return x
    k = x / step
    # Noise in x / step grows with k (228.0 / 1e-5 = 22799999.999999996): relative slack too.
    return _clean(math.ceil(k - 1e-9 - 1e-12 * abs(k)) * step, step)


@njit(cache=True)
def round_dn(x: float, step: float) -> float:
    """Largest multiple of ``step`` that is <= x (within float noise)."""
    if step <= 0.0:
        return x
    k = x / step
    return _clean(math.floor(k + 1e-9 + 1e-12 * abs(k)) * step, step)


@njit(cache=True)
def round_nearest(x: float, step: float) -> float:
    """Nearest multiple of ``step``."""
    if step <= 0.0:
        return x
    return _clean(round(x / step) * step, step)


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
