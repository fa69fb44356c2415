"""The deleverage (ADL) ranking score of a position (the seeds' deleverage_events.md).

When a bankrupt position cannot be closed otherwise, the exchange closes it at its bankruptcy
price against counterparties on the other side, highest score first. Two formulas:

- ``RANK_SEED`` (the seed's): ``leverage x position size x ROE`` with
  ``leverage = size x price / equity`` (effective leverage), ROE = unrealized pnl / balance
  (the return on the wallet balance that carries the position);
- ``RANK_BITMEX``: ``PnL% x effective leverage`` with ``PnL% = unrealized pnl / (size x
  entry price)``.

Both are positive only for a profitable position; an account with no equity left has an
infinite effective leverage and is given the score of a flat one (0): it is being liquidated,
not deleveraged. Pure and compiled, like the rest of the core.
"""

from __future__ import annotations

from numba import njit

from bot.core.account import unrealized_pnl

__all__ = ["RANK_BITMEX", "RANK_NAMES", "RANK_SEED", "deleverage_score"]

RANK_SEED = 0
RANK_BITMEX = 1
RANK_NAMES = {"seed": RANK_SEED, "bitmex": RANK_BITMEX}


@njit(cache=True)
def deleverage_score(
    formula: int, side: int, size: float, pos_price: float, price: float, balance: float
) -> float:
    """The ranking score of one position (``side`` 1 long / -1 short, ``size`` a magnitude) at
    ``price`` in an account whose wallet balance is ``balance`` (its equity adds the position's
    unrealized pnl). 0 for no position or no equity."""
    if size <= 0.0 or pos_price <= 0.0:
        return 0.0
    upnl = unrealized_pnl(side, size, pos_price, price)
    equity = balance + upnl
    if equity <= 0.0 or balance <= 0.0:
        return 0.0
    leverage = size * price / equity
    if formula == RANK_BITMEX:
        return upnl / (size * pos_price) * leverage
    return leverage * size * (upnl / balance)
