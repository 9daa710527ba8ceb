"""The leaderboard: one row per scenario x strategy (x parameters), mean and std over seeds of
every metric, rebuilt from run folders so ``clbench report`` can merge experiments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clbench import io, metrics
from clbench.executors import ERROR_FILE
from clbench.runner import is_complete
from scenarios.errors import InputError

METRICS = ["acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf100", "aaa", "gap_depth",
           "gap_iters_to_recover", "gap_unrecovered", "wall_seconds", "train_iters_per_second",
           "train_flops", "memory_samples", "memory_bytes", "trainable_params", "memory_capacity", "iterations"]
#: cost columns (Harun et al. 2023): shown beside accuracy, mean over seeds
COST = ["train_flops", "memory_samples", "memory_bytes", "trainable_params", "wall_seconds"]
#: metrics whose spread across orderings the leaderboard reports (``--orderings K``)
SPREAD_METRICS = ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "gap_depth"]
#: shown as percentages for people (fractions in the CSV)
ACCURACY_LIKE = {"acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf100", "aaa", "gap_depth",
                 "gap_unrecovered"}
LABELS = {"acc": "ACC", "bwt": "BWT", "fwt": "FWT", "forgetting": "FORG", "min_acc": "min-ACC", "wc_acc": "WC-ACC",
          "wf10": "WF10", "wf100": "WF100", "aaa": "AAA", "gap_depth": "gap depth",
          "gap_iters_to_recover": "iters to recover", "gap_unrecovered": "% unrecovered", "wall_seconds": "s/run",
          "train_iters_per_second": "it/s", "train_flops": "train GFLOP", "memory_samples": "memory (samples)",
          "memory_bytes": "memory (MB)", "trainable_params": "params", "memory_capacity": "memory budget",
          "iterations": "updates"}


def run_folders(roots: list[Path]) -> list[Path]:
    """Complete run folders below each experiment root (partial ones are never counted)."""
    found = []
    for root in roots:
        for summary in sorted(Path(root).glob("runs/*/*/seed*/summary.json")):
            if is_complete(summary.parent):
                found.append(summary.parent)
    return found


#: what a run's config holds beyond the settings its row shares: merged experiments whose settings
#: differ (another --lr, --epochs, budget) get separate rows, never one mean over both
NOT_SETTINGS = {"scenario", "strategy", "seed", "params", "ordering_seed", "device", "data_root", "threads"}


def failed_runs(roots: list[Path]) -> pd.DataFrame:
    """One row per run folder that holds an ``error.json`` and no complete result: scenario,
    strategy, run (seed<k>[-order<o>]), error, folder."""
    rows = []
    for root in roots:
        for err in sorted(Path(root).glob(f"runs/*/*/seed*/{ERROR_FILE}")):
            if not is_complete(err.parent):
                rec = read_result(err, io.read_json)
                rows.append({"scenario": err.parts[-4], "strategy": err.parts[-3], "run": err.parts[-2],
                             "error": rec.get("error", "") if isinstance(rec, dict) else "",
                             "run_dir": str(err.parent)})
    return pd.DataFrame(rows, columns=["scenario", "strategy", "run", "error", "run_dir"])


def read_result(path: Path, reader):
    """A result file, or one sentence naming it when it is corrupt (``clbench report`` on a
    damaged folder must say which file to delete, not print a traceback)."""
    try:
        return reader(path)
    except (OSError, ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        why = (str(e).splitlines() or [""])[0]
        raise InputError(f"{path} is unreadable or corrupt ({type(e).__name__}: {why}); "
                         "delete its run folder and run the experiment again to redo it") from None


def read_summary(run: Path) -> dict:
    """A run's summary.json, refused in one sentence when it is not one."""
    s = read_result(run / "summary.json", io.read_json)
    if not isinstance(s, dict) or not {"scenario", "strategy", "seed"} <= set(s):
        raise InputError(f"{run / 'summary.json'} is not a run summary; delete its run folder and run the "
                         "experiment again to redo it")
    return s


def read_curves(path: Path) -> pd.DataFrame:
    log = pd.read_csv(path)
    missing = [c for c in metrics.LOG_COLUMNS if c not in log]
    if missing or log.empty:
        raise ValueError(f"no {', '.join(missing)} column" if missing else "no rows")
    return log


