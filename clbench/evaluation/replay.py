"""A schedule replayed over accuracies recorded at every iteration: which evaluations it would have
made, the log they give, and what they cost, without training anything.

Exact for schedules that look back (``RefineSchedule``): an evaluation depends only on the
prediction tensors of its iteration, so a look back at iteration m reads the recorded accuracy at
m. The tests check the schedules on hand-made curves this way; ``every_iteration_curves`` turns the
``curves.csv`` of a real every-iteration run into the same input.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from clbench.evaluation import metrics
from clbench.evaluation.driver import Evaluations
from clbench.evaluation.evaluator import Evaluation, Evaluator
from clbench.evaluation.rowlog import RowLog
from clbench.evaluation.schedules import Schedule


class _Recorded(Evaluator):
    """An evaluator that reads accuracies from ``curves[iteration, task]`` (``size`` samples a task)."""

    def __init__(self, curves: np.ndarray, size: int):  # noqa: D107 - the pool is not built
        self.curves, self.size, self.now = curves, size, 0
        self.n_tasks = curves.shape[1]
        self.history = []
        self.counts = RowLog(2 * self.n_tasks)
        self.samples = 0  # task-samples evaluated (probes included)

    def _at(self, tasks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct counts and sample counts of ``tasks`` at the current iteration."""
        acc = np.nan_to_num(self.curves[self.now, tasks], nan=0.0)
        return torch.tensor(np.rint(acc * self.size), dtype=torch.long), torch.full((len(tasks),), self.size)

    def evaluate(self, strategy, n_tasks, iteration, trained_task, tasks=None):
        tasks = list(range(n_tasks)) if tasks is None else list(tasks)
        self.samples += self.size * len(tasks)
        correct, counts = self._at(tasks)
        return self._log(Evaluation(iteration, trained_task, correct, counts, tasks))

    def probe(self, strategy, n_tasks, size):
        self.samples += size * n_tasks
        correct, counts = self._at(list(range(n_tasks)))
        return (correct.float() / counts.float()).tolist()


class _Ring:
    """Snapshots of a recorded run: looking back at m is reading the curves' row m."""

    def __init__(self, evaluator: _Recorded, depth: int):
        self.evaluator, self.depth, self.newest = evaluator, depth, 0

    def keep(self, n: int) -> None:
        self.newest = self.evaluator.now = n

    @contextlib.contextmanager
    def look(self, n: int):
        if not 0 <= self.newest - n < self.depth:
            raise KeyError(f"iteration {n} is no longer held (the ring keeps {self.depth})")
        self.evaluator.now = n
        try:
            yield
        finally:
            self.evaluator.now = self.newest


@dataclass
class Replayed:
    log: pd.DataFrame
    evaluations: int  # evaluation steps in the log (looks back at one iteration count once)
    samples: int  # task-samples evaluated
    every_samples: int  # task-samples that evaluation at every iteration evaluates

    @property
    def share(self) -> float:
        """The schedule's evaluation cost as a share of every-iteration evaluation's."""
        return self.samples / self.every_samples


def replay(schedule: Schedule, curves: np.ndarray, segments: list[tuple[int, int, int]], size: int = 1000
           ) -> Replayed:
    """Drive ``schedule`` as clbench's loop does over ``curves`` (``[iterations + 1, tasks]``, row n
    the accuracies after update n) along ``segments`` (``(start, stop, task)``, as a stream's)."""
    curves = np.asarray(curves, dtype=float)
    evaluator = _Recorded(curves, size)
    ring = _Ring(evaluator, max(1, schedule.depth)) if schedule.depth else None
    driver = Evaluations(evaluator, schedule, None, ring=ring)
    n_tasks, seen = curves.shape[1], 0
    every = 0
    driver.evaluate(0, n_tasks, seen, -1)
    for start, stop, task in segments:
        seen = max(seen, task + 1)
        schedule.begin_segment(start, stop)
        for n in range(start + 1, stop + 1):
            evaluator.now = n
            if ring is not None:
                ring.keep(n)
            every += size * (n_tasks if n == stop else seen)
            if n == stop:
                driver.evaluate(n, n_tasks, seen, task)
            else:
                driver.between(n, seen, task)
    log = pd.DataFrame(evaluator.log_rows(), columns=metrics.LOG_COLUMNS)
    return Replayed(log, int(log["eval_step"].nunique()), evaluator.samples, every + size * n_tasks)


def every_iteration_curves(log: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """From a log evaluated at every iteration: the ``curves`` and ``segments`` that ``replay`` takes."""
    wide = log.pivot_table(index="iteration", columns="task", values="accuracy", aggfunc="first")
    n = int(wide.index.max())
    if len(wide) != n + 1:
        raise ValueError("the log was not evaluated at every iteration")
    trained = log.groupby("iteration")["trained_task"].first().to_numpy()
    segments, start = [], 0
    for it in range(1, n + 1):
        if it == n or trained[it + 1] != trained[it]:
            segments.append((start, it, int(trained[it])))
            start = it
    return wide.to_numpy(dtype=float), segments
