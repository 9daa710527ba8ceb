"""Continual-evaluation metrics: pure functions of the accuracy log.

The log is a DataFrame with one row per (evaluation, task): ``eval_step, iteration,
trained_task, task, accuracy, n`` (accuracy a fraction in [0, 1]; ``trained_task`` is -1 for
the evaluation before the first update). Every metric can therefore be recomputed from a
saved ``curves.csv``.

Phases. The *phase* of an evaluation is the highest task trained so far (the running maximum
of ``trained_task``). In a sequential stream the phase is the trained task; in streams that
revisit old tasks (recurring orderings) rehearsal belongs to the phase of the newest task.
``R[i, j]`` is the accuracy on task *j* at the last evaluation of phase *i* (the end of task
*i*), ``b_j`` the accuracy at initialisation, and a task's *curve* is its evaluations from the
start of its own phase on. With 0-based tasks, "now" is the last evaluation and *p* its phase.

Definitions follow De Lange, van de Ven & Tuytelaars, "Continual evaluation for lifelong
learning: identifying the stability gap" (ICLR 2023) for min-ACC, WC-ACC, WF/WP; Lopez-Paz &
Ranzato, "Gradient Episodic Memory" (NeurIPS 2017) for ACC/BWT/FWT (divided by T-1 here; their
code divides by T); Chaudhry et al., "Riemannian walk" (ECCV 2018) for forgetting and
"Efficient lifelong learning with A-GEM" (ICLR 2019) for LCA; Lapacz et al. (WACV 2025) for
per-transition gap depth and recovery. A log that stops before the last task (an interrupted
stream, a plugin in a partial loop) gives the metrics of the tasks trained so far.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

LOG_COLUMNS = ["eval_step", "iteration", "trained_task", "task", "accuracy", "n"]
RECOVERY_TOLERANCE = 0.01


class _Log:
    """The log pivoted once: one row per evaluation, one column per task."""

    def __init__(self, log: pd.DataFrame):
        if log.empty:
            raise ValueError("the accuracy log is empty")
        missing = set(LOG_COLUMNS) - set(log.columns) - {"n"}
        if missing:
            raise ValueError(f"the accuracy log lacks the column(s) {', '.join(sorted(missing))}")
        steps = log.groupby("eval_step")[["iteration", "trained_task"]].first().sort_index()
        self.A = log.pivot_table(index="eval_step", columns="task", values="accuracy", aggfunc="first")
        self.A = self.A.reindex(steps.index)
        self.n_tasks = int(log["task"].max()) + 1
        self.A = self.A.reindex(columns=range(self.n_tasks))
        self.iteration = steps["iteration"].to_numpy()
        self.phase = steps["trained_task"].cummax().to_numpy()
        self.p = int(self.phase[-1])
        self.values = self.A.to_numpy(dtype=float)

    def phase_end(self, i: int) -> int | None:
        """Row of the last evaluation of phase ``i`` (None if phase i never happened)."""
        rows = np.flatnonzero(self.phase == i)
        return int(rows[-1]) if len(rows) else None

    def curve(self, i: int) -> np.ndarray:
        """Task ``i``'s accuracies from the start of its own phase on (evaluated rows only)."""
        return self.curve_points(i)[1]

    def curve_points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(iterations, accuracies)`` of task ``i``'s curve."""
        rows = self.phase >= i
        v, it = self.values[rows, i], self.iteration[rows]
        keep = ~np.isnan(v)
        return it[keep], v[keep]

    def phase_start(self, i: int) -> int:
        """The iteration at which phase ``i`` begins (that of the last evaluation before it)."""
        before = np.flatnonzero(self.phase < i)
        return int(self.iteration[before[-1]]) if len(before) else 0


def as_log(log) -> _Log:
    """Pivot once: ``summarize`` passes the pivoted log to every metric instead of the DataFrame."""
    return log if isinstance(log, _Log) else _Log(log)


def _mean(xs) -> float:
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else float("nan")


def accuracy_matrix(log: pd.DataFrame) -> np.ndarray:
    """``R[i, j]``: accuracy on task j at the end of task i (NaN rows for tasks not yet finished)."""
    L = as_log(log)
    R = np.full((L.n_tasks, L.n_tasks), np.nan)
    for i in range(L.n_tasks):
        row = L.phase_end(i)
        if row is not None:
            R[i] = L.values[row]
    return R


