"""Parity with Avalanche: clbench's ER, EWC and GEM against Avalanche's Replay, EWC and GEM with
matched settings on the same tasks, model, optimiser, batch size and epochs; final ACC side by side.

Matching: Replay(mem_size) <-> ER(class-balanced buffer of the same size, replay batch = batch
size, one loss over the concatenated batch; filled online, and filled at task ends as Avalanche
does); EWC(ewc_lambda, separate) <-> EWC(fisher="batched",
fisher_batch = batch size, half=False: Avalanche's penalty has no 1/2); GEM(patterns_per_exp,
memory_strength) <-> GEM(patterns_per_task, memory_strength).

    python benchmarks/avalanche_parity.py [--scenario split-fmnist] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from clbench.runner import RunConfig, run

PAIRS = [
    ("er", {"mem_size": 500, "buffer": "class-balanced", "weighting": "concat"},
     "avalanche:Replay", {"mem_size": 500}),
    ("er", {"mem_size": 500, "buffer": "class-balanced", "weighting": "concat", "update": "task_end"},
     "avalanche:Replay", {"mem_size": 500}),
    ("ewc", {"ewc_lambda": 100.0, "fisher": "batched", "fisher_batch": 256, "half": False},
     "avalanche:EWC", {"ewc_lambda": 100.0, "mode": "separate"}),
    ("gem", {"patterns_per_task": 256, "memory_strength": 0.5},
     "avalanche:GEM", {"patterns_per_exp": 256, "memory_strength": 0.5}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-fmnist")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.scenario}, class-IL, seeds {seeds}: final ACC in percent, mean ± std")
    print(f"{'clbench':34}{'ACC':>14}   {'Avalanche':26}{'ACC':>14}{'diff':>8}")
    for ours, p_ours, theirs, p_theirs in PAIRS:
        accs = {}
        for name, params in ((ours, p_ours), (theirs, p_theirs)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                accs[name] = np.array([100 * run(RunConfig(scenario=args.scenario, strategy=name, seed=s, params=params,
                                                           eval_every=None)).summary["acc"] for s in seeds])
        a, b = accs[ours], accs[theirs]
        label = ours + " " + ",".join(f"{k}={v}" for k, v in p_ours.items() if k in ("update", "fisher", "half"))
        print(f"{label:34}{a.mean():8.1f} ± {a.std(ddof=1) if len(a) > 1 else 0:4.1f}   {theirs:26}"
              f"{b.mean():8.1f} ± {b.std(ddof=1) if len(b) > 1 else 0:4.1f}{a.mean() - b.mean():8.1f}")


if __name__ == "__main__":
    main()
