"""Metrics -> Optuna objective values and constraint values; the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.config import Config

__all__ = [
    "LIQUIDATION_CONSTRAINT",
    "constraint_values",
    "is_feasible",
    "objective_values",
    "pareto_front",
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
    """Indices (ascending) of the non-dominated rows of ``values`` (n x m) under ``directions``.

    Rows are visited in lexicographic order (everything minimized): a row can only be
    dominated by one before it, and then by one already on the front, so each row is checked
    against the front alone (the front is small; the study may hold many thousands of rows).
    Equal rows are all kept."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(directions))
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    v = v * sign  # everything minimized
    front: list[int] = []
    for i in np.lexsort(v.T[::-1]):
        if front:
            f = v[front]
            if np.any(np.all(f <= v[i], axis=1) & np.any(f < v[i], axis=1)):
                continue
        front.append(int(i))
    return np.array(sorted(front), dtype=np.int64)
