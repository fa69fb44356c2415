"""`gridbot optimize`: multi-objective, constrained search over bot parameters with Optuna.

One module per job:

- ``space``: ``optimize.bounds`` -> parameters; a trial's config.
- ``objectives``: metrics -> objective and constraint values; the Pareto front.
- ``sampler``: TPE or NSGA-II, seeded per trial; the bounded history a sampler sees.
- ``storage``: study names, fingerprint, the RDB storage (SQLite or a shared server), writes.
- ``candles``: the candles, loaded once per process.
- ``worker``: a worker process (in-memory study, backtests, results out).
- ``orphans``: workers die with their run; trials a dead run left RUNNING.
- ``progress``: the line shown while it runs (trials/s, feasible, best).
- ``output``: trials.csv, pareto.png, pareto/<n>.hjson, the run's summary.
- ``run``: :func:`run_optimize`, which ties them together.

Shape of a run::

    main process                           worker processes (spawn), K of them
    ------------                           -----------------------------------
    validate bounds, load candles once     load candles (memory-mapped .npy cache)
    open the study, read its history  -->  an in-memory study of that history
    spawn K workers                        loop: take a ticket from the shared counter,
    receive finished trials <------------      ask (a fresh sampler seeded by the ticket's
      forward them to the other workers        key), backtest, tell, send the trial
      write them in batches                    add the others' trials to the study
      show trials/s, feasible, best
    Pareto front, trials.csv, pareto.png, pareto/<n>.hjson

- **Constraints** go through Optuna's own constraint support (``Trial.set_constraint``),
  never as penalties: ``liquidated`` always, plus one value per ``optimize.constraints`` bound.
- **Exactly N trials per invocation**: N tickets; a failed trial (a bug in bounds) uses one.
- **Reproducible**: a one-worker run on a study with a given seed proposes the same trials.
"""

from __future__ import annotations

from backtest.optimize.candles import load_backtest_candles
from backtest.optimize.objectives import (
    LIQUIDATION_CONSTRAINT,
    constraint_values,
    is_feasible,
    objective_values,
    pareto_front,
)
from backtest.optimize.orphans import _OWNER_ATTR, fail_orphaned_trials
from backtest.optimize.output import OptimizeResult, ParetoEntry, WorkerStats
from backtest.optimize.run import run_optimize
from backtest.optimize.sampler import SAMPLERS
from backtest.optimize.space import ParamSpec, build_search_space, trial_config
from backtest.optimize.storage import (
    config_fingerprint,
    default_storage_url,
    default_study_name,
    mask_url,
)

__all__ = [
    "LIQUIDATION_CONSTRAINT",
    "SAMPLERS",
    "_OWNER_ATTR",
    "OptimizeResult",
    "ParamSpec",
    "ParetoEntry",
    "WorkerStats",
    "build_search_space",
    "config_fingerprint",
    "constraint_values",
    "default_storage_url",
    "default_study_name",
    "fail_orphaned_trials",
    "is_feasible",
    "load_backtest_candles",
    "mask_url",
    "objective_values",
    "pareto_front",
    "run_optimize",
    "trial_config",
]
