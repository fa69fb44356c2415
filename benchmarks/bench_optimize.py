"""Optimizer throughput and worker memory on the bundled data (asserts nothing).

``run()`` runs a fresh study of ~20 trials with 1 and with 2 worker processes on a short slice
of ``data/sample/binance_spot_1m`` and returns trials/second (wall clock including worker
start-up, and over the trials alone) and each worker's peak RSS (ru_maxrss, measured in the
worker and reported back).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from backtest.optimize import run_optimize
from bot.config import parse_config

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 20


SLICES = {
    "BTCUSDT 1m 2021-05-17..2021-05-20 (4320 candles)": (["BTCUSDT"], "2021-05-17", "2021-05-20"),
    "BTC+ETH+DOGE 1m 2021-05-10..2021-05-20 (15.6k candles x 3)": (
        ["BTCUSDT", "ETHUSDT", "DOGEUSDT"],
        None,
        None,
    ),
}


def _config(results_dir: str, data: str) -> object:
    symbols, start, end = SLICES[data]
    return parse_config(
        {
            "backtest": {
                "data": str(ROOT / "data/sample/binance_spot_1m"),
                "symbols": symbols,
                "start_date": start,
                "end_date": end,
                "results_dir": results_dir,
            },
            "optimize": {
                "seed": 1,
                "bounds": {
                    "bot.long.total_wallet_exposure_limit": [0.3, 4.0],
                    "bot.long.n_positions": [1, 3, 1],
                    "bot.long.entry_grid_spacing_pct": [0.005, 0.05],
                },
            },
        },
        "bench_optimize",
    )


def _one(workers: int, data: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_optimize_") as tmp:
        res = run_optimize(
            _config(tmp, data), n_trials=N_TRIALS, workers=workers, study_name="bench",
            progress=False,
        )  # fmt: skip
        import optuna

        study = optuna.load_study(
            study_name="bench", storage=f"sqlite:///{Path(tmp) / 'optimize' / 'bench.db'}"
        )
        trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete]
        span = (
            max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        ).total_seconds()
    return {
        "workers": workers,
        "trials": res.n_run,
        "wall_seconds": round(res.elapsed_seconds, 3),
        "trials_per_second": round(res.n_run / res.elapsed_seconds, 3),
        "trials_per_second_excl_startup": round(len(trials) / span, 3) if span > 0 else None,
        "peak_rss_mb_per_worker": [round(w.peak_rss_bytes / 2**20, 1) for w in res.workers],
        "trials_per_worker": [w.trials for w in res.workers],
    }


def run() -> dict:
    """Trials/second and per-worker peak RSS with 1 and 2 workers, on a short slice (where
    Optuna's storage writes dominate) and on the whole sample (where the backtests do)."""
    return {data: {"1": _one(1, data), "2": _one(2, data)} for data in SLICES}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
