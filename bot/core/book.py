"""The one booking path: fills, the within-candle fill order, liquidations and outside events.

The backtest engine and the simulated venue both call these functions (the live bot books its
own fills with :func:`bot.core.account.apply_fill`, the arithmetic :func:`book_fill` wraps), so
a fill, a liquidation or an outside event is booked the same way wherever it happens. Nothing
here knows about orders, accounts or wire formats: positions are arrays indexed
``[side_index, coin]`` (0 long, 1 short; sizes are magnitudes), money is floats.

Within-candle order (:func:`candle_fill_order`): the price path is open -> the extreme nearer
the open (a tie goes to the low) -> the other extreme -> close. Every resting order the path
crosses strictly fills at its own price, in the order the path meets them: on the way down
buys from the highest price to the lowest, on the way up sells from the lowest to the highest.
Orders at the same price: long before short, then the order they were given in.

Liquidation (:func:`liquidation_prices`, :func:`book_liquidation`): the prices come from
:func:`bot.core.margin.account_liquidation`, rounded to the nearest price step (what the
exchange prints and books). Positions close one after another, coin by coin, long before
short; each close realizes its pnl at that price and pays its maintenance margin as the fee,
but never more than the balance has left (a fee the account cannot pay is not paid). A balance
still negative after the last close is the deficit an insurance fund takes: the balance is set
to zero and the deficit reported.

Market closes (:func:`book_market_closes`): the equity hard stop's panic closes every position
at once, coin by coin, long before short, each in full at its coin's given price (the backtest:
the close of the candle the stop fired at) with the taker fee, through :func:`book_fill`.

Outside events (:func:`apply_event`): deposit, withdraw, reduce one position, reduce every
position by a fraction. Reductions are booked without an order and without a fee (as an
exchange deleverage or a vault exit is), at the event's price or, without one, the reference
price (the previous close). Deposits and withdrawals scale the balance peak by the same factor
as the balance: a transfer is not a gain or a loss, so the unstuck loss allowance (relative to
the peak) keeps its meaning.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bot.core.account import apply_fill, candle_low_first, order_fills
from bot.core.margin import account_liquidation, maintenance_margin
from bot.core.rounding import round_nearest

__all__ = [
    "EV_DELEVERAGE",
    "EV_DEPOSIT",
    "EV_NAMES",
    "EV_REDUCE",
    "EV_REDUCE_ALL",
    "EV_WITHDRAW",
    "E_FRACTION",
    "E_KIND",
    "E_PRICE",
    "E_SIDE",
    "E_SYMBOL",
    "E_TIME",
    "E_VALUE",
    "N_E",
    "N_R",
    "R_BALANCE",
    "R_FEE",
    "R_PNL",
    "R_PRICE",
    "R_QTY",
    "R_SIDE",
    "R_SYMBOL",
    "apply_event",
    "book_fill",
    "book_liquidation",
    "book_market_closes",
    "candle_fill_order",
    "liquidation_prices",
    "market_fill_price",
    "transfer_peak",
]

# Outside event kinds.
EV_DEPOSIT = 1
EV_WITHDRAW = 2
EV_REDUCE = 3
EV_REDUCE_ALL = 4
EV_DELEVERAGE = 5  # reduce_all, profitable positions only (an exchange's deleverage stress)
EV_NAMES = {
    EV_DEPOSIT: "deposit",
    EV_WITHDRAW: "withdraw",
    EV_REDUCE: "reduce",
    EV_REDUCE_ALL: "reduce_all",
    EV_DELEVERAGE: "deleverage",
}

# Columns of an event row (float64): time (ms, the event applies at the top of the first candle
# opening at or after it), kind, coin index (reduce), side (reduce: 1 long, -1 short), value
# (deposit / withdraw: USDT; reduce: qty), price (reduce: nan = the reference price), fraction
# (withdraw: of the balance when value is 0; reduce_all: of every position).
E_TIME = 0
E_KIND = 1
E_SYMBOL = 2
E_SIDE = 3
E_VALUE = 4
E_PRICE = 5
E_FRACTION = 6
N_E = 7

# Columns of a booked row (a liquidation close or an event reduction): coin, side, signed qty
# (+ buy, - sell), price, fee, realized pnl, balance after.
R_SYMBOL = 0
R_SIDE = 1
R_QTY = 2
R_PRICE = 3
R_FEE = 4
R_PNL = 5
R_BALANCE = 6
N_R = 7


@njit(cache=True)
def _write_row(  # noqa: PLR0913 -- one booked row's columns
    out: np.ndarray,
    n: int,
    s: int,
    side: int,
    qty: float,
    price: float,
    fee: float,
    pnl: float,
    balance: float,
) -> int:
    """Write booked row ``n`` (``R_*`` columns) and return the next row's index."""
    out[n, R_SYMBOL] = s
    out[n, R_SIDE] = side
    out[n, R_QTY] = qty
    out[n, R_PRICE] = price
    out[n, R_FEE] = fee
    out[n, R_PNL] = pnl
    out[n, R_BALANCE] = balance
    return n + 1


