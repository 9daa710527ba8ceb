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
from clbench.evaluation import metrics

EVALUATE, PROBE = "evaluate", "probe"
Action = Literal["evaluate", "probe"] | None


class Schedule:
    """The interface, and the periodic rule: every ``every`` iterations (None: only the fixed points
    of the protocol), and every iteration for the first ``dense_after_switch`` iterations of each
    segment."""

    #: samples per task a probe looks at (schedules that probe set it)
    probe_size = 0
    #: iterations whose prediction tensors the loop keeps for looks back (``next_look``); 0: none
    depth = 0

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

    def fit_depth(self, depth: int) -> None:
        """The loop holds only ``depth`` iterations (a network too large for its snapshot memory)."""

    def next_look(self) -> tuple[int, list[int]] | None:
        """After an evaluation: a past iteration (held by the loop's snapshots) to evaluate, and for
        which tasks; None when there is none. The loop asks until None."""
        return None

    def keeps(self) -> bool:
        """Whether the loop must keep the current update's prediction tensors for a look back."""
        return self.depth > 0

    def observe_look(self, n: int, tasks: list[int], accuracy) -> None:
        """The accuracies of a look back at ``n`` for ``tasks`` (host values)."""

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
    if kind == "refine":
        if dense_after_switch:
            raise InputError("--dense-after-switch belongs to --eval-schedule periodic; the refine schedule "
                             "looks back at every iteration after a switch that its metrics need")
        if sum(task_sizes) <= RefineSchedule.DENSE_POOL:
            return RefineSchedule.dense(task_sizes)
        return RefineSchedule(period=every if every and every > 1 else RefineSchedule.PERIOD, task_sizes=task_sizes)
    return Schedule(every, dense_after_switch)


