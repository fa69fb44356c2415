"""Order grids for one position side: initial entry, re-entry grid, close grid, unstucking.

All functions take the side (LONG=1 / SHORT=-1) and mirror prices for shorts: a long buys below
and sells above, a short sells above and buys below. Sizes are magnitudes; order quantities
are signed (+buy / -sell). Prices round in the trader's favour (long entries down, long closes
up, short entries up, short closes down); quantities never take a position past its wallet
exposure limit: the last entry is cropped to land on it, rounded down to the qty step.

``ideal_orders`` is the one function both the live bot and the backtester call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.core.ema import ema_band
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_CLOSE_TRAILING,
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_ENTRY_TRAILING,
    KIND_UNSTUCK,
    M_MIN_COST,
    M_MIN_QTY,
    M_PRICE_STEP,
    M_QTY_STEP,
    MAX_CLOSE_LEVELS,
    MAX_ENTRY_LEVELS,
    MAX_ORDERS,
    P_CLOSE_GRID_MARKUP_RANGE,
    P_CLOSE_GRID_MIN_MARKUP,
    P_CLOSE_GRID_QTY_PCT,
    P_CLOSE_TRAILING_GRID_RATIO,
    P_CLOSE_TRAILING_QTY_PCT,
    P_CLOSE_TRAILING_RETRACEMENT_PCT,
    P_CLOSE_TRAILING_THRESHOLD_PCT,
    P_ENABLED,
    P_ENTRY_GRID_DOUBLE_DOWN_FACTOR,
    P_ENTRY_GRID_SPACING_PCT,
    P_ENTRY_GRID_SPACING_WEIGHT,
    P_ENTRY_INITIAL_EMA_DIST,
    P_ENTRY_INITIAL_QTY_PCT,
    P_ENTRY_TRAILING_GRID_RATIO,
    P_ENTRY_TRAILING_RETRACEMENT_PCT,
    P_ENTRY_TRAILING_THRESHOLD_PCT,
    P_UNSTUCK_CLOSE_PCT,
    P_UNSTUCK_EMA_DIST,
    P_UNSTUCK_LOSS_ALLOWANCE_PCT,
    P_UNSTUCK_THRESHOLD,
    P_WALLET_EXPOSURE_LIMIT,
)
from bot.core.rounding import min_entry_qty, round_dn, round_nearest, round_up
from bot.core.trailing import (
    PHASE_GRID,
    PHASE_TRAILING,
    close_split,
    close_trigger_price,
    entry_phase,
    entry_triggered,
    trail_empty,
)

# A position within this fraction of its limit counts as full (float noise on WE == WEL).
_FULL = 1.0 - 1e-9


@njit(cache=True)
def _entry_round(side: int, price: float, step: float) -> float:
    return round_dn(price, step) if side > 0 else round_up(price, step)


@njit(cache=True)
def _close_round(side: int, price: float, step: float) -> float:
    return round_up(price, step) if side > 0 else round_dn(price, step)


@njit(cache=True)
def _beyond(side: int, price: float, stop_price: float) -> bool:
    return price <= stop_price if side > 0 else price >= stop_price


@njit(cache=True)
def initial_entry_price(
    side: int, bid: float, ask: float, emas: np.ndarray, market: np.ndarray, params: np.ndarray
) -> float:
    """Long: min(bid, lower_ema * (1 - entry_initial_ema_dist)); short: max(ask, upper_ema * (1 + dist))."""
    lower, upper = ema_band(emas)
    dist = params[P_ENTRY_INITIAL_EMA_DIST]
    if side > 0:
        return _entry_round(side, min(bid, lower * (1.0 - dist)), market[M_PRICE_STEP])
    return _entry_round(side, max(ask, upper * (1.0 + dist)), market[M_PRICE_STEP])


@njit(cache=True)
def _room_qty(
    balance: float, wel: float, size: float, pos_price: float, price: float, step: float
) -> float:
    """Largest qty at ``price`` that keeps wallet exposure at or below the limit."""
    room = wel * balance - size * pos_price
    if room <= 0.0 or price <= 0.0:
        return 0.0
    return round_dn(room / price, step)


@njit(cache=True)
def _initial_qty(balance: float, price: float, market: np.ndarray, params: np.ndarray) -> float:
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    q = round_nearest(balance * wel * params[P_ENTRY_INITIAL_QTY_PCT] / price, market[M_QTY_STEP])
    return max(q, min_entry_qty(price, market[M_QTY_STEP], market[M_MIN_QTY], market[M_MIN_COST]))


@njit(cache=True)
def _sized_entry(
    qty: float,
    balance: float,
    size: float,
    pos_price: float,
    price: float,
    market: np.ndarray,
    wel: float,
) -> float:
    """Crop ``qty`` so that WE lands on the limit; 0.0 when no valid order fits under it.

    When what would remain under the limit after this entry is too small for another order,
    this entry takes it all now (so the grid ends exactly on the limit, not just short of it).
    """
    step = market[M_QTY_STEP]
    min_q = min_entry_qty(price, step, market[M_MIN_QTY], market[M_MIN_COST])
    room = _room_qty(balance, wel, size, pos_price, price, step)
    if room < min_q:
        return 0.0
    if qty >= room or room - qty < min_q:
        return room
    return max(qty, min_q)


@njit(cache=True)
def entry_grid(
    side: int,
    balance: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    out: np.ndarray,
    start: int,
    stop_price: float,
    max_levels: int = MAX_ENTRY_LEVELS,
    wel_cap: float = np.inf,
) -> int:
    """Write the entry ladder into ``out[start:]`` nearest first; return the row after the last.

    Each level is computed from the position as it would be after every nearer level filled, so
    the whole ladder ends on the wallet exposure limit and never passes it. Levels at or beyond
    ``stop_price`` (long: at or below; short: at or above) are left out: the backtester passes
    the candle's extreme, which they cannot reach; the live bot passes 0 / inf for the whole
    ladder. At most ``max_levels`` levels (the backtester asks for 1 to learn the nearest).
    ``wel_cap`` lowers the limit the ladder ends on (a trailing grid ratio's share; the
    initial qty still follows the full limit).
    """
    wel = min(params[P_WALLET_EXPOSURE_LIMIT], wel_cap)
    n = start
    if params[P_ENABLED] == 0.0 or wel <= 0.0 or balance <= 0.0:
        return n
    pstep = market[M_PRICE_STEP]
    size = pos_size
    price_avg = pos_price
    last_price = 0.0
    if size <= 0.0:
        price = initial_entry_price(side, bid, ask, emas, market, params)
        if price <= 0.0:
            return n
        qty = _sized_entry(
            _initial_qty(balance, price, market, params), balance, 0.0, 0.0, price, market, wel
        )
        if qty <= 0.0 or _beyond(side, price, stop_price):
            return n
        out[n, 0] = qty * side
        out[n, 1] = price
        out[n, 2] = KIND_ENTRY_INITIAL
        n += 1
        size = qty
        price_avg = price
        last_price = price
    spacing = params[P_ENTRY_GRID_SPACING_PCT]
    weight = params[P_ENTRY_GRID_SPACING_WEIGHT]
    ddf = params[P_ENTRY_GRID_DOUBLE_DOWN_FACTOR]
    for _ in range(MAX_ENTRY_LEVELS):
        if n - start >= min(max_levels, MAX_ENTRY_LEVELS):
            break
        we = size * price_avg / balance
        if we >= wel * _FULL:
            break
        dist = spacing * (1.0 + we / wel * weight)
        if side > 0:
            price = min(bid, price_avg * (1.0 - dist))
            if last_price > 0.0:
                price = min(price, last_price - pstep)  # strictly below the previous level
        else:
            price = max(ask, price_avg * (1.0 + dist))
            if last_price > 0.0:
                price = max(price, last_price + pstep)
        price = _entry_round(side, price, pstep)
        if price <= 0.0 or _beyond(side, price, stop_price):
            break
        qty = max(
            _initial_qty(balance, price, market, params),
            round_nearest(size * ddf, market[M_QTY_STEP]),
        )
        qty = _sized_entry(qty, balance, size, price_avg, price, market, wel)
        if qty <= 0.0:
            break
        out[n, 0] = qty * side
        out[n, 1] = price
        out[n, 2] = KIND_ENTRY_GRID
        n += 1
        price_avg = (size * price_avg + qty * price) / (size + qty)
        size += qty
        last_price = price
    return n


@njit(cache=True)
def close_grid(
    side: int,
    balance: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    market: np.ndarray,
    params: np.ndarray,
    out: np.ndarray,
    start: int,
) -> int:
    """Write the take-profit ladder into ``out[start:]`` nearest first; return the row after.

    The full grid has round(1 / close_grid_qty_pct) levels from
    pos_price * (1 + close_grid_min_markup) up over close_grid_markup_range, each
    close_grid_qty_pct of a full position (balance * WEL / pos_price). A smaller position
    fills the levels from the top down, so after a partial take-profit the remaining levels
    stay where they were instead of crowding the nearest price; what a full grid cannot hold
    (WE past its limit) joins the nearest level. No close is nearer than the current ask
    (long) / bid (short), so a close never crosses the book; the qtys add up to the position.
    """
    n = start
    if pos_size <= 0.0:
        return n
    qstep = market[M_QTY_STEP]
    pstep = market[M_PRICE_STEP]
    min_markup = params[P_CLOSE_GRID_MIN_MARKUP]
    markup_range = params[P_CLOSE_GRID_MARKUP_RANGE]
    qty_pct = params[P_CLOSE_GRID_QTY_PCT]
    n_levels = max(1, min(MAX_CLOSE_LEVELS, int(round(1.0 / qty_pct)) if qty_pct > 0.0 else 1))
    full_size = balance * params[P_WALLET_EXPOSURE_LIMIT] / pos_price if balance > 0.0 else 0.0
    level_qty = round_up(full_size * qty_pct, qstep)
    prices = np.empty(n_levels)
    qtys = np.zeros(n_levels)
    for i in range(n_levels):
        markup = min_markup + (markup_range * i / (n_levels - 1) if n_levels > 1 else 0.0)
        if side > 0:
            prices[i] = _close_round(side, max(ask, pos_price * (1.0 + markup)), pstep)
        else:
            # Markups of 100% and more would put a short's take-profit at or below zero.
            price = _close_round(side, min(bid, pos_price * (1.0 - markup)), pstep)
            prices[i] = max(pstep, price)
    left = pos_size
    for i in range(n_levels - 1, -1, -1):
        if left <= 0.0:
            break
        min_q = min_entry_qty(prices[i], qstep, market[M_MIN_QTY], market[M_MIN_COST])
        q = min(left, max(level_qty, min_q))
        # What remains goes to the next nearer level, which must accept it too: for a long it
        # is lower, so min_cost needs more coins there than here.
        if i > 0:
            next_min_q = min_entry_qty(prices[i - 1], qstep, market[M_MIN_QTY], market[M_MIN_COST])
            min_q = max(min_q, next_min_q)
        if left - q < min_q or i == 0:
            q = left  # what would remain is too small to close on its own, or no level is left
        qtys[i] = q
        left = round_nearest(left - q, qstep) if left - q > qstep * 0.5 else 0.0
    for i in range(n_levels):
        if qtys[i] <= 0.0:
            continue
        if n > start and out[n - 1, 1] == prices[i]:
            # clamped to the same price: one order (re-rounded: 66.67 + 66.66 = 133.32999...)
            out[n - 1, 0] = round_nearest(out[n - 1, 0] - qtys[i] * side, qstep)
        else:
            out[n, 0] = -qtys[i] * side
            out[n, 1] = prices[i]
            out[n, 2] = KIND_CLOSE_GRID
            n += 1
    return n


@njit(cache=True)
def unstuck_order(
    side: int,
    balance: float,
    balance_peak: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
) -> tuple[float, float]:
    """(qty magnitude, price) of a loss-taking partial close for a stuck position, or (0, 0).

    Active when wallet exposure is at or past unstuck_threshold of its limit. It closes
    unstuck_close_pct of a full position (balance * WEL / price) at the upper EMA band (long)
    plus unstuck_ema_dist, never below the ask; its loss is capped so that the balance stays
    above balance_peak * (1 - unstuck_loss_allowance_pct).
    """
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    pct = params[P_UNSTUCK_CLOSE_PCT]
    if pos_size <= 0.0 or wel <= 0.0 or pct <= 0.0 or balance <= 0.0:
        return 0.0, 0.0
    if pos_size * pos_price / balance < wel * params[P_UNSTUCK_THRESHOLD]:
        return 0.0, 0.0
    allowance = balance - balance_peak * (1.0 - params[P_UNSTUCK_LOSS_ALLOWANCE_PCT])
    if allowance <= 0.0:
        return 0.0, 0.0
    lower, upper = ema_band(emas)
    pstep = market[M_PRICE_STEP]
    qstep = market[M_QTY_STEP]
    if side > 0:
        price = _close_round(side, max(ask, upper * (1.0 + params[P_UNSTUCK_EMA_DIST])), pstep)
        loss_per_coin = pos_price - price
        first_tp = pos_price * (1.0 + params[P_CLOSE_GRID_MIN_MARKUP])
        if price >= first_tp:
            return 0.0, 0.0
    else:
        price = _close_round(side, min(bid, lower * (1.0 - params[P_UNSTUCK_EMA_DIST])), pstep)
        loss_per_coin = price - pos_price
        first_tp = pos_price * (1.0 - params[P_CLOSE_GRID_MIN_MARKUP])
        if price <= first_tp:
            return 0.0, 0.0
    if price <= 0.0:
        return 0.0, 0.0
    qty = round_dn(min(pos_size, balance * wel * pct / price), qstep)
    if loss_per_coin > 0.0:
        qty = min(qty, round_dn(allowance / loss_per_coin, qstep))
    min_q = min_entry_qty(price, qstep, market[M_MIN_QTY], market[M_MIN_COST])
    if qty < min_q:
        return 0.0, 0.0
    if pos_size - qty < min_q:
        qty = pos_size
    return qty, price


@njit(cache=True)
def _trailing_entry(
    side: int,
    balance: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    trail: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    out: np.ndarray,
    n: int,
    stop_price: float,
    wel: float,
) -> int:
    """One re-entry at the bid (long) when the trailing trigger holds (bot.core.trailing),
    sized as a grid re-entry and cropped to ``wel``."""
    if params[P_ENABLED] == 0.0 or wel <= 0.0 or balance <= 0.0 or pos_size <= 0.0:
        return n
    if pos_size * pos_price / balance >= wel * _FULL:
        return n
    if not entry_triggered(
        side, pos_price, trail, params[P_ENTRY_TRAILING_THRESHOLD_PCT],
        params[P_ENTRY_TRAILING_RETRACEMENT_PCT],
    ):  # fmt: skip
        return n
    price = _entry_round(side, bid if side > 0 else ask, market[M_PRICE_STEP])
    if price <= 0.0 or _beyond(side, price, stop_price):
        return n
    qty = max(
        _initial_qty(balance, price, market, params),
        round_nearest(pos_size * params[P_ENTRY_GRID_DOUBLE_DOWN_FACTOR], market[M_QTY_STEP]),
    )
    qty = _sized_entry(qty, balance, pos_size, pos_price, price, market, wel)
    if qty <= 0.0:
        return n
    out[n, 0] = qty * side
    out[n, 1] = price
    out[n, 2] = KIND_ENTRY_TRAILING
    return n + 1


@njit(cache=True)
def _entries(
    side: int,
    balance: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    out: np.ndarray,
    stop_price: float,
    trail: np.ndarray,
) -> int:
    """The entries of one side: the grid, trailing, or both as entry_trailing_grid_ratio
    splits the limit (bot.core.trailing.entry_phase). The initial entry is the grid's."""
    ratio = params[P_ENTRY_TRAILING_GRID_RATIO]
    if ratio == 0.0:
        return entry_grid(
            side, balance, pos_size, pos_price, bid, ask, emas, market, params, out, 0, stop_price
        )
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    we_ratio = 0.0
    if pos_size > 0.0:
        we_ratio = pos_size * pos_price / balance / wel if balance > 0.0 and wel > 0.0 else np.inf
    phase, cap = entry_phase(ratio, we_ratio)
    if pos_size > 0.0 and cap < 1.0:
        # the first phase's share is full when no order fits under it any more (the last
        # entry is rounded down to the step): the other phase takes over
        min_q = min_entry_qty(pos_price, market[M_QTY_STEP], market[M_MIN_QTY], market[M_MIN_COST])
        if wel * cap * balance - pos_size * pos_price < min_q * pos_price:
            phase = PHASE_TRAILING if phase == PHASE_GRID else PHASE_GRID
            cap = 1.0
    if pos_size <= 0.0 or phase == PHASE_GRID:
        # flat: the initial entry, and the grid's ladder behind it only in a grid phase
        levels = MAX_ENTRY_LEVELS if phase == PHASE_GRID else 1
        return entry_grid(
            side, balance, pos_size, pos_price, bid, ask, emas, market, params, out, 0,
            stop_price, levels, wel * cap,
        )  # fmt: skip
    return _trailing_entry(
        side, balance, pos_size, pos_price, bid, ask, trail, market, params, out, 0,
        stop_price, wel * cap,
    )  # fmt: skip


