"""Training cost per iteration of each strategy, relative to finetune, on one stream.

Evaluation is off except at task ends (not counted); the time includes each strategy's own work
(replay batches, EWC's Fisher at task ends, GEM's memory gradients and QP, NMC's features).

Beside the time it prints each strategy's training FLOPs relative to finetune (what the method
computes: ER trains on twice the rows, GEM takes gradients over its whole memory every step) and
the time per FLOP relative to finetune's: 1.0 means the strategy costs exactly its arithmetic, so
anything above it is overhead of the implementation rather than of the method.

    python benchmarks/strategy_cost.py [--scenario split-fmnist] [--iterations 100] [--strategies ...]
"""

from __future__ import annotations

import argparse

from clbench.run.runner import RunConfig, run

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
    flops: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved rounds, so a slow spell of the machine hits every strategy
        for name in names:
            s = run(RunConfig(strategy=name, **base)).summary
            ms[name] = min(ms.get(name, float("inf")), 1000 * s["train_seconds"] / s["iterations"])
            flops[name] = s["train_flops"]
    ref = "finetune" if "finetune" in ms else names[0]
    print(f"scenario {args.scenario}, {args.iterations} iterations per task, device {args.device}, "
          f"threads {args.threads}, best of {args.repeats}")
    print(f"{'strategy':<14} {'ms/iteration':>12} {'x finetune':>11} {'FLOPs x ft':>11} {'time/FLOP x ft':>15}")
    for name, v in ms.items():
        work = flops[name] / flops[ref] if flops[ref] and flops[name] else float("nan")
        print(f"{name:<14} {v:12.2f} {v / ms[ref]:11.2f} {work:11.2f} {v / ms[ref] / work:15.2f}")


if __name__ == "__main__":
    main()
