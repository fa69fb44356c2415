"""Engine throughput in coin-steps per second (candles x coins) on one core, after compilation.

Coins 1, 3, 6 and 20 built from the bundled sample by ``benchmarks.coins`` (rotated in time and
scaled copies of BTC, ETH and DOGE). Every coin may trade (n_positions = coins) and the starting
balance is 10,000 per coin, so each position has the same budget at every size and the work
per coin stays the same: a flat line is the goal. Baselines measured in the same run: the
1-coin throughput of the same config, and the engine with a balance window of zero (every
balance change recomputes every coin's cached orders, as before ``backtest.triggers``).
"""

from __future__ import annotations

import time

from backtest.engine import run_engine
from backtest.runner import build_inputs
from benchmarks.coins import many_coins
from bot.config import parse_config

COINS = (1, 3, 6, 20)
SIDES = {
    # both sides, 2% grids: a fill every ~23 coin-candles
    "busy": {
        "long": {"total_wallet_exposure_limit": 1.5},
        "short": {"enabled": True, "total_wallet_exposure_limit": 0.6},
    },
    # long only, 5% grid, 2-5% markups: a fill every ~200 coin-candles
    "patient": {
        "long": {
            "total_wallet_exposure_limit": 1.5,
            "entry_initial_ema_dist": 0.01,
            "entry_grid_spacing_pct": 0.05,
            "close_grid_min_markup": 0.02,
            "close_grid_markup_range": 0.03,
        },
        "short": {"enabled": False},
    },
}


def config(name: str, n_coins: int) -> object:
    """The named config for ``n_coins`` coins (every coin may hold a position)."""
    bot = {side: {**v, "n_positions": n_coins} for side, v in SIDES[name].items()}
    return parse_config(
        {"bot": bot, "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 10_000.0 * n_coins}}
    )


def _best_cpu_seconds(fn, repeat: int) -> float:  # noqa: ANN001
    """Best CPU time of this thread over ``repeat`` calls after a warm-up call: on a shared
    machine it leaves out the time the thread waited for a core."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def run(repeat: int = 5) -> dict:
    results = {}
    for name in SIDES:
        base = None
        for n_coins in COINS:
            inputs = build_inputs(config(name, n_coins), many_coins(n_coins))
            out = run_engine(inputs)
            seconds = _best_cpu_seconds(lambda i=inputs: run_engine(i), repeat)
            no_window = _best_cpu_seconds(lambda i=inputs: run_engine(i, 0.0), 1)
            steps = inputs.ohlcv.shape[1] * n_coins
            rate = steps / seconds
            base = base or rate
            results[f"{name}_{n_coins}"] = {
                "config": name,
                "coins": n_coins,
                "candles": int(inputs.ohlcv.shape[1]),
                "fills": len(out.fills),
                "liquidated": out.liquidated_k >= 0,
                "engine_seconds": seconds,
                "coin_steps_per_sec": rate,
                "ratio_to_1_coin": rate / base,
                "no_window_seconds": no_window,
                "window_speedup": no_window / seconds,
            }
    return results
