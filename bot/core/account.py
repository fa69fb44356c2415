"""Fills, pnl, fees and funding: the bookkeeping the backtester and the simulated venue share.

The candle fill model (DESIGN.md): orders computed from the state after candle k-1 rest
through candle k; a buy fills when ``low < price``, a sell when ``high > price`` (strict), at
the order's price. Within a candle the path is open -> nearer extreme -> farther extreme ->
close, so fills on the nearer extreme's side are booked first.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def candle_low_first(open_: float, high: float, low: float) -> bool:
    """True when the candle most likely visited its low before its high (the nearer extreme
    to the open comes first; a tie goes to the low)."""
    return open_ - low <= high - open_


@njit(cache=True)
def order_fills(qty: float, price: float, high: float, low: float) -> bool:
    """Does a resting order (+qty buy / -qty sell) fill in this candle? Strict inequalities:
    a price that only touches the order's level does not fill it."""
    if qty > 0.0:
        return low < price
    return high > price


@njit(cache=True)
def apply_fill(
    side: int, pos_size: float, pos_price: float, qty: float, price: float
) -> tuple[float, float, float]:
    """Position after a fill of signed ``qty`` at ``price``: (size, average price, realized pnl).

    Adding to a position averages its price; reducing realizes pnl against the average price
    and leaves it unchanged. A reduce beyond the position closes it (reduce-only semantics).
    """
    adding = (qty > 0.0) == (side > 0)
    q = abs(qty)
    if adding:
        new_size = pos_size + q
        new_price = (pos_size * pos_price + q * price) / new_size
        return new_size, new_price, 0.0
    q = min(q, pos_size)
    pnl = q * (price - pos_price) * side
    new_size = pos_size - q
    if new_size <= 1e-12:
        return 0.0, 0.0, pnl
    return new_size, pos_price, pnl


@njit(cache=True)
def unrealized_pnl(side: int, pos_size: float, pos_price: float, price: float) -> float:
    """Mark-to-market pnl of a position at ``price``."""
    return pos_size * (price - pos_price) * side


@njit(cache=True)
def funding_payment(side: int, pos_size: float, mark_price: float, rate: float) -> float:
    """What the position pays at a funding time (negative: receives). Longs pay when the
    rate is positive, shorts receive, and the other way round."""
    return pos_size * mark_price * rate * side