def initial_accuracies(log: pd.DataFrame) -> np.ndarray:
    """``b_j``: accuracy on every task before the first update (NaN if not evaluated)."""
    L = as_log(log)
    rows = np.flatnonzero(L.phase < 0)
    return L.values[rows[-1]] if len(rows) else np.full(L.n_tasks, np.nan)


def _final_row(log):
    """R restricted to the tasks trained so far (all of them once the stream is complete), so a
    log of a partly trained stream gives the metrics of that prefix."""
    R = accuracy_matrix(log)
    done = [i for i in range(R.shape[0]) if not np.isnan(R[i]).all()]
    T = (max(done) + 1) if done else R.shape[0]
    return R[:T, :T], T


def acc(log: pd.DataFrame) -> float:
    """ACC = mean_j R[T, j]: average accuracy over all tasks at the end of the last task."""
    R, T = _final_row(log)
    return float(np.mean(R[T - 1]))


def bwt(log: pd.DataFrame) -> float:
    """BWT = 1/(T-1) sum_{j<T} (R[T, j] - R[j, j]). NaN with a single task (no old task)."""
    R, T = _final_row(log)
    if T < 2:
        return float("nan")
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def fwt(log: pd.DataFrame) -> float:
    """FWT = 1/(T-1) sum_{j>=2} (R[j-1, j] - b_j). NaN with one task or without the initial evaluation."""
    R, T = _final_row(log)
    b = initial_accuracies(log)[:T]
    if T < 2:
        return float("nan")
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def forgetting(log: pd.DataFrame) -> float:
    """FORG = 1/(T-1) sum_{j<T} (max_{l<T} R[l, j] - R[T, j]). NaN with a single task."""
    R, T = _final_row(log)
    if T < 2:
        return float("nan")
    return float(np.mean([np.max(R[:T - 1, j]) - R[T - 1, j] for j in range(T - 1)]))


def min_acc(log: pd.DataFrame) -> float:
    """min-ACC = 1/(k-1) sum_{i<k} min_{|T_i| < n <= now} A_i(n): the worst accuracy each old task
    fell to after its own training ended, averaged. NaN while no task is old yet."""
    L = as_log(log)
    mins = []
    for i in range(L.p):
        v = L.values[L.phase > i, i]
        v = v[~np.isnan(v)]
        if len(v):
            mins.append(float(v.min()))
    return _mean(mins) if L.p >= 1 else float("nan")


def wc_acc(log: pd.DataFrame) -> float:
    """WC-ACC = (1/k) A_k(now) + (1 - 1/k) min-ACC_k: a lower bound on accuracy at any point.
    With one task seen (k = 1) it is A_1(now)."""
    L = as_log(log)
    k = L.p + 1
    current = L.curve(L.p)
    a_now = float(current[-1]) if len(current) else float("nan")
    if k == 1:
        return a_now
    return a_now / k + (1 - 1 / k) * min_acc(log)


def _windowed(iterations: np.ndarray, curve: np.ndarray, w: int, rise: bool) -> float:
    """Largest drop (or rise) a[m] -> a[n] between evaluations m < n less than w iterations apart
    (both inside one window of w consecutive iterations); 0 if none; NaN when no window of w
    iterations holds two evaluations (evaluated every w iterations or more sparsely: unmeasurable,
    which a 0 would hide)."""
    best = float("nan")
    starts = np.searchsorted(iterations, iterations - w + 1, side="left")
    for n in range(1, len(curve)):
        window = curve[min(starts[n], n):n]
        if len(window):
            change = curve[n] - window.min() if rise else window.max() - curve[n]
            best = max(0.0 if math.isnan(best) else best, float(change))
    return best


def windowed_forgetting(log: pd.DataFrame, w: int = 10) -> float:
    """WF^w: per task, the largest drop inside any window of w consecutive *iterations* of its
    curve, averaged over the tasks seen so far (the one being trained included, as the reference
    code does). Windows are counted in iterations, not evaluations, so the metric means the same
    under any evaluation schedule; an unevaluated iteration is skipped, not interpolated, so a
    window holding fewer than two evaluations shows no change (evaluating more sparsely than
    every w iterations cannot see a drop: with no such window in any task the metric is NaN, "n/a",
    not 0). With
    evaluation at every iteration this is De Lange et al.'s WF^w exactly."""
    return _task_mean([_windowed(*as_log(log).curve_points(i), w, rise=False) for i in range(as_log(log).p + 1)])


