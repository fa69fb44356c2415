"""`run_optimize`: settle the run's settings, open the study, drive the workers, write out.

The main process alone writes the storage: each worker sends its finished trials here; they
are forwarded to the other workers (so every sampler learns from every trial) and written to
the study in batches, one transaction each (every WRITE_EVERY_SECONDS or WRITE_BATCH trials).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import queue
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backtest.optimize.candles import cache_dir, load_backtest_candles
from backtest.optimize.orphans import fail_orphaned_trials
from backtest.optimize.output import OptimizeResult, WorkerStats, collect, trial_row
from backtest.optimize.progress import Progress
from backtest.optimize.sampler import SAMPLERS
from backtest.optimize.space import build_search_space
from backtest.optimize.storage import (
    config_fingerprint,
    default_storage_url,
    default_study_name,
    mask_url,
    open_storage,
    open_study,
    quiet_optuna,
    write_trials,
)
from backtest.optimize.worker import worker_main
from bot.config import Config, config_to_dict, with_overrides
from bot.errors import ConfigError, GridbotError

__all__ = ["run_optimize"]

WRITE_EVERY_SECONDS = 0.5
WRITE_BATCH = 200


@dataclass(frozen=True)
class _Settings:
    n: int  # trials to run now
    k: int  # worker processes
    name: str
    url: str
    sampler: str


def _settings(
    config: Config,
    config_path: str | Path | None,
    n_trials: int | None,
    workers: int | None,
    storage: str | None,
    study_name: str | None,
    sampler: str | None,
) -> _Settings:
    opt = config.optimize
    n = int(n_trials if n_trials is not None else opt.n_trials)
    if n < 0:
        raise ConfigError(f"--trials {n}: must be 0 or more")
    k = int(workers if workers is not None else (opt.workers or os.cpu_count() or 1))
    if k < 1:
        raise ConfigError(f"--workers {k}: must be at least 1")
    kind = sampler or opt.sampler
    if kind not in SAMPLERS:
        raise ConfigError(f"--sampler {kind!r}: use one of {', '.join(SAMPLERS)}")
    name = study_name or opt.study_name or default_study_name(config, config_path)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", name):
        raise ConfigError(f"study name {name!r}: use letters, digits, '_', '.', '-' only")
    url = storage or opt.storage or default_storage_url(config.backtest.results_dir, name)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("sqlite"):
        raise ConfigError(
            f"storage {url!r}: an in-memory SQLite study cannot be shared with worker "
            f"processes; use sqlite:///path/to/file.db"
        )
    return _Settings(n, max(1, min(k, n)) if n > 0 else 0, name, url, kind)


def _key_base(url: str, n_before: int) -> int:
    """Trial keys (the samplers' seeds) of this run start here. A local SQLite study: the
    study's trial count, so a one-worker study is reproducible and a resumed run draws new
    points. A server shared by several machines: also this run's host and pid, so two
    machines that join at the same moment do not propose the same points."""
    if url.startswith("sqlite"):
        return n_before
    salt = hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).digest()
    return n_before + (int.from_bytes(salt[:6], "big") << 32)


class _Driver:
    """The main process's loop: results in, forwarded, written, shown."""

    def __init__(self, rdb: Any, study_id: int, n_before: int, k: int, ctx: Any) -> None:
        self.rdb, self.study_id, self.n_written = rdb, study_id, n_before
        self.results = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(k)]
        for inbox in self.inboxes:  # trials a worker never took in must not block our exit
            inbox.cancel_join_thread()
        self.pending: list[Any] = []
        self.last_write = time.monotonic()
        self.done = 0
        self.errors: list[str] = []
        self.stats: dict[int, WorkerStats] = {}

    def flush(self) -> None:
        write_trials(self.rdb, self.study_id, self.pending)
        self.n_written += len(self.pending)
        self.pending = []
        self.last_write = time.monotonic()

    def on_trial(self, index: int, frozen: Any, bar: Progress) -> None:
        frozen.number = self.n_written + len(self.pending)  # its number in the study
        self.pending.append(frozen)
        self.done += 1
        bar.add([frozen])
        for j, inbox in enumerate(self.inboxes):
            if j != index:
                inbox.put(frozen)

    def drain(self, bar: Progress, block_seconds: float) -> None:
        try:
            while True:
                kind, idx, payload = self.results.get(timeout=block_seconds)
                block_seconds = 0.0 if block_seconds == 0.0 else 0.01
                if kind == "trial":
                    self.on_trial(idx, payload[1], bar)
                elif kind == "error":
                    self.errors.append(f"worker {idx}: {payload}")
                else:
                    self.stats[idx] = WorkerStats(idx, **payload)
        except queue.Empty:
            pass
        due = time.monotonic() - self.last_write >= WRITE_EVERY_SECONDS
        if self.pending and (due or len(self.pending) >= WRITE_BATCH):
            self.flush()

    def run(self, procs: list[Any], bar: Progress, tickets: Any) -> None:
        try:
            for p in procs:
                p.start()
            while any(p.is_alive() for p in procs):
                self.drain(bar, 0.2)
                bar.update(self.done)
            for p in procs:
                p.join()
            # Each worker sends its stats last; collect what is still in flight.
            deadline = time.monotonic() + 5.0
            while len(self.stats) < len(procs) and time.monotonic() < deadline:
                self.drain(bar, 0.1)
            self.drain(bar, 0.0)
            bar.update(self.done)
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
            try:
                self.drain(bar, 0.0)
            finally:
                self.flush()  # what finished is kept, also on Ctrl-C
                bar.stop()
        for i, p in enumerate(procs):
            if p.exitcode not in (0, None) and not any(
                e.startswith(f"worker {i}:") for e in self.errors
            ):
                self.errors.append(f"worker {i}: exited with code {p.exitcode}")
        if self.errors:
            raise GridbotError("optimizer worker failed:\n" + "\n".join(self.errors))


