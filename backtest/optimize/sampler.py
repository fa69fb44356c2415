"""Samplers: multivariate TPE (default) or NSGA-II, one fresh sampler per trial, seeded from
(optimize.seed, the trial's key), and a bounded history for the sampler to look at.

Why a fresh sampler per trial: the seed then depends on the trial, not on which worker runs it
or how many trials a worker ran before, so a one-worker study is reproducible for a seed and
no two trials of a study draw from the same random stream.

Why a bounded history: TPE reads every trial of its study on every suggestion (splitting,
feasibility, Parzen estimators), so its cost grows with the study: ~40 ms per trial at 5,000
trials, ten times a short backtest, and ~5 ms at 200. The sampler's study holds the best trials (the feasible
Pareto front and the best of each objective) and the most recent ones, at most a few hundred:
TPE's "good" group (at most 25 trials) comes from the best, its "bad" group is a recent
sample, and its cost stays flat (a few hundred trials: ~3x its cost at 50).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np

from backtest.optimize.objectives import is_feasible, pareto_front
from bot.config import OptimizeConfig

__all__ = [
    "SAMPLERS",
    "ELITE_TRIALS",
    "RECENT_TRIALS",
    "REBUILD_FACTOR",
    "best_trials",
    "history_window",
    "window_of",
    "make_sampler",
    "trial_seed",
]

SAMPLERS = get_args(OptimizeConfig.model_fields["sampler"].annotation)  # "tpe", "nsga2"
NSGA2_POPULATION = 50  # Optuna's default generation size
RECENT_TRIALS = 150  # the latest trials the sampler sees (3 NSGA-II generations)
ELITE_TRIALS = 50  # at most this many of the best, whatever their age
REBUILD_FACTOR = 1.5  # the sampler's study is rebuilt when it holds this many times the window
TPE_STARTUP_TRIALS = 10  # random trials before TPE models anything (Optuna's default)


def trial_seed(seed: int, key: int) -> int:
    return int(np.random.SeedSequence([seed, key]).generate_state(1)[0])


def make_sampler(kind: str, seed: int | None, key: int, space: dict[str, Any]) -> Any:
    """A sampler for the trial with ``key``, seeded from (seed, key); None: unseeded.
    ``space``: the searched distributions by name (every trial draws all of them)."""
    s = None if seed is None else trial_seed(seed, key)
    if kind == "nsga2":
        # Constraints reach NSGA-II through Trial.set_constraint (the trial's system attrs).
        return _fixed_space(kind)(space, population_size=NSGA2_POPULATION, seed=s)
    if kind == "tpe":
        return _fixed_space(kind)(
            space,
            multivariate=True,
            constant_liar=True,
            n_startup_trials=TPE_STARTUP_TRIALS,
            seed=s,
        )
    raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}")


@functools.cache
def _fixed_space(kind: str) -> type:
    """``kind``'s Optuna sampler told the search space instead of working it out. Optuna
    infers it from every trial of the study on each suggestion (the parameters all trials
    share); a fresh sampler per trial has no cache of it, and on a few hundred trials that
    alone cost more than a short backtest. Every trial here draws the same parameters, so
    the inferred space is this one."""
    import optuna

    base = optuna.samplers.NSGAIISampler if kind == "nsga2" else optuna.samplers.TPESampler

    class FixedSpace(base):  # type: ignore[misc, valid-type]
        def __init__(self, space: dict[str, Any], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._fixed_space = {k: d for k, d in space.items() if not d.single()}

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return dict(self._fixed_space)

    FixedSpace.__name__ = f"FixedSpace{base.__name__}"
    return FixedSpace


def _violation(t: Any) -> float:
    return float(sum(max(0.0, c) for c in t.constraints.values()))


def _elite(trials: Sequence[Any], directions: Sequence[str], limit: int) -> list[Any]:
    """The best finished trials: the feasible Pareto front, then the best of each objective,
    then (when too few are feasible) the least infeasible; at most ``limit``."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]
    feasible = [t for t in done if is_feasible(dict(t.constraints))]
    picked: dict[int, Any] = {}
    if feasible:
        values = np.array([t.values for t in feasible], dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=1e300, neginf=-1e300)
        for i in pareto_front(values, directions)[:limit]:
            picked[feasible[i].number] = feasible[i]
        per_objective = max(1, (limit - len(picked)) // max(1, len(directions)))
        for j, d in enumerate(directions):
            order = np.argsort(-values[:, j] if d == "maximize" else values[:, j], kind="stable")
            for i in order[:per_objective]:
                picked.setdefault(feasible[i].number, feasible[i])
    if len(picked) < limit:
        rest = sorted((t for t in done if t.number not in picked), key=_violation)
        for t in rest[: limit - len(picked)]:
            picked[t.number] = t
    return list(picked.values())[:limit]


def history_window(
    trials: Sequence[Any],
    directions: Sequence[str],
    recent: int = RECENT_TRIALS,
    elite: int = ELITE_TRIALS,
) -> list[Any]:
    """What the sampler sees of a finished-trials history: the elite and the latest ``recent``,
    in history order. A history that fits is returned whole."""
    if len(trials) <= recent + elite:
        return list(trials)
    return window_of(trials[-recent:], best_trials(trials[:-recent], directions, elite))


def best_trials(
    trials: Sequence[Any], directions: Sequence[str], limit: int = ELITE_TRIALS
) -> list:
    """The elite of ``trials``, in their order. The elite of (an elite + newer trials) is the
    elite of the whole (a trial dominated or outranked among some is so among all), so a
    worker keeps it up to date from the last elite and the trials since."""
    picked = {id(t) for t in _elite(trials, directions, limit)}
    return [t for t in trials if id(t) in picked]


def window_of(recent: Sequence[Any], elite: Sequence[Any]) -> list[Any]:
    """The elite (older first) then the recent trials, each trial once."""
    seen = {id(t) for t in recent}
    return [t for t in elite if id(t) not in seen] + list(recent)
