"""Vault exits: the pure arithmetic that decides quantities and prices of a leaver's unwind.

No I/O, no clock. Positions are arrays indexed ``[side_index, coin]`` (0 long, 1 short; sizes
are magnitudes), as in :mod:`bot.core.book`.

- :func:`pro_rata_slice`: the leaver's slice of every position, the same fraction of each
  (winners and losers, long and short alike), rounded down to the coin's qty step. Never
  selective: a position is left out only when its slice is below one qty step.
- :func:`tranche_target`: the cumulative quantity due after a tranche, rounded down to qty
  steps from the *cumulative* fraction, so what rounding leaves behind is carried to the next
  tranche and the last tranche (fraction 1) closes the slice exactly.
- :func:`tranche_step`: how far one candle may advance the cumulative fraction: the same step
  for every position, the largest that keeps each coin's tranche under
  ``max_participation`` x the candle's volume.
- :func:`impact_fraction`: the square-root market-impact model,
  ``impact_coef x daily volatility x sqrt(qty / daily volume)``.
- :func:`exit_mode`: buffer, pro-rata or controlled unwind, chosen at the request.
- :func:`entries_blocked` / :func:`entry_over_cap`: the vault's risk-aware sizing gate (the
  leverage cap and the margin buffer), the same for the backtest engine and the live bot.
- :func:`unwind`: runs a slice to zero over the candles from ``k0``, in one tranche
  (pro-rata mode) or in volume-capped tranches (controlled unwind); every tranche is a
  reduce-only taker execution at the candle's typical price (high + low + close) / 3 moved
  against the leaver by the impact, paying the taker fee, and the slice still held pays funding
  at each funding time. The leaver's exit value is what this realizes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bot.core.account import funding_payment
from bot.core.margin import account_equity_margin, maintenance_margin
from bot.core.rounding import round_dn

__all__ = [
    "U_CUM",
    "combined_margin",
    "entries_blocked",
    "exit_mode",
    "MODE_BUFFER",
    "MODE_CONTROLLED",
    "MODE_NAMES",
    "MODE_PRO_RATA",
    "entry_over_cap",
    "U_FEE",
    "U_K",
    "U_PNL",
    "U_PRICE",
    "U_QTY",
    "U_REF",
    "U_SIDE",
    "U_SYMBOL",
    "N_U",
    "impact_fraction",
    "pro_rata_slice",
    "tranche_step",
    "tranche_target",
    "unwind",
]

# Columns of an unwind execution row: candle, coin, side (1 long / -1 short), signed qty
# (+ buy, - sell), reference price (the candle's typical price), executed price, fee, realized
# pnl (gross of fee), cumulative fraction of the slice after the tranche.
U_K = 0
U_SYMBOL = 1
U_SIDE = 2
U_QTY = 3
U_REF = 4
U_PRICE = 5
U_FEE = 6
U_PNL = 7
U_CUM = 8
N_U = 9

MODE_BUFFER = 0
MODE_PRO_RATA = 1
MODE_CONTROLLED = 2
MODE_NAMES = ("buffer", "pro_rata", "controlled_unwind")


@njit(cache=True)
def pro_rata_slice(size: np.ndarray, fraction: float, qty_steps: np.ndarray) -> np.ndarray:
    """``size x fraction`` for every position, rounded down to its coin's qty step (a fraction
    of 1 or more: the whole position). Every slice is within one qty step of the exact share."""
    out = np.zeros_like(size)
    for j in range(size.shape[0]):
        for s in range(size.shape[1]):
            q = size[j, s]
            if q <= 0.0:
                continue
            if fraction >= 1.0:
                out[j, s] = q
                continue
            r = round_dn(q * fraction, qty_steps[s])
            out[j, s] = min(max(r, 0.0), q)
    return out


@njit(cache=True)
def tranche_target(slice_qty: float, cum_fraction: float, step: float) -> float:
    """Quantity of a slice due in total once ``cum_fraction`` of it is unwound: rounded down to
    the qty step (the remainder is carried), exactly the slice at a fraction of 1."""
    if cum_fraction >= 1.0:
        return slice_qty
    x = round_dn(slice_qty * cum_fraction, step)
    return min(max(x, 0.0), slice_qty)


@njit(cache=True)
def tranche_step(slice_qty: np.ndarray, volumes: np.ndarray, max_participation: float) -> float:
    """The cumulative-fraction step one candle allows: the smallest over the slice's positions
    of ``max_participation x volume / slice qty`` (0 when a coin with a slice did not trade)."""
    step = np.inf
    for j in range(slice_qty.shape[0]):
        for s in range(slice_qty.shape[1]):
            q = slice_qty[j, s]
            if q <= 0.0:
                continue
            step = min(step, max_participation * max(volumes[s], 0.0) / q)
    return step if step < np.inf else 1.0


@njit(cache=True)
def impact_fraction(qty: float, daily_volatility: float, daily_volume: float, coef: float) -> float:
    """Square-root impact as a fraction of the price: ``coef x sigma_day x sqrt(qty / V_day)``
    (a whole day's volume or more, and no volume at all, cost ``coef x sigma_day`` or more)."""
    if qty <= 0.0 or coef <= 0.0:
        return 0.0
    if not daily_volume > 0.0:
        return coef * daily_volatility
    return coef * daily_volatility * math.sqrt(qty / daily_volume)


@njit(cache=True)
def unwind(  # noqa: PLR0913, C901 -- njit: the unwind loop in one compiled function
    slice_qty: np.ndarray,
    slice_price: np.ndarray,
    k0: int,
    ohlcv: np.ndarray,
    funding_due: np.ndarray,
    daily_volatility: np.ndarray,
    daily_volume: np.ndarray,
    qty_steps: np.ndarray,
    controlled: bool,
    max_participation: float,
    impact_coef: float,
    taker_fee: float,
    funding_rate: float,
    rows: np.ndarray,
    held: np.ndarray,
) -> tuple[int, int, int, float, float, float, float, float]:
    """Unwind a leaver's slice (sizes ``slice_qty`` at average prices ``slice_price``, (2, n))
    from candle ``k0``; returns (rows written, candle of the last tranche (-1: not finished by
    the data's end), tranches, realized pnl, fees, funding paid, slippage, notional traded).

    ``ohlcv`` (n_coins, n, 5); ``funding_due[k]``: candle k opens at a funding time;
    ``daily_volatility`` / ``daily_volume`` (n_coins, n): the impact model's inputs known at
    candle k. Not controlled: one tranche in candle ``k0``, all of the slice. Controlled: each
    candle advances every position by the same fraction (:func:`tranche_step`) until done.
    Slippage: sum of qty x |reference - executed price|. ``held[k - k0]`` (2, n) receives the
    slice still held at the close of each candle (its length bounds the unwind).
    """
    n_sym = slice_qty.shape[1]
    n = ohlcv.shape[1]
    done = np.zeros_like(slice_qty)
    cum = 0.0
    nr = 0
    tranches = 0
    pnl_sum = 0.0
    fees = 0.0
    funding = 0.0
    slippage = 0.0
    notional = 0.0
    k_end = -1
    vol = np.empty(n_sym)
    for k in range(k0, min(n, k0 + held.shape[0])):
        if k > k0 and funding_due[k]:
            for s in range(n_sym):
                for j in range(2):
                    q = slice_qty[j, s] - done[j, s]
                    if q > 0.0:
                        funding += funding_payment(
                            1 if j == 0 else -1, q, ohlcv[s, k, 0], funding_rate
                        )
        if controlled:
            for s in range(n_sym):
                vol[s] = ohlcv[s, k, 4]
            step = tranche_step(slice_qty, vol, max_participation)
        else:
            step = 1.0
        if step > 0.0:
            new_cum = min(1.0, cum + step)
            if new_cum > 1.0 - 1e-9:
                new_cum = 1.0
            traded = False
            for s in range(n_sym):
                ref = (ohlcv[s, k, 1] + ohlcv[s, k, 2] + ohlcv[s, k, 3]) / 3.0
                for j in range(2):
                    if slice_qty[j, s] <= 0.0:
                        continue
                    q = tranche_target(slice_qty[j, s], new_cum, qty_steps[s]) - done[j, s]
                    if q <= 1e-12:
                        continue
                    side = 1 if j == 0 else -1
                    imp = impact_fraction(
                        q, daily_volatility[s, k], daily_volume[s, k], impact_coef
                    )
                    imp = min(imp, 0.99)
                    px = ref * (
                        1.0 - side * imp
                    )  # a long's slice sells lower, a short's buys higher
                    pnl = q * (px - slice_price[j, s]) * side
                    fee = q * px * taker_fee
                    done[j, s] += q
                    pnl_sum += pnl
                    fees += fee
                    slippage += q * abs(ref - px)
                    notional += q * px
                    if nr < rows.shape[0]:
                        rows[nr, U_K] = k
                        rows[nr, U_SYMBOL] = s
                        rows[nr, U_SIDE] = side
                        rows[nr, U_QTY] = -side * q
                        rows[nr, U_REF] = ref
                        rows[nr, U_PRICE] = px
                        rows[nr, U_FEE] = fee
                        rows[nr, U_PNL] = pnl
                        rows[nr, U_CUM] = new_cum
                    nr += 1
                    traded = True
            cum = new_cum
            if traded:
                tranches += 1
        for s in range(n_sym):
            for j in range(2):
                held[k - k0, j, s] = slice_qty[j, s] - done[j, s]
        if cum >= 1.0:
            k_end = k
            break
    return nr, k_end, tranches, pnl_sum, fees, funding, slippage, notional


@njit(cache=True)
def combined_margin(
    balance: float,
    size_a: np.ndarray,
    price_a: np.ndarray,
    size_b: np.ndarray,
    price_b: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    tiers: np.ndarray,
) -> tuple[float, float, float]:
    """(equity, maintenance margin, notional) of one cross-margin account holding two books
    (the stayers' and a leaver's slice in flight), (2, n) sizes and average prices each, with
    every coin at its adverse extreme (the low for a net long, the high for a net short) and the
    maintenance margin by the tier of each side's combined notional. With ``balance`` as
    equity (and zero ``price_*``) the prices only weigh the notional."""
    eq = balance
    mm = 0.0
    notional = 0.0
    for i in range(lows.shape[0]):
        long_q = size_a[0, i] + size_b[0, i]
        short_q = size_a[1, i] + size_b[1, i]
        if long_q <= 0.0 and short_q <= 0.0:
            continue
        p = lows[i] if long_q - short_q >= 0.0 else highs[i]
        if long_q > 0.0:
            if price_a[0, i] > 0.0 or price_b[0, i] > 0.0:
                eq += size_a[0, i] * (p - price_a[0, i]) + size_b[0, i] * (p - price_b[0, i])
            mm += maintenance_margin(long_q * p, tiers[i])
            notional += long_q * p
        if short_q > 0.0:
            if price_a[1, i] > 0.0 or price_b[1, i] > 0.0:
                eq += size_a[1, i] * (price_a[1, i] - p) + size_b[1, i] * (price_b[1, i] - p)
            mm += maintenance_margin(short_q * p, tiers[i])
            notional += short_q * p
    return eq, mm, notional


@njit(cache=True)
def entries_blocked(  # noqa: PLR0913
    balance: float,
    size: np.ndarray,
    pprice: np.ndarray,
    refs: np.ndarray,
    tiers: np.ndarray,
    leverage_cap: float,
    margin_buffer_pct: float,
) -> bool:
    """Are new entries blocked? With every coin at ``refs``: equity gone, total notional /
    equity above ``leverage_cap`` (0: no cap), or (equity - maintenance margin) / equity below
    ``margin_buffer_pct``. ``size`` / ``pprice`` (2, n) as everywhere in the core."""
    eq, mm = account_equity_margin(balance, size[0], pprice[0], size[1], pprice[1], refs, tiers)
    notional = 0.0
    for s in range(refs.shape[0]):
        notional += (size[0, s] + size[1, s]) * refs[s]
    if eq <= 0.0:
        return True
    if leverage_cap > 0.0 and notional / eq > leverage_cap:
        return True
    return margin_buffer_pct > 0.0 and (eq - mm) / eq < margin_buffer_pct


@njit(cache=True)
def entry_over_cap(  # noqa: PLR0913
    balance: float,
    size: np.ndarray,
    pprice: np.ndarray,
    refs: np.ndarray,
    s: int,
    price: float,
    qty: float,
    cap: float,
) -> bool:
    """Would an entry of ``qty`` at ``price`` on coin ``s`` take total notional / equity past
    ``cap`` (coin ``s`` at ``price``, the others at ``refs``)?"""
    eq = balance
    notional = qty * price
    for i in range(refs.shape[0]):
        p = price if i == s else refs[i]
        eq += size[0, i] * (p - pprice[0, i]) + size[1, i] * (pprice[1, i] - p)
        notional += (size[0, i] + size[1, i]) * p
    return eq <= 0.0 or notional / eq > cap


@njit(cache=True)
def exit_mode(  # noqa: PLR0913
    fraction: float,
    marked: float,
    equity: float,
    balance: float,
    size: np.ndarray,
    marks: np.ndarray,
    tiers: np.ndarray,
    threshold: float,
    cash_buffer_pct: float,
    leverage_cap: float,
    margin_buffer_pct: float,
) -> int:
    """How an exit of ``fraction`` of the shares (claim ``marked`` at mark) is run:
    ``MODE_CONTROLLED`` at or above ``threshold``; ``MODE_BUFFER`` when the claim fits in the
    cash buffer and the balance and, once paid from cash, the leverage stays within the cap and
    the margin buffer holds (every position at ``marks``); ``MODE_PRO_RATA`` otherwise."""
    if fraction >= threshold:
        return MODE_CONTROLLED
    if marked > cash_buffer_pct * equity + 1e-9 or marked > balance:
        return MODE_PRO_RATA
    eq_after = equity - marked
    if eq_after <= 0.0:
        return MODE_PRO_RATA
    notional = 0.0
    for s in range(marks.shape[0]):
        notional += (size[0, s] + size[1, s]) * marks[s]
    if notional / eq_after > leverage_cap:
        return MODE_PRO_RATA
    zero = np.zeros_like(size)
    eq, mm, _ = combined_margin(eq_after, size, zero, zero, zero, marks, marks, tiers)
    if (eq - mm) / eq < margin_buffer_pct:
        return MODE_PRO_RATA
    return MODE_BUFFER