@njit(cache=True)
def book_fill(
    side: int, pos_size: float, pos_price: float, qty: float, price: float, fee_rate: float
) -> tuple[float, float, float, float, float]:
    """Book a fill of signed ``qty`` (+buy / -sell) at ``price`` into a position of ``side``.

    Returns (new size, new average price, qty booked (magnitude), realized pnl, fee). Adding
    averages the price; reducing realizes pnl against the average and never goes past zero
    (reduce-only): the booked qty is what left the position. The fee is booked qty x price x
    ``fee_rate`` (maker or taker, the caller's choice).
    """
    new_size, new_price, pnl = apply_fill(side, pos_size, pos_price, qty, price)
    if (qty > 0.0) == (side > 0):
        booked = abs(qty)
    elif new_size == 0.0:
        booked = pos_size
    else:
        booked = min(abs(qty), pos_size)
    return new_size, new_price, booked, pnl, booked * price * fee_rate


@njit(cache=True)
def candle_fill_order(
    qtys: np.ndarray,
    prices: np.ndarray,
    psides: np.ndarray,
    open_: float,
    high: float,
    low: float,
    out: np.ndarray,
) -> int:
    """Which of these resting orders the candle fills, in booking order; returns how many.

    ``qtys`` signed (+buy / -sell), ``psides`` 1 long / -1 short / 0 one-way. Writes the indices
    into ``out[:n]``: the side of the book the path meets first (buys when the low comes
    first, :func:`candle_low_first`), each side in path order (buys highest first, sells
    lowest first), ties long before short, then by index. Selection sort: a candle holds a few
    dozen orders at most.
    """
    n = qtys.shape[0]
    low_first = candle_low_first(open_, high, low)
    m = 0
    for phase in range(2):
        buys = (phase == 0) == low_first
        start = m
        for i in range(n):
            if (
                qtys[i] != 0.0
                and (qtys[i] > 0.0) == buys
                and order_fills(qtys[i], prices[i], high, low)
            ):
                out[m] = i
                m += 1
        for a in range(start, m):
            best = a
            for b in range(a + 1, m):
                x = out[b]
                y = out[best]
                px = prices[x] if buys else -prices[x]
                py = prices[y] if buys else -prices[y]
                if px > py or (
                    px == py and (psides[x] > psides[y] or (psides[x] == psides[y] and x < y))
                ):
                    best = b
            if best != a:
                t = out[a]
                out[a] = out[best]
                out[best] = t
    return m


@njit(cache=True)
def liquidation_prices(
    balance: float,
    size: np.ndarray,
    pprice: np.ndarray,
    ref_prices: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    tiers: np.ndarray,
    price_steps: np.ndarray,
) -> np.ndarray:
    """The prices at which the cross-margin account is liquidated in this candle, one per coin
    and rounded to its price step, or an empty array (see
    :func:`bot.core.margin.account_liquidation`). ``size`` / ``pprice`` are (2, n_coins)."""
    liq = account_liquidation(
        balance, size[0], pprice[0], size[1], pprice[1], ref_prices, lows, highs, tiers
    )
    for i in range(liq.shape[0]):
        p = round_nearest(liq[i], price_steps[i])
        liq[i] = p if p > 0.0 else liq[i]
    return liq


@njit(cache=True)
def book_liquidation(
    balance: float,
    size: np.ndarray,
    pprice: np.ndarray,
    prices: np.ndarray,
    tiers: np.ndarray,
    out: np.ndarray,
) -> tuple[float, float, int]:
    """Close every position at ``prices`` (from :func:`liquidation_prices`); returns
    (balance left, deficit for the insurance fund, rows written into ``out``).

    In place: ``size`` and ``pprice`` (2, n_coins) end at zero. Rows (``R_*`` columns) in
    booking order: coin by coin, long before short. Each close pays its maintenance margin as
    the fee, capped at what the balance has left; a negative balance at the end becomes the
    deficit and the balance ends at zero (the last row's balance says so).
    """
    n = 0
    for s in range(size.shape[1]):
        for j in range(2):
            q = size[j, s]
            if q <= 0.0:
                continue
            side = 1 if j == 0 else -1
            p = prices[s]
            _, _, pnl = apply_fill(side, q, pprice[j, s], -side * q, p)
            balance += pnl
            fee = min(maintenance_margin(q * p, tiers[s]), max(0.0, balance))
            balance -= fee
            size[j, s] = 0.0
            pprice[j, s] = 0.0
            n = _write_row(out, n, s, side, -side * q, p, fee, pnl, balance)
    deficit = 0.0
    if balance < 0.0:
        deficit = -balance
        balance = 0.0
        if n > 0:
            out[n - 1, R_BALANCE] = 0.0
    return balance, deficit, n


@njit(cache=True)
def market_fill_price(last: float, price_step: float) -> float:
    """The price a market (or crossing) order fills at: the last price, on the tick (an
    exchange trades on its tick; candle data from another market need not be on it)."""
    return round_nearest(last, price_step)


