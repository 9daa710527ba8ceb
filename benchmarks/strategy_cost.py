"""Training cost per iteration of each strategy, relative to finetune, on one stream.

Evaluation is off except at task ends (not counted); the time includes each strategy's own work
(replay batches, EWC's Fisher at task ends, GEM's memory gradients and QP, NMC's features).

    python benchmarks/strategy_cost.py [--scenario split-fmnist] [--iterations 100] [--strategies ...]
"""

from __future__ import annotations

import argparse

from clbench.runner import RunConfig, run

DEFAULT = "finetune,joint,joint-offline,er,ewc,gem,nmc,vb-er"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-fmnist")
    ap.add_argument("--iterations", type=int, default=100, help="iterations per task")
    ap.add_argument("--strategies", default=DEFAULT)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run (the runs' default)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over the strategies; the fastest round counts "
                    "(this machine's timings wander by 10-15%% from one run to the next)")
    args = ap.parse_args()
    names = args.strategies.split(",")
    base = dict(scenario=args.scenario, seed=0, iterations=args.iterations, eval_every=None, device=args.device,
                threads=args.threads)
    run(RunConfig(strategy="finetune", **base))  # warm-up
    ms: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved rounds, so a slow spell of the machine hits every strategy
        for name in names:
            s = run(RunConfig(strategy=name, **base)).summary
            ms[name] = min(ms.get(name, float("inf")), 1000 * s["train_seconds"] / s["iterations"])
    ref = ms.get("finetune") or next(iter(ms.values()))
    print(f"scenario {args.scenario}, {args.iterations} iterations per task, device {args.device}, "
          f"threads {args.threads}, best of {args.repeats}")
    print(f"{'strategy':<14} {'ms/iteration':>12} {'x finetune':>11}")
    for name, v in ms.items():
        print(f"{name:<14} {v:12.2f} {v / ref:11.2f}")


if __name__ == "__main__":
    main()
