"""Training cost per iteration of each strategy, relative to finetune, on one stream.

Evaluation is off except at task ends (not counted); the time includes each strategy's own work
(replay batches, EWC's Fisher at task ends, GEM's memory gradients and QP, NMC's features).

    python benchmarks/strategy_cost.py [--scenario split-fmnist] [--iterations 100] [--strategies ...]
"""

from __future__ import annotations

import argparse

import torch

from clbench.runner import RunConfig, run

DEFAULT = "finetune,joint,joint-offline,er,ewc,gem,nmc,vb-er"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-fmnist")
    ap.add_argument("--iterations", type=int, default=100, help="iterations per task")
    ap.add_argument("--strategies", default=DEFAULT)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    names = args.strategies.split(",")
    base = dict(scenario=args.scenario, seed=0, iterations=args.iterations, eval_every=None, device=args.device)
    run(RunConfig(strategy="finetune", **base))  # warm-up
    ms = {}
    for name in names:
        s = run(RunConfig(strategy=name, **base)).summary
        ms[name] = 1000 * s["train_seconds"] / s["iterations"]
    ref = ms.get("finetune") or next(iter(ms.values()))
    print(f"scenario {args.scenario}, {args.iterations} iterations per task, device {args.device}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'strategy':<14} {'ms/iteration':>12} {'x finetune':>11}")
    for name, v in ms.items():
        print(f"{name:<14} {v:12.2f} {v / ref:11.2f}")


if __name__ == "__main__":
    main()
