"""Reading run folders back: which runs are complete or failed, their summaries and curves, one
row per run (``collect``)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd

from clbench.common import io
from clbench.common.errors import InputError
from clbench.common.io import ERROR_FILE, is_complete
from clbench.evaluation import metrics
from clbench.results.columns import METRICS, OWN_SETTINGS
from clbench.run.settings import RUN_IDENTITY, setting_names


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
                # the names the folders escape (``io.path_segment``: %XX), as the leaderboard has them
                rows.append({"scenario": unquote(err.parts[-4]), "strategy": unquote(err.parts[-3]),
                             "run": err.parts[-2],
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
        record = read_result(d / "config.json", io.read_json)
        # runs made before it was recorded: from their curves where kept (unknown where not)
        if recompute or ("evaluated_every_iteration" not in s and (d / "curves.csv").is_file()):
            log = read_result(d / "curves.csv", lambda p: metrics.as_log(read_curves(p)))  # pivoted once
            s["evaluated_every_iteration"] = metrics.evaluated_every_iteration(log)
        if recompute:
            s.update(metrics.summarize(log))
            train = read_result(d / "train.csv", pd.read_csv)
            sc = record.get("scenario", {})
            chance = metrics.chance_levels(sc.get("setting", ""), sc.get("n_classes", 0), sc.get("task_classes", []))
            at, why = metrics.divergence(train["loss"].to_numpy(dtype=float), train["task"].to_numpy(), log, chance)
            s.update(diverged_at=at, divergence=why)
        s["params"] = json.dumps(s.get("params") or {}, sort_keys=True)
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
