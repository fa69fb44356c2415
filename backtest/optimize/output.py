"""Results of a study: the Pareto front, trials.csv, pareto.png, pareto/<n>.hjson, and the
summary a run returns."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backtest.optimize.objectives import LIQUIDATION_CONSTRAINT, is_feasible, pareto_front
from backtest.optimize.space import ParamSpec, trial_config
from backtest.optimize.storage import mask_url
from bot.config import KNOWN_METRICS, Config, config_to_dict

__all__ = ["OptimizeResult", "ParetoEntry", "WorkerStats", "collect", "trial_row"]


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
    engine_seconds: float = 0.0  # inside the backtest engine's loop
    busy_seconds: float = 0.0  # whole trials: sampler, config, engine, metrics
    cpu_seconds: float = 0.0  # the worker process's CPU time, start-up included
    # (ticket, trial seconds, engine seconds) of each trial, for benchmarks; not in to_json
    timings: list[tuple[int, float, float]] = field(default_factory=list, repr=False)


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
    sampler: str = "tpe"

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
            "sampler": self.sampler,
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
                {
                    "index": w.index,
                    "trials": w.trials,
                    "peak_rss_bytes": w.peak_rss_bytes,
                    "engine_seconds": w.engine_seconds,
                    "busy_seconds": w.busy_seconds,
                    "cpu_seconds": w.cpu_seconds,
                }
                for w in self.workers
            ],
            "files": self.files,
        }


def trial_row(t: Any) -> tuple[dict[str, Any], dict[str, float], bool]:
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
        metrics, cons, feasible = trial_row(t)
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

    feasible = [t for t in done if trial_row(t)[2]]
    infeasible = [t for t in done if not trial_row(t)[2]]
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


def collect(
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
    feasible = [t for t in trials if t.values is not None and trial_row(t)[2]]
    dirs = [o.direction for o in config.optimize.objectives]
    idx: list[int] | np.ndarray = (
        pareto_front(np.array([t.values for t in feasible]), dirs) if feasible else []
    )
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
