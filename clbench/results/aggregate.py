"""From one row per run to one row per scenario x strategy (x parameters): mean, std and 95% CI
over seeds, paired t-tests against a reference row, the spread across orderings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from clbench.common.errors import InputError
from clbench.evaluation.metrics import noise_verdict
from clbench.results.columns import ALPHA, METRICS, SPREAD_METRICS


def leaderboard(runs: pd.DataFrame, failed: pd.DataFrame | None = None, reference: str | None = None
                ) -> pd.DataFrame:
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
        # runs of a view-batch strategy whose self-supervised term never acted (tasks inside its warm-up)
        row["n_ssl_silent"] = int((g["ssl_updates"] == 0).sum()) if "ssl_updates" in g else 0
        # runs a schedule evaluated at some iterations only (their WF a lower bound, their AAA an estimate)
        row["n_sparse"] = int((~g["evaluated_every_iteration"].fillna(True).astype(bool)).sum()) \
            if "evaluated_every_iteration" in g else 0
        row["label"] = str(g["label"].iloc[0]) if "label" in g and g["label"].notna().any() else key[2]
        row["own_settings"] = str(g["own_settings"].iloc[0]) if "own_settings" in g else "{}"
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
            row[f"{m}_ci95"] = ci95(v)
            row[f"{m}_n"] = len(v)  # the runs that measured it (a survivors' mean says so)
        row["gap_verdict"] = gap_row_verdict(row)
        row["wf10_verdict"] = noise_verdict(row["wf10_mean"], row["wf10_noise_mean"])
        out.append(row)
    n_failed = failed.groupby(["scenario", "strategy"]).size().to_dict() if len(failed) else {}
    for scenario, strategy in n_failed:  # strategies none of whose runs finished
        if not any(r["scenario"] == scenario and r["strategy"] == strategy for r in out):
            out.append({"scenario": scenario, "setting": "", "strategy": strategy, "params": "{}",
                        "settings": "{}", "n_runs": 0, "n_seeds": 0,
                        "seeds": "", "n_diverged": 0, "n_sparse": 0, "label": strategy, "uses_memory": False,
                        "memory_budget": None, "budget_overridden": "",
                        **{f"{m}_{s}": float("nan") for m in METRICS for s in ("mean", "std", "ci95")},
                        **{f"{m}_n": 0 for m in METRICS}, "gap_verdict": "n/a", "wf10_verdict": "n/a"})
    lb = _distinguish(pd.DataFrame(out))
    lb["n_failed"] = [n_failed.get((r.scenario, r.strategy), 0) for r in lb.itertuples()]
    if "ordering_seed" in runs and runs["ordering_seed"].notna().any():
        lb = _ordering_spread(runs, lb, keys)
    order = {s: i for i, s in enumerate(dict.fromkeys([*runs["scenario"], *failed["scenario"]]))}
    lb["_o"] = lb["scenario"].map(order)
    lb["_diverged"] = lb["n_diverged"] > 0
    lb = lb.sort_values(["_o", "_diverged", "acc_mean"], ascending=[True, True, False], na_position="last") \
        .drop(columns=["_o", "_diverged"]).reset_index(drop=True)
    return paired_tests(runs, lb, keys, reference)


def gap_row_verdict(row: dict) -> str:
    """A row's stability gap against its noise floor (means over seeds, ``metrics.noise_verdict``);
    a row whose dips never came back has forgetting, not a gap, and says so."""
    depth, noise = row.get("gap_depth_mean", np.nan), row.get("gap_noise_mean", np.nan)
    if np.isnan(depth) and row.get("gap_unrecovered_mean", 0) > 0:
        return "no gap: dips never came back (forgetting)"
    return noise_verdict(depth, noise)


def orderings_per_row(runs: pd.DataFrame) -> pd.Series:
    """Each run's ordering seed as text ("None" for the scenario's own), a key part that survives NaN."""
    return runs.get("ordering_seed", pd.Series(None, index=runs.index, dtype=object)).map(str)


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% confidence interval of the mean over seeds (Student's t, n - 1 degrees
    of freedom); NaN with fewer than two values."""
    from scipy.special import stdtrit  # scipy.special, not scipy.stats: a second less to import

    n = len(values)
    if n < 2:
        return float("nan")
    return float(stdtrit(n - 1, 0.975) * values.std(ddof=1) / np.sqrt(n))


