"""The fewest evaluations any schedule needs to reproduce per-iteration metrics, against what an
evaluation budget (a share of wall time) allows.

From runs evaluated at every iteration (full test sets), an *oracle* that knew the whole curve in
advance would evaluate only: before the first update, every segment end, each (old task,
transition)'s minimum and recovery iteration, and the two ends of each task's largest drop within
10 iterations (WF10). Its subset gives min-ACC, WC-ACC, WF10, gap depth and iterations-to-recover
exactly (the script checks). No online schedule can do with fewer, because it has to evaluate to
find where those points are. The script prints the oracle's count beside the count that an
evaluation share of ``--share`` allows, given each run's measured costs of one evaluation and one
training step (``(wall - eval) / iterations``).

    clbench run --scenario split-fmnist --strategy finetune,er,ewc,gem --epochs 3 --eval-subset all \
        --seeds 0 --out results/floor --no-plots
    python benchmarks/eval_schedule_floor.py results/floor/runs/split-fmnist/*/seed0
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from clbench.evaluation import metrics

METRICS = ["min_acc", "wc_acc", "wf10", "gap_depth", "gap_iters_to_recover"]


def oracle_iterations(log: pd.DataFrame, window: int = 10) -> set[int]:
    """The evaluated iterations an oracle keeps (see the module docstring)."""
    L = metrics.as_log(log)
    keep = {0}
    for t in range(L.p + 1):
        end = L.phase_end(t)
        if end is not None:
            keep.add(int(L.iteration[end]))
    for t in range(1, L.p + 1):  # each dip's minimum and the iteration it is first back in the band
        prev, rows = L.phase_end(t - 1), np.flatnonzero(L.phase == t)
        if prev is None:
            continue
        for i in range(t):
            values, its = L.values[rows, i], L.iteration[rows]
            ok = ~np.isnan(values)
            values, its = values[ok], its[ok]
            if not len(values):
                continue
            j = int(np.argmin(values))
            keep.add(int(its[j]))
            back = np.flatnonzero(values[j:] >= L.values[prev, i] - metrics.RECOVERY_TOLERANCE)
            if len(back):
                keep.add(int(its[j + back[0]]))
    for i in range(L.p + 1):  # each task's largest drop inside a window (WF10)
        its, curve = L.curve_points(i)
        best, pair = 0.0, None
        for n in range(len(curve)):
            lo = int(np.searchsorted(its, its[n] - window + 1))
            if lo < n:
                m = lo + int(np.argmax(curve[lo:n]))
                if curve[m] - curve[n] > best:
                    best, pair = curve[m] - curve[n], (int(its[m]), int(its[n]))
        if pair:
            keep.update(pair)
    return keep


def difference(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return math.inf if math.isnan(a) or math.isnan(b) else abs(a - b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders evaluated at every iteration")
    ap.add_argument("--share", type=float, default=0.2, help="the evaluation share of wall time allowed [0.2]")
    args = ap.parse_args()
    print(f"{'run':<28} {'iterations':>10} {'eval/step':>9} {'oracle':>6} {'allowed':>7} {'oracle share':>12} "
          f"{'largest |diff|':>14}")
    for folder in args.runs:
        log = pd.read_csv(folder / "curves.csv")
        summary = json.loads((folder / "summary.json").read_text())
        n_iter, n_eval = int(log["iteration"].max()), int(log["iteration"].nunique())
        if n_eval < n_iter + 1:
            raise SystemExit(f"{folder}: evaluated at {n_eval} of {n_iter + 1} iterations; run with --eval-every 1")
        per_eval = summary["eval_seconds"] / n_eval
        per_step = (summary["wall_seconds"] - summary["eval_seconds"]) / n_iter
        keep = oracle_iterations(log)
        full, sub = metrics.summarize(log), metrics.summarize(log[log["iteration"].isin(keep)])
        worst = max(difference(full[m], sub[m]) for m in METRICS)
        allowed = int(args.share / (1 - args.share) * n_iter * per_step / per_eval)
        share = len(keep) * per_eval / (len(keep) * per_eval + n_iter * per_step)
        name = "/".join(folder.parts[-3:-1])
        print(f"{name:<28} {n_iter:>10} {per_eval / per_step:>9.2f} {len(keep):>6} {allowed:>7} {share:>12.0%} "
              f"{worst:>14.4f}")


if __name__ == "__main__":
    main()
