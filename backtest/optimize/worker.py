"""One worker process: its own in-memory study and sampler, a backtest per trial, results to
the main process (which alone writes the storage) and the other workers' results in.

Why in memory: Optuna on a shared RDB study makes ~20 commits per trial and re-reads the
study on every suggestion; with several workers they also wait on each other's locks. Here a
trial touches no database; the main process batches the writes.
"""

from __future__ import annotations

import os
import queue
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from backtest.data import Candles
from backtest.optimize.candles import load_backtest_candles
from backtest.optimize.objectives import constraint_values, objective_values
from backtest.optimize.orphans import die_with_parent
from backtest.optimize.sampler import (
    ELITE_TRIALS,
    REBUILD_FACTOR,
    RECENT_TRIALS,
    best_trials,
    make_sampler,
    window_of,
)
from backtest.optimize.space import ParamSpec, build_search_space, trial_config
from backtest.optimize.storage import Direction, quiet_optuna
from bot.config import Config, parse_config
from bot.errors import GridbotError

__all__ = ["SamplerStudy", "make_trial_runner", "worker_main"]

TrialRunner = Callable[[Any], "list[float] | None"]


def make_trial_runner(
    config: Config, space: list[ParamSpec], candles: Candles, worker: int, clock: dict
) -> TrialRunner:
    """trial -> objective values (None: the trial failed, its user attr "error" says why).
    Adds the engine's own seconds to ``clock["engine_seconds"]``."""
    from backtest.engine import run_engine
    from backtest.metrics import compute_metrics
    from backtest.runner import BacktestRun, build_inputs

    def run(trial: Any) -> list[float] | None:
        params = {p.key: p.suggest(trial) for p in space}
        trial.set_user_attr("worker", worker)
        try:
            cfg = trial_config(config, params)
            inputs = build_inputs(cfg, candles)
            t0 = time.perf_counter()
            output = run_engine(inputs)
            clock["engine_seconds"] += time.perf_counter() - t0
            metrics = compute_metrics(BacktestRun(cfg, candles, inputs, output))
        except GridbotError as exc:  # e.g. a bug in the bounds: fail this trial, saying why
            trial.set_user_attr("error", str(exc))
            return None
        trial.set_user_attr("metrics", metrics)
        for name, value in constraint_values(config, metrics).items():
            trial.set_constraint(name, value)
        return objective_values(config, metrics)

    return run


class SamplerStudy:
    """An in-memory study holding what the sampler should see of the whole history (every
    finished trial, this worker's and the others'): rebuilt from the elite and the latest
    trials when it has grown to REBUILD_FACTOR times that, so a suggestion's cost stays flat."""

    def __init__(self, directions: Sequence[Direction], history: Sequence[Any]) -> None:
        self.directions = list(directions)
        self.history: list[Any] = list(history)
        self.elite = best_trials(self.history[:-RECENT_TRIALS], self.directions)
        self._elite_upto = max(0, len(self.history) - RECENT_TRIALS)  # history[:this] is ranked
        self._rebuild()

    def _rebuild(self) -> None:
        import optuna

        # The elite from the last elite and what has left the recent part since (see
        # sampler.best_trials): the cost stays flat however long the history.
        upto = max(self._elite_upto, len(self.history) - RECENT_TRIALS)
        fresh = self.history[self._elite_upto : upto]
        self.elite = best_trials(self.elite + fresh, self.directions)
        self._elite_upto = upto
        window = window_of(self.history[upto:], self.elite)
        self.study = optuna.create_study(directions=self.directions)
        self.study.add_trials(window)
        self._held = len(window)

    def _grew(self, n: int) -> None:
        self._held += n
        if self._held > REBUILD_FACTOR * (RECENT_TRIALS + ELITE_TRIALS):
            self._rebuild()

    def absorb(self, trials: Sequence[Any]) -> None:
        """Finished trials of other workers."""
        for t in trials:
            self.history.append(t)
            self.study.add_trial(t)
        self._grew(len(trials))

    def run(self, sampler: Any, objective: TrialRunner) -> Any:
        """Ask with ``sampler``, run, tell: the finished trial (a FrozenTrial)."""
        import optuna

        self.study.sampler = sampler
        trial = self.study.ask()
        values = objective(trial)
        if values is None:
            frozen = self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            frozen = self.study.tell(trial, values)
        self.history.append(frozen)
        self._grew(1)
        return frozen


def _drain(inbox: Any) -> list[Any]:
    out = []
    try:
        while True:
            out.append(inbox.get_nowait())
    except queue.Empty:
        return out


def _claim(tickets: Any, total: int) -> int | None:
    """The next ticket of this run (0, 1, ...), or None when all are handed out."""
    with tickets.get_lock():
        if tickets.value <= 0:
            return None
        tickets.value -= 1
        return total - tickets.value - 1


def worker_main(
    spec: dict[str, Any],
    tickets: Any,
    results: Any,
    inbox: Any,
    index: int,
    parent_pid: int | None = None,
) -> None:
    """Entry point of one worker process (spawned; everything it needs comes in ``spec``)."""
    clock = {"engine_seconds": 0.0, "busy_seconds": 0.0}
    timings: list[tuple[int, float, float]] = []  # (ticket, trial seconds, engine seconds)
    trials_run = 0
    try:
        if parent_pid is not None:
            die_with_parent(parent_pid)
        quiet_optuna(spec["verbose"])
        config = parse_config(spec["config"], "optimize worker")
        space = build_search_space(config)
        # The cache is warm (the main process filled it): this maps the .npy files.
        candles = load_backtest_candles(config, spec["cache_dir"])
        objective = make_trial_runner(config, space, candles, index, clock)
        book = SamplerStudy([o.direction for o in config.optimize.objectives], spec["history"])
        distributions = {p.key: p.distribution() for p in space}
        while parent_pid is None or os.getppid() == parent_pid:  # else: our run is gone
            t0, e0 = time.perf_counter(), clock["engine_seconds"]
            book.absorb(_drain(inbox))
            ticket = _claim(tickets, spec["trials"])
            if ticket is None:
                break
            key = spec["key_base"] + ticket
            sampler = make_sampler(spec["sampler"], spec["seed"], key, distributions)
            frozen = book.run(sampler, objective)
            busy = time.perf_counter() - t0
            clock["busy_seconds"] += busy
            timings.append((ticket, busy, clock["engine_seconds"] - e0))
            results.put(("trial", index, (ticket, frozen)))
            trials_run += 1
    except KeyboardInterrupt:
        pass  # the main process reports; the trial in hand is not stored
    except BaseException as exc:
        detail = str(exc) if isinstance(exc, GridbotError) else traceback.format_exc()
        if parent_pid is None or os.getppid() == parent_pid:
            results.put(("error", index, detail))
    finally:
        # ru_maxrss is in KiB on Linux: this process's resident high-water mark.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        rss = usage.ru_maxrss * 1024
        clock["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        if parent_pid is None or os.getppid() == parent_pid:  # nobody reads an orphan's queue
            stats = {"trials": trials_run, "peak_rss_bytes": rss, "timings": timings, **clock}
            results.put(("stats", index, stats))
