"""Parity with Avalanche 0.6: the strategies of a preset against Avalanche's counterparts under the
preset's own settings (scenario, seeds, model, optimiser, batch size, epochs, memory budget, the
same evaluation samples); final ACC per seed side by side.

Avalanche's strategies run through clbench's runner (``avalanche:<Name>``, Avalanche's own training
loop with clbench's evaluator plugged in) as an ordinary experiment in ``--out``/avalanche, evaluated
at task ends only: the final accuracy does not depend on how often a run is evaluated, since
evaluation never touches training. clbench's numbers are read from ``--ours`` (an experiment folder
of the same preset, such as ``results/reference/<preset>``), or run here at task ends if not given.

Counterparts: finetune <-> Naive; er <-> Replay (memory = the budget); ewc <-> EWC (the preset's
lambda, mode and decay); gem <-> GEM (budget // tasks per experience, the preset's margin). What each
pair does differently is printed beside it: Avalanche's Replay fills its memory at experience ends
and trains on the concatenated batch, its EWC uses the minibatch Fisher without the 1/2, its GEM
keeps a random sample of each experience rather than the most recent one.

    python benchmarks/avalanche_parity.py --preset delange-split-fmnist \\
        --ours results/reference/delange-split-fmnist --out results/reference/delange-split-fmnist
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from clbench import presets
from clbench.common import io
from clbench.sweep.experiment import Experiment, run_dir, run_experiment
from clbench.sweep.processes import usable_cores


def counterpart(strategy: str, params: dict) -> tuple[str, dict, str] | None:
    """Avalanche's strategy for one of ours, its parameters, and how the two differ."""
    if strategy == "finetune":
        return "avalanche:Naive", {}, "the same method"
    if strategy == "er":
        ours = f"{params.get('buffer', 'reservoir')} memory filled online, loss {params.get('weighting', 'concat')}" + (
            f" (w_new {params['w_new']})" if params.get("weighting") == "weighted" else "")
        return "avalanche:Replay", {}, f"Avalanche: experience-balanced memory filled at experience ends, one loss " \
                                       f"over the concatenated batch; clbench: {ours}"
    if strategy == "ewc":
        mode = params.get("mode", "separate")
        mapped = {"ewc_lambda": float(params.get("ewc_lambda", 100.0)), "mode": mode}
        if mode == "online":
            mapped["decay_factor"] = float(params.get("gamma", 1.0))
        same = params.get("fisher") == "batched" and params.get("half") is False
        return "avalanche:EWC", mapped, "the same penalty (minibatch Fisher, no 1/2)" if same else \
            f"Avalanche: minibatch Fisher without the 1/2; clbench: {params.get('fisher', 'exact')} Fisher, " \
            f"{'lambda/2' if params.get('half', True) else 'lambda'}"
    if strategy == "gem":
        return "avalanche:GEM", {"memory_strength": float(params.get("memory_strength", 0.5))}, \
            "Avalanche keeps a random sample of each experience, clbench the most recent samples"
    return None


def final_acc(root: Path, exp: Experiment, strategy: str) -> dict[int, float]:
    """Per seed, the final ACC of ``strategy``'s complete runs in the experiment folder ``root``."""
    out = {}
    for config in exp.run_configs():
        if config.strategy == strategy and io.is_complete(run_dir(root, config)):
            out[config.seed] = json.loads((run_dir(root, config) / "summary.json").read_text())["acc"]
    return out


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default-split-digits")
    ap.add_argument("--ours", type=Path, help="clbench's experiment folder of this preset (else run here)")
    ap.add_argument("--out", type=Path, help="where the Avalanche runs and parity.md/.csv go [results/parity-<preset>]")
    ap.add_argument("--seeds", help="seeds, e.g. 0,1,2 [the preset's]")
    ap.add_argument("--jobs", type=int, default=usable_cores())
    args = ap.parse_args()
    preset = presets.load(args.preset)
    exp = Experiment.from_mapping(preset.experiment, f"preset {args.preset}")
    if args.seeds:
        exp = dataclasses.replace(exp, seeds=[int(s) for s in args.seeds.split(",")])
    out = args.out or Path("results") / f"parity-{args.preset}"
    pairs = {s: counterpart(s, exp.strategy_params(s)) for s in exp.strategies}
    pairs = {s: p for s, p in pairs.items() if p is not None}
    at_ends = dict(eval_every=None, eval_schedule="periodic", dense_after_switch=0)
    theirs = dataclasses.replace(exp, name=f"{exp.name}-avalanche", strategies=[p[0] for p in pairs.values()],
                                 params={p[0]: p[1] for p in pairs.values() if p[1]}, strategy_settings={}, **at_ends)
    run_experiment(theirs, out / "avalanche", jobs=args.jobs)
    ours_root, ours = args.ours, exp
    if ours_root is None:
        ours = dataclasses.replace(exp, strategies=list(pairs), **at_ends)
        ours_root = out / "clbench"
        run_experiment(ours, ours_root, jobs=args.jobs)
    rows = []
    for strategy, (name, _, how) in pairs.items():
        a, b = final_acc(ours_root, ours, strategy), final_acc(out / "avalanche", theirs, name)
        seeds = sorted(set(a) & set(b))
        x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        rows.append({"clbench": strategy, "clbench_acc_mean": x.mean(), "clbench_acc_std": _std(x), "avalanche": name,
                     "avalanche_acc_mean": y.mean(), "avalanche_acc_std": _std(y), "diff": x.mean() - y.mean(),
                     "seeds": len(seeds), "how_they_differ": how})
    table = pd.DataFrame(rows)
    io.write_csv(out / "parity.csv", table)
    lines = [f"# {args.preset}: clbench vs Avalanche 0.6 (final ACC, percent, mean ± std over seeds)", "",
             "| clbench | ACC | Avalanche | ACC | difference | seeds | how they differ |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clbench']} | {100 * r['clbench_acc_mean']:.1f} ± {100 * r['clbench_acc_std']:.1f} | "
                     f"{r['avalanche'].split(':')[1]} | {100 * r['avalanche_acc_mean']:.1f} ± "
                     f"{100 * r['avalanche_acc_std']:.1f} | {100 * r['diff']:+.1f} | {r['seeds']} | "
                     f"{r['how_they_differ']} |")
    io.atomic_write_text(out / "parity.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
