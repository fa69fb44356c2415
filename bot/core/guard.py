"""The pre-trade guard: may these entry orders be sent without risking the exposure limit?

Independent of how the orders were sized. The live bot asks it before every entry it sends,
with the largest position it has reason to believe in (booked fills, the exchange's last
report, fills it knows are on their way) and every entry of that side that may still rest.
If all of them filled, the position's wallet exposure must stay within its limit (plus one
qty step of rounding at the entry's price).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.core.account import apply_fill
from bot.core.exposure import wallet_exposure


@njit(cache=True)
def exposure_if_filled(
    side: int, balance: float, size: float, price: float, entries: np.ndarray
) -> float:
    """Wallet exposure of a position after every entry in ``entries`` (rows [qty, price],
    qty > 0 adding to the position) filled."""
    for i in range(entries.shape[0]):
        size, price, _ = apply_fill(side, size, price, entries[i, 0] * side, entries[i, 1])
    return wallet_exposure(size, price, balance)


@njit(cache=True)
def entries_within_limit(
    side: int,
    balance: float,
    size: float,
    price: float,
    resting: np.ndarray,
    new: np.ndarray,
    wallet_exposure_limit: float,
    qty_step: float,
) -> int:
    """How many of the ``new`` entries (rows [qty, price], nearest first) may be sent.

    The position (``size`` at ``price``) is first grown by every ``resting`` entry, then by the
    new ones in order; the first one after which the wallet exposure would pass
    ``wallet_exposure_limit`` by more than one ``qty_step`` at its price stops the count (the
    farther levels of a ladder assume the nearer ones filled).
    """
    if balance <= 0.0:
        return 0
    for i in range(resting.shape[0]):
        size, price, _ = apply_fill(side, size, price, resting[i, 0] * side, resting[i, 1])
    for i in range(new.shape[0]):
        size, price, _ = apply_fill(side, size, price, new[i, 0] * side, new[i, 1])
        slack = qty_step * new[i, 1] / balance
        if wallet_exposure(size, price, balance) > wallet_exposure_limit + slack + 1e-12:
            return i
    return new.shape[0]