@njit(cache=True)
def _closes(
    side: int,
    balance: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    market: np.ndarray,
    params: np.ndarray,
    out: np.ndarray,
    n: int,
    trail: np.ndarray,
) -> int:
    """The closes of ``pos_size``: the trailing close over the share close_trailing_grid_ratio
    gives it (bot.core.trailing.close_split), when triggered, then the close grid over the
    rest. A share too small for an order of its own goes to the other kind."""
    ratio = params[P_CLOSE_TRAILING_GRID_RATIO]
    if ratio == 0.0 or pos_size <= 0.0:
        return close_grid(side, balance, pos_size, pos_price, bid, ask, market, params, out, n)
    qstep = market[M_QTY_STEP]
    full = balance * params[P_WALLET_EXPOSURE_LIMIT] / pos_price if balance > 0.0 else 0.0
    t_size = min(pos_size, round_nearest(close_split(ratio, pos_size, full), qstep))
    min_q = min_entry_qty(pos_price, qstep, market[M_MIN_QTY], market[M_MIN_COST])
    if pos_size - t_size < min_q:
        t_size = pos_size
    elif t_size < min_q:
        t_size = 0.0
    g_size = round_nearest(pos_size - t_size, qstep) if t_size < pos_size else 0.0
    price = 0.0
    if t_size > 0.0:
        price = close_trigger_price(
            side, pos_price, bid, ask, trail, params[P_CLOSE_TRAILING_THRESHOLD_PCT],
            params[P_CLOSE_TRAILING_RETRACEMENT_PCT], market[M_PRICE_STEP],
        )  # fmt: skip
    if price > 0.0:
        min_q = min_entry_qty(price, qstep, market[M_MIN_QTY], market[M_MIN_COST])
        q = max(round_up(full * params[P_CLOSE_TRAILING_QTY_PCT], qstep), min_q)
        if t_size - q < min_q:
            q = t_size
        out[n, 0] = -q * side
        out[n, 1] = price
        out[n, 2] = KIND_CLOSE_TRAILING
        n += 1
    return close_grid(side, balance, g_size, pos_price, bid, ask, market, params, out, n)