def windowed_plasticity(log: pd.DataFrame, w: int = 10) -> float:
    """WP^w: as WF^w with the largest rise instead of the largest drop."""
    return _task_mean([_windowed(*as_log(log).curve_points(i), w, rise=True) for i in range(as_log(log).p + 1)])


def windowed_noise(log: pd.DataFrame, w: int = 10) -> float:
    """WF^w's noise floor: the same largest drop within ``w`` iterations, taken only across the
    pseudo-switch of each phase (``pseudo_switch``, where no task changes) rather than over the
    whole curve: per task, the largest ``A(p) - A(q)`` with ``p <= middle < q``, ``q - p < w``,
    over the phases in which the task is evaluated, averaged over tasks as WF^w is. A switch that
    does nothing leaves WF^w at about this; a WF^w below twice it is within the evaluation's own
    jitter (``noise_verdict``). NaN where no such pair was evaluated (as WF^w)."""
    L = as_log(log)
    per_task = []
    for i in range(L.p + 1):
        its, v = L.curve_points(i)
        best = float("nan")
        for t in range(i, L.p + 1):
            rows = np.flatnonzero(L.phase == t)
            if not len(rows):
                continue
            mid = pseudo_switch(L.phase_start(t), int(L.iteration[rows[-1]]))
            before = np.flatnonzero((its <= mid) & (its > mid + 1 - w))  # a pair (p, q) across it fits in w
            for p in before:
                after = v[(its > mid) & (its < its[p] + w)]
                if len(after):
                    best = max(0.0 if math.isnan(best) else best, float(v[p] - after.min()))
        per_task.append(best)
    return _task_mean(per_task)


def _task_mean(per_task: list[float]) -> float:
    """WF/WP over tasks: NaN when no task's curve has a window holding two evaluations (the
    schedule evaluated too sparsely to measure it); otherwise a task without one shows no change."""
    if all(math.isnan(v) for v in per_task):
        return float("nan")
    return float(np.mean([0.0 if math.isnan(v) else v for v in per_task]))


def lca(log: pd.DataFrame, b: int = 10) -> float:
    """LCA^b: mean accuracy of each task at the evaluations within the first b *iterations* of its
    own phase, averaged over tasks: how fast a task is learned. Counted in iterations so the
    schedule does not change its meaning (unevaluated iterations are skipped; a task with no
    evaluation in that span is left out); with evaluation at every iteration these are the first
    b evaluations, as in Chaudhry et al."""
    L = as_log(log)
    out = []
    for i in range(L.p + 1):
        rows = (L.phase == i) & (L.iteration <= L.phase_start(i) + b)
        v = L.values[rows, i]
        v = v[~np.isnan(v)]
        if len(v):
            out.append(float(v.mean()))
    return _mean(out)


def aaa(log: pd.DataFrame) -> float:
    """AAA (Caccia et al., ICLR 2022): the time average of the mean accuracy on the tasks seen so
    far, from the first update on. Each evaluation of every seen task stands for the iterations
    since the previous one (evaluations of some tasks only, a schedule's looks back, are left
    out). With evaluation at every iteration every weight is 1: the plain mean over evaluations;
    under a sparser schedule it is the same average estimated from the points evaluated, so it
    depends on the schedule, unlike every other metric here."""
    L = as_log(log)
    points, last = [], None
    for r in range(len(L.phase)):
        if L.phase[r] < 0:
            last = L.iteration[r]
            continue
        seen = L.values[r, :L.phase[r] + 1]
        if np.isnan(seen).any():
            continue
        start = last if last is not None else L.iteration[r] - 1
        points.append((float(L.iteration[r] - start), float(seen.mean())))
        last = L.iteration[r]
    if not points:
        return float("nan")
    w, v = np.array(points).T
    return float(np.sum(w * v) / np.sum(w))


