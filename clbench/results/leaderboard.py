"""The leaderboard: one row per scenario x strategy (x parameters), mean and std over seeds of
every metric, rebuilt from run folders so ``clbench report`` can merge experiments
(``folders`` -> ``aggregate`` -> ``tables`` and ``notes``); written here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clbench.common import io
from clbench.common.errors import InputError
from clbench.results.aggregate import leaderboard, orderings_per_row
from clbench.results.columns import ALPHA
from clbench.results.folders import collect, failed_runs
from clbench.results.notes import (
    evaluation_notes,
    experiment_presets,
    fairness_notes,
    reliability_notes,
    with_published,
)
from clbench.results.tables import people_table, to_markdown

#: what identifies one run across experiments: the same key twice is the same run counted twice
RUN_KEY = ["scenario", "strategy", "params", "settings", "seed", "ordering_seed"]


def check_merge(runs: pd.DataFrame, roots: list[Path], allow_different: bool) -> None:
    """Merging experiments must not count a run twice, nor pool runs made under other settings
    into one row unless asked (``allow_different``: they then stay separate, labelled rows)."""
    if runs.empty or len(roots) < 2:
        return
    runs = runs.assign(root=[_root_of(Path(d), roots) for d in runs["run_dir"]], ordering_seed=orderings_per_row(runs))
    twice = runs[runs.duplicated(RUN_KEY, keep=False)]
    if len(twice):
        r = twice.iloc[0]
        where = " and ".join(sorted(set(twice[(twice[RUN_KEY] == r[RUN_KEY]).all(axis=1)]["root"])))
        raise InputError(f"{where} both hold {r['scenario']} {r['strategy']} seed {r['seed']} with the same settings; "
                         "merging would count it twice — report them separately, or move one aside")
    if allow_different:
        return
    for (scenario, strategy), g in runs.groupby(["scenario", "strategy"], sort=False):
        variants = g.groupby(["params", "settings"]).size()
        if len(variants) > 1 and g["root"].nunique() > 1:
            a, b = (json.loads(p) | json.loads(s) for p, s in variants.index[:2])
            differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise InputError(f"{scenario} {strategy}: the experiments' runs differ in {', '.join(differ)}; "
                             "pass --allow-different to keep them as separate rows")


#: what identifies a run, first in ``runs.csv``
RUN_KEYS = ["scenario", "setting", "strategy", "label", "seed", "ordering_seed"]


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs.csv``: one row per run, for pandas without globbing summary.json: what identifies it,
    every metric and cost as a column (fractions, as in the files), its strategy's parameters as
    ``param.<name>`` and its settings as ``setting.<name>`` columns (not JSON strings), its folder."""
    out = runs.copy()
    for column, prefix in (("params", "param."), ("settings", "setting.")):
        if column in out:
            values = [json.loads(v) if isinstance(v, str) and v else {} for v in out.pop(column)]
            expanded = pd.DataFrame([{prefix + k: (json.dumps(x) if isinstance(x, (list, dict)) else x)
                                      for k, x in v.items()} for v in values], index=out.index)
            out = pd.concat([out, expanded], axis=1)
    out = out.drop(columns=[c for c in ("own_settings", "root") if c in out])
    first = [c for c in RUN_KEYS if c in out]
    return out[first + [c for c in out.columns if c not in first]].sort_values(
        [c for c in ("scenario", "strategy", "seed") if c in out], kind="stable").reset_index(drop=True)


def _root_of(run: Path, roots: list[Path]) -> str:
    for root in roots:
        if run.is_relative_to(root):
            return str(root)
    return str(run)


def write_leaderboard(roots: list[Path], out: Path, recompute: bool = False, allow_different: bool = False,
                      reference: str | None = None, metrics: list[str] | None = None) -> pd.DataFrame:
    """Rebuild leaderboard.csv and leaderboard.md in ``out`` from the runs below ``roots`` (checked
    with ``check_merge`` when there are several); ``metrics``: the columns of leaderboard.md (all
    when None; leaderboard.csv always has every metric)."""
    failed = failed_runs(roots)
    runs = collect(roots, recompute)
    check_merge(runs, roots, allow_different)
    lb = leaderboard(runs, failed, reference)
    if lb.empty:
        return lb
    io.write_csv(out / "leaderboard.csv", lb)
    io.write_csv(out / "runs.csv", runs_table(runs))
    note = ("Accuracies in percent. Every metric column shows the mean over seeds ± the half-width of its 95% "
            "confidence interval (Student's t; std in leaderboard.csv); cost columns show the mean. One format per "
            "column; \"(k/N runs)\": only k of the row's N runs measured it (the mean is theirs); n/a: no run "
            "measured it or the statistic is undefined; †: the interval reaches outside the metric's range (too "
            "few seeds for it). ↑ higher is better, ↓ lower is better. ACC test-set SE: the binomial "
            "standard error of ACC from the finite test sets alone. ACC vs reference: a paired t-test over seeds "
            "(as scipy.stats.ttest_rel) against the best method (joint training keeps all its data: a reference "
            f"point, not the reference row); n.s. = not significantly different at p < {ALPHA}, n/a = fewer than "
            "two pairs or identical differences. ACC/BWT/FORG from the accuracy matrix; "
            "min-ACC, WC-ACC, WF and the gap from continual evaluation (De Lange et al., ICLR 2023). The gap apart "
            "from forgetting: gap depth and iterations to recover average the dips (an old task more than 1 point "
            "below its pre-switch accuracy) that came back within 1 point during the transition; the dips that never "
            "came back are forgetting: their share (% dips unrecovered) and what they still cost at the transition's "
            "end (unrecovered drop). Gap noise floor: the same pre-minus-minimum statistic at a pseudo-switch in the "
            "middle of each transition, where nothing changes; gap vs noise says \"above noise\" when the gap is at "
            "least twice it; min-ACC and WC-ACC, minima too, are pulled down by about the same floor. WF10 noise "
            "floor: the largest drop within 10 iterations across those middles; WF10 vs noise as for the gap. "
            "Cost beside "
            "accuracy (Harun et al., CVPR-W 2023): training GFLOP counted with torch.utils.flop_counter's formulas on "
            "sampled steps (replay, memory gradients, Fisher and views included), memory held at the end (samples, "
            "MB), trainable parameters, wall seconds per run.\n\n")
    fairness = fairness_notes(lb) + reliability_notes(lb, failed) + evaluation_notes(lb)
    table, sources = with_published(people_table(lb, metrics or None), lb, experiment_presets(roots))
    body = to_markdown(table)
    io.atomic_write_text(out / "leaderboard.md", "# Leaderboard\n\n" + note + body + sources +
                         ("\n" + "\n".join(f"- {n}" for n in fairness) + "\n" if fairness else ""))
    return lb
