"""Many coins from the three bundled ones: the benchmark's way to grow the account to 20 coins.

Coin i starts from bundled coin i % 3 (BTC, ETH, DOGE), rotated in time by (i // 3) sevenths
of the sample (the part moved from the front to the back is rescaled so the price path stays
continuous, with no jump at the seam) and scaled by 1 + 0.07 * (i // 3). So every coin is a real
price path with real candle shapes, but no two coins move together: the crash of 2021-05-19
lands at a different time on each copy of a base coin. The market spec (steps, minimums,
tiers) is the base coin's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from backtest.data import Candles, load_candles

SAMPLE = "data/sample/binance_spot_1m"
BASE_SYMBOLS = ("BTCUSDT", "ETHUSDT", "DOGEUSDT")
N_SHIFTS = 7  # rotations per base coin: 3 x 7 = 21 distinct coins at most


def rotated(ohlcv: np.ndarray, shift: int) -> np.ndarray:
    """One coin's (n, 5) candles rotated left by ``shift`` candles, the moved part rescaled to
    start where the rest ends (volumes unchanged)."""
    if shift == 0:
        return ohlcv.copy()
    head, tail = ohlcv[:shift].copy(), ohlcv[shift:]
    head[:, :4] *= tail[-1, 3] / head[0, 0]
    return np.concatenate([tail, head])


def many_coins(n_coins: int) -> Candles:
    """``n_coins`` coins (at most 21) on the bundled sample's common time axis."""
    if not 1 <= n_coins <= len(BASE_SYMBOLS) * N_SHIFTS:
        raise ValueError(f"n_coins must be 1..{len(BASE_SYMBOLS) * N_SHIFTS}")
    base = load_candles(SAMPLE, list(BASE_SYMBOLS))
    n = base.ohlcv.shape[1]
    rows = []
    symbols = []
    for i in range(n_coins):
        b, r = i % len(BASE_SYMBOLS), i // len(BASE_SYMBOLS)
        coin = rotated(base.ohlcv[b], r * n // N_SHIFTS)
        coin[:, :4] *= 1.0 + 0.07 * r
        rows.append(coin)
        symbols.append(BASE_SYMBOLS[b])  # the base coin's market spec
    return replace(base, symbols=tuple(symbols), ohlcv=np.ascontiguousarray(np.stack(rows)))