def paired_t_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``'s,
    from the t distribution's CDF): t = mean(d) / (std(d) / sqrt(n)), d = a - b, n - 1 degrees of
    freedom; 1 when the pairs are equal; NaN when they differ by one constant (no spread to test
    against: the test is undefined, not infinitely significant) or there are fewer than two."""
    from scipy.special import stdtr

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return float("nan")
    if np.allclose(d, 0):
        return 1.0
    sd = d.std(ddof=1)
    if sd <= 1e-12 * max(1.0, float(np.abs(d).max())):
        return float("nan")
    t = d.mean() / (sd / np.sqrt(len(d)))
    return float(2 * stdtr(len(d) - 1, -abs(t)))


def _keeps_everything(rows: pd.DataFrame) -> pd.Series:
    """Rows that keep every training sample without a budget (joint training): reference points,
    not methods under comparison."""
    if "memory_samples_mean" not in rows or "uses_memory" not in rows:
        return pd.Series(False, index=rows.index)
    return ~rows["uses_memory"].astype(bool) & (rows["memory_samples_mean"].fillna(0) > 0)


def paired_tests(runs: pd.DataFrame, lb: pd.DataFrame, keys: list[str], reference: str | None = None
                 ) -> pd.DataFrame:
    """Per scenario, each row's ACC against a reference row (the best healthy row among the methods,
    i.e. leaving out rows that keep all their data such as joint training; or the row labelled
    ``reference``), paired by seed and ordering: a paired t-test (``paired_t_pvalue``)
    over the seeds both rows ran. ``acc_vs_reference`` says ``reference``, ``n.s.`` (p >= ALPHA:
    not significantly different), ``better`` or ``worse``; ``n/a`` with fewer than two pairs or
    differences that are all the same (the t-test is undefined)."""
    lb = lb.assign(reference="", acc_p_vs_reference=np.nan, acc_vs_reference="")
    if runs.empty or "acc" not in runs:
        return lb
    runs = runs.assign(_pair=runs["seed"].map(str) + "/" + orderings_per_row(runs))
    per_row = {key: g.set_index("_pair")["acc"] for key, g in runs.groupby(keys, sort=False)}
    for scenario, g in lb.groupby("scenario", sort=False):
        healthy = g[(g["n_diverged"] == 0) & g["acc_mean"].notna()]
        methods = healthy[~_keeps_everything(healthy)]  # the best *method*, not an upper bound (joint)
        chosen = healthy[healthy["label"] == reference] if reference else (methods if len(methods) else healthy).head(1)
        if reference and chosen.empty:
            raise InputError(f"{scenario}: no row labelled {reference!r} to compare with; "
                             f"rows: {', '.join(g['label'])}")
        if chosen.empty:
            continue
        ref = chosen.iloc[0]
        ref_acc = per_row[tuple(ref[k] for k in keys)]
        for i, r in g.iterrows():
            lb.loc[i, "reference"] = ref["label"]
            if i == chosen.index[0]:
                lb.loc[i, "acc_vs_reference"] = "reference"
                continue
            acc = per_row.get(tuple(r[k] for k in keys), pd.Series(dtype=float))
            both = pd.concat([acc, ref_acc], axis=1, join="inner").dropna()
            if len(both) < 2:
                lb.loc[i, "acc_vs_reference"] = "n/a"
                continue
            diff = both.iloc[:, 0] - both.iloc[:, 1]
            p = paired_t_pvalue(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy())
            lb.loc[i, "acc_p_vs_reference"] = p
            if np.isnan(p):  # identical differences: no spread to test against
                lb.loc[i, "acc_vs_reference"] = "n/a"
                continue
            lb.loc[i, "acc_vs_reference"] = "n.s." if p >= ALPHA else ("better" if diff.mean() > 0 else "worse")
    return lb


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