def evaluated_every_iteration(log: pd.DataFrame) -> bool:
    """Whether every task was evaluated at every iteration from the start of its own phase to the
    last: every-iteration evaluation, the reference for every metric here. False under a schedule
    that skipped some (the refine schedule on long segments): its minima come from looks at the
    exact iterations where they may lie, its WF/WP count only evaluated iterations (a lower bound
    of every iteration's) and its AAA is an estimate (``UNEVALUATED``)."""
    L = as_log(log)
    last = int(L.iteration.max())
    for i in range(L.p + 1):
        start = L.phase_start(i)
        its = L.curve_points(i)[0]
        if len(np.unique(its[its > start])) < last - start:
            return False
    return True


def stability_gap(log: pd.DataFrame) -> pd.DataFrame:
    """One row per (old task i, later task t): the dip of task i while task t is learned.

    ``pre`` = A_i at the end of task t-1; ``minimum`` = min of A_i over task t's evaluations;
    ``depth`` = pre - minimum and ``depth_norm`` = depth / pre; ``end`` = A_i at the end of t and
    ``recovery`` = end - minimum; ``iters_to_recover`` = updates of task t until A_i is first back
    within 0.01 of ``pre`` at or after the minimum (0 if it never left that band, NaN if it never
    came back during task t). ``dipped``: the minimum left the band; ``recovered``: it dipped and
    came back (a stability gap, De Lange et al. 2023); a dip that never came back is forgetting,
    and ``kept`` = pre - end is what it still costs at the end of t.

    ``noise`` is the same "pre minus minimum" statistic at a pseudo-switch in the middle of task t
    (A_i at the last evaluation at or before the midpoint, minus its minimum after it), where no
    task changes: the evaluation's own jitter, against which a gap must be read.
    """
    L = as_log(log)
    rows = []
    for t in range(1, L.p + 1):
        prev = L.phase_end(t - 1)
        if prev is None:
            continue
        in_t = np.flatnonzero(L.phase == t)
        start_iter = L.iteration[prev]
        mid = pseudo_switch(int(start_iter), int(L.iteration[in_t][-1])) if len(in_t) else 0
        for i in range(t):
            pre = L.values[prev, i]
            v = L.values[in_t, i]
            ok = ~np.isnan(v)
            v, its = v[ok], L.iteration[in_t][ok]
            if not len(v) or np.isnan(pre):
                continue
            j = int(np.argmin(v))
            minimum = float(v[j])
            dipped = minimum < pre - RECOVERY_TOLERANCE
            if not dipped:
                to_recover = 0.0
            else:
                back = np.flatnonzero(v[j:] >= pre - RECOVERY_TOLERANCE)
                to_recover = float(its[j + back[0]] - start_iter) if len(back) else float("nan")
            depth = float(pre - minimum)
            before, after = v[its <= mid], v[its > mid]
            noise = float(before[-1] - after.min()) if len(before) and len(after) else float("nan")
            rows.append({"task": i, "transition": t, "pre": float(pre), "minimum": minimum, "depth": depth,
                         "depth_norm": depth / pre if pre > 0 else float("nan"), "end": float(v[-1]),
                         "recovery": float(v[-1] - minimum), "iters_to_recover": to_recover,
                         "dipped": bool(dipped), "recovered": bool(dipped and not math.isnan(to_recover)),
                         "kept": float(pre - v[-1]), "noise": noise})
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


GAP_COLUMNS = ["task", "transition", "pre", "minimum", "depth", "depth_norm", "end", "recovery", "iters_to_recover",
               "dipped", "recovered", "kept", "noise"]


def pseudo_switch(start: int, stop: int) -> int:
    """The iteration in the middle of a segment (start, stop] where ``stability_gap`` measures the
    noise floor: the schedules evaluate it as they evaluate a switch."""
    return start + (stop - start) // 2


#: a gap (or WF) at least this many times its noise floor is called "above noise"
NOISE_SIGNAL = 2.0


def noise_verdict(value: float, noise: float) -> str:
    """``above noise`` when a stability statistic (the gap's depth, WF10) is at least
    ``NOISE_SIGNAL`` times the same statistic at pseudo-switches (the evaluation's jitter),
    ``within noise`` otherwise, ``n/a`` without either."""
    if math.isnan(value) or math.isnan(noise):
        return "n/a"
    return "above noise" if value >= NOISE_SIGNAL * max(noise, 0.0) and value > 0 else "within noise"


