"""Trailing entries and closes (Passivbot v7's rules): the price extremes since a position last
changed, the trailing triggers, and how ``*_trailing_grid_ratio`` splits a side between grid and
trailing orders.

The extremes are state the caller keeps and passes in (the core has no memory): one array of
four floats per position side, ``trail[T_MIN_SINCE_OPEN]`` etc., emptied by :func:`trail_reset`
when the position changes and advanced by :func:`trail_update` with each closed candle after.

Long (a short mirrored: highs for lows):
- entry: ``threshold`` met when the lowest low since the change is below
  pos_price x (1 - threshold); ``retracement`` met when the highest high *after* that low is
  above low x (1 + retracement). Both met (a threshold <= 0 is always met, a retracement <= 0
  too): one entry at the bid.
- close: the highest high above pos_price x (1 + threshold), and the lowest low after it below
  high x (1 - retracement): one close at max(ask, pos_price x (1 + threshold)) (at the ask when
  the threshold is <= 0).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.core.rounding import round_dn, round_up

T_MIN_SINCE_OPEN = 0  # lowest low since the position changed
T_MAX_SINCE_MIN = 1  # highest high after that low (its candle's close at first)
T_MAX_SINCE_OPEN = 2  # highest high since the position changed
T_MIN_SINCE_MAX = 3  # lowest low after that high (its candle's close at first)
N_TRAIL = 4

# Phases a side's *_trailing_grid_ratio gives (see split_phase)
PHASE_GRID = 0
PHASE_TRAILING = 1


def trail_empty() -> np.ndarray:
    """Extremes of no candle yet (nothing can trigger)."""
    t = np.empty(N_TRAIL)
    trail_reset(t)
    return t


@njit(cache=True)
def trail_reset(trail: np.ndarray) -> None:
    """The position changed: no candle since."""
    trail[T_MIN_SINCE_OPEN] = np.inf
    trail[T_MAX_SINCE_MIN] = 0.0
    trail[T_MAX_SINCE_OPEN] = 0.0
    trail[T_MIN_SINCE_MAX] = np.inf


@njit(cache=True)
def trail_update(trail: np.ndarray, high: float, low: float, close: float) -> None:
    """Advance the extremes by one closed candle. A candle that makes a new low restarts the
    high after the low at its close (within a candle the order of high and low is unknown, so
    only its close is surely after its low); the same for a new high."""
    if low < trail[T_MIN_SINCE_OPEN]:
        trail[T_MIN_SINCE_OPEN] = low
        trail[T_MAX_SINCE_MIN] = close
    else:
        trail[T_MAX_SINCE_MIN] = max(trail[T_MAX_SINCE_MIN], high)
    if high > trail[T_MAX_SINCE_OPEN]:
        trail[T_MAX_SINCE_OPEN] = high
        trail[T_MIN_SINCE_MAX] = close
    else:
        trail[T_MIN_SINCE_MAX] = min(trail[T_MIN_SINCE_MAX], low)


@njit(cache=True)
def entry_triggered(
    side: int, pos_price: float, trail: np.ndarray, threshold_pct: float, retracement_pct: float
) -> bool:
    """Have the extremes since the last change met the entry threshold and retracement?"""
    if side > 0:
        low = trail[T_MIN_SINCE_OPEN]
        if threshold_pct > 0.0 and not low < pos_price * (1.0 - threshold_pct):
            return False
        if retracement_pct <= 0.0:
            return True
        return low < np.inf and trail[T_MAX_SINCE_MIN] > low * (1.0 + retracement_pct)
    high = trail[T_MAX_SINCE_OPEN]
    if threshold_pct > 0.0 and not high > pos_price * (1.0 + threshold_pct):
        return False
    if retracement_pct <= 0.0:
        return True
    return high > 0.0 and trail[T_MIN_SINCE_MAX] < high * (1.0 - retracement_pct)


@njit(cache=True)
def close_trigger_price(
    side: int,
    pos_price: float,
    bid: float,
    ask: float,
    trail: np.ndarray,
    threshold_pct: float,
    retracement_pct: float,
    price_step: float,
) -> float:
    """Price of the trailing close when the extremes trigger it, else 0.0."""
    if side > 0:
        high = trail[T_MAX_SINCE_OPEN]
        if threshold_pct > 0.0 and not high > pos_price * (1.0 + threshold_pct):
            return 0.0
        if retracement_pct > 0.0 and not (
            high > 0.0 and trail[T_MIN_SINCE_MAX] < high * (1.0 - retracement_pct)
        ):
            return 0.0
        floor = pos_price * (1.0 + threshold_pct) if threshold_pct > 0.0 else 0.0
        return round_up(max(ask, floor), price_step)
    low = trail[T_MIN_SINCE_OPEN]
    if threshold_pct > 0.0 and not low < pos_price * (1.0 - threshold_pct):
        return 0.0
    if retracement_pct > 0.0 and not (
        low < np.inf and trail[T_MAX_SINCE_MIN] > low * (1.0 + retracement_pct)
    ):
        return 0.0
    ceil = pos_price * (1.0 - threshold_pct) if threshold_pct > 0.0 else np.inf
    price = round_dn(min(bid, ceil), price_step)
    return price if price > 0.0 else 0.0


@njit(cache=True)
def entry_phase(ratio: float, we_ratio: float) -> tuple[int, float]:
    """(phase, exposure cap as a fraction of the limit) of a side's next entries.

    ratio 0: grid only; |ratio| >= 1: trailing only; 0 < ratio < 1: trailing entries while
    WE / WEL < ratio (capped there), then the grid; -1 < ratio < 0: the grid while
    WE / WEL < 1 + ratio (capped there), then trailing entries."""
    if ratio == 0.0:
        return PHASE_GRID, 1.0
    if ratio >= 1.0 or ratio <= -1.0:
        return PHASE_TRAILING, 1.0
    if ratio > 0.0:
        if we_ratio < ratio:
            return PHASE_TRAILING, ratio
        return PHASE_GRID, 1.0
    if we_ratio < 1.0 + ratio:
        return PHASE_GRID, 1.0 + ratio
    return PHASE_TRAILING, 1.0


@njit(cache=True)
def close_split(ratio: float, size: float, full_size: float) -> float:
    """How much of a position of ``size`` the trailing closes take (the grid the rest).

    ratio 0: none; |ratio| >= 1: all; 0 < ratio < 1 (trailing first): the top slice above
    (1 - ratio) of a full position (full_size = balance x WEL / pos_price); -1 < ratio < 0
    (grid first): the bottom slice up to |ratio| of a full position."""
    if ratio == 0.0 or size <= 0.0:
        return 0.0
    if ratio >= 1.0 or ratio <= -1.0:
        return size
    if ratio > 0.0:
        return max(0.0, size - (1.0 - ratio) * full_size)
    return min(size, -ratio * full_size)
