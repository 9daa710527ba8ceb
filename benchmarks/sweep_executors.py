"""Wall time of one sweep with the local process pool and with Ray on the same machine.

Both executors run the same runs (4 strategies x 4 seeds on split-digits by default) into fresh
folders; Ray's figure is given with and without starting its local instance. The curves of the
two are compared byte for byte, since an executor must change the time and nothing else.

    python benchmarks/sweep_executors.py [--strategies finetune,er,ewc,gem] [--seeds 0-3] [--cpus N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from clbench.sweep import executors
from clbench.sweep.experiment import Experiment, parse_seeds, run_experiment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="split-digits")
    ap.add_argument("--strategies", default="finetune,er,ewc,gem")
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)), help="pool processes and Ray CPUs")
    args = ap.parse_args()
    exp = Experiment(scenarios=[args.scenario], strategies=args.strategies.split(","), seeds=parse_seeds(args.seeds))
    n = len(exp.run_configs())
    with tempfile.TemporaryDirectory() as tmp:
        pool_dir, ray_dir = Path(tmp) / "pool", Path(tmp) / "ray"
        t0 = time.perf_counter()
        run_experiment(exp, pool_dir, jobs=args.cpus, show_progress=False)
        pool_s = time.perf_counter() - t0

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="error")
        start_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        run_experiment(exp, ray_dir, show_progress=False, executor=lambda todo: executors.ray_tasks(todo, 1, 0))
        ray_s = time.perf_counter() - t1
        ray.shutdown()
        same = all(p.read_bytes() == (ray_dir / p.relative_to(pool_dir)).read_bytes()
                   for p in pool_dir.glob("runs/*/*/*/curves.csv"))
    print(f"{n} runs ({args.strategies} x seeds {args.seeds} on {args.scenario}), {args.cpus} CPUs, 1 thread per run")
    print(f"{'executor':<28} {'seconds':>8} {'x pool':>7}")
    print(f"{'local process pool':<28} {pool_s:8.1f} {1:7.2f}")
    print(f"{'ray (instance running)':<28} {ray_s:8.1f} {ray_s / pool_s:7.2f}")
    print(f"{'ray (with starting it)':<28} {start_s + ray_s:8.1f} {(start_s + ray_s) / pool_s:7.2f}")
    print(f"curves.csv byte-identical between the two: {same}")


if __name__ == "__main__":
    main()
