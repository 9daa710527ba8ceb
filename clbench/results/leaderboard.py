"""The leaderboard: one row per scenario x strategy (x parameters), mean and std over seeds of
every metric, rebuilt from run folders so ``clbench report`` can merge experiments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from clbench.common import io
from clbench.common.errors import InputError
from clbench.common.io import ERROR_FILE, is_complete
from clbench.evaluation import metrics
from clbench.run.settings import RUN_IDENTITY, per_strategy_settings, setting_names

METRICS = ["acc", "acc_test_se", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf100", "aaa", "gap_depth",
           "gap_iters_to_recover", "gap_unrecovered", "wall_seconds", "train_iters_per_second",
           "train_flops", "memory_samples", "memory_bytes", "trainable_params", "memory_capacity", "iterations"]
#: cost columns (Harun et al. 2023): shown beside accuracy, mean over seeds
COST = ["train_flops", "memory_samples", "memory_bytes", "trainable_params", "wall_seconds"]
#: metrics with a 95% confidence interval over seeds (Student's t) in the leaderboard
CI_METRICS = ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "gap_depth", "aaa", "wf10"]
#: which way is better, shown beside each column's name (↑ higher, ↓ lower)
BETTER = {"acc": "↑", "bwt": "↑", "fwt": "↑", "forgetting": "↓", "min_acc": "↑", "wc_acc": "↑", "wf10": "↓",
          "wf100": "↓", "aaa": "↑", "gap_depth": "↓", "gap_iters_to_recover": "↓", "gap_unrecovered": "↓",
          "train_flops": "↓", "memory_samples": "↓", "memory_bytes": "↓", "trainable_params": "↓",
          "wall_seconds": "↓"}
#: a paired difference from the reference row below this p-value is called significant
ALPHA = 0.05
#: metrics whose spread across orderings the leaderboard reports (``--orderings K``)
SPREAD_METRICS = ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "gap_depth"]
#: shown as percentages for people (fractions in the CSV)
ACCURACY_LIKE = {"acc", "acc_test_se",
                 "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf100", "aaa", "gap_depth",
                 "gap_unrecovered"}
LABELS = {"acc": "ACC", "acc_test_se": "ACC test-set SE",
          "bwt": "BWT", "fwt": "FWT", "forgetting": "FORG", "min_acc": "min-ACC", "wc_acc": "WC-ACC",
          "wf10": "WF10", "wf100": "WF100", "aaa": "AAA", "gap_depth": "gap depth",
          "gap_iters_to_recover": "iters to recover", "gap_unrecovered": "% unrecovered", "wall_seconds": "s/run",
          "train_iters_per_second": "it/s", "train_flops": "train GFLOP", "memory_samples": "memory (samples)",
          "memory_bytes": "memory (MB)", "trainable_params": "trainable params", "memory_capacity": "memory budget",
          "iterations": "updates"}


def run_folders(roots: list[Path]) -> list[Path]:
    """Complete run folders below each experiment root (partial ones are never counted)."""
    found = []
    for root in roots:
        for summary in sorted(Path(root).glob("runs/*/*/seed*/summary.json")):
            if is_complete(summary.parent):
                found.append(summary.parent)
    return found


#: what a run's config holds beyond the settings its row shares (what names a run, or says where it
#: ran): merged experiments whose settings differ (another --lr, --epochs, budget) get separate rows,
#: never one mean over both
NOT_SETTINGS = {*RUN_IDENTITY, *setting_names("bits", "where")}


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


def binomial_se(run: Path) -> float:
    """The binomial standard error of a run's final ACC from its finite evaluation sets: ACC is the
    mean of T per-task accuracies a_t, each measured on N_t samples, so SE = sqrt(sum a_t(1-a_t)/N_t) / T.
    A difference between two rows smaller than about twice this is within test-set noise, whatever
    the seeds say (split-digits has about 72 test samples per task: one sample is 1.4 points)."""
    matrix = read_result(run / "matrix.csv", pd.read_csv)
    counts = read_result(run / "config.json", io.read_json).get("evaluation", {}).get("samples_per_task")
    final = matrix[[c for c in matrix.columns if c.startswith("task")]].iloc[-1].to_numpy(dtype=float)
    if not counts or len(counts) != len(final):
        return float("nan")
    n = np.asarray(counts, dtype=float)
    return float(np.sqrt(np.sum(final * (1 - final) / n)) / len(final))


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
        record = read_result(d / "config.json", io.read_json)
        run = record.get("run", {})
        s["settings"] = json.dumps({k: v for k, v in run.items() if k not in NOT_SETTINGS}, sort_keys=True, default=str)
        defaults = record.get("scenario", {}).get("train", {})
        s["own_settings"] = json.dumps({k: run[k] for k in OWN_SETTINGS if k in run and defaults and
                                        k in defaults and run[k] != defaults[k]}, sort_keys=True)
        s["run_dir"] = str(d)
        s["acc_test_se"] = binomial_se(d)
        rows.append(s)
    df = pd.DataFrame(rows)
    for m in METRICS:
        if m in df:
            df[m] = pd.to_numeric(df[m], errors="coerce")
    return df


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
            if m in CI_METRICS:
                row[f"{m}_ci95"] = ci95(v)
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
    lb = lb.sort_values(["_o", "_diverged", "acc_mean"], ascending=[True, True, False], na_position="last") \
        .drop(columns=["_o", "_diverged"]).reset_index(drop=True)
    return paired_tests(runs, lb, keys, reference)


def _orderings(runs: pd.DataFrame) -> pd.Series:
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
    freedom; 1 when the pairs are equal, 0 when they differ by a constant."""
    from scipy.special import stdtr

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.allclose(d, 0):
        return 1.0
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0
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
    not significantly different), ``better`` or ``worse``; ``n/a`` with fewer than two pairs."""
    lb = lb.assign(reference="", acc_p_vs_reference=np.nan, acc_vs_reference="")
    if runs.empty or "acc" not in runs:
        return lb
    runs = runs.assign(_pair=runs["seed"].map(str) + "/" + _orderings(runs))
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
    if metric in ACCURACY_LIKE:
        scale, decimals = 100.0, 1
    else:  # three significant figures of the mean; the spread to the same decimal place
        scale, decimals = 1.0, max(0, 2 - int(np.floor(np.log10(abs(mean))))) if mean else 2
    text = f"{mean * scale:.{decimals}f}"
    if not np.isnan(std):
        text += f" ± {std * scale:.{decimals}f}"
    return text


def people_table(lb: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """The leaderboard for people: accuracies in percent with one decimal, mean ± the 95% confidence
    interval over seeds (± the std where no CI is computed), ↑/↓ for which way is better, the
    setting and parameters of each row, the ACC test-set SE and the paired test against the
    reference row."""
    metrics = metrics or ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "wf10", "gap_depth", "gap_iters_to_recover",
                          "gap_unrecovered", *COST]
    t = lb[["scenario", "strategy"]].copy()
    if "label" in lb:
        t["strategy"] = lb["label"].fillna(lb["strategy"])
    t["setting"] = lb["setting"] if "setting" in lb else ""
    t["params"] = [_params_cell(p, own) for p, own in zip(lb.get("params", pd.Series("{}", index=lb.index)),
                                                            _own_settings(lb))]
    t["runs"] = [_runs_cell(r) for r in lb.itertuples()]
    for m in metrics:
        spread = lb[f"{m}_ci95"] if f"{m}_ci95" in lb else lb[f"{m}_std"]
        t[_header(m)] = [_cell(a, b, m) for a, b in zip(lb[f"{m}_mean"], spread)]
        if m == "acc":
            if "acc_test_se_mean" in lb:
                t["ACC test-set SE"] = [_cell(v, float("nan"), "acc_test_se") for v in lb["acc_test_se_mean"]]
            if "acc_vs_reference" in lb:
                t["ACC vs reference"] = [_versus_cell(v, p) for v, p in zip(lb["acc_vs_reference"],
                                                                               lb["acc_p_vs_reference"])]
    if "acc_order_std" in lb:
        t.insert(3, "orderings", lb["n_orderings"])
        t["ACC across orderings (std, min-max)"] = [
            f"{100 * s:.1f}, {100 * lo:.1f}-{100 * hi:.1f}"
            for s, lo, hi in zip(lb["acc_order_std"], lb["acc_order_min"], lb["acc_order_max"])]
        t["rank changes"] = [f"{int(c)}/{int(n)} (ranks {int(b)}-{int(w)})" for c, n, b, w in
                             zip(lb["rank_changes"], lb["n_orderings"], lb["rank_best"], lb["rank_worst"])]
    return t


def _header(metric: str) -> str:
    return f"{LABELS[metric]} {BETTER[metric]}" if metric in BETTER else LABELS[metric]


def _params_cell(params: str, own: dict) -> str:
    values = {**(json.loads(params) if isinstance(params, str) and params else {}), **own}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "defaults"


#: optimiser settings a strategy may have of its own (``Experiment.strategy_settings``)
OWN_SETTINGS = per_strategy_settings()


def _own_settings(lb: pd.DataFrame) -> list[dict]:
    """Per row, its optimiser settings that are not the scenario's defaults (a tuned or published lr):
    shown beside the parameters, since they change the numbers as much."""
    return [json.loads(v) if isinstance(v, str) and v else {}
            for v in lb.get("own_settings", pd.Series("", index=lb.index))]


def _versus_cell(verdict: str, p: float) -> str:
    if verdict in ("reference", "n/a", ""):
        return verdict or "n/a"
    return f"{verdict} (p={p:.2g})"


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


#: unicode of the people table that LaTeX's text mode lacks, as math (after escaping)
LATEX_SYMBOLS = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$"}


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs tabular (pandas' Styler, cells and headers escaped) that compiles as it is, with
    \\usepackage{booktabs}; ±, ↑ and ↓ become math."""
    styler = table.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, column_format="l" * 4 + "r" * (len(table.columns) - 4),
                           caption=caption, position="t" if caption else None)
    for symbol, latex in LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def render(table: pd.DataFrame, fmt: str) -> str:
    """The people table as ``text``, ``markdown``, ``latex`` or ``csv``."""
    if fmt == "markdown":
        return to_markdown(table)
    if fmt == "latex":
        return to_latex(table)
    if fmt == "csv":
        return table.to_csv(index=False)
    return to_text(table)


