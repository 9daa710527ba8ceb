"""The notes under a leaderboard: published numbers beside ours (presets), failed and diverged
runs, and what makes a comparison unfair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clbench.common.io import ERROR_FILE
from clbench.evaluation import metrics
from clbench.results.columns import ACCURACY_LIKE, LABELS


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
    for r in lb[lb.get("n_ssl_silent", pd.Series(0, index=lb.index)) > 0].itertuples():
        notes.append(f"{r.scenario}: {r.label} — its self-supervised term never acted in {r.n_ssl_silent} of "
                     f"{r.n_runs} run(s): every task ended inside its warm-up (ssl_warmup / ssl_warmup_epochs); "
                     "the row is its wrapped strategy with views only.")
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


def evaluation_notes(lb: pd.DataFrame) -> list[str]:
    """A sentence per scenario whose rows hold runs not evaluated at every iteration: which of
    their numbers are bounds or estimates (WF10's header means every-iteration WF10; a schedule
    that skipped iterations can only read it lower)."""
    notes = []
    sparse = lb[lb.get("n_sparse", pd.Series(0, index=lb.index)) > 0]
    for scenario, g in sparse.groupby("scenario", sort=False):
        rows = ", ".join(f"{r.label} ({r.n_sparse} of {r.n_runs} runs)" for r in g.itertuples())
        notes.append(f"{scenario}: {rows} not evaluated at every iteration: min-ACC, WC-ACC and the gap come "
                     "from the iterations evaluated (the refine schedule, the default on tasks of more than 100 "
                     "updates, looks back at the exact iterations where each minimum and recovery may lie); WF10 and "
                     "WF100 count the evaluated iterations only, so they are lower bounds of every-iteration "
                     "evaluation's; AAA is an estimate (clbench list metrics says how each metric treats an "
                     "unevaluated iteration; --eval-schedule periodic --eval-every 1 is the reference).")
    return notes
