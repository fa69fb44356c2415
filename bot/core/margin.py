"""Maintenance margin and liquidation price from leverage tiers, and the leverage check.

Tier rows are ``[notional_floor, notional_cap, maint_margin_rate, max_leverage, maint_amount]``
(Binance's leverage brackets); a position's maintenance margin is
``notional * maint_margin_rate - maint_amount`` using the row whose [floor, cap) holds its notional.
Cross margin: the account is liquidated when equity falls to the sum over its positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from bot.core.params import T_CAP, T_MAINT_AMOUNT, T_MAX_LEVERAGE, T_MMR


@njit(cache=True)
def tier_index(tiers: np.ndarray, notional: float) -> int:
    """Row of ``tiers`` whose [floor, cap) holds ``notional`` (the last row beyond the table)."""
    for i in range(tiers.shape[0]):
        if notional < tiers[i, T_CAP]:
            return i
    return tiers.shape[0] - 1


@njit(cache=True)
def maintenance_margin(notional: float, tiers: np.ndarray) -> float:
    """notional * maint_margin_rate - maint_amount for the tier that holds |notional|."""
    n = abs(notional)
    if n == 0.0:
        return 0.0
    i = tier_index(tiers, n)
    return n * tiers[i, T_MMR] - tiers[i, T_MAINT_AMOUNT]


@njit(cache=True)
def liquidation_price(
    balance: float,
    long_size: float,
    long_price: float,
    short_size: float,
    short_price: float,
    tiers: np.ndarray,
    other_equity: float = 0.0,
    other_maintenance_margin: float = 0.0,
) -> float:
    """Price of this coin at which cross-margin equity equals maintenance margin.

    equity(p) = balance + other_equity + L*(p - P_L) + S*(P_S - p)
    mm(p)     = L*p*mmr_L - amt_L + S*p*mmr_S - amt_S + other_maintenance_margin
    ``other_equity`` is the unrealized pnl of the account's other coins and
    ``other_maintenance_margin`` their maintenance margin, held fixed. The tier depends on the
    notional at p, so the linear solution is iterated until the tiers agree.
    A net long is liquidated below the returned price, a net short above it: 0.0 means a net
    long is never liquidated on a fall and a net short is under water at any price (its
    equity minus margin falls as the price rises, so a root at or below zero means now).
    nan with no position.
    """
    if long_size == 0.0 and short_size == 0.0:
        return math.nan
    # Start from the first tier; move tiers until the solution lies in the tiers used.
    i_l = 0
    i_s = 0
    p = math.nan
    for _ in range(64):
        mmr_l = tiers[i_l, T_MMR]
        mmr_s = tiers[i_s, T_MMR]
        amt_l = tiers[i_l, T_MAINT_AMOUNT] if long_size > 0.0 else 0.0
        amt_s = tiers[i_s, T_MAINT_AMOUNT] if short_size > 0.0 else 0.0
        slope = long_size - short_size - long_size * mmr_l - short_size * mmr_s
        const = (
            balance
            + other_equity
            - long_size * long_price
            + short_size * short_price
            + amt_l
            + amt_s
            - other_maintenance_margin
        )
        if slope == 0.0:
            return math.nan
        p = -const / slope
        if p <= 0.0:
            break
        new_l = tier_index(tiers, long_size * p) if long_size > 0.0 else 0
        new_s = tier_index(tiers, short_size * p) if short_size > 0.0 else 0
        if new_l == i_l and new_s == i_s:
            break
        i_l = new_l
        i_s = new_s
    if p <= 0.0:
        return 0.0
    return p


@njit(cache=True)
def max_leverage_for_notional(notional: float, tiers: np.ndarray) -> float:
    """The exchange's maximum leverage for a position of this notional."""
    return tiers[tier_index(tiers, abs(notional)), T_MAX_LEVERAGE]


@dataclass(frozen=True)
class LeverageCheck:
    """Outcome of :func:`check_leverage`; ``reason`` says why when ``ok`` is False."""

    ok: bool
    reason: str
    required_above: float
    max_allowed: float


def check_leverage(
    leverage: float,
    total_wallet_exposure_limit_long: float,
    total_wallet_exposure_limit_short: float,
    *,
    long_enabled: bool = True,
    short_enabled: bool = True,
    balance: float | None = None,
    wallet_exposure_limit_long: float | None = None,
    wallet_exposure_limit_short: float | None = None,
    tiers: np.ndarray | None = None,
) -> LeverageCheck:
    """Is ``leverage`` enough for the limits, and allowed by the exchange for their notional?

    1. The bot sizes from the unleveraged balance, so margin suffices only when leverage exceeds
       TWEL_long + TWEL_short over the enabled sides (otherwise orders meet "insufficient margin").
    2. The exchange caps leverage by notional (tiers): the largest position the limits allow,
       balance * wallet_exposure_limit, must sit in a tier whose max leverage is >= ``leverage``.
    """
    required = (total_wallet_exposure_limit_long if long_enabled else 0.0) + (
        total_wallet_exposure_limit_short if short_enabled else 0.0
    )
    max_allowed = math.inf
    if tiers is not None and balance is not None:
        for enabled, wel in (
            (long_enabled, wallet_exposure_limit_long),
            (short_enabled, wallet_exposure_limit_short),
        ):
            if enabled and wel is not None and wel > 0:
                max_allowed = min(max_allowed, max_leverage_for_notional(balance * wel, tiers))
    if not leverage > required:
        return LeverageCheck(
            False,
            f"leverage {leverage:g} must exceed the sum of the enabled sides' "
            f"total_wallet_exposure_limit ({required:g}); set leverage above {required:g} "
            "or lower the limits, else orders meet 'insufficient margin'",
            required,
            max_allowed,
        )
    if leverage > max_allowed:
        return LeverageCheck(
            False,
            f"leverage {leverage:g} exceeds the exchange's maximum {max_allowed:g} for the "
            f"notional the limits allow (balance {balance:g} x wallet_exposure_limit); "
            f"use leverage between {required:g} (exclusive) and {max_allowed:g}",
            required,
            max_allowed,
        )
    return LeverageCheck(True, "", required, max_allowed)