class MissingEvaluation(UserWarning):
    """A metric's input is not in the log (a loop of one's own that skipped an evaluation the
    metric needs): the metric is NaN, and this says why."""


def missing_evaluations(log: pd.DataFrame) -> list[str]:
    """What the log lacks that the matrix metrics need, in sentences (empty for a clbench run, whose
    protocol evaluates every task before the first update and at every task's end)."""
    R, T = _final_row(log)
    problems = []
    holes = [(i, j) for i in range(T) for j in range(i + 1) if np.isnan(R[i, j])]
    if holes:
        pairs = ", ".join(f"task {j} after task {i}" for i, j in holes[:4]) + (" ..." if len(holes) > 4 else "")
        problems.append(f"no evaluation of {pairs} at that task's end: ACC, BWT, forgetting, min-ACC and WC-ACC "
                        "need every task seen so far evaluated when each task ends (they read NaN); evaluate "
                        "them all at each boundary, as clbench's runner does")
    if T and np.isnan(initial_accuracies(log)).all():
        problems.append("no evaluation before the first update: FWT needs one (it reads NaN)")
    return problems


def summarize(log: pd.DataFrame) -> dict[str, float]:
    """Every metric of the log in one dict (WF/WP at w = 10 and 100, LCA at b = 10).

    The stability gap apart from forgetting (``stability_gap``'s pairs): ``gap_depth``,
    ``gap_depth_norm``, ``gap_recovery`` and ``gap_iters_to_recover`` average over the (task,
    transition) pairs that dipped (left the 0.01 band) and came back, ``gap_noise`` is the same
    statistic at pseudo-switches of those pairs; ``gap_unrecovered`` is the share of the dipped pairs
    that never came back and ``drop_kept`` what they still cost at the end of the transition
    (forgetting). With no pair dipped the gap is a measured 0; with dips none of which came back
    it is NaN (there is no gap to measure, only forgetting: finetuning never reads as "no gap").
    A pair that never dipped has nothing to recover from and counts in neither (a task already at
    0 before the switch, as under finetuning, would otherwise pull the means towards 0).
    ``dip_depth`` is the old, mixed depth: the mean over every pair, gap and forgetting together.
    """
    log = as_log(log)
    for problem in missing_evaluations(log):
        warnings.warn(problem, MissingEvaluation, stacklevel=2)
    gap = stability_gap(log)
    dipped = gap[gap["dipped"].astype(bool)]
    back = gap[gap["recovered"].astype(bool)]  # the stability gap: dips that came back
    none = float(0.0 if len(gap) and not len(dipped) else float("nan"))  # no dip at all: a measured 0
    noisy = back if len(back) or len(dipped) else gap  # the pairs the gap's noise floor is read on
    return {
        "acc": acc(log), "bwt": bwt(log), "fwt": fwt(log), "forgetting": forgetting(log),
        "min_acc": min_acc(log), "wc_acc": wc_acc(log),
        "wf10": windowed_forgetting(log, 10), "wf10_noise": windowed_noise(log, 10),
        "wf100": windowed_forgetting(log, 100),
        "wp10": windowed_plasticity(log, 10), "wp100": windowed_plasticity(log, 100),
        "lca10": lca(log, 10), "aaa": aaa(log),
        "dip_depth": _mean(gap["depth"].tolist()),
        "gap_depth": _mean(back["depth"].tolist()) if len(back) else none,
        "gap_depth_norm": _mean(back["depth_norm"].tolist()) if len(back) else none,
        "gap_recovery": _mean(back["recovery"].tolist()) if len(back) else none,
        "gap_iters_to_recover": _mean(back["iters_to_recover"].tolist()) if len(back) else none,
        "gap_noise": _mean(noisy["noise"].tolist()),
        "gap_unrecovered": float((~dipped["recovered"].astype(bool)).mean()) if len(dipped) else float("nan"),
        "drop_kept": _mean(dipped.loc[~dipped["recovered"].astype(bool), "kept"].tolist()),
    }


