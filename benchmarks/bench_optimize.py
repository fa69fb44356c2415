"""Optimizer speed on the bundled data (asserts nothing); ``run(quick)`` for `make bench`.

Three measurements, each a fresh study in a temporary folder, all in the same run:

- **Long study** (TPE, then NSGA-II): ``LONG_TRIALS`` trials (5,000; 1,000 with --quick) with
  2 workers on one day of BTCUSDT 1m (1,440 candles, ~1.5 ms of engine per trial: the
  shortest slice a study would use, where everything outside the engine weighs most). Rate at
  trial 100 and at the last trial: trials finished per second around them (+-50 trials, from
  the trials' completion times in the study). Overhead: the share of each trial's time (in its
  worker: taking in the other workers' trials, sampler, config, metrics, everything) spent
  outside the engine's loop, over the first and the last 500 trials.
- **Worker scaling**: ``SCALE_TRIALS`` trials on the whole sample (BTC+ETH+DOGE, 10 days,
  15.6k candles x 3), 1 then 2 workers; trials per second from the first trial's start to the
  last one's end (worker start-up excluded). Baseline: 1 worker. Also CPU milliseconds per
  trial in the workers (start-up included) and in the main process (which does not depend on
  the machine's other load).
"""

from __future__ import annotations

import os
import resource
import tempfile
from pathlib import Path

from backtest.optimize import run_optimize
from bot.config import parse_config

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]
LONG_TRIALS = 5000
QUICK_LONG_TRIALS = 1000
SCALE_TRIALS = 100
WINDOW = 50  # trials either side of a mark for the rate
OVERHEAD_SPAN = 500

SHORT = (["BTCUSDT"], "2021-05-19", "2021-05-20")
WHOLE = (["BTCUSDT", "ETHUSDT", "DOGEUSDT"], None, None)


def _config(results_dir: str, data: tuple, sampler: str) -> object:
    symbols, start, end = data
    return parse_config(
        {
            "backtest": {
                "data": str(ROOT / "data/sample/binance_spot_1m"),
                "symbols": symbols,
                "start_date": start,
                "end_date": end,
                "results_dir": results_dir,
            },
            "optimize": {"seed": 1, "sampler": sampler},
        },
        "bench_optimize",
    )


def _study(tmp: str) -> list:
    import optuna

    study = optuna.load_study(
        study_name="bench", storage=f"sqlite:///{Path(tmp) / 'optimize' / 'bench.db'}"
    )
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    return sorted(done, key=lambda t: t.datetime_complete)


def _rate_at(trials: list, k: int) -> float:
    """Trials per second around the k-th finished trial."""
    lo, hi = max(0, k - WINDOW), min(len(trials) - 1, k + WINDOW)
    span = (trials[hi].datetime_complete - trials[lo].datetime_complete).total_seconds()
    return (hi - lo) / span if span > 0 else float("nan")


def _overhead(res: object, first: bool) -> float:
    rows = sorted(t for w in res.workers for t in w.timings)
    rows = rows[:OVERHEAD_SPAN] if first else rows[-OVERHEAD_SPAN:]
    busy = sum(r[1] for r in rows)
    return 1.0 - sum(r[2] for r in rows) / busy if busy else float("nan")


def _long(sampler: str, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_optimize_") as tmp:
        res = run_optimize(
            _config(tmp, SHORT, sampler), n_trials=n, workers=2, study_name="bench",
            progress=False,
        )  # fmt: skip
        trials = _study(tmp)
    return {
        "sampler": sampler,
        "trials": res.n_run,
        "wall_seconds": round(res.elapsed_seconds, 2),
        "rate_at_100": round(_rate_at(trials, 100), 1),
        f"rate_at_{n}": round(_rate_at(trials, len(trials) - 1), 1),
        "rate_last_vs_100": round(_rate_at(trials, len(trials) - 1) / _rate_at(trials, 100), 2),
        "overhead_first_500": round(_overhead(res, True), 3),
        "overhead_last_500": round(_overhead(res, False), 3),
        "engine_ms_per_trial": round(
            1e3 * sum(w.engine_seconds for w in res.workers) / max(1, res.n_run), 2
        ),
    }


def _cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _scale(workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_optimize_") as tmp:
        cpu0 = _cpu_seconds()
        res = run_optimize(
            _config(tmp, WHOLE, "tpe"), n_trials=SCALE_TRIALS, workers=workers,
            study_name="bench", progress=False,
        )  # fmt: skip
        main_cpu = _cpu_seconds() - cpu0  # incl. the study's output files at the end
        trials = _study(tmp)
    span = (trials[-1].datetime_complete - min(t.datetime_start for t in trials)).total_seconds()
    busy = sum(w.busy_seconds for w in res.workers)
    return {
        "workers": workers,
        "trials": res.n_run,
        "wall_seconds": round(res.elapsed_seconds, 2),
        "trials_per_second": round(len(trials) / span, 2) if span > 0 else None,
        "overhead": round(1.0 - sum(w.engine_seconds for w in res.workers) / busy, 3),
        "peak_rss_mb_per_worker": [round(w.peak_rss_bytes / 2**20, 1) for w in res.workers],
        # CPU per trial does not depend on what else the machine runs: if 2 workers cost no
        # more CPU per trial than 1, only free cores limit their speed-up.
        "worker_cpu_ms_per_trial": round(
            1e3 * sum(w.cpu_seconds for w in res.workers) / max(1, res.n_run), 1
        ),
        "main_cpu_ms_per_trial": round(1e3 * main_cpu / max(1, res.n_run), 1),
    }


def run(quick: bool | None = None) -> dict:
    """Long studies (TPE, NSGA-II) and 1-vs-2-worker scaling; ``quick`` (or the environment
    variable GRIDBOT_BENCH_QUICK=1): 1,000 trials instead of 5,000."""
    if quick is None:
        quick = os.environ.get("GRIDBOT_BENCH_QUICK") == "1"
    n = QUICK_LONG_TRIALS if quick else LONG_TRIALS
    one, two = _scale(1), _scale(2)
    return {
        "long_trials": n,
        "long": {s: _long(s, n) for s in ("tpe", "nsga2")},
        "scaling": {
            "1": one,
            "2": two,
            "speedup": round(two["trials_per_second"] / one["trials_per_second"], 2),
        },
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
