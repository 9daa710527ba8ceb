"""Plots that show forgetting and the stability gap, readable without the code.

All of them are drawn from the run folders (curves.csv), so ``clbench plot DIR`` redraws them.
Figures are built with ``matplotlib.figure.Figure`` directly: no pyplot, no global backend
switch, nothing changed for a caller who uses matplotlib interactively.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench import metrics
from clbench.leaderboard import read_curves, read_result, read_summary, run_folders


def _load(roots: list[Path]) -> dict[tuple[str, str], dict[str, pd.DataFrame]]:
    """{(scenario, strategy): {run folder name (seed<k>[-order<o>]): curves}}; a strategy with a
    diverged run is named "<strategy> (k DIVERGED)" in every plot, as in the leaderboard."""
    out: dict[tuple[str, str], dict[str, pd.DataFrame]] = {}
    diverged: dict[tuple[str, str], int] = {}
    for d in run_folders(roots):
        scenario, strategy, run = d.parts[-3], d.parts[-2], d.parts[-1]
        out.setdefault((scenario, strategy), {})[run] = read_result(d / "curves.csv", read_curves)
        summary = read_summary(d)
        diverged[scenario, strategy] = diverged.get((scenario, strategy), 0) + bool(summary.get("diverged_at"))
    return {(sc, f"{st} ({diverged[sc, st]} DIVERGED)" if diverged[sc, st] else st): runs
            for (sc, st), runs in out.items()}


def seen_mean(log: pd.DataFrame) -> pd.Series:
    """Mean accuracy over the tasks seen so far, per evaluation (indexed by iteration)."""
    steps = log.groupby("eval_step")[["iteration", "trained_task"]].first()
    phase = steps["trained_task"].cummax()
    log = log.join(phase.rename("phase"), on="eval_step")
    seen = log[(log["task"] <= log["phase"]) & (log["phase"] >= 0)]
    s = seen.groupby("eval_step")["accuracy"].mean()
    return pd.Series(s.to_numpy(), index=steps.loc[s.index, "iteration"].to_numpy()).groupby(level=0).last()


def boundaries(log: pd.DataFrame) -> list[int]:
    """Iterations where a new task starts (the last evaluation of each phase but the final one)."""
    steps = log.groupby("eval_step")[["iteration", "trained_task"]].first()
    phase = steps["trained_task"].cummax().to_numpy()
    it = steps["iteration"].to_numpy()
    return [int(it[np.flatnonzero(phase == p)[-1]]) for p in range(int(phase.max()))]


def _mark(ax, bounds: list[int]) -> None:
    for b in bounds:
        ax.axvline(b, color="grey", lw=0.8, ls="--", alpha=0.7)


def plot_all(roots: list[Path], out: Path) -> list[Path]:
    data = _load(roots)  # every file read (and a corrupt one refused) before anything is written
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for scenario in dict.fromkeys(k[0] for k in data):
        runs = {st: seeds for (sc, st), seeds in data.items() if sc == scenario}
        files += [_mean_accuracy(scenario, runs, out), _gap_zoom(scenario, runs, out), _matrices(scenario, runs, out),
                  _bars(scenario, runs, out)]
        files += [_per_task(scenario, st, seeds, out) for st, seeds in runs.items()]
    return files


def _band(runs_of_strategy: dict[int, pd.DataFrame]):
    series = [seen_mean(log) for log in runs_of_strategy.values()]
    df = pd.concat(series, axis=1).sort_index().interpolate(limit_area="inside")
    return df.index.to_numpy(), df.mean(1).to_numpy(), df.min(1).to_numpy(), df.max(1).to_numpy()


def _mean_accuracy(scenario, runs, out) -> Path:
    fig, ax = _figure(figsize=(10, 5))
    for strategy, seeds in runs.items():
        x, m, lo, hi = _band(seeds)
        (line,) = ax.plot(x, m, lw=1.2, label=strategy)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    _mark(ax, boundaries(next(iter(next(iter(runs.values())).values()))))
    ax.set(xlabel="training iteration", ylabel="mean accuracy on tasks seen so far", ylim=(0, 1.02),
           title=f"{scenario}: accuracy during training (band: min-max over seeds; dashed: task boundaries)")
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    return _save(fig, out / f"{scenario}_mean_accuracy.png")


def _per_task(scenario, strategy, seeds, out) -> Path:
    seed = min(seeds, key=lambda name: (len(name), name))
    log = seeds[seed]
    steps = log.groupby("eval_step")[["trained_task"]].first()["trained_task"].cummax()
    log = log.join(steps.rename("phase"), on="eval_step")
    fig, ax = _figure(figsize=(10, 5))
    for task, g in log[log["task"] <= log["phase"]].groupby("task"):
        ax.plot(g["iteration"], g["accuracy"], lw=1, label=f"task {task}")
    _mark(ax, boundaries(log))
    ax.set(xlabel="training iteration", ylabel="accuracy", ylim=(0, 1.02),
           title=f"{scenario} / {strategy} ({seed}): each task from its start; "
                 "dips after boundaries = stability gap")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, out / f"{scenario}_tasks_{strategy.split(' ')[0]}.png")


def _gap_zoom(scenario, runs, out) -> Path:
    first = next(iter(next(iter(runs.values())).values()))
    bounds = boundaries(first)
    task_len = (first["iteration"].max() / max(1, len(bounds) + 1))
    window = max(5, int(task_len * 0.25))
    n = max(1, len(bounds))
    fig, axes = _figure(1, n, figsize=(3.2 * n, 3.6), sharey=True, squeeze=False)
    for k, b in enumerate(bounds):
        ax = axes[0, k]
        for strategy, seeds in runs.items():
            curves = []
            for log in seeds.values():
                old = log[(log["task"] <= k) & (log["iteration"] >= b) & (log["iteration"] <= b + window)]
                curves.append(old.groupby("iteration")["accuracy"].mean())
            c = pd.concat(curves, axis=1).mean(1)
            ax.plot(c.index - b, c.to_numpy(), lw=1.2, marker=".", ms=2, label=strategy)
        ax.set(title=f"after boundary {k + 1}", xlabel="updates into the new task")
    axes[0, 0].set_ylabel("mean accuracy on old tasks")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{scenario}: the stability gap — old tasks' accuracy right after each task switch")
    return _save(fig, out / f"{scenario}_gap_zoom.png")


def _matrices(scenario, runs, out) -> Path:
    n = len(runs)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = _figure(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, (strategy, seeds) in zip(axes.flat, runs.items()):
        R = np.nanmean([metrics.accuracy_matrix(log) for log in seeds.values()], axis=0)
        ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(R):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set(title=strategy, xlabel="evaluated task", ylabel="after training task")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{scenario}: accuracy matrix R (percent, mean over seeds)")
    return _save(fig, out / f"{scenario}_matrix.png")


def _bars(scenario, runs, out) -> Path:
    names = list(runs)
    vals = {m: [] for m in ("acc", "min_acc", "wc_acc")}
    for strategy in names:  # the three metrics drawn, not the whole summary (the gap's is the costly part)
        logs = [metrics.as_log(log) for log in runs[strategy].values()]
        for m in vals:
            vals[m].append(np.nanmean([getattr(metrics, m)(log) for log in logs]))
    x = np.arange(len(names))
    fig, ax = _figure(figsize=(max(6, 1.1 * len(names)), 4))
    for k, (m, label) in enumerate((("acc", "ACC (final)"), ("min_acc", "min-ACC"), ("wc_acc", "WC-ACC"))):
        ax.bar(x + (k - 1) * 0.27, 100 * np.array(vals[m]), 0.27, label=label)
    ax.set_xticks(x, names, rotation=20)
    ax.set(ylabel="percent", ylim=(0, 100), title=f"{scenario}: final vs worst-case accuracy (mean over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, out / f"{scenario}_bars.png")


def _figure(*grid, figsize, **kw):
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **kw)


def _save(fig, path: Path) -> Path:
    """Write to a temporary name, then rename: a plot is complete or absent."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