#: what identifies one run across experiments: the same key twice is the same run counted twice
RUN_KEY = ["scenario", "strategy", "params", "settings", "seed", "ordering_seed"]


def check_merge(runs: pd.DataFrame, roots: list[Path], allow_different: bool) -> None:
    """Merging experiments must not count a run twice, nor pool runs made under other settings
    into one row unless asked (``allow_different``: they then stay separate, labelled rows)."""
    if runs.empty or len(roots) < 2:
        return
    runs = runs.assign(root=[_root_of(Path(d), roots) for d in runs["run_dir"]], ordering_seed=_orderings(runs))
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


def _root_of(run: Path, roots: list[Path]) -> str:
    for root in roots:
        if run.is_relative_to(root):
            return str(root)
    return str(run)


def write_leaderboard(roots: list[Path], out: Path, recompute: bool = False, allow_different: bool = False,
                      reference: str | None = None) -> pd.DataFrame:
    """Rebuild leaderboard.csv and leaderboard.md in ``out`` from the runs below ``roots`` (checked
    with ``check_merge`` when there are several)."""
    failed = failed_runs(roots)
    runs = collect(roots, recompute)
    check_merge(runs, roots, allow_different)
    lb = leaderboard(runs, failed, reference)
    if lb.empty:
        return lb
    io.write_csv(out / "leaderboard.csv", lb)
    note = ("Accuracies in percent, mean ± the half-width of the 95% confidence interval over seeds (Student's t; "
            "std and CI in leaderboard.csv); ↑ higher is better, ↓ lower is better. ACC test-set SE: the binomial "
            "standard error of ACC from the finite test sets alone. ACC vs reference: a paired t-test over seeds "
            "(as scipy.stats.ttest_rel) against the best method (joint training keeps all its data: a reference "
            f"point, not the reference row); n.s. = not significantly different at p < {ALPHA}. "
            "ACC/BWT/FORG from the accuracy matrix; "
            "min-ACC, WC-ACC, WF and the gap from continual evaluation (De Lange et al., ICLR 2023). Cost beside "
            "accuracy (Harun et al., CVPR-W 2023): training GFLOP counted with torch.utils.flop_counter's formulas on "
            "sampled steps (replay, memory gradients, Fisher and views included), memory held at the end (samples, "
            "MB), trainable parameters, wall seconds per run.\n\n")
    fairness = fairness_notes(lb) + reliability_notes(lb, failed)
    table, sources = with_published(people_table(lb), lb, experiment_presets(roots))
    body = to_markdown(table)
    io.atomic_write_text(out / "leaderboard.md", "# Leaderboard\n\n" + note + body + sources +
                         ("\n" + "\n".join(f"- {n}" for n in fairness) + "\n" if fairness else ""))
    return lb


