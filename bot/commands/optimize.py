"""`gridbot optimize CONFIG`: search bot parameters with Optuna (logic in backtest.optimize)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

import orjson

from bot import inputs
from bot.config import Config, OptimizeConfig, load_config
from bot.errors import ConfigError

SAMPLERS = get_args(OptimizeConfig.model_fields["sampler"].annotation)  # "tpe", "nsga2"

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "optimize",
        help="search bot parameters (multi-objective, constrained) with Optuna",
        description=(
            "Search the parameters named in optimize.bounds for the objectives in "
            "optimize.objectives, subject to optimize.constraints and never being liquidated. "
            "Trials are stored in a study (SQLite under <results_dir>/optimize/ by default, or "
            "--storage postgresql://... shared by several machines); rerunning resumes it. "
            "Writes trials.csv, pareto.png and pareto/<trial>.hjson configs to "
            "<results_dir>/optimize/<study>/."
        ),
    )
    p.add_argument("config", help="hjson config file")
    p.add_argument(
        "--trials",
        type=inputs.integer(1, 1_000_000),
        help="trials to run now (default optimize.n_trials)",
    )
    p.add_argument(
        "--workers",
        type=inputs.integer(1, 256),
        help="worker processes (default optimize.workers, else all cores)",
    )
    p.add_argument(
        "--storage",
        type=inputs.storage_url,
        help="Optuna storage URL, e.g. postgresql://user:pw@host/db",
    )
    p.add_argument(
        "--study",
        type=inputs.study_name,
        help="study name (default: config stem + hash of its search)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="tpe (multivariate TPE, default optimize.sampler) or nsga2 (NSGA-II)",
    )
    p.add_argument("--data", help="candle file or folder (overrides backtest.data)")
    p.add_argument(
        "--symbols",
        type=inputs.symbols,
        help="comma-separated symbols (overrides backtest.symbols)",
    )
    p.add_argument(
        "--start",
        type=inputs.date_text,
        help="start date, UTC, inclusive (overrides backtest.start_date)",
    )
    p.add_argument(
        "--end",
        type=inputs.date_text,
        help="end date, UTC, exclusive (overrides backtest.end_date)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="show Optuna's own logging")
    p.set_defaults(run=run)


def _apply_cli(config: Config, args: argparse.Namespace) -> Config:
    from bot.commands.backtest import apply_data_flags

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    return apply_data_flags(config, args, args.config)


def _print_table(result: Any, config: Config, space_keys: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    objs = [o.metric for o in config.optimize.objectives]
    cons = [m for m in config.optimize.constraints if m not in objs]
    table = Table(
        title=f"Pareto front of study {result.study}: {len(result.pareto)} feasible trial(s) "
        f"of {result.n_trials} completed ({result.n_feasible} feasible)",
        title_justify="left",
    )
    table.add_column("trial", justify="right")
    for k in space_keys:
        table.add_column(k.removeprefix("bot."), justify="right", overflow="fold")
    for m in objs:
        table.add_column(m, justify="right", style="bold", overflow="fold")
    for m in cons:
        table.add_column(m, justify="right", overflow="fold")
    first = config.optimize.objectives[0]
    rows = sorted(
        result.pareto,
        key=lambda p: p.metrics.get(first.metric) or 0.0,
        reverse=first.direction == "maximize",
    )

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "-" if v is None else str(v)

    for p in rows:
        table.add_row(
            str(p.number),
            *(fmt(p.params.get(k)) for k in space_keys),
            *(fmt(p.metrics.get(m)) for m in objs),
            *(fmt(p.metrics.get(m)) for m in cons),
        )
    console.print(table)
    rate = result.n_run / result.elapsed_seconds if result.elapsed_seconds else 0.0
    console.print(
        f"{result.n_run} trial(s) run in {result.elapsed_seconds:.1f} s ({rate:.2f}/s) on "
        f"{len(result.workers)} worker(s), sampler {result.sampler}; storage {result.storage}\n"
        f"results: {result.results_dir} (trials.csv, pareto.png, pareto/<trial>.hjson)"
    )


def run(args: argparse.Namespace) -> int:
    from backtest.optimize import build_search_space, run_optimize
    from bot.commands.backtest import resolve_data_path

    config = _apply_cli(load_config(args.config), args)
    space = build_search_space(config)  # bad bounds fail before anything starts
    inputs.writable_dir(config.backtest.results_dir, "backtest.results_dir")
    storage = args.storage or config.optimize.storage
    if storage and storage.startswith("sqlite:///"):  # a local file: its folder must be usable
        where = "--storage" if args.storage else "optimize.storage"
        inputs.writable_dir(Path(storage[len("sqlite:///") :]).parent, where)
    # A relative backtest.data resolves as in `gridbot backtest`: cwd first, then config folder.
    data_path = resolve_data_path(config.backtest.data, Path(args.config))
    result = run_optimize(
        config,
        config_path=args.config,
        n_trials=args.trials,
        workers=args.workers,
        storage=args.storage,
        study_name=args.study,
        sampler=args.sampler,
        data_path=data_path,
        progress=True,
        verbose=args.verbose,
    )
    _print_table(result, config, [p.key for p in space])
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(result.to_json()) + b"\n")
        sys.stdout.flush()
    return 0