class RefineSchedule(Schedule):
    """Coarse evaluation, then looks back at the exact iterations where a metric's point may lie
    (``--eval-schedule refine``, the default).

    The loop keeps the prediction tensors of the last ``period`` iterations (a ``SnapshotRing``):
    evaluating one later gives exactly what an evaluation at that iteration would have given. So
    every task seen so far is evaluated only on a coarse grid (1, 2, 4 and 8 updates into each
    segment, where a dip starts, then every ``period``), and after each coarse evaluation at
    ``b`` (the previous one at ``a``) the schedule looks back, *for the tasks that need it only*:

    - **minimum** (min-ACC, WC-ACC, gap depth) of an old task: bisection of (a, b) while a
      sub-interval may hold a value below the lowest seen in the segment: while its lower end,
      less how far the curve can stray and come back inside it (``reach`` times half its length
      at the task's recent speed: its noise, or the steepest slope between its known points of
      the last period where faster, as right after a switch; for a task back from a dip, at
      least the ``back_quantile`` of its moves between consecutive iterations), is within the
      noise margin of it;
    - **a dip that came back** inside (a, b) (WF): bisection, for every task, while the drop from
      the points a window before ``a`` (or from the higher end) to the lower end less the stray
      beyond the noise may exceed the task's largest drop within ``window`` iterations so far;
    - **recovery** (iterations-to-recover): every iteration of the first gap between known points,
      after the minimum of an old task that dipped, that may hold its first return to within
      ``tolerance`` of its accuracy before the switch;
    - **largest drop or rise** within ``window`` iterations (WF, WP): every iteration of (a, b) when
      the change from the points a window before ``a`` to ``b`` exceeds the noise margin and the
      largest change seen so far less the margin;
    - the first ``window`` updates of the task in training (LCA) and the last ``window`` of every
      segment (a drop across a switch starts before it);
    - the noise floors: every iteration within ``window`` of the segment's middle
      (``metrics.pseudo_switch``) is a coarse point (WF's floor, ``metrics.windowed_noise``), and
      after it the minimum bisection also looks for the lowest point since then of each old
      task that counts in the gap so far (not dipped, or dipped and back).

    The noise margin keeps noise alone from keeping the schedule dense (a fixed subset's accuracy
    moves between iterations with no real change): per task, ``z`` times the median move between
    consecutive iterations it has seen, and at least ``floor_samples`` samples' worth. Points no
    look reaches are never evaluated, so every metric comes from evaluations at exact iterations
    (``clbench list metrics`` says how each treats the others). What it costs and how close it
    comes to every-iteration evaluation: ``benchmarks/scale.py``.
    """

    PERIOD = 16
    EARLY = (1, 2, 4, 8)
    #: evaluation subsets of at most this many samples in all are evaluated at every iteration: a
    #: full evaluation then costs about what one look back costs (a forward call, two copies of the
    #: parameters), and on the default split-digits benchmark (360 samples) looks made evaluation
    #: slower than every iteration (0.8-1.4x training against 0.1-1.0x)
    DENSE_POOL = 1000
    #: segments of at most this many updates are evaluated at every iteration: nearly every
    #: iteration of them holds a point some metric needs (the early grid, the first and last 10, the
    #: middle), and a look costs more than its share of a full evaluation (a restore and a forward
    #: per task); replayed over real curves, 43-50-update tasks kept 67-96% of the evaluations and
    #: permuted-fmnist at 50 updates a task cost 1.05-1.18x every-iteration evaluation, while
    #: 130-update tasks (split-fmnist, 3 epochs) kept 22-65%
    SHORT_SEGMENT = 100

    def __init__(self, period: int = PERIOD, window: int = 10, tolerance: float = 0.01, z: float = 2.0,
                 floor_samples: float = 3.0, reach: float = 1.0, back_quantile: float = 0.9,
                 task_sizes: list[int] | None = None, short_segment: int = SHORT_SEGMENT):
        super().__init__(every=None)
        if period < 2:
            raise InputError(f"the refine schedule's period must be at least 2, not {period}")
        self.period, self.window, self.tolerance, self.z = period, window, tolerance, z
        self.floor_samples, self.reach, self.short_segment = floor_samples, reach, short_segment
        self.back_quantile = back_quantile
        self.floors = [floor_samples / max(1, n) for n in (task_sizes or [])]
        #: iterations of snapshots the loop keeps: the interior of one coarse interval
        self.depth = period
        self.start: int | None = None
        self.stop: int | None = None  # the segment's last update, where the loop says it
        self.mid: int | None = None  # the segment's pseudo-switch (``metrics.pseudo_switch``)
        self.pseudo_lows: dict[int, tuple[float, int]] = {}  # task -> its lowest after the pseudo-switch
        self.last_back: dict[int, int] = {}  # task -> its last iteration within the band of its accuracy before
        self.prev = 0  # the last coarse evaluation
        self.training: int | None = None
        self.full: np.ndarray | None = None  # the accuracies of the last coarse evaluation (every task)
        self.pre: np.ndarray | None = None  # accuracies at the segment's start
        self.points: dict[int, dict[int, float]] = {}  # task -> {iteration: accuracy} in this segment
        self.lows: dict[int, tuple[float, int]] = {}  # task -> (its lowest accuracy after the start, where)
        self.moves: dict[int, list[float]] = {}  # task -> moves between consecutive iterations seen
        self.drop: dict[int, float] = {}  # task -> its largest drop within window so far (evaluated points)
        self.rise: dict[int, float] = {}  # task -> its largest rise within window so far
        self.queue: list[tuple[int, list[int]]] = []  # looks to make: (iteration, tasks)
        self.bisect: list[tuple[int, int, int]] = []  # (task, a, b) that may hold a new minimum
        self.old: list[int] = []  # the old tasks of the current interval, checked for recovery
        self.interval = (0, 0)
        self.every_iteration = False  # ``dense``: small subsets, evaluated at every iteration
        self.short = False  # the current segment is evaluated at every iteration (``SHORT_SEGMENT``)

    @classmethod
    def dense(cls, task_sizes: list[int]) -> RefineSchedule:
        """The rule for small evaluation subsets: every iteration, no snapshots, no looks back."""
        schedule = cls(period=2, task_sizes=task_sizes)
        schedule.depth, schedule.every_iteration = 0, True
        return schedule

    def fit_depth(self, depth: int) -> None:
        """Coarse evaluations closer together, so that every look back stays within the ring (which
        holds the coarse iteration itself and the ``period - 1`` before it)."""
        self.period = self.depth = max(2, min(self.period, depth))

    def config(self) -> dict:
        if self.every_iteration:
            return {"kind": "refine", "evaluated": f"every iteration: the evaluation subsets hold at most "
                                                  f"{self.DENSE_POOL} samples in all"}
        return {"kind": "refine", "period": self.period, "early": list(self.EARLY), "window": self.window,
                "tolerance": self.tolerance, "z": self.z, "floor_samples": self.floor_samples, "reach": self.reach,
                "back_quantile": self.back_quantile,
                "every_iteration_in_segments_of_at_most": self.short_segment}

    # ---------------------------------------------------------------- the grid
    def begin_segment(self, start: int, stop: int | None = None) -> None:
        self.start, self.prev, self.stop = start, start, stop
        self.mid = None if stop is None else metrics.pseudo_switch(start, stop)
        self.short = stop is not None and stop - start <= self.short_segment
        self.pre = None if self.full is None else self.full.copy()
        self.points = {} if self.pre is None else {i: {start: float(a)} for i, a in enumerate(self.pre)}
        self.lows, self.pseudo_lows, self.last_back = {}, {}, {}

    def at(self, n: int) -> Action:
        k = n - (self.start or 0)
        return EVALUATE if (self.every_iteration or self.short or k in self.EARLY or k % self.period == 0
                            or (self.mid is not None and abs(n - self.mid) < self.window)) else None

    def keeps(self) -> bool:
        """No snapshots in a segment evaluated at every iteration: it never looks back."""
        return self.depth > 0 and not (self.short or self.every_iteration)

    # ---------------------------------------------------------------- what was seen
    def _pace(self, task: int) -> float:
        """The task's median move between consecutive iterations (0 before any is seen): its noise."""
        moves = self.moves.get(task)
        return float(np.median(moves)) if moves else 0.0

    def _speed(self, task: int, a: int) -> float:
        """How fast the task's accuracy moves just before ``a``: its noise, or the steepest slope
        between its known points of the last period where that is faster (right after a switch,
        where some strategies oscillate by tens of points within a few iterations)."""
        pts = self.points[task]
        recent = [(m, pts[m]) for m in range(a - self.period, a + 1) if m in pts]
        slopes = [abs(w - v) / (n - m) for (m, v), (n, w) in zip(recent, recent[1:])]
        return max([self._pace(task), *slopes])

    def _margin(self, task: int) -> float:
        floor = self.floors[task] if task < len(self.floors) else 0.003
        return max(floor, self.z * self._pace(task)) if self.moves.get(task) else max(floor, 0.01)

    def _reach(self, task: int, a: int, b: int, at_least: float = 0.0) -> float:
        """How far the curve may stray from both ends of (a, b) and come back (its speed at least
        ``at_least``)."""
        return self.reach * (b - a) / 2 * max(self._speed(task, a), at_least)

    def _reach_below(self, task: int, a: int, b: int) -> float:
        """How far below its ends (a, b) may hold a new lowest point. For an old task back from a
        dip, at least the ``back_quantile`` of its moves between consecutive iterations as the
        speed: a lower low after a return moves where iterations-to-recover counts from by
        hundreds of updates, and the slopes just before ``a`` miss a sharp dip inside a steady
        oscillation (EWC on permuted-fmnist: 0.577 -> 0.476 -> 0.569 within 8 updates whose
        neighbours moved at a third of that speed)."""
        if not self._back_from_a_dip(task):
            return self._reach(task, a, b)
        return self._reach(task, a, b, at_least=float(np.quantile(self.moves[task], self.back_quantile)))

    def _back_from_a_dip(self, task: int) -> bool:
        """Whether old task ``task`` fell below its accuracy before the switch by more than the
        tolerance and its noise margin (a dip, not noise) and has come back since its lowest point."""
        low = self.lows.get(task)
        if low is None or not self.moves.get(task) or self.pre is None or task >= len(self.pre):
            return False
        dipped = low[0] < self.pre[task] - self.tolerance - self._margin(task)
        return dipped and self.last_back.get(task, -1) > low[1]

    def _add(self, task: int, n: int, accuracy: float) -> None:
        pts = self.points.setdefault(task, {})
        pts[n] = accuracy
        for m in (n - 1, n + 1):
            if m in pts:
                moves = self.moves.setdefault(task, [])
                moves.append(abs(pts[m] - accuracy))
                del moves[:-200]
        drop, rise = self.drop.get(task, 0.0), self.rise.get(task, 0.0)
        for m in range(n - self.window + 1, n + self.window):
            if m != n and m in pts:
                change = accuracy - pts[m] if m < n else pts[m] - accuracy
                drop, rise = max(drop, -change), max(rise, change)
        self.drop[task], self.rise[task] = drop, rise
        if self.pre is not None and task < len(self.pre) and accuracy >= self.pre[task] - metrics.RECOVERY_TOLERANCE:
            self.last_back[task] = max(n, self.last_back.get(task, n))
        for lows, after in ((self.lows, self.start), (self.pseudo_lows, self.mid)):
            low = lows.get(task)
            if after is not None and n > after and (low is None or (accuracy, n) < low):
                lows[task] = (accuracy, n)

    def _low(self, task: int) -> tuple[float, int]:
        """The lowest accuracy of ``task`` evaluated in this segment after its start, and where."""
        return self.lows[task]

    def observe(self, n: int, evaluation, seen: int, training: int | None) -> None:
        acc = (evaluation.correct.float() / evaluation.counts.clamp(min=1).float()).cpu().numpy()
        self.observe_accuracy(n, acc, seen, training)

    def observe_accuracy(self, n: int, accuracy, seen: int, training: int | None) -> None:
        """After a coarse evaluation at ``n`` of every task seen so far (host values): plan the looks
        back at the iterations since the previous one."""
        acc = np.asarray(accuracy, dtype=float)
        self.full = acc if self.full is None or len(acc) >= len(self.full) else np.concatenate(
            [acc, self.full[len(acc):]])
        if self.start is None or n <= self.prev:
            return
        a, b = self.prev, n
        self.prev, self.interval, self.training = n, (a, n), training
        tasks = range(min(seen, len(acc)))
        for i in tasks:
            self._add(i, b, float(acc[i]))
        if b - a < 2 or training is None or self.every_iteration or self.short:
            return
        looks: dict[int, list[int]] = {}
        end = b == self.stop
        self.old = []
        for i in tasks:
            wanted: range | None = None
            if self._moved(i, a, b):  # and the window before it that the ring still holds
                wanted = range(max(a - self.window + 1, b - self.depth + 1, self.start + 1), b)
            else:
                self.bisect.append((i, a, b))
                if i == training:
                    wanted = range(a + 1, min(b, self.start + self.window + 1))
            if i != training:
                self.old.append(i)
            its = set(wanted or ())
            if end:  # a drop across the switch can start in the segment's last iterations (the
                # ring holds them even where they fall before ``a``)
                its.update(range(max(b - self.window + 1, b - self.depth + 1, self.start + 1), b))
            for m in its:
                looks.setdefault(m, []).append(i)
        self._plan(looks)

    def _moved(self, i: int, a: int, b: int) -> bool:
        """Whether (a, b) may hold task ``i``'s largest drop (WF) or rise (WP) within ``window``."""
        pts, margin = self.points[i], self._margin(i)
        before = [pts[m] for m in range(a - self.window + 1, a + 1) if m in pts]
        if not before:
            return False
        vb = pts[b]
        drop, rise = max(before) - vb, vb - min(before)
        return (drop > max(margin, self.drop.get(i, 0.0) - margin)
                or rise > max(margin, self.rise.get(i, 0.0) - margin))

    def _plan(self, looks: dict[int, list[int]]) -> None:
        """Queue the looks not made yet (a task's known iterations are skipped)."""
        for m in sorted(looks):
            tasks = [i for i in dict.fromkeys(looks[m]) if m not in self.points.get(i, {})]
            if tasks:
                self.queue.append((m, tasks))

    def _worth_bisecting(self, i: int, a: int, b: int) -> bool:
        """Whether (a, b) may hold a new minimum of old task ``i`` (its lower end, less how far the
        curve can stray in it, within the margin of the lowest value seen in the segment), or a
        drop within ``window`` larger than the task's largest so far (a dip that came back inside
        it: the drop from the points a window before ``a``, or from the higher end, to the lower
        end less the noise's excursion)."""
        pts, margin = self.points[i], self._margin(i)
        lo, hi = min(pts[a], pts[b]), max(pts[a], pts[b])
        if i != self.training:
            # the segment's minimum, and after the pseudo-switch its own (the gap's noise floor)
            low, _ = self._low(i)
            # nothing is below 0: a task at 0 has its minimum already
            if low > 0 and lo - self._reach_below(i, a, b) <= low + margin:
                return True
            pseudo = self.pseudo_lows.get(i) if self.mid is not None and a >= self.mid else None
            if pseudo and pseudo[0] > 0 and self._in_gap(i) and lo - self._reach(i, a, b) <= pseudo[0] + margin:
                return True
        # noise strays by about the margin; a curve moving faster than its noise by up to its speed
        stray = self.reach * (b - a) / 2 * max(0.0, self._speed(i, a) - self._pace(i))
        before = max([pts[m] for m in range(a - self.window + 1, a + 1) if m in pts] + [hi + stray])
        return before - (lo - stray) > max(margin, self.drop.get(i, 0.0) + margin)

    def _in_gap(self, i: int) -> bool:
        """Whether old task ``i``'s pair counts in the gap so far (``metrics.stability_gap``): it has not
        left the band around its accuracy before the switch, or it dipped and is back in it. A pair
        still down is forgetting for now, whose floor is not reported: no looks for it."""
        if self.pre is None or i >= len(self.pre):
            return False
        low, at = self._low(i)
        return low >= self.pre[i] - metrics.RECOVERY_TOLERANCE or self.last_back.get(i, -1) > at

    def _bisect(self) -> None:
        """One round of bisection: look at the middle of every interval that may hold a new minimum
        (every iteration of the short ones)."""
        looks: dict[int, list[int]] = {}
        again = []
        for i, a, b in self.bisect:
            if b - a < 2 or not self._worth_bisecting(i, a, b):
                continue
            if b - a <= 3:
                for m in range(a + 1, b):
                    looks.setdefault(m, []).append(i)
            else:
                mid = (a + b) // 2
                looks.setdefault(mid, []).append(i)
                again += [(i, a, mid), (i, mid, b)]
        self.bisect = again
        self._plan(looks)

    def _recovery(self) -> None:
        """Fill the first gap between known points of the current interval that may hold an old
        task's first return after its minimum (within ``tolerance`` of its accuracy before the
        switch). Filled, not bisected: a curve hovering at the threshold crosses it several times,
        and the first crossing is the one that counts."""
        a, b = self.interval
        looks: dict[int, list[int]] = {}
        for i in self.old:
            if self.pre is None or i >= len(self.pre):
                continue
            threshold = self.pre[i] - self.tolerance
            low, at = self._low(i)
            if low >= threshold:
                continue
            pts = self.points[i]
            known = [m for m in range(max(a, at), b + 1) if m in pts]
            for p, q in zip(known, known[1:]):
                if pts[p] >= threshold:
                    break  # back already, at a known iteration with none unknown before it
                if q - p > 1 and max(pts[p], pts[q]) >= threshold - max(self._margin(i), self._reach(i, p, q)):
                    for m in range(p + 1, q):
                        looks.setdefault(m, []).append(i)
                    break
        self._plan(looks)

    def next_look(self) -> tuple[int, list[int]] | None:
        """The next past iteration to evaluate and for which tasks (None: nothing more now)."""
        while not self.queue and self.bisect:
            self._bisect()
        if not self.queue:
            self._recovery()
        return self.queue.pop(0) if self.queue else None

    def observe_look(self, n: int, tasks: list[int], accuracy) -> None:
        """The accuracies of a look back at ``n`` for ``tasks``."""
        for i, v in zip(tasks, accuracy):
            self._add(i, n, float(v))
