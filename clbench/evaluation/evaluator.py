"""The continual evaluator: accuracy on every task, as often as every iteration, at close to
the cost of one bare forward pass.

The evaluation samples of all tasks are drawn once (seeded), normalised once and held as one
tensor on the run's device, ordered by task, so "the tasks seen so far" is a prefix slice. One
evaluation is one forward pass in large chunks under ``torch.inference_mode()`` and one
``bincount`` for the per-task accuracies; the results stay on the device until the log is
materialised, so no host synchronisation happens per evaluation.

``precision="bf16"`` runs the evaluation forward under bfloat16 autocast: about 4x faster on
CPUs with AVX512-BF16 and on GPUs, at the price of predictions that can flip on near-ties
(accuracies move by a fraction of a point); fp32 is the default and is recorded with the run.

Resampling (``resample=True``) redraws the subsets at every evaluation, as the reference code
of De Lange et al. (ICLR 2023) does; the fixed default avoids the downward bias a minimum over
thousands of noisy estimates gives min-ACC and WF.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clbench.evaluation.rowlog import RowLog
from clbench.scenarios.data import Scenario

PRECISIONS = ("fp32", "bf16")


def subset_size(value) -> int | None:
    """``all`` -> None (the full test set); a positive integer otherwise."""
    if value is None or (isinstance(value, str) and value.lower() == "all"):
        return None
    n = int(value)
    if n < 1:
        raise ValueError(f"eval subset must be a positive number of samples or 'all', not {value}")
    return n


@dataclass
class Evaluation:
    """One evaluation as the evaluator returns it (on the device). The evaluator logs it in its
    ``RowLog`` and keeps only a ``Logged`` record, so no small tensor outlives it."""

    iteration: int
    trained_task: int
    correct: torch.Tensor  # [n_evaluated_tasks] correct counts
    counts: torch.Tensor  # [n_evaluated_tasks] sample counts
    #: the evaluated tasks when not 0..len(correct)-1 (a schedule's look back at some tasks)
    tasks: list[int] | None = None

    def task_ids(self) -> list[int]:
        return list(range(len(self.correct))) if self.tasks is None else self.tasks


@dataclass
class Logged:
    """What the evaluator keeps of an evaluation: where it was made, which tasks, and the row of
    its counts in the evaluator's ``RowLog``."""

    iteration: int
    trained_task: int
    tasks: list[int]
    row: int


