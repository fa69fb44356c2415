"""EMAs of 1m closes, spans in minutes: ema_span_0, ema_span_1 and their geometric mean."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def ema_alphas(span_0: float, span_1: float) -> np.ndarray:
    """Smoothing factors 2 / (span + 1) for the three spans."""
    spans = np.array([span_0, span_1, math.sqrt(span_0 * span_1)])
    return 2.0 / (spans + 1.0)


@njit(cache=True)
def ema_step(ema: float, alpha: float, close: float) -> float:
    """One EMA advanced by one candle close (the backtester's hot loop calls it on scalars)."""
    return ema * (1.0 - alpha) + close * alpha


@njit(cache=True)
def ema_update(emas: np.ndarray, alphas: np.ndarray, close: float) -> None:
    """Advance the EMAs by one candle close, in place."""
    for i in range(emas.shape[0]):
        emas[i] = ema_step(emas[i], alphas[i], close)


@njit(cache=True)
def ema_seed(closes: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """EMAs started at the first close and advanced through every close (live start-up and
    backtest warm-up both use this, so both start from the same numbers)."""
    emas = np.full(alphas.shape[0], closes[0])
    for k in range(1, closes.shape[0]):
        ema_update(emas, alphas, closes[k])
    return emas


@njit(cache=True)
def ema_band(emas: np.ndarray) -> tuple[float, float]:
    """(lower, upper) of the EMAs: entries key off the lower for longs, the upper for shorts.
    A plain loop: the backtester calls this every candle, and ``emas.min()`` costs a reference
    count of the array each time."""
    lower = emas[0]
    upper = emas[0]
    for i in range(1, emas.shape[0]):
        lower = min(lower, emas[i])
        upper = max(upper, emas[i])
    return lower, upper
