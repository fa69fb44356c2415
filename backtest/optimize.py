"""`gridbot optimize`: multi-objective, constrained search over bot parameters with Optuna.

Shape of a run (:func:`run_optimize`)::

    main process                          worker processes (spawn), K of them
    ------------                          -----------------------------------
    validate bounds, load candles once    load candles once from the .npy cache (memory maps:
    (fills the .npy cache), create or     the pages are shared, never copied per trial)
    load the study in the storage         loop: claim a ticket from the shared counter
    spawn K workers                              study.optimize(objective, n_trials=1)
    poll the storage -> progress bar             (trial numbers come from the storage)
    Pareto front, trials.csv, pareto.png, report trials run and peak RSS
    pareto/<n>.hjson

- **Objectives** are ``optimize.objectives`` (a multi-objective study when there are several).
- **Constraints** go through Optuna's own constraint support (``Trial.set_constraint``, stored
  as trial system attrs, read by the sampler and by ``Study.best_trials``), never as penalties
  in the objective values: ``liquidated`` always (feasible only if never liquidated), plus one
  value per ``optimize.constraints`` bound (``value - max`` and ``min - value``; <= 0 is
  feasible).
- **Sampler**: multivariate TPE (it learns from a few dozen trials, where NSGA-II's first
  generation of 50 would still be random), ``constant_liar`` for parallel workers. It is seeded
  per trial from ``(optimize.seed, trial number)``: trial numbers are unique in the storage, so
  no two trials -- across workers, resumed runs or machines sharing a PostgreSQL study -- draw
  from the same random stream (one seed per worker would make two machines with the same
  config propose the same startup points), and a one-worker run is reproducible.
- **Exactly N trials per invocation**: a counter shared by the workers hands out N tickets; a
  trial that fails (a bug in bounds) still uses its ticket.
- **Storage**: ``<results_dir>/optimize/<study>.db`` (SQLite) unless ``optimize.storage`` /
  ``--storage`` names one; ``load_if_exists`` makes a rerun resume the study. The study keeps a
  fingerprint of what makes its trials comparable (bot, backtest, bounds, objectives,
  constraints); joining a study with a different fingerprint is a :class:`ConfigError`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import queue
import random
import re
import resource
import socket
import sqlite3
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backtest.data import Candles, load_candles, parse_date_ms
from bot.config import (
    KNOWN_METRICS,
    Config,
    SideConfig,
    config_to_dict,
    parse_config,
    with_overrides,
)
from bot.errors import ConfigError, GridbotError

__all__ = [
    "LIQUIDATION_CONSTRAINT",
    "OptimizeResult",
    "ParamSpec",
    "ParetoEntry",
    "WorkerStats",
    "build_search_space",
    "config_fingerprint",
    "constraint_values",
    "default_storage_url",
    "default_study_name",
    "is_feasible",
    "load_backtest_candles",
    "mask_url",
    "objective_values",
    "pareto_front",
    "run_optimize",
    "trial_config",
]

LIQUIDATION_CONSTRAINT = "liquidated"
# A metric of None means "undefined"; for these the definition says which way it leans
# (backtest.metrics): loss_profit_ratio None = losses and no profit, the worst (infinite)
# ratio; bankruptcy_distance_min_pct None = never in a position, as safe as 100 (only a fall to
# zero bankrupts). Any other None is the worst value for an objective and a violated constraint.
_NONE_MEANS: dict[str, float] = {
    "loss_profit_ratio": math.inf,
    "bankruptcy_distance_min_pct": 100.0,
}
_VIOLATED = 1e9  # constraint value for an undefined metric: violated, finite for JSON storage
_FINGERPRINT_ATTR = "gridbot_fingerprint"
_POLL_SECONDS = 1.0


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: dotted key, Optuna distribution bounds, and its type."""

    key: str  # bot.long.<param>
    low: float
    high: float
    step: float | None
    is_int: bool

    def suggest(self, trial: Any) -> float | int:
        if self.is_int:
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1)
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step)


