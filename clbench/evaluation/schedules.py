"""When the continual evaluator runs: one interface that both training loops (clbench's own and the
Avalanche plugin) call without knowing which schedule they hold, with each schedule's constants here.

The protocol around every schedule is fixed and belongs to the loops: every task is evaluated before
the first update and after the last update of every segment (the R matrix and FWT need them). In
between, after update ``n``, a loop asks ``at(n)``: ``EVALUATE`` (the tasks seen so far), ``PROBE``
(a cheap, unlogged look, see ``Evaluator.probe``) or nothing. A loop announces each segment with
``begin_segment`` and reports what it measured with ``observe`` and ``observe_probe``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from clbench.common.errors import InputError

EVALUATE, PROBE = "evaluate", "probe"
Action = Literal["evaluate", "probe"] | None


class Schedule:
    """The interface, and the periodic rule: every ``every`` iterations (None: only the fixed points
    of the protocol), and every iteration for the first ``dense_after_switch`` iterations of each
    segment."""

    #: samples per task a probe looks at (schedules that probe set it)
    probe_size = 0

    def __init__(self, every: int | None = None, dense_after_switch: int = 0):
        if every is not None and every < 1:
            raise InputError(f"eval_every must be at least 1, not {every}")
        if dense_after_switch < 0:
            raise InputError(f"dense_after_switch must be >= 0, not {dense_after_switch}")
        self.every, self.dense_after_switch = every, dense_after_switch
        self.dense: set[int] = set()

    def begin_segment(self, start: int, stop: int | None = None) -> None:
        """A segment's first update is ``start + 1`` (its last ``stop``, where the loop knows it)."""
        last = start + self.dense_after_switch if stop is None else min(start + self.dense_after_switch, stop)
        self.dense.update(range(start + 1, last + 1))

    def at(self, n: int) -> Action:
        """What to do after update ``n`` (never asked at the protocol's fixed points)."""
        if n in self.dense or (self.every is not None and n % self.every == 0):
            return EVALUATE
        return None

    def observe(self, n: int, evaluation, seen: int, training: int | None) -> None:
        """After an evaluation at ``n`` (an ``Evaluation``, still on the device); ``seen`` tasks have
        been trained on, ``training`` is in training. The periodic rule needs none of it, so it
        costs no host transfer."""

    def observe_probe(self, n: int, accuracy: list[float]) -> bool:
        """After a probe at ``n``: True asks the loop to evaluate at ``n`` itself."""
        return False

    def config(self) -> dict:
        """What config.json records of the rule."""
        return {"kind": "periodic"}


class AdaptiveSchedule(Schedule):
    """Dense where accuracy moves, sparse where it does not (``--eval-schedule adaptive``).

    The rule, online, from nothing but the accuracies it has seen:

    1. Every ``sparse`` iterations, as the periodic rule.
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

    ``for_run`` sets ``band`` and ``probe_drop`` to at least 2.5 samples' worth of accuracy of the
    smallest evaluated task, so the noise of a single test sample never keeps the schedule dense.
    """

    #: the sparse period when ``--eval-every`` does not give one above 1
    SPARSE = 50
    #: samples per task a probe looks at, at most
    PROBE_SIZE = 64
    #: ``band`` and ``probe_drop`` are at least this many samples' worth of accuracy
    NOISE_SAMPLES = 2.5

    def __init__(self, sparse: int = SPARSE, settle: int = 5, long_settle: int = 20, band: float = 0.01,
                 tolerance: float = 0.01, min_dense: int = 10, cap: int = 400, probe_every: int = 5,
                 probe_size: int = PROBE_SIZE, probe_drop: float = 0.05):
        super().__init__(every=sparse)
        self.sparse, self.settle, self.long_settle, self.band = sparse, settle, long_settle, band
        self.tolerance, self.min_dense, self.cap = tolerance, min_dense, cap
        self.probe_every, self.probe_size, self.probe_drop = probe_every, probe_size, probe_drop
        self.dense_from: int | None = 0  # dense from the first update
        self.next_at, self.gap = 1, 1
        self.recent: list = []  # the watched tasks' accuracies at the evaluations of this dense stretch
        self.pre = None  # the watched tasks' accuracies at the last evaluation before it
        self.last = None  # the accuracies of the last evaluation
        self.probe_ref = None
        self.waiting: dict[int, float] = {}  # task -> its accuracy before the switch, for tasks not yet back

    @classmethod
    def for_run(cls, task_sizes: list[int], every: int | None) -> AdaptiveSchedule:
        """The rule for evaluation subsets of ``task_sizes`` samples: sparse every ``every`` if above 1;
        "still" within 2.5 samples of the smallest task, so one flipped sample never keeps it dense."""
        smallest = max(1, min(task_sizes))
        probe = min(cls.PROBE_SIZE, min(task_sizes))
        return cls(sparse=every if every and every > 1 else cls.SPARSE,
                   band=max(0.01, cls.NOISE_SAMPLES / smallest), probe_size=probe,
                   probe_drop=max(0.03, cls.NOISE_SAMPLES / max(1, probe)))

    def config(self) -> dict:
        return {"kind": "adaptive", "sparse": self.sparse, "settle": self.settle, "long_settle": self.long_settle,
                "band": self.band, "tolerance": self.tolerance, "min_dense": self.min_dense, "cap": self.cap,
                "probe_every": self.probe_every, "probe_size": self.probe_size, "probe_drop": self.probe_drop}

    def _go_dense(self, n: int) -> None:
        self.dense_from, self.recent, self.gap, self.next_at = n, [], 1, n + 1
        self.pre = self.last

    def _scheduled(self, n: int) -> bool:
        return n == self.next_at or n % self.sparse == 0

    def begin_segment(self, start: int, stop: int | None = None) -> None:
        if start > 0:  # dense from a new segment's first update (the first segment starts dense)
            self.waiting = {}
            self._go_dense(start)

    def at(self, n: int) -> Action:
        if self._scheduled(n):
            return EVALUATE
        if self.dense_from is None and n % self.probe_every == 0:
            return PROBE
        return None

    def observe(self, n: int, evaluation, seen: int, training: int | None) -> None:
        acc = (evaluation.correct.float() / evaluation.counts.clamp(min=1).float()).cpu().tolist()
        self.observe_accuracy(n, acc, list(range(min(len(acc), seen))), training)

    def observe_accuracy(self, n: int, accuracy, watched: list[int], training: int | None = None) -> None:
        """After the evaluation at ``n``: ``accuracy`` per evaluated task (host values); ``watched``
        the tasks that decide; ``training`` the task in training (recovered by definition)."""
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

    def observe_probe(self, n: int, accuracy: list[float]) -> bool:
        """Resume dense evaluation if a watched task (every probed one) fell by more than
        ``probe_drop`` (or an unrecovered one came back near its accuracy before the switch)."""
        acc = np.asarray(accuracy, dtype=float)
        fell = self.probe_ref is not None and len(self.probe_ref) == len(acc) and np.any(
            self.probe_ref - acc > self.probe_drop)
        back = [t for t, pre in self.waiting.items()
                if t < len(acc) and acc[t] >= pre - self.tolerance - self.probe_drop]
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


def make_schedule(kind: str, every: int | None, dense_after_switch: int, task_sizes: list[int]) -> Schedule:
    """The schedule an experiment's settings name (``RunSettings.eval_schedule``)."""
    if kind == "adaptive":
        return AdaptiveSchedule.for_run(task_sizes, every)
    return Schedule(every, dense_after_switch)