def collect(roots: list[Path], recompute: bool = False) -> pd.DataFrame:
    """One row per run: its summary.json flattened (parameters as canonical JSON). With
    ``recompute`` the metrics (and the divergence rule) are computed again from curves.csv and
    train.csv (the current definitions)."""
    rows = []
    for d in run_folders(roots):
        s = read_summary(d)
        if recompute:
            s.update(read_result(d / "curves.csv", lambda p: metrics.summarize(read_curves(p))))
            losses = read_result(d / "train.csv", lambda p: pd.read_csv(p)["loss"].to_numpy(dtype=float))
            s.update(diverged_at=metrics.diverged_at(losses), divergence=metrics.DIVERGENCE_RULE)
        s["params"] = json.dumps(s.get("params") or {}, sort_keys=True)
        run = read_result(d / "config.json", io.read_json).get("run", {})
        s["settings"] = json.dumps({k: v for k, v in run.items() if k not in NOT_SETTINGS}, sort_keys=True, default=str)
        s["run_dir"] = str(d)
        rows.append(s)
    df = pd.DataFrame(rows)
    for m in METRICS:
        if m in df:
            df[m] = pd.to_numeric(df[m], errors="coerce")
    return df


def leaderboard(runs: pd.DataFrame, failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN with one seed) per scenario x strategy x parameters, sorted
    by ACC within each scenario, rows with a diverged run last (their metrics describe a broken
    model and must never read as the best). ``failed`` (``failed_runs``) adds each row's count of
    runs that raised, and a row for a strategy none of whose runs finished."""
    failed = failed if failed is not None else pd.DataFrame(columns=["scenario", "strategy"])
    if runs.empty and failed.empty:
        return pd.DataFrame()
    if runs.empty:
        runs = pd.DataFrame(columns=["scenario", "setting", "strategy", "params", "settings", "seed"])
    if "settings" not in runs:
        runs = runs.assign(settings="{}")
    keys = ["scenario", "setting", "strategy", "params", "settings"]
    out = []
    for key, g in runs.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        row["n_runs"] = len(g)
        row["n_seeds"] = int(g["seed"].nunique())
        row["seeds"] = ",".join(str(s) for s in sorted(g["seed"]))
        row["n_diverged"] = int(g["diverged_at"].notna().sum()) if "diverged_at" in g else 0
        row["label"] = str(g["label"].iloc[0]) if "label" in g and g["label"].notna().any() else key[2]
        row["uses_memory"] = bool(g["uses_memory"].fillna(False).astype(bool).any()) if "uses_memory" in g else False
        row["memory_budget"] = g["memory_budget"].dropna().iloc[0] if "memory_budget" in g and \
            g["memory_budget"].notna().any() else None
        row["budget_overridden"] = ",".join(sorted({k for v in g.get("budget_overridden", []) if isinstance(v, list)
                                                    for k in v}))
        for m in METRICS:
            v = g[m].to_numpy(dtype=float) if m in g else np.array([np.nan])
            v = v[~np.isnan(v)]
            row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        out.append(row)
    n_failed = failed.groupby(["scenario", "strategy"]).size().to_dict() if len(failed) else {}
    for scenario, strategy in n_failed:  # strategies none of whose runs finished
        if not any(r["scenario"] == scenario and r["strategy"] == strategy for r in out):
            out.append({"scenario": scenario, "setting": "", "strategy": strategy, "params": "{}",
                        "settings": "{}", "n_runs": 0, "n_seeds": 0,
                        "seeds": "", "n_diverged": 0, "label": strategy, "uses_memory": False,
                        "memory_budget": None, "budget_overridden": "",
                        **{f"{m}_{s}": float("nan") for m in METRICS for s in ("mean", "std")}})
    lb = _distinguish(pd.DataFrame(out))
    lb["n_failed"] = [n_failed.get((r.scenario, r.strategy), 0) for r in lb.itertuples()]
    if "ordering_seed" in runs and runs["ordering_seed"].notna().any():
        lb = _ordering_spread(runs, lb, keys)
    order = {s: i for i, s in enumerate(dict.fromkeys([*runs["scenario"], *failed["scenario"]]))}
    lb["_o"] = lb["scenario"].map(order)
    lb["_diverged"] = lb["n_diverged"] > 0
    return lb.sort_values(["_o", "_diverged", "acc_mean"], ascending=[True, True, False], na_position="last") \
        .drop(columns=["_o", "_diverged"]).reset_index(drop=True)


def _distinguish(lb: pd.DataFrame) -> pd.DataFrame:
    """Rows of one scenario that share a label but differ in parameters or settings (merged
    experiments) get what differs appended to their label: ``er [lr=0.05]``."""
    lb = lb.copy()
    for _, g in lb.groupby(["scenario", "label"], sort=False):
        if len(g) < 2:
            continue
        values = {i: {**json.loads(r["params"]), **json.loads(r["settings"])} for i, r in g.iterrows()}
        names = sorted({k for v in values.values() for k in v})
        differ = [k for k in names if len({json.dumps(v.get(k), sort_keys=True) for v in values.values()}) > 1]
        for i, v in values.items():
            lb.loc[i, "label"] += " [" + ", ".join(f"{k}={v.get(k)}" for k in differ) + "]"
    return lb


def _ordering_spread(runs: pd.DataFrame, lb: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per row: std, min and max across orderings of the per-ordering means (over seeds), and how
    often the strategy's ACC rank within its scenario differs from its rank on the mean."""
    per_order = runs.groupby([*keys, "ordering_seed"], sort=False)[SPREAD_METRICS].mean().reset_index()
    spread = per_order.groupby(keys, sort=False)[SPREAD_METRICS].agg(["std", "min", "max"])
    spread.columns = [f"{m}_order_{stat}" for m, stat in spread.columns]
    lb = lb.merge(spread.reset_index(), on=keys, how="left")
    lb["n_orderings"] = lb.merge(per_order.groupby(keys).size().rename("n").reset_index(), on=keys)["n"]
    per_order["rank"] = per_order.groupby(["scenario", "ordering_seed"])["acc"].rank(ascending=False, method="min")
    overall = lb.groupby("scenario")["acc_mean"].rank(ascending=False, method="min")
    lb["rank"] = overall.astype(int)
    merged = per_order.merge(lb[[*keys, "rank"]].rename(columns={"rank": "overall"}), on=keys)
    merged["changed"] = merged["rank"] != merged["overall"]
    changes = merged.groupby(keys, sort=False).agg(rank_changes=("changed", "sum"), rank_best=("rank", "min"),
                                                   rank_worst=("rank", "max")).reset_index()
    return lb.merge(changes, on=keys, how="left")