def _field_is_int(name: str) -> bool:
    return SideConfig.model_fields[name].annotation is int


def build_search_space(config: Config) -> list[ParamSpec]:
    """``optimize.bounds`` -> parameter specs, checked against the config's own ranges.

    Each bound's low and high are applied to the config (``with_overrides``) here, so a bound
    outside what the parameter allows fails now, naming the key, not in every trial.
    """
    bounds = config.optimize.bounds
    if not bounds:
        raise ConfigError("optimize.bounds: empty; name at least one bot.long.<param> to search")
    specs: list[ParamSpec] = []
    for key, b in bounds.items():
        where = f"optimize.bounds.{key}"
        _, side, name = key.split(".")  # the config validator already checked the shape
        if name not in SideConfig.model_fields or name == "enabled":
            raise ConfigError(f"{where}: unknown parameter {name!r}")
        low, high = float(b[0]), float(b[1])
        step = float(b[2]) if len(b) == 3 else None
        if low > high:
            raise ConfigError(f"{where}: low {low:g} must not be above high {high:g}")
        if not config.side(side).enabled:
            raise ConfigError(
                f"{where}: bot.{side}.enabled is false, so this parameter changes nothing; "
                f"enable the side or drop the bound"
            )
        is_int = _field_is_int(name)
        if is_int:
            for label, v in (("low", low), ("high", high), ("step", step)):
                if v is not None and v != int(v):
                    raise ConfigError(f"{where}: {name} is an integer; {label} {v:g} is not")
        for label, v in (("low", low), ("high", high)):
            try:
                with_overrides(config, {key: int(v) if is_int else v})
            except ConfigError as exc:
                detail = str(exc).split("\n", 1)[-1].strip()
                raise ConfigError(f"{where}: {label} {v:g} is not allowed: {detail}") from None
        specs.append(ParamSpec(key, low, high, step, is_int))
    return specs


def trial_config(config: Config, params: dict[str, float | int]) -> Config:
    """The config a trial ran: ``config`` with the trial's parameters set (validated)."""
    return with_overrides(config, dict(params))


# --------------------------------------------------------------------------- objectives and constraints


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    v = metrics.get(name)
    if v is None:
        return _NONE_MEANS.get(name)
    return float(v)


def objective_values(config: Config, metrics: dict[str, Any]) -> list[float]:
    """Objective values in ``optimize.objectives`` order; an undefined metric is the worst."""
    out = []
    for obj in config.optimize.objectives:
        v = _metric(metrics, obj.metric)
        if v is None or math.isnan(v):
            v = -math.inf if obj.direction == "maximize" else math.inf
        out.append(v)
    return out


def constraint_values(config: Config, metrics: dict[str, Any]) -> dict[str, float]:
    """Optuna constraint values by name (<= 0: satisfied): never liquidated, then each bound."""
    out = {LIQUIDATION_CONSTRAINT: 1.0 if metrics.get("liquidated") else 0.0}
    for name, limit in config.optimize.constraints.items():
        v = _metric(metrics, name)
        for side, bound in (("min", limit.min), ("max", limit.max)):
            if bound is None:
                continue
            if v is None or math.isnan(v):
                c = _VIOLATED
            else:
                c = (bound - v) if side == "min" else (v - bound)
                c = min(max(c, -_VIOLATED), _VIOLATED)  # inf -> finite, for JSON storage
            out[f"{name}.{side}"] = float(c)
    return out


def is_feasible(constraints: dict[str, float]) -> bool:
    return bool(constraints) and all(c <= 0.0 for c in constraints.values())


