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
from bot.core.enforce import exposure_close
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_CLOSE_TRAILING,
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_ENTRY_TRAILING,
    KIND_EXPOSURE_LIMIT,
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
    P_TOTAL_WALLET_EXPOSURE_LIMIT,
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

# A position within 0.1% of its limit counts as full: no more entries (Passivbot's rule).
_FULL = 0.999


@njit(cache=True)
def _entry_round(side: int, price: float, step: float) -> float:
    return round_dn(price, step) if side > 0 else round_up(price, step)


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
def _crop_to_limit(
    qty: float,
    balance: float,
    size: float,
    pos_price: float,
    price: float,
    market: np.ndarray,
    wel: float,
) -> float:
    """``qty`` cropped so that WE lands on the limit, never past it; 0.0 when no valid order
    fits under it (Passivbot lets a cropped entry end up to 1% past the limit, or further when
    the exchange minimum is larger: we never pass it)."""
    step = market[M_QTY_STEP]
    min_q = min_entry_qty(price, step, market[M_MIN_QTY], market[M_MIN_COST])
    room = _room_qty(balance, wel, size, pos_price, price, step)
    if room < min_q:
        return 0.0
    return min(max(qty, min_q), room)


@njit(cache=True)
def _reentry_price(
    side: int, balance: float, size: float, pos_price: float, book: float, params: np.ndarray,
    pstep: float,
) -> float:  # fmt: skip
    """Passivbot's grid re-entry price: spacing widened by WE / WEL x weight, never beyond the book."""
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    we = size * pos_price / balance
    dist = params[P_ENTRY_GRID_SPACING_PCT] * (1.0 + we / wel * params[P_ENTRY_GRID_SPACING_WEIGHT])
    if side > 0:
        return round_dn(min(book, pos_price * (1.0 - dist)), pstep)
    return round_up(max(book, pos_price * (1.0 + dist)), pstep)


@njit(cache=True)
def _reentry_qty(
    balance: float, size: float, price: float, book: float, market: np.ndarray, params: np.ndarray
) -> float:
    """max(position x double_down_factor, the initial qty at the book's price), at least the
    exchange minimum. The book is the bid (long) / ask (short) for the nearest level and the
    previous level's price further down a ladder (Passivbot moves its book there)."""
    qstep = market[M_QTY_STEP]
    by_ddf = round_nearest(size * params[P_ENTRY_GRID_DOUBLE_DOWN_FACTOR], qstep)
    min_q = min_entry_qty(price, qstep, market[M_MIN_QTY], market[M_MIN_COST])
    # No book (0 / inf: the backtester asking for unclamped levels): the level's own price.
    ref = book if 0.0 < book < np.inf else price
    return max(min_q, by_ddf, _initial_qty(balance, ref, market, params))


