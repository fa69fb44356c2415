"""The progress line while a study runs: this run's trials, trials per second, the study's
feasible count and its best. Fed by the results the workers send: it never reads the storage."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from typing import Any

from backtest.optimize.objectives import is_feasible
from bot.config import Config

__all__ = ["Progress", "RATE_WINDOW_SECONDS"]

RATE_WINDOW_SECONDS = 10.0  # trials/s over this much of the recent past


class Progress:
    """Rich progress on stderr (or nothing when disabled; the counts are kept either way)."""

    def __init__(self, enabled: bool, total: int, config: Config, console: Any) -> None:
        self.enabled = enabled
        self.objective = config.optimize.objectives[0]
        self.n_done = 0  # finished trials in the study (any run)
        self.n_feasible = 0
        self.best: tuple[float, int] | None = None  # (first objective, trial key)
        self._marks: collections.deque[tuple[float, int]] = collections.deque()
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self.progress = RichProgress(
            TextColumn("[bold]optimize"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("optimize", total=total, status="starting workers")
        self.progress.start()

    def add(self, trials: Iterable[Any], first_number: int | None = None) -> None:
        """Finished trials; ``first_number``: the study number of the first (for 'best #n')."""
        for i, t in enumerate(trials):
            if t.state.name != "COMPLETE" or t.values is None:
                continue
            self.n_done += 1
            if not is_feasible(dict(t.constraints)):
                continue
            self.n_feasible += 1
            v = float(t.values[0])
            number = t.number if first_number is None else first_number + i
            better = self.best is None or (
                v > self.best[0] if self.objective.direction == "maximize" else v < self.best[0]
            )
            if better:
                self.best = (v, number)

    def rate(self, done: int) -> float:
        """Trials per second of this run over the last RATE_WINDOW_SECONDS."""
        now = time.monotonic()
        self._marks.append((now, done))
        while len(self._marks) > 2 and now - self._marks[1][0] >= RATE_WINDOW_SECONDS:
            self._marks.popleft()
        t0, d0 = self._marks[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    def status(self, done: int) -> str:
        text = (
            f"{self.rate(done):.1f} trials/s, study {self.n_done} done, {self.n_feasible} feasible"
        )
        if self.best is not None:
            text += f", best {self.objective.metric} {self.best[0]:.6g} (#{self.best[1]})"
        return text

    def update(self, done: int) -> None:
        status = self.status(done)
        if self.enabled:
            self.progress.update(self.task, completed=done, status=status)

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()