def run_optimize(
    config: Config,
    *,
    config_path: str | Path | None = None,
    n_trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str | None = None,
    data_path: str | Path | None = None,
    progress: bool = True,
    verbose: bool = False,
    console: Any = None,
) -> OptimizeResult:
    """Run ``n_trials`` trials (default ``optimize.n_trials``) of the study on ``workers``
    processes (default ``optimize.workers``, else all cores) with ``sampler`` (default
    ``optimize.sampler``), then write the results.

    ``data_path`` is where ``backtest.data`` was found (the CLI resolves a relative path as
    `gridbot backtest` does); default: ``backtest.data`` from the current directory. Trials and
    the Pareto configs use it as an absolute path, so those configs run from any directory;
    the study's fingerprint uses ``backtest.data`` as written, so machines with different
    checkouts can share a study.

    Raises ConfigError for bad bounds or settings, DataError for bad candles, GridbotError if a
    worker fails.
    """
    quiet_optuna(verbose)
    space = build_search_space(config)
    s = _settings(config, config_path, n_trials, workers, storage, study_name, sampler)
    fp = config_fingerprint(config)
    resolved = Path(data_path if data_path is not None else config.backtest.data).expanduser()
    config = with_overrides(config, {"backtest.data": str(resolved.absolute())})
    # Load once here: bad data fails before any process starts, and the .npy cache is filled
    # so that every worker maps the same files.
    load_backtest_candles(config, cache_dir(config))

    rdb = open_storage(s.url)
    directions = [o.direction for o in config.optimize.objectives]
    study = open_study(rdb, s.name, s.url, directions, fp)
    if console is None and progress:
        from rich.console import Console

        console = Console(stderr=True)
    orphans = fail_orphaned_trials(study)  # a killed earlier run's trials stay RUNNING
    if orphans and console is not None:
        console.print(f"marked {len(orphans)} trial(s) left RUNNING by a dead run as FAIL")
    before = study.get_trials(deepcopy=False)
    history = [t for t in before if t.state.name == "COMPLETE"]
    bar = Progress(progress and s.n > 0, s.n, config, console)
    bar.add(history)

    ctx = mp.get_context("spawn")
    tickets = ctx.Value("q", s.n)
    driver = _Driver(rdb, rdb.get_study_id_from_name(s.name), len(before), s.k, ctx)
    spec = {
        "config": config_to_dict(config),
        "sampler": s.sampler,
        "seed": config.optimize.seed,
        "key_base": _key_base(s.url, len(before)),
        "trials": s.n,
        "history": history,
        "cache_dir": str(cache_dir(config)),
        "verbose": verbose,
    }
    procs = [
        ctx.Process(
            target=worker_main,
            args=(spec, tickets, driver.results, driver.inboxes[i], i, os.getpid()),
            name=f"optimize-{i}",
        )
        for i in range(s.k)
    ]
    t0 = time.monotonic()
    driver.run(procs, bar, tickets)
    elapsed = time.monotonic() - t0
    return _result(config, space, s, rdb, driver, elapsed)


def _result(
    config: Config, space: Any, s: _Settings, rdb: Any, driver: _Driver, elapsed: float
) -> OptimizeResult:
    import optuna

    study = optuna.load_study(study_name=s.name, storage=rdb)
    out_dir = Path(config.backtest.results_dir) / "optimize" / s.name
    front, trials, files = collect(study, config, space, out_dir, s.name)
    states = [t.state.name for t in trials]
    return OptimizeResult(
        study=s.name,
        storage=mask_url(s.url),
        results_dir=str(out_dir),
        n_trials=states.count("COMPLETE"),
        n_trials_total=len(trials),
        n_feasible=sum(1 for t in trials if t.values is not None and trial_row(t)[2]),
        n_failed=states.count("FAIL"),
        n_run=driver.done,
        elapsed_seconds=elapsed,
        pareto=front,
        workers=[driver.stats[i] for i in sorted(driver.stats)],
        objectives=[
            {"metric": o.metric, "direction": o.direction} for o in config.optimize.objectives
        ],
        files=files,
        sampler=s.sampler,
    )