@njit(cache=True)
def _next_entry(
    side: int,
    balance: float,
    size: float,
    pos_price: float,
    book: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    wel: float,
) -> tuple[float, float, float]:
    """(qty magnitude, price, kind) of the one next entry, Passivbot's rules; qty 0.0 for none.

    Flat: the initial entry. A position below 0.8 x the initial qty (a partly filled initial
    entry, or what closes left): the rest of the initial qty, at the initial entry's price.
    Otherwise the grid re-entry; when the level after it would be cropped by the limit to less
    than a quarter of double_down_factor x the position, this one is inflated to reach the
    limit instead. ``book`` is the bid (long) / ask (short); ``wel`` the limit the ladder ends
    on (the side's WEL, or a trailing grid ratio's share of it).
    """
    pstep = market[M_PRICE_STEP]
    qstep = market[M_QTY_STEP]
    if size > 0.0 and size * pos_price / balance >= wel * _FULL:
        return 0.0, 0.0, 0.0
    p0 = initial_entry_price(side, book, book, emas, market, params)
    if p0 > pstep:
        q0 = _initial_qty(balance, p0, market, params)
        if size <= 0.0 or size < 0.8 * q0:
            if size > 0.0:
                q0 = round_dn(q0 - size, qstep)
            q = _crop_to_limit(q0, balance, size, pos_price, p0, market, wel)
            return q, p0, KIND_ENTRY_INITIAL
    elif size <= 0.0:
        return 0.0, 0.0, 0.0  # no initial entry price above one tick (and nothing to add to)
    price = _reentry_price(side, balance, size, pos_price, book, params, pstep)
    if price <= pstep:
        return 0.0, 0.0, 0.0
    want = _reentry_qty(balance, size, price, book, market, params)
    q = _crop_to_limit(want, balance, size, pos_price, price, market, wel)
    if q < want:
        return q, price, KIND_ENTRY_GRID  # cropped (or nothing fits)
    # Preview the level after this one: if the limit would crop it to a sliver, take that
    # room now (Passivbot's inflated re-entry), so a ladder does not end on a tiny order.
    size2 = size + q
    price2 = (size * pos_price + q * price) / size2
    if size2 * price2 / balance >= wel * _FULL:
        return q, price, KIND_ENTRY_GRID
    nxt_price = _reentry_price(side, balance, size2, price2, price, params, pstep)
    if nxt_price <= pstep:
        return q, price, KIND_ENTRY_GRID
    nxt_want = _reentry_qty(balance, size2, nxt_price, price, market, params)
    nxt_q = _crop_to_limit(nxt_want, balance, size2, price2, nxt_price, market, wel)
    if nxt_q < nxt_want and nxt_q / size2 < params[P_ENTRY_GRID_DOUBLE_DOWN_FACTOR] * 0.25:
        q = _room_qty(balance, wel, size, pos_price, price, qstep)
    return q, price, KIND_ENTRY_GRID


@njit(cache=True)
def partial_entry_bound(
    balance: float, size: float, market: np.ndarray, params: np.ndarray
) -> float:
    """A price bound for :func:`_next_entry`'s partial-initial rule: the position counts as a
    partly filled initial entry (size < 0.8 x the initial qty at the entry price) only at entry
    prices below this bound (inf: at any price). The initial qty grows as the price falls, so a
    fall alone can switch a position to that rule; the backtester uses the bound to know when
    the EMAs (which price the initial entry) matter between fills."""
    qstep = market[M_QTY_STEP]
    if size < 0.8 * round_up(market[M_MIN_QTY], qstep) + qstep:
        return np.inf
    cost = max(
        balance * params[P_WALLET_EXPOSURE_LIMIT] * params[P_ENTRY_INITIAL_QTY_PCT],
        market[M_MIN_COST],
    )
    # round_nearest / round_up add at most one step to the initial qty: a bound, not an equality
    return 0.8 * cost / (size - 0.8 * qstep) * (1.0 + 1e-9)