def _published_value(p) -> str:
    """A published number as the table shows ours: accuracies in percent with one decimal."""
    return f"{100 * p.value:.1f}" if p.metric in ACCURACY_LIKE else f"{p.value:.3g}"


def experiment_presets(roots: list[Path]) -> list[str]:
    """The presets the experiments under ``roots`` were started from (``experiment.toml``)."""
    import tomllib

    names = []
    for root in roots:
        path = Path(root) / "experiment.toml"
        try:
            name = tomllib.loads(path.read_text()).get("preset") if path.is_file() else None
        except (OSError, tomllib.TOMLDecodeError):
            name = None
        if name and name not in names:
            names.append(name)
    return names


def with_published(table: pd.DataFrame, lb: pd.DataFrame, preset_names: list[str]) -> tuple[pd.DataFrame, str]:
    """The people table with, for each metric a preset publishes, the paper's value and our
    distance from it in standard deviations of our seeds, ``(ours - paper) / std`` (rows without a
    published value: an empty cell), and the sources as a paragraph."""
    from clbench import presets

    published = {}
    for name in preset_names:
        published.update(presets.published_for(name))
    if not published:
        return table, ""
    table = table.copy()
    labels = lb["label"].fillna(lb["strategy"]) if "label" in lb else lb["strategy"]
    used = []
    for metric in dict.fromkeys(m for _, _, m in published):
        paper, dist = [], []
        for scenario, label, strategy, (_, row) in zip(lb["scenario"], labels, lb["strategy"], lb.iterrows()):
            p = published.get((scenario, label, metric)) or published.get((scenario, strategy, metric))
            if p is None:
                paper.append("")
                dist.append("")
                continue
            used.append(p)
            mean, std = row.get(f"{metric}_mean", np.nan), row.get(f"{metric}_std", np.nan)
            paper.append(_published_value(p))
            dist.append(f"{(mean - p.value) / std:+.1f}" if std and np.isfinite(std) and std > 0 else "n/a (1 seed)")
        name = LABELS.get(metric, metric)
        table[f"{name} published"] = paper
        table[f"{name}: ours - published (our std)"] = dist
    lines = [f"- {p.strategy} on {p.scenario}, {LABELS.get(p.metric, p.metric)} {_published_value(p)}: {p.source}"
             + (f" ({p.note})" if p.note else "") for p in dict.fromkeys(used)]
    text = (f"\nPublished numbers from preset {', '.join(preset_names)} (clbench list presets); the distance is in "
            "standard deviations of our seeds, so |distance| < 2 is within our spread:\n\n" + "\n".join(lines) + "\n")
    return table, text if lines else ""


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
