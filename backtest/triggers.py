"""Each position's nearest entry and close, cached between candles for the engine's hot loop.

The engine asks the core for a position's whole order grid only when a candle can reach one of
its orders. To know that, it keeps the nearest entry and the nearest close of each position,
taken from the core's own grid functions (``entry_grid`` asked for one level, ``close_grid``),
so nothing here decides a price.

These levels depend on the position and the balance. A fill on one coin changes the balance,
and so every coin's levels; recomputing all of them on every fill made the cost grow with
coins x fills. Instead each cached pair holds for a window of balances around the one it was
computed at: its entry is the nearer of the entries at the window's two ends, which bounds the
entry at every balance inside (a larger balance means a lower wallet exposure, so a nearer grid
re-entry: Passivbot's spacing widens with WE / WEL, entry_grid_spacing_weight >= 0). A fill elsewhere then only costs a recompute once the balance has left
the window. The bound makes the trigger conservative: a candle that reaches it asks the core,
which decides exactly, so fills never change (tests/test_engine_triggers.py checks this
against a window of zero width, which recomputes on every balance change).

Passivbot's rules (bot.core.grid) break the one-way move in two places, handled here:

- The nearest close is the close grid's last remainder priced by its own WE / WEL, which jumps
  back and forth as the balance changes the size of each close. It is exact only at the
  balance it was computed at; anywhere else in the window the cache falls back to
  ``nearest_close_bound`` (the minimum markup's price, which no close level passes).
- A position below 0.8 x the initial qty re-posts the rest of its initial entry at the EMA
  price (``partial_entry_bound``). That initial qty grows with the balance, so the window keeps
  the bound at its highest balance (the bound grows with the balance), and an entry that is
  a partial initial one at the balance asked counts as "at the bid" (its price follows the
  EMAs): a window never straddles that change of kind (see ``_same_kind_end``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot.core.grid import close_grid, entry_grid, nearest_close_bound, partial_entry_bound
from bot.core.params import KIND_ENTRY_INITIAL, M_MIN_COST, P_WALLET_EXPOSURE_LIMIT

# A cached trigger holds while the sizing balance stays within this fraction of the balance it
# was computed at. Wider: fewer recomputes, a slightly looser trigger (more candles ask the core).
BALANCE_WINDOW = 0.02
# Halvings of a window that would straddle a change of the entry's kind (see _same_kind_end).
_BISECTIONS = 6

NO_ORDER_LOW = -1.0  # an entry trigger nothing can reach
NO_ORDER_HIGH = np.inf


@njit(cache=True)
def nearest_orders(
    side: int,
    balance: float,
    size: float,
    pos_price: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    buf: np.ndarray,
) -> tuple[float, float]:
    """(nearest entry, nearest close) of a position before the book clamp, from the core.

    The core places a long's entries at min(bid, level) and its closes at max(ask, level)
    (a short mirrored); each candle clamps the cached levels with the previous close (see
    :func:`reached`). When no entry level fits under the limit at the unclamped price but the
    position is below its limit, one might at a better clamped price: the entry is then "at
    the bid" (inf for a long, 0 for a short), so any candle below the previous close asks the
    core. A partial initial entry (priced off the EMAs, which move every candle) is at the bid
    too.
    """
    no_entry = NO_ORDER_LOW if side > 0 else NO_ORDER_HIGH
    no_close = NO_ORDER_HIGH if side > 0 else NO_ORDER_LOW
    stop = 0.0 if side > 0 else np.inf
    # bid = inf and ask = 0: the clamps min(bid, .) / max(ask, .) leave every level as it is
    n = entry_grid(
        side, balance, size, pos_price, np.inf, 0.0, emas, market, params, buf, 0, stop, 1
    )
    room = params[P_WALLET_EXPOSURE_LIMIT] * balance - size * pos_price  # quote under the limit
    if n > 0 and buf[0, 2] == KIND_ENTRY_INITIAL:
        entry = np.inf if side > 0 else 0.0
    elif n > 0:
        entry = buf[0, 1]
    elif room >= market[M_MIN_COST] * (1.0 - 1e-6) and room > 0.0:
        entry = np.inf if side > 0 else 0.0
    else:
        # Less room than the minimum order cost: no entry fits at any price (the qty that fits,
        # room / price, stays below min_cost / price however the price is clamped).
        entry = no_entry
    n = close_grid(side, balance, size, pos_price, np.inf, 0.0, market, params, buf, 0)
    close = buf[0, 1] if n > 0 else no_close
    return entry, close


@njit(cache=True)
def _entry_kind(side: int, entry: float) -> int:
    """0: no entry fits, 1: an entry at the bid (level unknown), 2: an entry at a level."""
    if entry == (NO_ORDER_LOW if side > 0 else NO_ORDER_HIGH):
        return 0
    if entry == (np.inf if side > 0 else 0.0):
        return 1
    return 2


@njit(cache=True)
def _same_kind_end(
    side: int,
    balance: float,
    end: float,
    size: float,
    pos_price: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    buf: np.ndarray,
) -> tuple[float, float, float]:
    """(balance, entry, close) at the farthest balance towards ``end`` found by bisection where
    the entry is still of the kind it is at ``balance``. A window must not straddle a change of
    kind (a full position with no entry next to one with an entry far above the price): the
    nearer of the two would be reached on every candle."""
    kind = _entry_kind(
        side, nearest_orders(side, balance, size, pos_price, emas, market, params, buf)[0]
    )
    good = balance
    bad = end
    e_good, c_good = nearest_orders(side, good, size, pos_price, emas, market, params, buf)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (good + bad)
        e, c = nearest_orders(side, mid, size, pos_price, emas, market, params, buf)
        if _entry_kind(side, e) == kind:
            good, e_good, c_good = mid, e, c
        else:
            bad = mid
    return good, e_good, c_good


@njit(cache=True)
def _nearer(side: int, a: float, b: float, entry: bool) -> float:
    """The nearer to the price of two levels: a long's entries and a short's closes are nearer
    when higher, a long's closes and a short's entries when lower."""
    if (side > 0) == entry:
        return max(a, b)
    return min(a, b)


@njit(cache=True)
def window_orders(
    side: int,
    balance: float,
    window: float,
    size: float,
    pos_price: float,
    emas: np.ndarray,
    market: np.ndarray,
    params: np.ndarray,
    buf: np.ndarray,
) -> tuple[float, float, float, float, float, float]:
    """(entry, close at ``balance``, close bound, partial bound, lowest balance, highest
    balance): the nearest entry over every balance from the lowest to the highest, at most
    ``window`` of ``balance`` away, the nearest close exactly at ``balance`` and bounded at
    every other balance of the window, and the highest partial-entry bound of the window (see
    the module's docstring)."""
    e0, c0 = nearest_orders(side, balance, size, pos_price, emas, market, params, buf)
    if balance <= 0.0 or window <= 0.0:
        part = partial_entry_bound(balance, size, market, params)
        return e0, c0, c0, part, balance, balance
    entry = e0
    ends = np.array([balance * (1.0 - window), balance * (1.0 + window)])
    for i in range(2):
        e, c = nearest_orders(side, ends[i], size, pos_price, emas, market, params, buf)
        if _entry_kind(side, e) != _entry_kind(side, e0):
            ends[i], e, c = _same_kind_end(
                side, balance, ends[i], size, pos_price, emas, market, params, buf
            )
        entry = _nearer(side, entry, e, True)
    c_bound = _nearer(side, c0, nearest_close_bound(side, pos_price, market, params), False)
    part = partial_entry_bound(ends[1], size, market, params)  # grows with the balance
    return entry, c0, c_bound, part, ends[0], ends[1]


@njit(cache=True)
def reached(
    side: int, entry: float, close: float, partial: float, prev_close: float, high: float,
    low: float, price_step: float,
) -> bool:  # fmt: skip
    """Can the candle fill the position's nearest entry or close (cached levels clamped to the
    previous close, as the core clamps them to bid / ask)? Conservative: a clamped order sits
    at or beyond the previous close, so asking when the candle passes it never misses a fill;
    an unclamped one is exactly the cached level. The clamp keeps a tick of slack: the core
    rounds a clamped price to the tick with a little tolerance for float noise, so an order at
    the book can sit a hair inside it (a candle whose high equals the previous close then
    fills it). A partial initial entry sits below the partial bound (long; at or beyond the
    book) or at or above the book (short, when the bound lies above it), wherever the EMAs put
    it."""
    if side > 0:
        book = prev_close + price_step
        return low < min(max(entry, partial), book) or high > max(close, prev_close - price_step)
    book = prev_close - price_step
    if partial > book:
        entry = book
    return high > max(entry, book) or low < min(close, prev_close + price_step)