@njit(cache=True)
def entry_grid(  # noqa: C901 -- njit: the grid's cases in one compiled function
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

    Each level is :func:`_next_entry` of the position as it would be after every nearer level
    filled, with the book moved to the nearer level's price (as Passivbot does); the ladder
    stops when a level repeats the previous price or nothing fits under the limit, so it ends
    on the wallet exposure limit and never passes it. Levels at or beyond ``stop_price``
    (long: at or below; short: at or above) are left out: the backtester passes the candle's
    extreme, which they cannot reach; the live bot passes 0 / inf for the whole ladder. At most
    ``max_levels`` levels (the backtester asks for 1 to learn the nearest). ``wel_cap`` lowers
    the limit the ladder ends on (a trailing grid ratio's share; the initial qty still follows
    the full limit).
    """
    wel = min(params[P_WALLET_EXPOSURE_LIMIT], wel_cap)
    n = start
    if params[P_ENABLED] == 0.0 or wel <= 0.0 or balance <= 0.0:
        return n
    size = pos_size
    price_avg = pos_price
    book = bid if side > 0 else ask
    last_price = 0.0
    for _ in range(min(max_levels, MAX_ENTRY_LEVELS)):
        qty, price, kind = _next_entry(
            side, balance, size, price_avg, book, emas, market, params, wel
        )
        if qty <= 0.0 or price == last_price or _beyond(side, price, stop_price):
            break
        out[n, 0] = qty * side
        out[n, 1] = price
        out[n, 2] = kind
        n += 1
        price_avg = (size * price_avg + qty * price) / (size + qty)
        size += qty
        book = min(book, price) if side > 0 else max(book, price)
        last_price = price
    return n


@njit(cache=True)
def _close_price(
    side: int, size: float, balance: float, pos_price: float, book: float, params: np.ndarray,
    pstep: float,
) -> float:  # fmt: skip
    """Passivbot's next close: start + (end - start) x min(1, WE / WEL), never inside the book
    (start = pos_price x (1 + close_grid_min_markup), end = start + markup range; short mirrored).
    """
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    lo = params[P_CLOSE_GRID_MIN_MARKUP]
    hi = lo + params[P_CLOSE_GRID_MARKUP_RANGE]
    ratio = min(1.0, size * pos_price / balance / wel) if balance > 0.0 and wel > 0.0 else 1.0
    if side > 0:
        start = round_up(pos_price * (1.0 + lo), pstep)
        end = round_up(pos_price * (1.0 + hi), pstep)
        return round_up(max(book, start + (end - start) * ratio), pstep)
    # Markups of 100% and more would put a short's take-profit at or below zero.
    start = max(pstep, round_dn(pos_price * (1.0 - lo), pstep))
    end = max(pstep, round_dn(pos_price * (1.0 - hi), pstep))
    return max(pstep, round_dn(min(book, start + (end - start) * ratio), pstep))


@njit(cache=True)
def nearest_close_bound(
    side: int, pos_price: float, market: np.ndarray, params: np.ndarray
) -> float:
    """The nearest price (before the book clamp) any close-grid level of a position bought at
    ``pos_price`` can have, whatever its size and the balance: :func:`_close_price` at a WE
    ratio of 0. Every level lies between the ratio-0 and ratio-1 prices, and the price moves
    one way with the ratio (the backtester's triggers bound the nearest close with this)."""
    book = 0.0 if side > 0 else np.inf
    return _close_price(side, 0.0, 1.0, pos_price, book, params, market[M_PRICE_STEP])


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

    Passivbot's close grid: the next close is close_grid_qty_pct of a full position
    (balance * WEL / pos_price) plus whatever the position holds past the limit, priced by
    :func:`_close_price` from the position's own WE; the ladder repeats that on the position
    as it would be after each close, so a full position spreads over the whole markup range
    and a small one takes profit near the minimum markup. Closes clamped to the same price
    (by the book, or a zero markup range) merge into one order. A remainder smaller than the
    exchange minimum joins the close before it (Passivbot would post it alone, below the
    minimum). The qtys add up to the position.
    """
    n = start
    if pos_size <= 0.0:
        return n
    qstep = market[M_QTY_STEP]
    pstep = market[M_PRICE_STEP]
    book = ask if side > 0 else bid
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    full_size = balance * wel / pos_price if balance > 0.0 and wel > 0.0 else 0.0
    prices = np.empty(MAX_CLOSE_LEVELS)
    qtys = np.zeros(MAX_CLOSE_LEVELS)
    m = 0
    left = pos_size
    while left > 0.0:
        price = _close_price(side, left, balance, pos_price, book, params, pstep)
        min_q = min_entry_qty(price, qstep, market[M_MIN_QTY], market[M_MIN_COST])
        excess = max(0.0, left - full_size)
        q = min(
            left, max(min_q, round_up(full_size * params[P_CLOSE_GRID_QTY_PCT] + excess, qstep))
        )
        rest = round_nearest(left - q, qstep) if left - q > qstep * 0.5 else 0.0
        if rest > 0.0:
            nxt = _close_price(side, rest, balance, pos_price, book, params, pstep)
            if rest < min_entry_qty(nxt, qstep, market[M_MIN_QTY], market[M_MIN_COST]):
                q, rest = left, 0.0  # too small to close on its own
        if m == MAX_CLOSE_LEVELS - 1:
            q, rest = left, 0.0  # no level left: the nearest takes the rest
        if m > 0 and prices[m - 1] == price:
            qtys[m - 1] = round_nearest(qtys[m - 1] + q, qstep)
        else:
            prices[m] = price
            qtys[m] = q
            m += 1
        left = rest
    for i in range(m - 1, -1, -1):  # computed farthest first; written nearest first
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
    """(qty magnitude, price) of Passivbot's unstuck close for a stuck position, or (0, 0).

    Stuck: WE / WEL strictly above unstuck_threshold. It fires once the ask (long) reaches the
    upper EMA band x (1 + unstuck_ema_dist) (short: the bid reaches the lower band x (1 - dist))
    and is priced at the ask (bid), whether that is a loss or already a profit. It closes
    unstuck_close_pct of a full position (balance * WEL / price); a loss is capped so that the
    balance stays above balance_peak * (1 - unstuck_loss_allowance_pct x
    total_wallet_exposure_limit). Passivbot lets the exchange minimum push a capped close past
    the allowance: we place nothing then.
    """
    wel = params[P_WALLET_EXPOSURE_LIMIT]
    pct = params[P_UNSTUCK_CLOSE_PCT]
    if pos_size <= 0.0 or wel <= 0.0 or pct <= 0.0 or balance <= 0.0:
        return 0.0, 0.0
    if pos_size * pos_price / balance / wel <= params[P_UNSTUCK_THRESHOLD]:
        return 0.0, 0.0
    loss_pct = params[P_UNSTUCK_LOSS_ALLOWANCE_PCT] * params[P_TOTAL_WALLET_EXPOSURE_LIMIT]
    allowance = balance - balance_peak * (1.0 - loss_pct)
    if allowance <= 0.0:
        return 0.0, 0.0
    lower, upper = ema_band(emas)
    pstep = market[M_PRICE_STEP]
    qstep = market[M_QTY_STEP]
    if side > 0:
        if ask < round_up(upper * (1.0 + params[P_UNSTUCK_EMA_DIST]), pstep):
            return 0.0, 0.0
        price = round_up(ask, pstep)  # on the tick (an off-tick book must not leak through)
        loss_per_coin = pos_price - price
    else:
        if bid > round_dn(lower * (1.0 - params[P_UNSTUCK_EMA_DIST]), pstep):
            return 0.0, 0.0
        price = round_dn(bid, pstep)
        loss_per_coin = price - pos_price
    if price <= 0.0:
        return 0.0, 0.0
    qty = min(pos_size, round_up(balance * wel * pct / price, qstep))
    if loss_per_coin > 0.0:
        qty = min(qty, round_dn(allowance / loss_per_coin, qstep))
    min_q = min_entry_qty(price, qstep, market[M_MIN_QTY], market[M_MIN_COST])
    if qty < min_q:
        return 0.0, 0.0
    if pos_size - qty < min_q and (loss_per_coin <= 0.0 or pos_size * loss_per_coin <= allowance):
        qty = pos_size  # the rest would be too small to close on its own
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
    qty = _crop_to_limit(qty, balance, pos_size, pos_price, price, market, wel)
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
    left = pos_size
    eq, ep = exposure_close(side, balance, pos_size, pos_price, bid, ask, market, params)
    if eq > 0.0:
        out[n, 0] = -eq * side
        out[n, 1] = ep
        out[n, 2] = KIND_EXPOSURE_LIMIT
        n += 1
        left = round_nearest(pos_size - eq, market[M_QTY_STEP])
    uq, up = unstuck_order(
        side, balance, balance_peak, left, pos_price, bid, ask, emas, market, params
    )
    if uq > 0.0:
        out[n, 0] = -uq * side
        out[n, 1] = up
        out[n, 2] = KIND_UNSTUCK
        n += 1
        left = round_nearest(left - uq, market[M_QTY_STEP])
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

    Entries (nearest first), then the exposure-limit close if any (:mod:`bot.core.enforce`),
    then the unstuck close if any, then the closes (a triggered trailing close, then the close
    grid) over what those leave. A disabled side places no entries but still closes what it
    holds; a flat side with ``may_open`` False (no free position slot, see
    :func:`opening_slots`) places nothing. ``trail``: the side's price extremes since its
    position last changed (None: no candle since, nothing trails). This is the function both
    the live bot and the backtester call (the backtester through :func:`ideal_orders_into`).
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