@njit(cache=True)
def ideal_orders_into(
    side: int,
    balance: float,
    balance_peak: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    may_open: bool,
    out: np.ndarray,
    entry_stop_price: float,
    trail: np.ndarray,
) -> int:
    """:func:`ideal_orders` written into ``out`` (MAX_ORDERS rows); returns the row count.

    ``entry_stop_price`` leaves out entry levels at or beyond it (see :func:`entry_grid`);
    ``trail``: the side's price extremes since its position last changed (bot.core.trailing).
    """
    n = 0
    if may_open or pos_size > 0.0:
        n = _entries(
            side, balance, pos_size, pos_price, bid, ask, emas, market, params, out,
            entry_stop_price, trail,
        )  # fmt: skip
    uq, up = unstuck_order(
        side, balance, balance_peak, pos_size, pos_price, bid, ask, emas, market, params
    )
    left = pos_size
    if uq > 0.0:
        out[n, 0] = -uq * side
        out[n, 1] = up
        out[n, 2] = KIND_UNSTUCK
        n += 1
        left = round_nearest(pos_size - uq, market[M_QTY_STEP])
    return _closes(side, balance, left, pos_price, bid, ask, market, params, out, n, trail)


def ideal_orders(
    side: int,
    balance: float,
    balance_peak: float,
    pos_size: float,
    pos_price: float,
    bid: float,
    ask: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    may_open: bool = True,
    trail: np.ndarray | None = None,
) -> np.ndarray:
    """The orders one position side should have open now: rows [signed qty, price, kind].

    Entries (nearest first), then the unstuck close if any, then the closes (a triggered
    trailing close, then the close grid) over what the unstuck close leaves. A disabled side
    places no entries but still closes what it holds; a flat side with ``may_open`` False (no
    free position slot, see :func:`opening_slots`) places nothing. ``trail``: the side's price
    extremes since its position last changed (None: no candle since, nothing trails). This
    is the function both the live bot and the backtester call (the backtester through
    :func:`ideal_orders_into`).
    """
    out = np.zeros((MAX_ORDERS, 3))
    stop = 0.0 if side > 0 else np.inf
    n = ideal_orders_into(
        side, balance, balance_peak, pos_size, pos_price, bid, ask, emas, market, params,
        may_open, out, stop, trail_empty() if trail is None else trail,
    )  # fmt: skip
    return out[:n].copy()


@njit(cache=True)
def opening_slots(pos_sizes: np.ndarray, n_positions: int) -> np.ndarray:
    """Which coins of one side may hold a position or an initial entry order.

    Coins with a position always may; of the flat coins, the first ones in symbol order take
    the free slots (n_positions minus open positions), so that resting initial entries can
    never open more than n_positions positions on a side at once.
    """
    out = np.zeros(pos_sizes.shape[0], dtype=np.bool_)
    free = n_positions
    for i in range(pos_sizes.shape[0]):
        if pos_sizes[i] > 0.0:
            out[i] = True
            free -= 1
    for i in range(pos_sizes.shape[0]):
        if not out[i] and free > 0:
            out[i] = True
            free -= 1
    return out