def pareto_front(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Indices of the non-dominated rows of ``values`` (n x m) under ``directions``."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(directions))
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    v = v * sign  # everything minimized
    keep = []
    for i in range(len(v)):
        le = np.all(v <= v[i], axis=1)
        lt = np.any(v < v[i], axis=1)
        if not np.any(le & lt):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


# --------------------------------------------------------------------------- names, storage


def config_fingerprint(config: Config) -> str:
    """Hash of what makes trials comparable: bot, backtest (not results_dir), bounds,
    objectives and constraints. Run-time knobs (trials, workers, seed, storage) are left out."""
    d = config_to_dict(config)
    d["backtest"].pop("results_dir", None)
    opt = d["optimize"]
    part = {
        "bot": d["bot"],
        "backtest": d["backtest"],
        "bounds": opt["bounds"],
        "objectives": opt["objectives"],
        "constraints": opt["constraints"],
    }
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()


def default_study_name(config: Config, config_path: str | Path | None) -> str:
    stem = Path(config_path).stem if config_path else "config"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "config"
    return f"{stem}-{config_fingerprint(config)[:10]}"


def default_storage_url(results_dir: str | Path, study: str) -> str:
    path = (Path(results_dir) / "optimize" / f"{study}.db").resolve()
    return f"sqlite:///{path}"


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (safe to print or store)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: mask user:password@ by hand
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def _sqlite_connect(path: str) -> sqlite3.Connection:
    """A SQLite connection for the study file. An Optuna trial makes ~20 small commits; with
    the default rollback journal each one syncs the disk (~6 ms here, most of a trial's time).
    WAL with synchronous=NORMAL syncs at checkpoints only and stays consistent on a crash
    (the last commits may be lost on power loss), and readers (the progress poll) never block
    the writers. Writers wait for the lock rather than fail with "database is locked"."""
    con = sqlite3.connect(path, timeout=120.0, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _with_available_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) in SQLAlchemy 2.1 and psycopg2 in 2.0: pick the
    driver that is installed, so either works with a plain URL."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://") :]
    return url


def _open_storage(url: str) -> Any:
    """An Optuna RDB storage. Several processes may create the schema of an empty database at
    once (two machines joining a fresh PostgreSQL study); the loser's error is retried."""
    import optuna
    import sqlalchemy.exc

    url = _with_available_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        kwargs["engine_kwargs"] = {
            "creator": functools.partial(_sqlite_connect, url[len("sqlite:///") :])
        }
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            last = exc
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise GridbotError(f"cannot open optimizer storage {mask_url(url)}: {last}") from None


def _quiet_optuna(verbose: bool) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --------------------------------------------------------------------------- candles


def load_backtest_candles(config: Config, cache_dir: str | Path | None = None) -> Candles:
    """Candles of ``config.backtest``: data, symbols, [start_date, end_date) in UTC."""
    bt = config.backtest
    return load_candles(
        bt.data,
        bt.symbols,
        start_ms=parse_date_ms(bt.start_date) if bt.start_date else None,
        end_ms=parse_date_ms(bt.end_date) if bt.end_date else None,
        max_gap_minutes=bt.max_gap_minutes,
        cache_dir=cache_dir,
    )


def _cache_dir(config: Config) -> Path:
    return Path(config.backtest.results_dir) / "cache"  # the one `gridbot backtest` fills too


# --------------------------------------------------------------------------- sampler


