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

from scenarios.data import Scenario

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
    """One evaluation, kept on the device until the log is built."""

    iteration: int
    trained_task: int
    correct: torch.Tensor  # [n_evaluated_tasks] correct counts
    counts: torch.Tensor  # [n_evaluated_tasks] sample counts


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
        self.history: list[Evaluation] = []

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

    def evaluate(self, strategy, n_tasks: int, iteration: int, trained_task: int) -> Evaluation:
        """Accuracy of ``strategy`` on tasks 0..n_tasks-1, logged; the model's train/eval mode is restored."""
        correct, counts = self._count(strategy, n_tasks, self._indices(n_tasks))
        ev = Evaluation(iteration, trained_task, correct, counts)
        self.history.append(ev)
        return ev

    def probe(self, strategy, n_tasks: int, size: int) -> list[float]:
        """Accuracy on the first ``size`` evaluation samples of each of tasks 0..n_tasks-1, not
        logged: the cheap look the adaptive schedule takes between evaluations."""
        parts = [torch.arange(self.offsets[t], min(self.offsets[t] + size, self.offsets[t + 1]))
                 for t in range(n_tasks)]
        correct, counts = self._count(strategy, n_tasks, torch.cat(parts).to(self.device))
        return (correct.float() / counts.clamp(min=1).float()).cpu().tolist()

    def _count(self, strategy, n_tasks: int, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct predictions and samples per task over ``rows`` of the pool (None: the prefix of
        tasks 0..n_tasks-1)."""
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
                stop = self.offsets[n_tasks]
                n_rows = stop if rows is None else len(rows)
                preds = []
                for s in range(0, n_rows, self.chunk_size):
                    sl = slice(s, min(s + self.chunk_size, n_rows))
                    xb = inputs[sl] if rows is None else inputs.index_select(0, rows[sl])
                    tb = self.task[sl] if rows is None else self.task.index_select(0, rows[sl])
                    preds.append(predict(xb, tb).argmax(1))
                y = self.y[:stop] if rows is None else self.y[rows]
                t = self.task[:stop] if rows is None else self.task[rows]
                hit = torch.cat(preds) == y
                correct = torch.bincount(t[hit], minlength=n_tasks)
                counts = torch.bincount(t, minlength=n_tasks)
        finally:
            model.train(was_training)
        return correct, counts

    def log_rows(self) -> list[dict]:
        """The accuracy log (one dict per evaluation and task), with one host transfer in all."""
        if not self.history:
            return []
        sizes = [len(e.correct) for e in self.history]
        correct = torch.cat([e.correct for e in self.history]).cpu().tolist()
        counts = torch.cat([e.counts for e in self.history]).cpu().tolist()
        rows, k = [], 0
        for step, (e, m) in enumerate(zip(self.history, sizes)):
            for task in range(m):
                n = counts[k]
                rows.append({"eval_step": step, "iteration": e.iteration, "trained_task": e.trained_task,
                             "task": task, "accuracy": correct[k] / n if n else float("nan"), "n": n})
                k += 1
        return rows

    @staticmethod
    def mean_accuracy(ev: Evaluation) -> float:
        """Mean over the evaluated tasks (one host sync: for progress bars, not the hot path)."""
        return float((ev.correct.float() / ev.counts.clamp(min=1).float()).mean())


class Schedule:
    """Which iterations are evaluated: before the first update (every task), every ``every``
    iterations (tasks seen so far), at every segment end (every task), and every iteration for
    the first ``dense_after_switch`` iterations after each boundary."""

    def __init__(self, segment_bounds: list[tuple[int, int]], every: int | None = None, dense_after_switch: int = 0):
        if every is not None and every < 1:
            raise ValueError(f"eval_every must be at least 1, not {every}")
        if dense_after_switch < 0:
            raise ValueError(f"dense_after_switch must be >= 0, not {dense_after_switch}")
        self.every = every
        self.ends = {stop for _, stop in segment_bounds}
        self.dense: set[int] = set()
        for start, stop in segment_bounds:
            self.dense.update(range(start + 1, min(start + dense_after_switch, stop) + 1))

    def full(self, n: int) -> bool:
        """Evaluate every task (seen or not) after update ``n``: n = 0 and segment ends."""
        return n == 0 or n in self.ends

    def due(self, n: int) -> bool:
        return self.full(n) or n in self.dense or (self.every is not None and n % self.every == 0)


class AdaptiveSchedule(Schedule):
    """Dense where accuracy moves, sparse where it does not (``--eval-schedule adaptive``).

    The rule, online, from nothing but the accuracies it has seen:

    1. Before the first update, at every segment end and every ``sparse`` iterations: as the
       periodic schedule (the last two evaluate every task).
    2. From each segment start, every iteration, while the watched tasks (every task seen so far,
       the one in training included, as WF counts it) still move. Dense evaluation stops when
       each watched task is *still* — within ``band`` of its value ``settle`` evaluations earlier
       — and has *recovered* to within ``tolerance`` of its accuracy before the switch (the task
       in training counts as recovered); or, for a task that does not come back (finetuning's
       collapse), when it has been still for ``long_settle`` evaluations. Never before
       ``min_dense`` iterations, never after ``cap``. A dip is thus followed densely until it
       has recovered, the way iterations-to-recover measures it.
    3. Then the gap between evaluations doubles (2, 4, 8, ...) up to ``sparse``.
    4. Between evaluations, every ``probe_every`` iterations, a probe: the watched tasks on the
       first ``probe_size`` samples of each (not logged). If one of them is more than
       ``probe_drop`` below the best it showed at a probe since dense evaluation stopped, dense evaluation
       resumes (rule 2), so a dip inside a task (recurring, fuzzy streams) is followed too. A task
       that was left unrecovered is watched for its return as well: when its probe comes within
       ``probe_drop`` of the accuracy it had before the switch, dense evaluation resumes, so the
       moment it recovers is evaluated.

    The runner sets ``band`` and ``probe_drop`` to at least 2.5 samples' worth of accuracy of the
    smallest evaluated task, so the noise of a single test sample never keeps the schedule dense.
    """

    def __init__(self, segment_bounds: list[tuple[int, int]], sparse: int = 50, settle: int = 5,
                 long_settle: int = 20, band: float = 0.01, tolerance: float = 0.01, min_dense: int = 10,
                 cap: int = 400, probe_every: int = 5, probe_size: int = 64, probe_drop: float = 0.05):
        super().__init__(segment_bounds, every=sparse)
        self.sparse, self.settle, self.long_settle, self.band = sparse, settle, long_settle, band
        self.tolerance, self.min_dense, self.cap = tolerance, min_dense, cap
        self.probe_every, self.probe_size, self.probe_drop = probe_every, probe_size, probe_drop
        self.starts = {start for start, _ in segment_bounds}
        self.dense_from: int | None = 0  # dense from the first update
        self.next_at, self.gap = 1, 1
        self.recent: list = []  # the watched tasks' accuracies at the evaluations of this dense stretch
        self.pre = None  # the watched tasks' accuracies at the last evaluation before it
        self.last = None  # the accuracies of the last evaluation
        self.probe_ref = None
        self.waiting: dict[int, float] = {}  # task -> its accuracy before the switch, for tasks not yet back

    def config(self) -> dict:
        return {"kind": "adaptive", "sparse": self.sparse, "settle": self.settle, "long_settle": self.long_settle,
                "band": self.band, "tolerance": self.tolerance, "min_dense": self.min_dense, "cap": self.cap,
                "probe_every": self.probe_every, "probe_size": self.probe_size, "probe_drop": self.probe_drop}

    def _go_dense(self, n: int) -> None:
        self.dense_from, self.recent, self.gap, self.next_at = n, [], 1, n + 1
        self.pre = self.last

    def _scheduled(self, n: int) -> bool:
        return self.full(n) or n == self.next_at or n % self.sparse == 0

    def due(self, n: int) -> bool:
        if n - 1 in self.starts and n > 1:  # the first update of a new segment
            self.waiting = {}
            self._go_dense(n - 1)
        return self._scheduled(n)

    def probe_due(self, n: int) -> bool:
        return self.dense_from is None and n % self.probe_every == 0 and not self._scheduled(n)

    def observe(self, n: int, accuracy, watched: list[int], training: int | None = None) -> None:
        """After the evaluation at ``n``: ``accuracy`` per evaluated task (host values); ``watched``
        the tasks that decide; ``training`` the task in training (recovered by definition)."""
        import numpy as np

        acc = np.asarray(accuracy, dtype=float)
        self.last = acc
        if self.dense_from is None:  # backing off: double the gap up to the sparse period
            self.gap = min(self.sparse, self.gap * 2)
            self.next_at = n + self.gap
            return
        w = np.asarray(watched, dtype=int)
        self.recent.append(acc[w])
        self.recent = self.recent[-(self.long_settle + 1):]
        elapsed = n - self.dense_from
        if self._settled(w, training) and elapsed >= self.min_dense or elapsed >= self.cap:
            self.dense_from, self.gap, self.probe_ref = None, 1, None
            if self.pre is not None:
                self.waiting = {int(t): float(self.pre[t]) for t, a in zip(w, self.recent[-1])
                                if t != training and t < len(self.pre) and a < self.pre[t] - self.tolerance}
        self.next_at = n + 1 if self.dense_from is not None else n + 2

    def _settled(self, w, training) -> bool:
        import numpy as np

        def still(k: int) -> np.ndarray | None:
            if len(self.recent) <= k or len(self.recent[-k - 1]) != len(self.recent[-1]):
                return None
            return np.abs(self.recent[-1] - self.recent[-k - 1]) <= self.band

        short, long = still(self.settle), still(self.long_settle)
        if short is None:
            return False
        pre = self.pre[w] if self.pre is not None and len(self.pre) > (w.max() if len(w) else -1) else None
        recovered = np.ones(len(w), dtype=bool) if pre is None else self.recent[-1] >= pre - self.tolerance
        recovered |= w == training
        return bool(np.all(short & (recovered | (long if long is not None else False))))

    def observe_probe(self, n: int, accuracy, watched: list[int]) -> bool:
        """After a probe at ``n``: resume dense evaluation if a watched task fell by more than
        ``probe_drop`` (or an unrecovered one came back near its accuracy before the switch).
        True when it did: the runner then evaluates at ``n`` itself, where the move was seen."""
        import numpy as np

        everything = np.asarray(accuracy, dtype=float)
        acc = everything[np.asarray(watched, dtype=int)]
        fell = self.probe_ref is not None and len(self.probe_ref) == len(acc) and np.any(
            self.probe_ref - acc > self.probe_drop)
        back = [t for t, pre in self.waiting.items()
                if t < len(everything) and everything[t] >= pre - self.tolerance - self.probe_drop]
        if fell or back:
            for t in back:
                self.waiting.pop(t)
            self._go_dense(n - 1)
            self.probe_ref = None
            return True
        # the best each task showed since dense evaluation stopped: a slow slide is caught too
        self.probe_ref = acc if self.probe_ref is None or len(self.probe_ref) != len(acc) else np.maximum(
            self.probe_ref, acc)
        return False