@njit(cache=True)
def account_equity_margin(
    balance: float,
    long_size: np.ndarray,
    long_price: np.ndarray,
    short_size: np.ndarray,
    short_price: np.ndarray,
    prices: np.ndarray,
    tiers: np.ndarray,
) -> tuple[float, float]:
    """(equity, maintenance margin) of a cross-margin account with every coin i at prices[i].

    ``tiers`` is 3-d: tiers[i] is coin i's tier table (padded rows have an infinite cap).
    """
    equity = balance
    mm = 0.0
    for i in range(prices.shape[0]):
        p = prices[i]
        if long_size[i] > 0.0:
            equity += long_size[i] * (p - long_price[i])
            mm += maintenance_margin(long_size[i] * p, tiers[i])
        if short_size[i] > 0.0:
            equity += short_size[i] * (short_price[i] - p)
            mm += maintenance_margin(short_size[i] * p, tiers[i])
    return equity, mm


@njit(cache=True)
def account_at_risk(
    balance: float,
    long_size: np.ndarray,
    long_price: np.ndarray,
    short_size: np.ndarray,
    short_price: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    tiers: np.ndarray,
) -> bool:
    """Is equity at or below maintenance margin with every coin at its adverse extreme (the
    low for a net long, the high for a net short)? Allocates nothing: the backtester asks on
    every candle."""
    eq = balance
    mm = 0.0
    any_pos = False
    for i in range(lows.shape[0]):
        if long_size[i] <= 0.0 and short_size[i] <= 0.0:
            continue
        any_pos = True
        p = lows[i] if long_size[i] - short_size[i] >= 0.0 else highs[i]
        if long_size[i] > 0.0:
            eq += long_size[i] * (p - long_price[i])
            mm += maintenance_margin(long_size[i] * p, tiers[i])
        if short_size[i] > 0.0:
            eq += short_size[i] * (short_price[i] - p)
            mm += maintenance_margin(short_size[i] * p, tiers[i])
    return any_pos and eq <= mm


@njit(cache=True)
def account_liquidation(
    balance: float,
    long_size: np.ndarray,
    long_price: np.ndarray,
    short_size: np.ndarray,
    short_price: np.ndarray,
    ref_prices: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    tiers: np.ndarray,
) -> np.ndarray:
    """Prices at which the account is liquidated within this candle, or an empty array.

    Every coin moves from its reference price (the previous close) toward its adverse extreme
    (the low for a net long, the high for a net short) by the same fraction t of the way; if
    equity at t = 1 is at or below maintenance margin, t is found where equity equals it
    (bisection; tiers make the margin piecewise linear) and those prices are returned.
    """
    n = ref_prices.shape[0]
    if not account_at_risk(
        balance, long_size, long_price, short_size, short_price, lows, highs, tiers
    ):
        return np.empty(0)
    worst = np.empty(n)
    for i in range(n):
        worst[i] = lows[i] if long_size[i] - short_size[i] >= 0.0 else highs[i]
    prices = np.empty(n)
    eq0, mm0 = account_equity_margin(
        balance, long_size, long_price, short_size, short_price, ref_prices, tiers
    )
    if eq0 <= mm0:
        return ref_prices.copy()  # already under water at the reference: liquidate there
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        for i in range(n):
            prices[i] = ref_prices[i] + mid * (worst[i] - ref_prices[i])
        eq, mm = account_equity_margin(
            balance, long_size, long_price, short_size, short_price, prices, tiers
        )
        if eq > mm:
            lo = mid
        else:
            hi = mid
    for i in range(n):
        prices[i] = ref_prices[i] + hi * (worst[i] - ref_prices[i])
    return prices


def stack_tiers(tables: list[np.ndarray]) -> np.ndarray:
    """Pad per-coin tier tables into one 3-d array (extra rows never match: floor = cap = inf)."""
    depth = max(t.shape[0] for t in tables)
    out = np.full((len(tables), depth, 5), np.inf)
    for i, t in enumerate(tables):
        out[i, : t.shape[0]] = t
        out[i, t.shape[0] :, 2:] = t[-1, 2:]
    return out