METRIC_DESCRIPTIONS = {
    "acc": "final average accuracy over all tasks (GEM paper)",
    "bwt": "backward transfer, divided by T-1 (GEM's code divides by T)",
    "fwt": "forward transfer vs the accuracy at initialisation",
    "forgetting": "mean drop from each old task's best end-of-task accuracy (Chaudhry et al. 2018)",
    "min_acc": "mean over old tasks of the lowest accuracy after their training (De Lange et al. 2023); a minimum "
               "over noisy evaluations: read it against gap_noise, how far a noise-only minimum falls",
    "wc_acc": "worst-case accuracy: A_k/k + (1-1/k) min-ACC (De Lange et al. 2023); noise: as min-ACC",
    "wf10": "windowed forgetting: largest drop within 10 iterations (unevaluated iterations skipped)",
    "wf10_noise": "WF10's noise floor: the largest drop within 10 iterations across the middle of each phase, "
                  "where no task changes (averaged over tasks as WF10); a WF10 below twice it is within noise",
    "wf100": "windowed forgetting, window 100 iterations",
    "wp10": "windowed plasticity, window 10 iterations", "wp100": "windowed plasticity, window 100 iterations",
    "lca10": "learning-curve area over the first 10 iterations of each task (Chaudhry et al. 2019)",
    "aaa": "average anytime accuracy: time average of the mean accuracy on the tasks seen (Caccia et al. 2022)",
    "gap_depth": "stability gap: mean depth (pre-switch accuracy minus the minimum) of the (old task, transition) "
                 "pairs that dipped by more than 0.01 and came back within 0.01 during the transition (De Lange "
                 "et al. 2023; per transition as Lapacz et al. 2025); 0 if no pair dipped, n/a if no dip came back",
    "gap_depth_norm": "gap depth divided by the pre-switch accuracy (the same pairs)",
    "gap_recovery": "mean recovery from the gap's minimum by the end of the transition (the same pairs)",
    "gap_iters_to_recover": "mean updates until back within 0.01 of the pre-switch accuracy (the same pairs)",
    "gap_noise": "the gap's noise floor: the same pre-minus-minimum statistic at a pseudo-switch in the middle of "
                 "each transition, where no task changes (the same pairs); a gap below twice it is within noise",
    "gap_unrecovered": "forgetting, share: fraction of the dipped pairs that never came back during the transition",
    "drop_kept": "forgetting, size: mean of pre-switch minus end-of-transition accuracy over the dipped pairs that "
                 "never came back",
    "dip_depth": "mean depth over every (old task, transition) pair: gap and forgetting together",
}


#: how each metric treats an iteration the schedule did not evaluate (``clbench list metrics``):
#: every metric but AAA is computed from evaluations at exact iterations, never interpolated, so it
#: is what every-iteration evaluation gives wherever the schedule evaluated the points it depends on
UNEVALUATED = {
    "acc": "not used: only end-of-task evaluations (always made, every task)",
    "bwt": "not used: only end-of-task evaluations (always made)",
    "fwt": "not used: end-of-task evaluations and the one before training",
    "forgetting": "not used: only end-of-task evaluations (always made)",
    "min_acc": "skipped (a minimum over evaluated iterations); refine looks back at each candidate minimum",
    "wc_acc": "skipped, as min-ACC",
    "wf10": "skipped: a window with fewer than two evaluations shows no drop; n/a when no task has a window of "
            "two (evaluated every 10 iterations or more sparsely); refine looks for each task's largest drop, but "
            "where the largest drops are the noise's (joint training) it can read low (by 0.007 on the default "
            "permuted-fmnist stream): evaluate every iteration for it there",
    "wf10_noise": "skipped, as WF10 (refine evaluates every iteration within 10 of each segment's middle)",
    "wf100": "skipped, as WF10; the refine schedule looks for the points of 10-iteration windows only, so under it "
             "WF100 can read low (by up to 0.006 on delange-split-fmnist's runs): evaluate every iteration for it",
    "wp10": "skipped, as WF10", "wp100": "skipped, as WF100 (low by up to 0.015 under refine there)",
    "lca10": "skipped: averages the evaluations of each task's first 10 iterations (refine evaluates them all)",
    "aaa": "SCHEDULE-DEPENDENT: each evaluation of every seen task stands for the iterations since the previous "
           "one (exact under every-iteration evaluation, an estimate otherwise)",
    "gap_depth": "skipped, as min-ACC", "gap_depth_norm": "skipped, as min-ACC",
    "gap_recovery": "skipped: minimum as min-ACC, end of the transition always evaluated",
    "gap_iters_to_recover": "skipped: the first evaluated iteration back in the band (refine looks back at the "
                            "exact crossing)",
    "gap_unrecovered": "skipped, as iterations to recover",
    "gap_noise": "skipped: the last evaluation at or before the transition's middle, the lowest after it (refine "
                 "evaluates the middle and looks for that minimum)",
    "drop_kept": "not used: the end of the transition is always evaluated (which pairs count: as iterations to "
                 "recover)",
    "dip_depth": "skipped, as min-ACC",
}