@njit(cache=True)
def book_market_closes(
    balance: float,
    size: np.ndarray,
    pprice: np.ndarray,
    prices: np.ndarray,
    price_steps: np.ndarray,
    fee_rate: float,
    out: np.ndarray,
) -> tuple[float, int]:
    """Close every open position in full at ``prices`` (one per coin) put on the coin's tick
    (:func:`market_fill_price`) by a market order paying ``fee_rate`` (the taker fee); returns
    (balance after, rows written into ``out``).

    In place: ``size`` and ``pprice`` (2, n_coins) end at zero. Rows (``R_*`` columns) in
    booking order, coin by coin, long before short; each row's balance is the balance after
    its close (pnl realized, fee paid). No slippage and no deficit handling: the hard stop
    fires long before the account is bankrupt."""
    n = 0
    for s in range(size.shape[1]):
        for j in range(2):
            q = size[j, s]
            if q <= 0.0:
                continue
            side = 1 if j == 0 else -1
            p = market_fill_price(prices[s], price_steps[s])
            new_size, new_price, booked, pnl, fee = book_fill(
                side, q, pprice[j, s], -side * q, p, fee_rate
            )
            balance += pnl - fee
            size[j, s] = new_size
            pprice[j, s] = new_price
            n = _write_row(out, n, s, side, -side * booked, p, fee, pnl, balance)
    return balance, n


@njit(cache=True)
def transfer_peak(peak: float, balance_before: float, balance_after: float) -> float:
    """The balance peak after a deposit or withdrawal: scaled by the balance's factor (moved
    by the amount when there was no positive balance to scale)."""
    if balance_before > 0.0 and balance_after >= 0.0:
        return peak * (balance_after / balance_before)
    return max(peak + balance_after - balance_before, balance_after)


@njit(cache=True)
def _reduce(
    s: int,
    j: int,
    q: float,
    price: float,
    balance: float,
    size: np.ndarray,
    pprice: np.ndarray,
    out: np.ndarray,
    n: int,
) -> tuple[float, int]:
    side = 1 if j == 0 else -1
    q = min(q, size[j, s])
    if q <= 0.0:
        return balance, n
    new_size, new_price, booked, pnl, _ = book_fill(
        side, size[j, s], pprice[j, s], -side * q, price, 0.0
    )
    size[j, s] = new_size
    pprice[j, s] = new_price
    balance += pnl
    return balance, _write_row(out, n, s, side, -side * booked, price, 0.0, pnl, balance)


@njit(cache=True)
def apply_event(
    event: np.ndarray,
    balance: float,
    peak: float,
    size: np.ndarray,
    pprice: np.ndarray,
    ref_prices: np.ndarray,
    qty_steps: np.ndarray,
    out: np.ndarray,
) -> tuple[float, float, int]:
    """Apply one outside event (an ``E_*`` row); returns (balance, peak, rows written).

    In place on ``size`` / ``pprice`` (2, n_coins). Rows (``R_*`` columns, fee 0) are the
    position reductions, coin by coin, long before short.

    - deposit(value): the balance grows by value;
    - withdraw(value, or fraction x balance when value is 0): at most the balance (never below
      zero);
    - reduce(coin, side, qty=value, price): the position shrinks by qty (at most its size) at
      price (nan: the coin's reference price), realizing pnl;
    - reduce_all(fraction): every position shrinks by size x fraction rounded to the nearest
      qty step (at most its size; a fraction of 1 or more closes it) at the reference price;
    - deleverage(fraction): as reduce_all, for the positions in profit at the reference price
      only (those an exchange's deleverage ranks first).
    Deposits and withdrawals scale the peak (:func:`transfer_peak`); reductions leave it.
    """
    kind = int(event[E_KIND])
    n = 0
    if kind == EV_DEPOSIT or kind == EV_WITHDRAW:
        amount = event[E_VALUE]
        if kind == EV_WITHDRAW:
            if not amount > 0.0:
                amount = balance * event[E_FRACTION]
            amount = -min(max(amount, 0.0), max(balance, 0.0))
        else:
            amount = max(amount, 0.0)
        new_balance = balance + amount
        return new_balance, transfer_peak(peak, balance, new_balance), 0
    if kind == EV_REDUCE:
        s = int(event[E_SYMBOL])
        j = 0 if event[E_SIDE] > 0 else 1
        price = event[E_PRICE]
        if math.isnan(price) or not price > 0.0:
            price = ref_prices[s]
        balance, n = _reduce(s, j, event[E_VALUE], price, balance, size, pprice, out, n)
        return balance, peak, n
    if kind == EV_REDUCE_ALL or kind == EV_DELEVERAGE:
        f = event[E_FRACTION]
        for s in range(size.shape[1]):
            for j in range(2):
                if size[j, s] <= 0.0:
                    continue
                side = 1 if j == 0 else -1
                if kind == EV_DELEVERAGE and not (ref_prices[s] - pprice[j, s]) * side > 0.0:
                    continue
                q = size[j, s] if f >= 1.0 else round_nearest(size[j, s] * f, qty_steps[s])
                balance, n = _reduce(s, j, q, ref_prices[s], balance, size, pprice, out, n)
        return balance, peak, n
    return balance, peak, 0
