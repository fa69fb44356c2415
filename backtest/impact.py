"""The square-root impact model's inputs from candles: trailing daily volatility and volume.

One definition for the stress backtest (``backtest.stress``) and the simulated venue's pricing
of a vault's closes (``backtest.venue.vault_impact``); the model itself is
:func:`bot.core.vault.impact_fraction`.
"""

from __future__ import annotations

import numpy as np

from backtest.data import Candles

__all__ = ["impact_inputs"]

_DAY_MS = 86_400_000


def impact_inputs(candles: Candles, window_minutes: float) -> tuple[np.ndarray, np.ndarray]:
    """(daily volatility, daily volume), each (n_coins, n): from the ``window_minutes`` of
    candles before candle k (trailing, so known at k): the standard deviation of log returns of
    the closes scaled to a day, and the volume summed and scaled to a day."""
    ohlcv = candles.ohlcv
    n_sym, n = ohlcv.shape[0], ohlcv.shape[1]
    per_day = _DAY_MS / candles.timeframe_ms
    w = max(2, int(round(window_minutes * 60_000 / candles.timeframe_ms)))
    vol = np.zeros((n_sym, n))
    vday = np.zeros((n_sym, n))
    for s in range(n_sym):
        close = ohlcv[s, :, 3]
        r = np.zeros(n)
        r[1:] = np.diff(np.log(close))
        c1 = np.concatenate(([0.0], np.cumsum(r)))
        c2 = np.concatenate(([0.0], np.cumsum(r * r)))
        cv = np.concatenate(([0.0], np.cumsum(ohlcv[s, :, 4])))
        k = np.arange(n)
        lo = np.maximum(k - w, 0)
        cnt = np.maximum(k - lo, 1)
        mean = (c1[k] - c1[lo]) / cnt
        var = np.maximum((c2[k] - c2[lo]) / cnt - mean * mean, 0.0)
        vol[s] = np.sqrt(var * per_day)
        vday[s] = (cv[k] - cv[lo]) * per_day / cnt
        vol[s, 0] = vol[s, 1] if n > 1 else 0.0
    return vol, vday