#: a loss whose running median exceeds this many times its starting value has diverged
DIVERGENCE_FACTOR = 100.0
#: iterations in the starting value and in the running median (a single spike is not divergence)
DIVERGENCE_WINDOW = 10
#: a task whose loss still has its median over its last ``DIVERGENCE_WINDOW`` updates above this
#: many times the untrained loss (about ln C: a model that predicts nothing scores that) has blown up
#: without coming down; a healthy class-incremental switch (50 under EWC) is back to 3 within 40
TASK_END_FACTOR = 10.0
#: a task whose accuracy at the end of its own training is below this share of chance was never learnt
NEVER_LEARNT = 0.5
DIVERGENCE_RULE = (f"loss not finite; or its median over {DIVERGENCE_WINDOW} consecutive iterations above "
                   f"{DIVERGENCE_FACTOR:g}x the largest of the first {DIVERGENCE_WINDOW}; or a task's last "
                   f"{DIVERGENCE_WINDOW} losses above {TASK_END_FACTOR:g}x that and above half its first ones (it "
                   "blew up and never came down); "
                   f"or a task's accuracy at the end of its own training below {NEVER_LEARNT:g}x chance while its "
                   "loss did not fall (never learnt)")


def diverged_at(losses: np.ndarray, tasks: np.ndarray | None = None) -> int | None:
    """The first iteration (1-based) at which training diverged, or None: the loss is not finite,
    or the median of ``DIVERGENCE_WINDOW`` consecutive losses ending there exceeds
    ``DIVERGENCE_FACTOR`` times the largest of the first ``DIVERGENCE_WINDOW`` losses (the untrained
    model's loss, about ln C; at least 1e-3). Not their median: a first task learnt within a few
    steps made that tiny (0.13 on split-digits), and the jump of a class-incremental loss at a
    later task switch (to 50 under EWC, back to 3 within 40 steps) then read as divergence.

    With ``tasks`` (the task of each iteration) each task of at least three windows is also judged
    at its own end: the median of its last ``DIVERGENCE_WINDOW`` losses above ``TASK_END_FACTOR``
    times that start, and not down to half the median of its first ones, means the loss blew up
    and never came down (DER at too high a learning rate: 30-1,700 against 2.1, whose running
    median never reached 100x); it diverged where its running median first crossed that. A
    class-incremental switch's jump comes down within the task (EWC: 50 to 3 in 40 updates), and
    a task too short to show it is left to the other rules. A diverged run's metrics describe a
    broken model: the leaderboard marks it and ranks it last."""
    found = _loss_divergence(losses, tasks)
    return min(found)[0] if found else None


def _loss_divergence(losses: np.ndarray, tasks: np.ndarray | None) -> list[tuple[int, str]]:
    """Every rule of ``diverged_at`` that fired: (the iteration, what happened)."""
    losses = np.asarray(losses, dtype=float)
    bad = np.flatnonzero(~np.isfinite(losses))
    first = int(bad[0]) if len(bad) else len(losses)
    w = DIVERGENCE_WINDOW
    found = [(first + 1, f"loss not finite at iteration {first + 1}")] if len(bad) else []
    if first >= w:
        start = max(float(np.max(losses[:w])), 1e-3)
        rolling = np.median(np.lib.stride_tricks.sliding_window_view(losses[:first], w), axis=1)
        high = np.flatnonzero(rolling > DIVERGENCE_FACTOR * start)
        if len(high):
            found.append((int(high[0]) + w, f"loss median over {w} iterations above {DIVERGENCE_FACTOR:g}x its "
                                            f"start ({start:.3g})"))
        if tasks is not None:
            tasks = np.asarray(tasks)[:first]
            for task in dict.fromkeys(tasks.tolist()):
                its = np.flatnonzero(tasks == task)
                end = np.median(losses[its[-w:]]) if len(its) >= 3 * w else 0.0
                if end > TASK_END_FACTOR * start and end >= np.median(losses[its[:w]]) / 2:
                    own = np.median(np.lib.stride_tricks.sliding_window_view(losses[its], w), axis=1)
                    at = int(its[int(np.flatnonzero(own > TASK_END_FACTOR * start)[0]) + w - 1]) + 1
                    found.append((at, f"task {task}'s loss blew up and never came down (median of its last {w} "
                                      f"{end:.3g}, above {TASK_END_FACTOR:g}x the start {start:.3g})"))
    return found