def _cost_cell(mean: float, metric: str) -> str:
    if np.isnan(mean):
        return "n/a"
    if metric == "train_flops":
        return f"{mean / 1e9:.3g}"
    if metric == "memory_bytes":
        return f"{mean / 1e6:.3g}"
    if metric in ("memory_samples", "trainable_params"):
        return f"{int(round(mean)):,}"
    return f"{mean:.3g}"


def _cell(mean: float, std: float, metric: str) -> str:
    if metric in COST and metric != "wall_seconds":
        return _cost_cell(mean, metric)
    if np.isnan(mean):
        return "n/a"
    scale, fmt = (100.0, "{:.1f}") if metric in ACCURACY_LIKE else (1.0, "{:.3g}" if abs(mean) < 1000 else "{:.0f}")
    text = fmt.format(mean * scale)
    if not np.isnan(std):
        text += " ± " + fmt.format(std * scale)
    return text


def people_table(lb: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """The leaderboard for people: accuracies in percent, mean ± std."""
    metrics = metrics or ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "wf10", "gap_depth", "gap_iters_to_recover",
                          "gap_unrecovered", *COST]
    t = lb[["scenario", "strategy"]].copy()
    if "label" in lb:
        t["strategy"] = lb["label"].fillna(lb["strategy"])
    t["runs"] = [_runs_cell(r) for r in lb.itertuples()]
    for m in metrics:
        t[LABELS[m]] = [_cell(a, b, m) for a, b in zip(lb[f"{m}_mean"], lb[f"{m}_std"])]
    if "acc_order_std" in lb:
        t.insert(3, "orderings", lb["n_orderings"])
        t["ACC across orderings (std, min-max)"] = [
            f"{100 * s:.1f}, {100 * lo:.1f}-{100 * hi:.1f}"
            for s, lo, hi in zip(lb["acc_order_std"], lb["acc_order_min"], lb["acc_order_max"])]
        t["rank changes"] = [f"{int(c)}/{int(n)} (ranks {int(b)}-{int(w)})" for c, n, b, w in
                             zip(lb["rank_changes"], lb["n_orderings"], lb["rank_best"], lb["rank_worst"])]
    return t


