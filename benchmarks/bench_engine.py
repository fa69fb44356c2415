"""Engine throughput in candle-steps per second per coin, after compilation.

Baseline (same run, same data): the naive loop that asks the core for the whole order grid of
every position side on every candle, which is what the engine avoids by recomputing only when
something changed.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from backtest.data import load_candles
from backtest.engine import run_engine
from backtest.runner import build_inputs
from bot.config import parse_config
from bot.core.ema import ema_alphas, ema_update
from bot.core.grid import ideal_orders_into
from bot.core.params import MAX_ORDERS

SAMPLE = "data/sample/binance_spot_1m"
CONFIGS = {
    # the default-like config: both sides, tight 2% grids, a fill every ~8 coin-candles
    "busy": {
        "bot": {
            "long": {"total_wallet_exposure_limit": 1.5, "n_positions": 3},
            "short": {"enabled": True, "total_wallet_exposure_limit": 0.6, "n_positions": 3},
        }
    },
    # a patient long-only config: wider grid and markups, far fewer fills
    "patient": {
        "bot": {
            "long": {
                "total_wallet_exposure_limit": 1.5,
                "n_positions": 3,
                "entry_initial_ema_dist": 0.01,
                "entry_grid_spacing_pct": 0.05,
                "close_grid_min_markup": 0.02,
                "close_grid_markup_range": 0.03,
            },
            "short": {"enabled": False},
        }
    },
}


@njit(cache=True)
def _naive_grid_every_candle(ohlcv, markets, params_long, params_short):  # noqa: ANN001, ANN202
    """Baseline: the whole ideal-order grid of both sides of every coin on every candle."""
    n_sym, n = ohlcv.shape[0], ohlcv.shape[1]
    out = np.zeros((MAX_ORDERS, 3))
    emas = np.empty((n_sym, 3))
    alphas = ema_alphas(params_long[14], params_long[15])
    total = 0
    for s in range(n_sym):
        emas[s, :] = ohlcv[s, 0, 3]
    for k in range(1, n):
        for s in range(n_sym):
            ema_update(emas[s], alphas, ohlcv[s, k - 1, 3])
            c = ohlcv[s, k - 1, 3]
            size = 1000.0 / c  # a position at WE 0.1 of a 10k balance
            total += ideal_orders_into(
                1, 10_000.0, 10_000.0, size, c * 1.01, c, c, emas[s], markets[s], params_long,
                True, out, 0.0,
            )  # fmt: skip
            total += ideal_orders_into(
                -1, 10_000.0, 10_000.0, size, c * 0.99, c, c, emas[s], markets[s], params_short,
                True, out, np.inf,
            )  # fmt: skip
    return total


def _best_of(fn, repeat: int = 5) -> float:  # noqa: ANN001
    fn()  # compile / warm
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run() -> dict:
    """Throughput of the engine and of the naive baseline, 1 and 3 coins."""
    results = {}
    for name, symbols in (
        (name, symbols)
        for name in CONFIGS
        for symbols in (["BTCUSDT"], ["BTCUSDT", "ETHUSDT", "DOGEUSDT"])
    ):
        candles = load_candles(SAMPLE, symbols)
        cfg = parse_config({**CONFIGS[name], "backtest": {"symbols": symbols}})
        inputs = build_inputs(cfg, candles)
        n = candles.ohlcv.shape[1]
        engine_s = _best_of(lambda inputs=inputs: run_engine(inputs))
        ohlcv = np.ascontiguousarray(candles.ohlcv)
        naive_s = _best_of(
            lambda ohlcv=ohlcv, inputs=inputs: _naive_grid_every_candle(
                ohlcv, inputs.markets, inputs.params_long, inputs.params_short
            ),
            repeat=2,
        )
        fills = len(run_engine(inputs).fills)
        results[f"{name}_{len(symbols)}_coin"] = {
            "config": name,
            "coins": len(symbols),
            "candles": n,
            "fills": fills,
            "engine_seconds": engine_s,
            "engine_steps_per_sec_per_coin": n / engine_s,
            "engine_coin_steps_per_sec": n * len(symbols) / engine_s,
            "naive_seconds": naive_s,
            "naive_steps_per_sec_per_coin": n / naive_s,
            "speedup_vs_naive": naive_s / engine_s,
        }
    return results
