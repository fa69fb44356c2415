"""Wallet exposure, per-position limits and bankruptcy (the seeds' wallet_exposure.md).

balance is the unleveraged wallet balance; sizes are magnitudes in coins; prices are average
entry prices. Everything here is pure and compiled.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True)
def wallet_exposure(size: float, price: float, balance: float) -> float:
    """position_size * position_price / balance: 0 = flat, 1.0 = 100% of the balance in position."""
    if balance <= 0.0:
        return math.inf if size != 0.0 else 0.0
    return abs(size) * price / balance


@njit(cache=True)
def wallet_exposure_limit(total_wallet_exposure_limit: float, n_positions: float) -> float:
    """A single position's limit: total_wallet_exposure_limit / n_positions."""
    if n_positions <= 0:
        return 0.0
    return total_wallet_exposure_limit / n_positions


@njit(cache=True)
def bankruptcy_price(
    balance: float, long_size: float, long_price: float, short_size: float, short_price: float
) -> float:
    """Price at which equity = balance + unrealized pnl = 0, for a long and a short of one coin
    in one cross-margin account: (L*P_L - S*P_S - balance) / (L - S).

    Long only: P_L * (1 - 1/WE) (WE 1 -> 0, WE 2 -> 50% lower, WE 10 -> 10% lower).
    A net long is bankrupt below the returned price, a net short above it. So 0.0 means: a net
    long can never go bankrupt on a fall (covered by the balance), a net short is bankrupt at
    any price (already). nan with no net position.
    """
    net = long_size - short_size
    if net == 0.0:
        return math.nan
    p = (long_size * long_price - short_size * short_price - balance) / net
    # A net short's equity falls as the price rises: a root at or below zero means equity is
    # negative at every price (bankrupt now), not that it can never go bankrupt.
    return max(p, 0.0)
