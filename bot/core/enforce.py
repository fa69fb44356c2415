"""Passivbot's ``enforce_exposure_limit``: bring a position back to its wallet exposure limit.

Entries never take a position past its limit, but the balance can shrink under it (fees,
funding, realized losses, a withdrawal), leaving WE above the WEL. With the side's
``enforce_exposure_limit`` on, a position more than 1% past its limit gets a close at the book
(ask for a long, bid for a short) of what it holds past the limit; every position of a side
then stays within its WEL, so the side's positions together stay within
``total_wallet_exposure_limit`` (x 1.01).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.core.params import (
    M_MIN_COST,
    M_MIN_QTY,
    M_PRICE_STEP,
    M_QTY_STEP,
    P_ENFORCE_EXPOSURE_LIMIT,
    P_WALLET_EXPOSURE_LIMIT,
)
from bot.core.rounding import min_entry_qty, round_dn, round_up

# Passivbot's tolerance: only a position more than 1% past its limit is reduced.
ENFORCE_TOLERANCE = 1.01


@njit(cache=True)
def exposure_close(
    side: int,
    balance: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    market: np.ndarray,
    params: np.ndarray,
) -> tuple[float, float]:
    """(qty magnitude, price) of the close that brings WE back to the WEL, or (0, 0).

    qty = size - WEL x balance / position price, rounded up to the qty step (at least the
    exchange minimum, at most the position); price: the ask (long) / bid (short), on the tick.
    """
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    if params[P_ENFORCE_EXPOSURE_LIMIT] == 0.0 or pos_size <= 0.0 or pos_price <= 0.0:
        return 0.0, 0.0
    if balance > 0.0 and pos_size * pos_price / balance <= wel * ENFORCE_TOLERANCE:
        return 0.0, 0.0
    # On the tick: an off-tick book (float noise, a spot feed) must not reach the exchange.
    pstep = market[M_PRICE_STEP]
    price = round_up(ask, pstep) if side > 0 else round_dn(bid, pstep)
    if not (price > 0.0):
        return 0.0, 0.0
    qstep = market[M_QTY_STEP]
    target = max(0.0, wel * balance / pos_price)  # balance <= 0: close it all
    qty = round_up(pos_size - target, qstep)
    qty = min(
        pos_size, max(qty, min_entry_qty(price, qstep, market[M_MIN_QTY], market[M_MIN_COST]))
    )
    return qty, price