def never_learnt(log: pd.DataFrame, chance: list[float], losses: np.ndarray | None = None,
                 tasks: np.ndarray | None = None) -> list[int]:
    """The tasks whose accuracy at the end of their own training (``R[t, t]``) is below
    ``NEVER_LEARNT`` times ``chance[t]`` (1 / the classes a prediction for it chooses among): a
    model that learnt anything of a task predicts its classes at least at chance; one that scores 0
    on it (DER at split-digits' default lr) never learnt it. With the ``losses`` (and the ``tasks``
    of their iterations), only where the task's loss did not fall either (its last
    ``DIVERGENCE_WINDOW`` losses' median not below its first ones', over at least two windows): a
    task cut too short to be learnt (a few updates of a smoke test) is not a broken run.

    With ``tasks``, "the end of its own training" is the end of the task's first stretch of updates,
    not of its phase: in a recurring stream an earlier task comes back before the next new one, and
    finetuning on it then erases the task just learnt (R[t, t] reads 0 for a task learnt well)."""
    R = accuracy_matrix(log)
    out = []
    for t in range(min(len(R), len(chance))):
        own_end = _own_end_accuracy(log, tasks, t) if tasks is not None else R[t, t]
        if np.isnan(own_end) or own_end >= NEVER_LEARNT * chance[t]:
            continue
        if losses is not None and tasks is not None:
            own = np.asarray(losses, dtype=float)[np.asarray(tasks) == t]
            w = DIVERGENCE_WINDOW
            if len(own) < 2 * w or np.median(own[-w:]) < np.median(own[:w]):
                continue
        out.append(t)
    return out


def _own_end_accuracy(log: pd.DataFrame, tasks: np.ndarray, t: int) -> float:
    """Task ``t``'s accuracy at the end of its first stretch of updates (every task is evaluated
    at a segment's end); R[t, t] where that evaluation is missing."""
    its = np.flatnonzero(np.asarray(tasks) == t)
    if not len(its):
        return float("nan")
    breaks = np.flatnonzero(np.diff(its) > 1)
    end = int(its[breaks[0]] if len(breaks) else its[-1]) + 1  # the 1-based iteration of its last update
    L = as_log(log)
    rows = [r for r in np.flatnonzero(L.iteration == end) if not np.isnan(L.values[r, t])]
    return float(L.values[rows[-1], t]) if rows else float(accuracy_matrix(L)[t, t])


def divergence(losses: np.ndarray, tasks: np.ndarray, log: pd.DataFrame, chance: list[float]
               ) -> tuple[int | None, str]:
    """(the iteration a run diverged at or None, why): ``diverged_at`` on the losses, or the end of
    the first task never learnt (``never_learnt``)."""
    found = _loss_divergence(losses, tasks)
    if found:
        return min(found)
    missed = never_learnt(log, chance, losses, tasks)
    if missed:
        t = missed[0]
        ends = np.flatnonzero(np.asarray(tasks) == t)
        return (int(ends[-1]) + 1 if len(ends) else len(losses)), (
            f"task {t} never learnt: accuracy {_own_end_accuracy(log, tasks, t):.3f} at the end of its own "
            f"training, below {NEVER_LEARNT:g}x chance ({chance[t]:.3f})")
    return None, DIVERGENCE_RULE


def chance_levels(setting: str, n_classes: int, task_classes: list[list[int]]) -> list[float]:
    """Per task, the accuracy of a uniform guess: among its own classes in task-incremental learning
    (a head per task), among all ``n_classes`` outputs otherwise (the lowest chance, so that no
    healthy run reads as never learnt)."""
    return [1.0 / max(1, len(c)) if setting == "task-il" else 1.0 / max(1, n_classes) for c in task_classes]
