"""Adaptive vs every-iteration evaluation: what it costs and what it changes, seed for seed.

For every strategy (and ordering), one run evaluated at every iteration and one under
``--eval-schedule adaptive`` on the same seed, full test sets. Prints the evaluations made, the
evaluation share of wall time, and the absolute difference of min-ACC, WC-ACC, WF10, gap depth
and iterations-to-recover (the targets: every difference at most 0.005, evaluation at most 20% of
wall time on split-fmnist).

    python benchmarks/eval_schedule.py [--scenario split-digits] [--orderings sequential,recurring,fuzzy]
"""

from __future__ import annotations

import argparse
import math

from clbench.run.runner import RunConfig, run
from clbench.sweep.experiment import DEFAULT_STRATEGIES

METRICS = ["min_acc", "wc_acc", "wf10", "gap_depth", "gap_iters_to_recover"]


def difference(a, b) -> float:
    """|a - b|, 0 when both are undefined (NaN: nothing dipped), inf when only one is."""
    a = float("nan") if a is None else float(a)
    b = float("nan") if b is None else float(b)
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-digits")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    ap.add_argument("--orderings", default="sequential")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, help="epochs per task [the scenario's default]")
    args = ap.parse_args()
    print(f"{args.scenario}, seed {args.seed}, full test sets; share = evaluation seconds / wall seconds")
    header = f"{'strategy':<14} {'ordering':<10} {'evals':>11} {'share':>11} " + " ".join(f"{m:>12}" for m in METRICS)
    print(header)
    worst = 0.0
    for ordering in args.orderings.split(","):
        params = {"width": 20} if ordering == "fuzzy" else {}
        for strategy in args.strategies.split(","):
            s = {}
            for schedule in ("periodic", "adaptive"):
                s[schedule] = run(RunConfig(scenario=args.scenario, strategy=strategy, seed=args.seed,
                                            eval_schedule=schedule, eval_subset="all", ordering=ordering,
                                            ordering_params=params, epochs=args.epochs)).summary
            a, b = s["periodic"], s["adaptive"]
            diffs = [difference(a[m], b[m]) for m in METRICS]
            worst = max(worst, *diffs)
            share = [x["eval_seconds"] / x["wall_seconds"] for x in (a, b)]
            print(f"{strategy:<14} {ordering:<10} {a['n_evaluations']:>5}->{b['n_evaluations']:<5} "
                  f"{share[0]:>5.0%}->{share[1]:<4.0%} " + " ".join(f"{d:>12.4f}" for d in diffs), flush=True)
    print(f"largest difference: {worst:.4f} (target 0.005)")


if __name__ == "__main__":
    main()
