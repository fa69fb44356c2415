"""The forager: which flat coins of a side may open a position, by rank.

Passivbot's forager ranks the approved coins by volume and volatility over rolling windows and
gives the free position slots to the best; ours does the same with EMAs of 1m candles (the
caller keeps them, per coin and side: ``[quote volume EMA, high-low range EMA]``):

1. coins holding a position keep their slot until flat;
2. coins not eligible (not approved, ignored, younger than minimum_coin_age_days) get none;
3. of the flat eligible coins, the ``filter_volume_drop_pct`` share with the lowest volume EMA
   is dropped;
4. the rest are ranked by the range EMA (volatility), highest first, or by the volume EMA when
   no volatility window is set, or kept in symbol order when neither is; ties keep symbol order;
5. the free slots (n_positions minus the positions held) go down that ranking.

With no window and no drop this is the symbol order of :func:`bot.core.grid.opening_slots`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

F_VOLUME = 0  # EMA of the 1m quote volume (volume x close)
F_VOLATILITY = 1  # EMA of the 1m range (high - low) / close
N_FORAGE = 2


@njit(cache=True)
def forager_alphas(volume_window: float, volatility_window: float) -> np.ndarray:
    """EMA factors 2 / (span + 1) of the two windows (minutes); a window of 0 is unused."""
    out = np.ones(N_FORAGE)
    if volume_window > 0.0:
        out[F_VOLUME] = 2.0 / (volume_window + 1.0)
    if volatility_window > 0.0:
        out[F_VOLATILITY] = 2.0 / (volatility_window + 1.0)
    return out


@njit(cache=True)
def candle_values(high: float, low: float, close: float, volume: float, out: np.ndarray) -> None:
    """One candle's [quote volume, range] into ``out``."""
    out[F_VOLUME] = volume * close
    out[F_VOLATILITY] = (high - low) / close if close > 0.0 else 0.0


@njit(cache=True)
def forager_update(
    state: np.ndarray, alphas: np.ndarray, high: float, low: float, close: float, volume: float
) -> None:
    """Advance one coin's [volume EMA, range EMA] by a closed candle, in place."""
    v = np.empty(N_FORAGE)
    candle_values(high, low, close, volume, v)
    for i in range(N_FORAGE):
        state[i] = state[i] * (1.0 - alphas[i]) + v[i] * alphas[i]


@njit(cache=True)
def forager_seed(ohlcv: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """EMAs started at the first candle and advanced through every candle (rows
    [open, high, low, close, volume]): live start-up and backtest warm-up agree."""
    state = np.empty(N_FORAGE)
    candle_values(ohlcv[0, 1], ohlcv[0, 2], ohlcv[0, 3], ohlcv[0, 4], state)
    for k in range(1, ohlcv.shape[0]):
        forager_update(state, alphas, ohlcv[k, 1], ohlcv[k, 2], ohlcv[k, 3], ohlcv[k, 4])
    return state


@njit(cache=True)
def _eligible_flat(held: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Indices of the coins that hold nothing yet and may open, in symbol order."""
    idx = np.empty(held.shape[0], dtype=np.int64)
    m = 0
    for i in range(held.shape[0]):
        if not held[i] and eligible[i]:
            idx[m] = i
            m += 1
    return idx[:m]


@njit(cache=True)
def _ranked(
    cands: np.ndarray,
    state: np.ndarray,
    volume_window: float,
    volatility_window: float,
    volume_drop_pct: float,
) -> np.ndarray:
    """The candidates best first: the lowest-volume share dropped, then by volatility (or by
    volume when only that is tracked); symbol order when neither is."""
    if cands.shape[0] == 0:
        return cands
    if volume_window > 0.0 and volume_drop_pct > 0.0:
        n_drop = int(math.floor(cands.shape[0] * volume_drop_pct))
        if n_drop > 0:
            # stable: among equal volumes the later symbol is dropped first
            order = np.argsort(-state[cands, F_VOLUME], kind="mergesort")
            cands = np.sort(cands[order[: cands.shape[0] - n_drop]])
    if volatility_window > 0.0:
        cands = cands[np.argsort(-state[cands, F_VOLATILITY], kind="mergesort")]
    elif volume_window > 0.0:
        cands = cands[np.argsort(-state[cands, F_VOLUME], kind="mergesort")]
    return cands


@njit(cache=True)
def forager_slots(
    pos_sizes: np.ndarray,
    n_positions: int,
    eligible: np.ndarray,
    state: np.ndarray,
    volume_window: float,
    volatility_window: float,
    volume_drop_pct: float,
) -> np.ndarray:
    """Which coins of one side may hold a position or an initial entry order (module doc).

    ``state``: (n_coins, N_FORAGE) EMAs; ``eligible``: (n_coins,) bool."""
    n = pos_sizes.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    free = n_positions
    for i in range(n):
        if pos_sizes[i] > 0.0:
            out[i] = True
            free -= 1
    if free <= 0:
        return out
    cands = _ranked(
        _eligible_flat(out, eligible), state, volume_window, volatility_window, volume_drop_pct
    )
    for i in cands:
        if free <= 0:
            break
        out[i] = True
        free -= 1
    return out


def eligible_from_ms(
    symbols: tuple[str, ...] | list[str],
    approved: tuple[str, ...] | str,
    ignored: tuple[str, ...],
    first_ms: np.ndarray,
    minimum_coin_age_days: float,
) -> np.ndarray:
    """Per coin, the first time (ms) it may open a position: its first candle plus the minimum
    age; never (int64 max) when not approved or ignored."""
    never = np.iinfo(np.int64).max
    age_ms = int(round(minimum_coin_age_days * 86_400_000))
    out = np.empty(len(symbols), dtype=np.int64)
    for i, s in enumerate(symbols):
        ok = (approved == "all" or s in approved) and s not in ignored
        out[i] = int(first_ms[i]) + age_ms if ok else never
    return out