def _runs_cell(row) -> str:
    """Runs behind a row, with the diverged and failed ones said where there are any."""
    notes = [f"{row.n_diverged} DIVERGED"] if getattr(row, "n_diverged", 0) else []
    notes += [f"{row.n_failed} FAILED"] if getattr(row, "n_failed", 0) else []
    return f"{row.n_runs}" + (f" ({', '.join(notes)})" if notes else "")


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_text(table: pd.DataFrame) -> str:
    return table.to_string(index=False)


def write_leaderboard(roots: list[Path], out: Path, recompute: bool = False) -> pd.DataFrame:
    """Rebuild leaderboard.csv and leaderboard.md in ``out`` from the runs below ``roots``."""
    failed = failed_runs(roots)
    lb = leaderboard(collect(roots, recompute), failed)
    if lb.empty:
        return lb
    io.write_csv(out / "leaderboard.csv", lb)
    note = ("Accuracies in percent, mean ± std over seeds (sample std). ACC/BWT/FORG from the accuracy matrix; "
            "min-ACC, WC-ACC, WF and the gap from continual evaluation (De Lange et al., ICLR 2023). Cost beside "
            "accuracy (Harun et al., CVPR-W 2023): training GFLOP counted by torch's FlopCounterMode on sampled "
            "steps (replay, memory gradients, Fisher and views included), memory held at the end (samples, MB), "
            "trainable parameters, wall seconds per run.\n\n")
    fairness = fairness_notes(lb) + reliability_notes(lb, failed)
    body = to_markdown(people_table(lb))
    io.atomic_write_text(out / "leaderboard.md", "# Leaderboard\n\n" + note + body +
                         ("\n" + "\n".join(f"- {n}" for n in fairness) + "\n" if fairness else ""))
    return lb


def reliability_notes(lb: pd.DataFrame, failed: pd.DataFrame) -> list[str]:
    """Sentences on the runs a row's numbers do not come from, or come from a broken model."""
    notes = []
    for r in lb[lb["n_diverged"] > 0].itertuples():
        notes.append(f"{r.scenario}: {r.label} — {r.n_diverged} of {r.n_runs} run(s) DIVERGED "
                     f"({metrics.DIVERGENCE_RULE}); the row ranks last whatever its metrics say.")
    for r in failed.itertuples():
        notes.append(f"{r.scenario}: {r.strategy} {r.run} FAILED ({r.error}); not in the means — see "
                     f"{Path(r.run_dir) / ERROR_FILE}.")
    return notes


def fairness_notes(lb: pd.DataFrame) -> list[str]:
    """Plain sentences on what makes rows of one table unequal: memory budgets and training updates."""
    notes = []
    for scenario, g in lb.groupby("scenario", sort=False):
        mem = g[g["uses_memory"].astype(bool)] if "uses_memory" in g else g.iloc[:0]
        caps = {r["label"]: r.get("memory_capacity_mean") for _, r in mem.iterrows()}
        caps = {k: v for k, v in caps.items() if v is not None and not np.isnan(v)}
        if len(set(caps.values())) > 1:
            parts = ", ".join(f"{k} {int(v):,}" for k, v in caps.items())
            notes.append(f"{scenario}: memory budgets differ between rows (samples: {parts}); their accuracies "
                         "are not comparable as methods.")
        elif caps:
            notes.append(f"{scenario}: every memory strategy has the same budget of {int(next(iter(caps.values()))):,} "
                         f"samples ({', '.join(caps)}).")
        for _, r in g.iterrows():
            if r.get("budget_overridden"):
                notes.append(f"{scenario}: {r['label']} sets {r['budget_overridden']} itself, off the experiment's "
                             f"budget of {int(r['memory_budget']):,} samples.")
            if not r.get("uses_memory") and r.get("memory_samples_mean", 0) and r["memory_samples_mean"] > 0:
                notes.append(f"{scenario}: {r['label']} keeps {int(r['memory_samples_mean']):,} training samples "
                             "(all it has seen: a reference point, not a budgeted method).")
        upd = g["iterations_mean"].dropna() if "iterations_mean" in g else pd.Series(dtype=float)
        if upd.nunique() > 1:
            parts = ", ".join(f"{lab} {int(v):,}" for lab, v in zip(g["label"], g["iterations_mean"])
                              if not np.isnan(v))
            notes.append(f"{scenario}: rows differ in training updates ({parts}).")
    return notes
