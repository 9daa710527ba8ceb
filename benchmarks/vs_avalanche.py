"""Continual evaluation and training speed: clbench against Avalanche 0.6.0, same machine, same run.

Same tasks (the first K of split-fmnist), batch 256, one epoch per task, same model (MLP
784-400-400, same initialisation), same optimiser, same test sets: the full test sets of the
tasks seen so far, evaluated after every iteration. Avalanche evaluates with ``eval_every=1,
peval_mode="iteration"`` and per-experience accuracy (no loggers); clbench with its evaluator.

    python benchmarks/vs_avalanche.py [--tasks 2] [--scenario split-fmnist]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import torch

from clbench import scenarios
from clbench.interop.avalanche import make_strategy, to_avalanche
from clbench.run.loop import train_clbench
from clbench.run.parts import build_model_and_optimizer
from clbench.run.runner import RunConfig, resolve_for

CPU = torch.device("cpu")


def avalanche_seconds(sc, cfg, evaluate: bool, eval_batch: int) -> tuple[float, int]:
    """Wall seconds and iterations of Avalanche's Naive over the tasks, with or without evaluation."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    model, opt = build_model_and_optimizer(cfg, sc, CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy = make_strategy("Naive", model, opt, batch_size=cfg.batch_size, epochs=int(cfg.epochs), device=CPU,
                                 plugins=[], params={},
                                 evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
                                 eval_every=1 if evaluate else -1, peval_mode="iteration")
        strategy.eval_mb_size = eval_batch
        bm = to_avalanche(sc)
        t0 = time.perf_counter()
        for i, exp in enumerate(bm.train_stream):
            strategy.train(exp, eval_streams=[bm.test_stream[:i + 1]] if evaluate else None, num_workers=0)
    return time.perf_counter() - t0, strategy.clock.train_iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-fmnist")
    ap.add_argument("--tasks", type=int, default=2, help="first K tasks of the scenario (Avalanche is slow)")
    ap.add_argument("--avalanche-eval-batch", type=int, default=1024, help="Avalanche's eval_mb_size")
    args = ap.parse_args()
    sc = scenarios.build(args.scenario, seed=0)[:args.tasks]
    run = resolve_for(RunConfig(scenario=args.scenario, strategy="finetune", seed=0, eval_every=1, eval_subset="all",
                                eval_schedule="periodic"),
                      sc)
    cfg = run.config
    for _ in range(2):  # the first pass warms up, the second is measured
        t = train_clbench(run, sc, CPU)
    clb_iters, clb_evals = len(t.losses), t.evaluator.n_steps()
    clb_train, clb_eval = float(np.sum(t.train_seconds)), t.eval_seconds
    tb = train_clbench(dataclasses.replace(run, config=dataclasses.replace(cfg, eval_precision="bf16")), sc, CPU)
    bf16_eval = tb.eval_seconds / tb.evaluator.n_steps()
    av_train, av_iters = avalanche_seconds(sc, cfg, evaluate=False, eval_batch=args.avalanche_eval_batch)
    av_both, _ = avalanche_seconds(sc, cfg, evaluate=True, eval_batch=args.avalanche_eval_batch)

    def ms(seconds, n):
        return 1000 * seconds / n

    rows = [("training alone", ms(clb_train, clb_iters), ms(av_train, av_iters)),
            ("evaluation", ms(clb_eval, clb_evals), ms(av_both - av_train, av_iters)),
            ("evaluation, clbench bf16", 1000 * bf16_eval, ms(av_both - av_train, av_iters)),
            ("training + evaluation", ms(clb_train + clb_eval, clb_iters), ms(av_both, av_iters))]
    print(f"{args.scenario}, first {args.tasks} tasks, {clb_iters} iterations (Avalanche {av_iters}), "
          f"evaluation after every iteration on the full test sets of the seen tasks; "
          f"threads {torch.get_num_threads()}")
    print(f"{'ms per iteration':26}{'clbench':>10}{'Avalanche':>12}{'Avalanche/clbench':>19}")
    for label, c, a in rows:
        print(f"{label:26}{c:10.2f}{a:12.2f}{a / c:18.2f}x")
    print("targets: evaluation >= 5x faster, training at least as fast (>= 1x); "
          f"Avalanche evaluates in fp32 (eval_mb_size {args.avalanche_eval_batch}) in every row; clbench's "
          "evaluation figure is per evaluation, and its task-end evaluations cover every task")


if __name__ == "__main__":
    main()
