"""How much does continual evaluation cost on top of training?

On split-fmnist with the default MLP (784-400-400), per training iteration:
  (a) training alone,
  (b) training with evaluation after every iteration on the full test sets of the tasks seen so far,
  (c) a bare ``model(x)`` forward (no_grad) over the same evaluation samples,
and the ratio ((b) - (a)) / (c): 1.0 means evaluating costs exactly one bare forward pass.

    python benchmarks/eval_overhead.py [--scenario split-fmnist] [--iterations 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from clbench.run.runner import RunConfig, resolve_for, run


def bare_forward_ms(result_cfg: RunConfig, repeats: int = 3) -> float:
    """Average over the stream of one bare forward over the seen tasks' full test sets."""
    from clbench import scenarios
    from clbench.strategies import build_model

    sc = scenarios.build(result_cfg.scenario, seed=result_cfg.seed)
    cfg = resolve_for(result_cfg, sc).config
    model = build_model(cfg.model, sc.input_shape, sc.n_classes, **cfg.model_options).to(cfg.device).eval()
    xs = [t.test.normalize(t.test.x).to(cfg.device) for t in sc.tasks]
    per_phase = []
    for k in range(len(sc.tasks)):
        x = torch.cat(xs[:k + 1])
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        per_phase.append(best)
    return 1000 * sum(per_phase) / len(per_phase)  # every phase has the same number of iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-fmnist")
    ap.add_argument("--iterations", type=int, default=100, help="iterations per task")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    base = dict(scenario=args.scenario, strategy="finetune", seed=0, iterations=args.iterations, device=args.device,
                eval_subset="all", eval_schedule="periodic")
    run(RunConfig(**base, eval_every=None))  # warm-up (data load, allocator)
    a = run(RunConfig(**base, eval_every=None)).summary
    b = run(RunConfig(**base, eval_every=1)).summary
    n = a["iterations"]
    ms_a = 1000 * a["train_seconds"] / n
    # (b) counts every evaluation after an update; the one before the first update is not an iteration's
    ms_b = 1000 * (b["train_seconds"] + b["eval_seconds"] * (b["n_evaluations"] - 1) / b["n_evaluations"]) / n
    ms_c = bare_forward_ms(RunConfig(**base))
    print(f"scenario {args.scenario}, {n} iterations, device {args.device}, threads {torch.get_num_threads()}")
    print(f"(a) training alone                         {ms_a:8.2f} ms/iteration")
    print(f"(b) training + per-iteration evaluation    {ms_b:8.2f} ms/iteration (full test sets of seen tasks)")
    print(f"(c) bare model(x) over the same samples    {ms_c:8.2f} ms/iteration")
    print(f"overhead ratio ((b) - (a)) / (c)           {(ms_b - ms_a) / ms_c:8.2f}   (target <= 1.2)")


if __name__ == "__main__":
    main()