def _trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _make_sampler(seed: int | None) -> Any:
    """TPE, re-seeded per trial from (seed, trial number); see the module doc."""
    import optuna

    def tpe(s: int | None) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=s)

    class PerTrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._inner = tpe(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            # A fresh TPE per trial (it keeps no state but its RNG; history is in the storage).
            self._inner = tpe(None if seed is None else _trial_seed(seed, trial.number))
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(
            self, study: Any, trial: Any, param_name: str, param_distribution: Any
        ) -> Any:
            return self._inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._inner.reseed_rng()

    return PerTrialSeededTPE()


# --------------------------------------------------------------------------- worker


def _make_objective(
    config: Config, space: list[ParamSpec], candles: Candles, worker: int
) -> Callable[[Any], list[float]]:
    from backtest.metrics import compute_metrics
    from backtest.runner import run_backtest

    def objective(trial: Any) -> list[float]:
        # First: who runs this trial, so a resumed study can tell a dead run's RUNNING trials.
        trial.set_user_attr(_OWNER_ATTR, _owner())
        params = {p.key: p.suggest(trial) for p in space}
        trial.set_user_attr("worker", worker)
        try:
            cfg = trial_config(config, params)
        except ConfigError as exc:  # a bug in the bounds: fail this trial, saying why
            trial.set_user_attr("error", str(exc))
            raise
        metrics = compute_metrics(run_backtest(cfg, candles))
        trial.set_user_attr("metrics", metrics)
        for name, value in constraint_values(config, metrics).items():
            trial.set_constraint(name, value)
        return objective_values(config, metrics)

    return objective


_OWNER_ATTR = "gridbot_owner"
_PR_SET_PDEATHSIG = 1


_WORKER_ATTR = "gridbot_worker"


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _worker_key() -> str:
    return f"{_WORKER_ATTR}:{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _die_with_parent(parent_pid: int, grace_s: float = 10.0, poll_s: float = 0.5) -> None:
    """Make this worker end when the process that spawned it dies, even by kill -9.

    On Linux, PR_SET_PDEATHSIG has the kernel send SIGKILL the moment the parent dies: the worker
    ends at once, wherever it is (also deep in the numba engine); the trial it was running stays
    RUNNING and the next run on the study marks it FAIL (:func:`fail_orphaned_trials`).
    Elsewhere, a watchdog thread polls the parent's pid: the worker takes no new ticket, and
    ends after ``grace_s`` at most."""
    import signal
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        time.sleep(grace_s)  # the trial in hand may finish; the main loop takes no new one
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # died before the prctl above took effect
        os._exit(1)


def fail_orphaned_trials(study: Any) -> list[int]:
    """Mark FAIL the trials left RUNNING by a run that is gone (its worker's process no longer
    exists on this host); returns their numbers. Trials of live processes and of other hosts
    (a shared PostgreSQL study) are left alone."""
    import optuna

    host = socket.gethostname()
    prefix = f"{_WORKER_ATTR}:{host}:"
    workers = [int(k[len(prefix) :]) for k in study.user_attrs if k.startswith(prefix)]
    any_worker_alive = any(_pid_alive(pid) for pid in workers)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get(_OWNER_ATTR)
        if not isinstance(owner, dict):
            # no owner recorded yet: orphaned when none of this host's workers is alive (and
            # some were: a study that never had one of ours is not ours to judge)
            dead = bool(workers) and not any_worker_alive
        elif owner.get("host") != host:
            continue
        else:
            pid = owner.get("pid")
            dead = isinstance(pid, int) and not _pid_alive(pid)
        if dead:
            try:
                study._storage.set_trial_user_attr(
                    t._trial_id, "error", "its run ended without finishing it (process died)"
                )
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                failed.append(t.number)
            except Exception:  # another process failed or finished it at the same moment
                continue
    return failed


def _worker_main(
    spec: dict[str, Any],
    tickets: Any,
    done: Any,
    messages: Any,
    index: int,
    parent_pid: int | None = None,
) -> None:
    """Entry point of one worker process (spawned; everything it needs comes in ``spec``)."""
    trials_run = 0
    try:
        if parent_pid is not None:
            _die_with_parent(parent_pid)
        _quiet_optuna(spec["verbose"])
        import optuna

        config = parse_config(spec["config"], "optimize worker")
        space = build_search_space(config)
        # The cache is warm (the main process filled it): this maps the .npy files.
        candles = load_backtest_candles(config, spec["cache_dir"])
        storage = _open_storage(spec["storage"])
        study = optuna.load_study(
            study_name=spec["study"], storage=storage, sampler=_make_sampler(spec["seed"])
        )
        objective = _make_objective(config, space, candles, index)
        # Known before our first trial exists: a RUNNING trial that has no owner yet (killed
        # between its creation and the owner record) belongs to one of the study's workers
        study.set_user_attr(_worker_key(), True)
        while True:
            if parent_pid is not None and os.getppid() != parent_pid:
                break  # the run that spawned us is gone: take no more tickets
            with tickets.get_lock():
                if tickets.value <= 0:
                    break
                tickets.value -= 1
            study.optimize(objective, n_trials=1, catch=(GridbotError,))
            trials_run += 1
            with done.get_lock():
                done.value += 1
    except KeyboardInterrupt:
        pass  # the interrupted trial is marked FAIL by Optuna; the main process reports
    except BaseException as exc:
        detail = str(exc) if isinstance(exc, GridbotError) else traceback.format_exc()
        if parent_pid is None or os.getppid() == parent_pid:
            messages.put(("error", index, detail))
    finally:
        # ru_maxrss is in KiB on Linux: this process's resident high-water mark.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if parent_pid is None or os.getppid() == parent_pid:  # nobody reads an orphan's queue
            messages.put(("stats", index, {"trials": trials_run, "peak_rss_bytes": rss}))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ParetoEntry:
    number: int
    params: dict[str, float | int]
    metrics: dict[str, Any]
    constraints: dict[str, float]
    config_path: str


@dataclass(frozen=True)
class WorkerStats:
    index: int
    trials: int
    peak_rss_bytes: int


@dataclass
class OptimizeResult:
    study: str
    storage: str  # masked
    results_dir: str  # the study's output folder
    n_trials: int  # completed trials in the study
    n_trials_total: int  # trials in the study, any state
    n_feasible: int
    n_failed: int
    n_run: int  # trials this invocation ran
    elapsed_seconds: float
    pareto: list[ParetoEntry]
    workers: list[WorkerStats] = field(default_factory=list)
    objectives: list[dict[str, str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "storage": self.storage,
            "results_dir": self.results_dir,
            "n_trials": self.n_trials,
            "n_trials_total": self.n_trials_total,
            "n_feasible": self.n_feasible,
            "n_failed": self.n_failed,
            "n_run": self.n_run,
            "elapsed_seconds": self.elapsed_seconds,
            "trials_per_second": self.n_run / self.elapsed_seconds
            if self.elapsed_seconds
            else None,
            "objectives": self.objectives,
            "pareto": [
                {
                    "number": p.number,
                    "params": p.params,
                    "metrics": p.metrics,
                    "constraints": p.constraints,
                    "config_path": p.config_path,
                }
                for p in self.pareto
            ],
            "workers": [
                {"index": w.index, "trials": w.trials, "peak_rss_bytes": w.peak_rss_bytes}
                for w in self.workers
            ],
            "files": self.files,
        }


def _trial_row(t: Any) -> tuple[dict[str, Any], dict[str, float], bool]:
    metrics = t.user_attrs.get("metrics") or {}
    cons = dict(t.constraints)
    feasible = t.state.name == "COMPLETE" and is_feasible(cons)
    return metrics, cons, feasible


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename: processes sharing a study may write the same files
    at once (last one wins, none is torn)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_trials_csv(
    path: Path, trials: list[Any], space: list[ParamSpec], con_keys: list[str]
) -> None:
    metric_keys = list(KNOWN_METRICS) + ["liquidation_time"]
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(
        ["number", "state", "worker", "duration_seconds"]
        + [p.key for p in space]
        + metric_keys
        + [f"constraint.{k}" for k in con_keys]
        + ["feasible", "error"]
    )
    for t in trials:
        metrics, cons, feasible = _trial_row(t)
        dur = t.duration.total_seconds() if t.duration is not None else ""
        w.writerow(
            [t.number, t.state.name, t.user_attrs.get("worker", ""), dur]
            + [t.params.get(p.key, "") for p in space]
            + ["" if metrics.get(k) is None else metrics[k] for k in metric_keys]
            + [cons.get(k, "") for k in con_keys]
            + [feasible, t.user_attrs.get("error", "")]
        )
    _atomic_write_text(path, f.getvalue())


def _plot(path: Path, trials: list[Any], pareto_numbers: set[int], config: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = config.optimize.objectives
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]

    def xy(ts: list[Any]) -> tuple[list[float], list[float]]:
        if len(objs) >= 2:
            return [t.values[0] for t in ts], [t.values[1] for t in ts]
        return [float(t.number) for t in ts], [t.values[0] for t in ts]

    feasible = [t for t in done if _trial_row(t)[2]]
    infeasible = [t for t in done if not _trial_row(t)[2]]
    front = sorted(
        (t for t in done if t.number in pareto_numbers),
        key=lambda t: xy([t])[0][0],
    )
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    ax.scatter(*xy(feasible), s=14, c="0.6", label=f"feasible ({len(feasible)})")
    ax.scatter(
        *xy(infeasible), s=18, c="tab:red", marker="x", label=f"infeasible ({len(infeasible)})"
    )
    if front:
        ax.plot(*xy(front), "-o", c="tab:blue", ms=6, label=f"Pareto front ({len(front)})")
        for t in front:
            (x,), (y,) = xy([t])
            ax.annotate(
                str(t.number), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    if len(objs) >= 2:
        ax.set_xlabel(f"{objs[0].metric} ({objs[0].direction})")
        ax.set_ylabel(f"{objs[1].metric} ({objs[1].direction})")
    else:
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{objs[0].metric} ({objs[0].direction})")
    ax.set_title(f"{len(done)} completed trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def _write_pareto_config(path: Path, cfg: Config, study: str, number: int, metrics: dict) -> None:
    import hjson

    objs = ", ".join(f"{o.metric}={metrics.get(o.metric)!r}" for o in cfg.optimize.objectives)
    header = (
        f"# gridbot optimize: study {study}, trial {number} (Pareto front)\n"
        f"# {objs}\n"
        f"# run it: gridbot backtest {path.name}\n"
    )
    data = config_to_dict(cfg)
    storage = data["optimize"].get("storage")
    if storage and mask_url(storage) != storage:  # never write a password into result files
        data["optimize"]["storage"] = None
    _atomic_write_text(path, header + hjson.dumps(data, indent=2) + "\n")


def _collect(
    study: Any,
    config: Config,
    space: list[ParamSpec],
    out_dir: Path,
    study_name: str,
) -> tuple[list[ParetoEntry], list[Any], dict[str, str]]:
    trials = study.get_trials(deepcopy=False)
    con_keys = [LIQUIDATION_CONSTRAINT] + [
        f"{name}.{side}"
        for name, lim in config.optimize.constraints.items()
        for side, b in (("min", lim.min), ("max", lim.max))
        if b is not None
    ]
    feasible = [t for t in trials if t.values is not None and _trial_row(t)[2]]
    dirs = [o.direction for o in config.optimize.objectives]
    idx = pareto_front(np.array([t.values for t in feasible]), dirs) if feasible else []
    front = sorted((feasible[i] for i in idx), key=lambda t: t.number)

    out_dir.mkdir(parents=True, exist_ok=True)
    pdir = out_dir / "pareto"
    pdir.mkdir(exist_ok=True)
    for old in pdir.glob("*.hjson"):  # the front moves as a study grows: only current members
        old.unlink(missing_ok=True)
    entries = []
    for t in front:
        cfg = trial_config(config, t.params)
        path = pdir / f"{t.number}.hjson"
        _write_pareto_config(path, cfg, study_name, t.number, t.user_attrs["metrics"])
        entries.append(
            ParetoEntry(
                number=t.number,
                params=dict(t.params),
                metrics=t.user_attrs["metrics"],
                constraints=dict(t.constraints),
                config_path=str(path),
            )
        )
    files = {"trials_csv": str(out_dir / "trials.csv"), "pareto_png": str(out_dir / "pareto.png")}
    _write_trials_csv(out_dir / "trials.csv", trials, space, con_keys)
    _plot(out_dir / "pareto.png", trials, {t.number for t in front}, config)
    files["pareto_dir"] = str(pdir)
    return entries, trials, files


# --------------------------------------------------------------------------- progress


class _Progress:
    """Rich progress on stderr: this run's trials, the study's feasible count and best."""

    def __init__(self, enabled: bool, total: int, config: Config, console: Any) -> None:
        self.enabled = enabled
        self.config = config
        self._last_poll = 0.0
        self._poll_every = _POLL_SECONDS
        self._status = "starting workers"
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]optimize"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("optimize", total=total, status=self._status)
        self.progress.start()

    def update(self, done: int, study: Any, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self._last_poll >= self._poll_every:
            t0 = time.monotonic()
            self._status = self._best_text(study)
            # Polling a big study costs; never spend more than ~10% of the time on it.
            self._poll_every = max(_POLL_SECONDS, 10 * (time.monotonic() - t0))
            self._last_poll = now
        self.progress.update(self.task, completed=done, status=self._status)

    def _best_text(self, study: Any) -> str:
        import optuna

        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        feas = [t for t in trials if is_feasible(dict(t.constraints))]
        obj = self.config.optimize.objectives[0]
        text = f"study {len(trials)} done, {len(feas)} feasible"
        if feas:
            pick = max if obj.direction == "maximize" else min
            best = pick(feas, key=lambda t: t.values[0])
            text += f", best {obj.metric} {best.values[0]:.6g} (#{best.number})"
        return text

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()


# --------------------------------------------------------------------------- main entry


def run_optimize(  # noqa: C901 -- being split into the optimizer package (another branch)
    config: Config,
    *,
    config_path: str | Path | None = None,
    n_trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    data_path: str | Path | None = None,
    progress: bool = True,
    verbose: bool = False,
    console: Any = None,
) -> OptimizeResult:
    """Run ``n_trials`` trials (default ``optimize.n_trials``) of the study on ``workers``
    processes (default ``optimize.workers``, else all cores), then write the results.

    ``data_path`` is where ``backtest.data`` was found (the CLI resolves a relative path as
    `gridbot backtest` does); default: ``backtest.data`` from the current directory. Trials and
    the Pareto configs use it as an absolute path, so those configs run from any directory;
    the study's fingerprint uses ``backtest.data`` as written, so machines with different
    checkouts can share a study.

    Raises ConfigError for bad bounds or settings, DataError for bad candles, GridbotError if a
    worker fails.
    """
    import optuna

    _quiet_optuna(verbose)
    opt = config.optimize
    space = build_search_space(config)
    n = int(n_trials if n_trials is not None else opt.n_trials)
    if n < 0:
        raise ConfigError(f"--trials {n}: must be 0 or more")
    k = int(workers if workers is not None else (opt.workers or os.cpu_count() or 1))
    if k < 1:
        raise ConfigError(f"--workers {k}: must be at least 1")
    k = max(1, min(k, n)) if n > 0 else 0
    name = study_name or opt.study_name or default_study_name(config, config_path)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", name):
        raise ConfigError(f"study name {name!r}: use letters, digits, '_', '.', '-' only")
    results_root = Path(config.backtest.results_dir) / "optimize"
    url = storage or opt.storage or default_storage_url(config.backtest.results_dir, name)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("sqlite"):
        raise ConfigError(
            f"storage {url!r}: an in-memory SQLite study cannot be shared with worker "
            f"processes; use sqlite:///path/to/file.db"
        )
    out_dir = results_root / name
    fp = config_fingerprint(config)
    resolved = Path(data_path if data_path is not None else config.backtest.data).expanduser()
    config = with_overrides(config, {"backtest.data": str(resolved.absolute())})

    # Load once here: bad data fails before any process starts, and the .npy cache is filled
    # so that every worker maps the same files.
    cache_dir = _cache_dir(config)
    load_backtest_candles(config, cache_dir)

    store = _open_storage(url)
    directions = [o.direction for o in opt.objectives]
    try:
        study = optuna.create_study(
            study_name=name, storage=store, directions=directions, load_if_exists=True
        )
    except ValueError as exc:  # e.g. directions differ from the stored study's
        raise ConfigError(f"study {name!r} in {mask_url(url)}: {exc}") from None
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != directions:
        raise ConfigError(
            f"study {name!r} in {mask_url(url)} has directions {stored_dirs}, the config "
            f"{directions}; use another --study"
        )
    have = study.user_attrs.get(_FINGERPRINT_ATTR)
    if have is None:
        try:
            study.set_user_attr(_FINGERPRINT_ATTR, fp)
        except Exception:  # another process set it at the same moment: compare with theirs
            have = optuna.load_study(study_name=name, storage=store).user_attrs.get(
                _FINGERPRINT_ATTR
            )
    if have is not None and have != fp:
        raise ConfigError(
            f"study {name!r} in {mask_url(url)} was made with a different config (bot, "
            f"backtest data/dates, bounds, objectives or constraints differ), so its trials "
            f"are not comparable with this one's; use another --study"
        )

    ctx = mp.get_context("spawn")
    tickets = ctx.Value("q", n)
    done = ctx.Value("q", 0)
    messages = ctx.Queue()
    spec = {
        "config": config_to_dict(config),
        "study": name,
        "storage": url,
        "seed": opt.seed,
        "cache_dir": str(cache_dir),
        "verbose": verbose,
    }
    if console is None and progress:
        from rich.console import Console

        console = Console(stderr=True)
    orphans = fail_orphaned_trials(study)  # a killed earlier run's trials stay RUNNING
    if orphans and console is not None:
        console.print(f"marked {len(orphans)} trial(s) left RUNNING by a dead run as FAIL")
    bar = _Progress(progress and n > 0, n, config, console)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(spec, tickets, done, messages, i, os.getpid()),
            name=f"optimize-{i}",
        )
        for i in range(k)
    ]
    errors: list[str] = []
    stats: dict[int, WorkerStats] = {}

    def drain(block_seconds: float = 0.0) -> None:
        try:
            while True:
                kind, idx, payload = messages.get(timeout=block_seconds)
                if kind == "error":
                    errors.append(f"worker {idx}: {payload}")
                else:
                    stats[idx] = WorkerStats(idx, payload["trials"], payload["peak_rss_bytes"])
                block_seconds = 0.0 if block_seconds == 0.0 else 0.01
        except queue.Empty:
            pass

    t0 = time.monotonic()
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            drain(0.2)
            bar.update(done.value, study)
        for p in procs:
            p.join()
        # Each worker sends its stats last; collect what is still in flight.
        deadline = time.monotonic() + 5.0
        while len(stats) < len(procs) and time.monotonic() < deadline:
            drain(0.1)
        drain()
        bar.update(done.value, study, force=True)
    except BaseException:
        with tickets.get_lock():
            tickets.value = 0  # no new trials; running ones finish (or were interrupted)
        for p in procs:
            if p.pid is None:
                continue  # never started
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    finally:
        bar.stop()
    elapsed = time.monotonic() - t0
    for p in procs:
        if p.exitcode not in (0, None) and not any(
            e.startswith(f"worker {procs.index(p)}:") for e in errors
        ):
            errors.append(f"worker {procs.index(p)}: exited with code {p.exitcode}")
    if errors:
        raise GridbotError("optimizer worker failed:\n" + "\n".join(errors))

    front, trials, files = _collect(study, config, space, out_dir, name)
    states = [t.state.name for t in trials]
    return OptimizeResult(
        study=name,
        storage=mask_url(url),
        results_dir=str(out_dir),
        n_trials=states.count("COMPLETE"),
        n_trials_total=len(trials),
        n_feasible=sum(1 for t in trials if t.values is not None and _trial_row(t)[2]),
        n_failed=states.count("FAIL"),
        n_run=int(done.value),
        elapsed_seconds=elapsed,
        pareto=front,
        workers=[stats[i] for i in sorted(stats)],
        objectives=[{"metric": o.metric, "direction": o.direction} for o in opt.objectives],
        files=files,
    )