class Evaluator:
    def __init__(self, scenario: Scenario, *, subset: int | None = 1000, resample: bool = False, seed: int = 0,
                 device: str | torch.device = "cpu", chunk_size: int = 8192, precision: str = "fp32",
                 split: str = "test"):
        if precision not in PRECISIONS:
            raise ValueError(f"eval precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.n_tasks = len(scenario.tasks)
        self.subset = subset
        self.resample = resample
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.generator = torch.Generator().manual_seed(int(seed) * 7 + 3)
        # "test" (reported results) or "val" (held-out training samples: for choosing hyperparameters)
        tests = [t.split(split) for t in scenario.tasks]
        full = [torch.arange(len(d)) for d in tests]
        # The pool holds every test sample when resampling, the fixed subsets otherwise.
        chosen = full if resample else [self._draw(len(d)) for d in tests]
        self.x = torch.cat([d.normalize(d.x[i].to(self.device)) for d, i in zip(tests, chosen)])
        self.y = torch.cat([d.y[i] for d, i in zip(tests, chosen)]).to(self.device)
        task = [torch.full((len(i),), t, dtype=torch.long) for t, i in enumerate(chosen)]
        self.task = torch.cat(task).to(self.device)
        sizes = torch.tensor([len(i) for i in chosen])
        self.offsets = [0, *sizes.cumsum(0).tolist()]
        self._features: torch.Tensor | None = None
        self.history: list[Logged] = []
        #: per evaluation, the correct counts then the sample counts of its tasks
        self.counts = RowLog(2 * self.n_tasks, self.device)

    def _draw(self, n: int) -> torch.Tensor:
        if self.subset is None or self.subset >= n:
            return torch.arange(n)
        return torch.randperm(n, generator=self.generator)[:self.subset].sort().values

    def _indices(self, n_tasks: int) -> torch.Tensor | None:
        """Rows of the pool to evaluate for tasks 0..n_tasks-1 (None = the prefix slice)."""
        if not self.resample:
            return None
        parts = [self._draw(self.offsets[t + 1] - self.offsets[t]) + self.offsets[t] for t in range(n_tasks)]
        return torch.cat(parts).to(self.device)

    def evaluate(self, strategy, n_tasks: int, iteration: int, trained_task: int,
                 tasks: list[int] | None = None) -> Evaluation:
        """Accuracy of ``strategy`` on tasks 0..n_tasks-1 (or on ``tasks`` only: a schedule's look
        back at a past iteration), logged; the model's train/eval mode is restored."""
        if tasks is not None:
            rows = torch.cat([self._rows(t) for t in tasks]) if tasks else torch.zeros(0, dtype=torch.long)
            correct, counts = self._count(strategy, self.n_tasks, rows.to(self.device))
            pick = torch.tensor(tasks, dtype=torch.long, device=self.device)
            ev = Evaluation(iteration, trained_task, correct[pick], counts[pick], list(tasks))
        else:
            correct, counts = self._count(strategy, n_tasks, self._indices(n_tasks))
            ev = Evaluation(iteration, trained_task, correct, counts)
        return self._log(ev)

    def _log(self, ev: Evaluation) -> Evaluation:
        row = self.counts.add(torch.cat([ev.correct, ev.counts]))
        self.history.append(Logged(ev.iteration, ev.trained_task, ev.task_ids(), row))
        return ev

    def n_steps(self) -> int:
        """Evaluation steps: the iterations evaluated (looks back at one iteration are one step)."""
        return len({(e.iteration, e.trained_task) for e in self.history})

    def _rows(self, task: int) -> torch.Tensor:
        """Rows of the pool evaluated for ``task`` (its fixed subset, or a fresh draw when resampling)."""
        if self.resample:
            return self._draw(self.offsets[task + 1] - self.offsets[task]) + self.offsets[task]
        return torch.arange(self.offsets[task], self.offsets[task + 1])

    def probe(self, strategy, n_tasks: int, size: int) -> list[float]:
        """Accuracy on the first ``size`` evaluation samples of each of tasks 0..n_tasks-1, not
        logged: the cheap look the adaptive schedule takes between evaluations."""
        parts = [torch.arange(self.offsets[t], min(self.offsets[t] + size, self.offsets[t + 1]))
                 for t in range(n_tasks)]
        correct, counts = self._count(strategy, n_tasks, torch.cat(parts).to(self.device))
        return (correct.float() / counts.clamp(min=1).float()).cpu().tolist()

    def _count(self, strategy, n_tasks: int, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct predictions and samples per task over ``rows`` of the pool (None: the prefix of
        tasks 0..n_tasks-1), in chunks; only the per-task counts of a chunk are kept."""
        model = strategy.model
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                         enabled=self.precision == "bf16"):
                frozen = getattr(strategy, "frozen_features", False)
                if frozen and self._features is None:
                    self._features = torch.cat([strategy.embed(self.x[s:s + self.chunk_size])
                                                for s in range(0, len(self.x), self.chunk_size)])
                inputs = self._features if frozen else self.x
                predict = strategy.predict_from_features if frozen else strategy.predict
                n_rows = self.offsets[n_tasks] if rows is None else len(rows)
                correct = torch.zeros(n_tasks, dtype=torch.long, device=self.device)
                for s in range(0, n_rows, self.chunk_size):
                    sl = slice(s, min(s + self.chunk_size, n_rows))
                    if rows is None:
                        xb, tb, yb = inputs[sl], self.task[sl], self.y[sl]
                    else:
                        xb, tb, yb = (a.index_select(0, rows[sl]) for a in (inputs, self.task, self.y))
                    hit = predict(xb, tb).argmax(1) == yb
                    correct += torch.bincount(tb[hit], minlength=n_tasks)[:n_tasks]
                t = self.task[:n_rows] if rows is None else self.task[rows]
                counts = torch.bincount(t, minlength=n_tasks)[:n_tasks]
        finally:
            model.train(was_training)
        return correct, counts

    def log_rows(self) -> list[dict]:
        """The accuracy log (one dict per evaluation and task), with one host transfer in all.
        Evaluations are ordered by iteration (a schedule's looks back are made after later ones),
        and the looks at one iteration are one evaluation step."""
        if not self.history:
            return []
        table = self.counts.rows().tolist()
        order = sorted(range(len(self.history)), key=lambda k: self.history[k].iteration)
        rows, step, last = [], -1, None
        for k in order:
            e = self.history[k]
            if (e.iteration, e.trained_task) != last:
                step, last = step + 1, (e.iteration, e.trained_task)
            m, values = len(e.tasks), table[e.row]
            for j, task in enumerate(e.tasks):
                n = values[m + j]
                rows.append({"eval_step": step, "iteration": e.iteration, "trained_task": e.trained_task,
                             "task": task, "accuracy": values[j] / n if n else float("nan"), "n": n})
        return rows

    @staticmethod
    def mean_accuracy(ev: Evaluation) -> float:
        """Mean over the evaluated tasks (one host sync: for progress bars, not the hot path)."""
        return float((ev.correct.float() / ev.counts.clamp(min=1).float()).mean())
