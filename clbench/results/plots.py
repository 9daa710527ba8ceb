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

from clbench.common import io
from clbench.common.errors import InputError
from clbench.evaluation import metrics
from clbench.results.aggregate import ci95
from clbench.results.folders import read_curves, read_result, read_summary, run_folders


def _load(roots: list[Path]) -> tuple[dict[tuple[str, str], dict[str, pd.DataFrame]], set[str]]:
    """{(scenario, strategy): {run folder name (seed<k>[-order<o>]): curves}}, and the plotted names
    of strategies whose training ignores the stream's boundaries (offline joint); a strategy with a
    diverged run is named "<strategy> (k DIVERGED)" in every plot, as in the leaderboard."""
    out: dict[tuple[str, str], dict[str, pd.DataFrame]] = {}
    diverged: dict[tuple[str, str], int] = {}
    free: set[tuple[str, str]] = set()
    for d in run_folders(roots):
        summary = read_summary(d)
        # the names the leaderboard shows (a strategy's label: an own class's ``name``), not the folders'
        scenario = str(summary.get("scenario") or d.parts[-3])
        strategy, run = str(summary.get("label") or summary.get("strategy") or d.parts[-2]), d.parts[-1]
        out.setdefault((scenario, strategy), {})[run] = read_result(d / "curves.csv", read_curves)
        diverged[scenario, strategy] = diverged.get((scenario, strategy), 0) + bool(summary.get("diverged_at"))
        if not read_result(d / "config.json", io.read_json).get("strategy", {}).get("task_boundaries", True):
            free.add((scenario, strategy))
    named = {(sc, st): f"{st} ({diverged[sc, st]} DIVERGED)" if diverged[sc, st] else st for sc, st in out}
    return {(sc, named[sc, st]): runs for (sc, st), runs in out.items()}, {named[k] for k in free}


def seen_mean(log: pd.DataFrame, old_only: bool = False) -> pd.Series:
    """Mean accuracy per evaluation (indexed by iteration) over the tasks seen so far, or with
    ``old_only`` over the tasks trained *before* the current one: the seen-tasks mean takes in
    the new, still untrained task at each boundary, which looks like a dip but is not forgetting."""
    steps = log.groupby("eval_step")[["iteration", "trained_task"]].first()
    phase = steps["trained_task"].cummax()
    log = log.join(phase.rename("phase"), on="eval_step")
    seen = log[(log["task"] < log["phase"]) if old_only else (log["task"] <= log["phase"]) & (log["phase"] >= 0)]
    # a schedule's look back at some tasks only is no mean over the seen tasks: steps with all of them
    wanted = (phase if old_only else phase + 1).rename("wanted")
    counts = seen.groupby("eval_step")["task"].nunique()
    seen = seen[seen["eval_step"].map(counts) == seen["eval_step"].map(wanted)]
    s = seen.groupby("eval_step")["accuracy"].mean()
    return pd.Series(s.to_numpy(), index=steps.loc[s.index, "iteration"].to_numpy()).groupby(level=0).last()


def boundaries(log: pd.DataFrame) -> list[int]:
    """Iterations where a new task starts (the last evaluation of each phase but the final one)."""
    steps = log.groupby("eval_step")[["iteration", "trained_task"]].first()
    phase = steps["trained_task"].cummax().to_numpy()
    it = steps["iteration"].to_numpy()
    return [int(it[np.flatnonzero(phase == p)[-1]]) for p in range(int(phase.max()))]


def shows_gap(log: pd.DataFrame) -> bool:
    """Whether an old task dipped after a boundary and came back within the next task: only then
    may a plot speak of a stability gap (a permanent step, as NMC's, is forgetting, not a gap)."""
    gap = metrics.stability_gap(log)
    dipped = gap[gap["minimum"] < gap["pre"] - metrics.RECOVERY_TOLERANCE]
    return bool(len(dipped) and dipped["iters_to_recover"].notna().any())


def strategy_colours(names) -> dict[str, tuple]:
    """One colour per strategy for every figure of a scenario, fixed by its place among all the
    scenario's strategies: a figure that leaves one out (the gap zoom leaves out offline joint) does
    not shift the others' colours."""
    from matplotlib import colormaps

    names = list(dict.fromkeys(names))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(k % cmap.N) for k, name in enumerate(names)}


def _mark(ax, bounds: list[int]) -> None:
    for b in bounds:
        ax.axvline(b, color="grey", lw=0.8, ls="--", alpha=0.7)


def _legend(ax, **kw) -> None:
    """Beside the axes, never over a curve."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0, **kw)


#: file formats a figure can be written in (``--plot-format``), and the default resolution
FORMATS = ("png", "pdf", "svg")
DPI = 110


def plot_formats(text: str | None) -> tuple[str, ...]:
    """``--plot-format png,pdf,svg``, checked (None: png)."""
    chosen = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in (text or "png").split(",") if f.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise InputError(f"unknown plot format(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(FORMATS)}")
    return chosen


#: how the figures of this process are written (set by ``_draw`` in whichever process draws)
_OUTPUT = {"formats": ("png",), "dpi": DPI}


def plot_all(roots: list[Path], out: Path, jobs: int = 1, formats: tuple[str, ...] = ("png",), dpi: int = DPI
             ) -> list[Path]:
    """Every plot of the experiments under ``roots``, into ``out``, in each of ``formats`` (png
    at ``dpi``; pdf and svg are vector graphics). With ``jobs`` > 1 the figures are drawn in that
    many worker processes (rendering is most of a default run's plotting time, and figures are
    independent, ``processes.drawing_context`` says where); the files are the same either way."""
    if dpi < 10 or dpi > 2000:
        raise InputError(f"--dpi {dpi}: choose between 10 and 2000")
    output = {"formats": tuple(formats), "dpi": dpi}
    data, free = _load(roots)  # every file read (and a corrupt one refused) before anything is written
    out.mkdir(parents=True, exist_ok=True)
    drawings = []  # (function, arguments), the costliest first so that parallel drawing ends together
    for scenario in dict.fromkeys(k[0] for k in data):
        runs = {st: seeds for (sc, st), seeds in data.items() if sc == scenario}
        drawings += [(_matrices, (scenario, runs, out)), (_mean_accuracy, (scenario, runs, out)),
                     (_gap_zoom, (scenario, runs, out, free)), (_bars, (scenario, runs, out))]
        drawings += [(_per_task, (scenario, st, seeds, out, st in free)) for st, seeds in runs.items()]
    from clbench.sweep.processes import drawing_context

    drawings = [(draw, args, output) for draw, args in drawings]
    context = drawing_context() if jobs > 1 and len(drawings) > 1 else None
    if context is None:
        return [f for d in drawings for f in _draw(d)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(jobs, len(drawings)), mp_context=context) as pool:
        return [f for files in pool.map(_draw, drawings) for f in files]


def _draw(drawing) -> list[Path]:
    """One figure, written in every format asked for: the files."""
    draw, args, output = drawing
    _OUTPUT.update(output)
    return draw(*args)


def _band(series: list[pd.Series]):
    df = pd.concat(series, axis=1).sort_index().interpolate(limit_area="inside")
    return df.index.to_numpy(), df.mean(1).to_numpy(), df.min(1).to_numpy(), df.max(1).to_numpy()


def _unevaluated(series: pd.Series, log: pd.DataFrame) -> list[tuple[int, int]]:
    """The stretches (a, b) between a task's consecutive evaluations that are longer than any
    step between the run's evaluations of whatever task: iterations the task was not evaluated at
    while the run evaluated others (offline joint's later tasks before their phase), which a line
    would pretend to know."""
    steps = np.diff(np.unique(log["iteration"].to_numpy()))
    longest = int(steps.max()) if len(steps) else 0
    its = series.index.to_numpy()
    return [(int(a), int(b)) for a, b in zip(its, its[1:]) if b - a > longest]


def _broken(band, gaps: list[list[tuple[int, int]]]):
    """A band with its line and area broken (NaN) inside every unevaluated stretch of any seed."""
    x, m, lo, hi = band
    stretches = [g for seed in gaps for g in seed]
    if not stretches:
        return band
    inside = np.zeros(len(x), dtype=bool)
    for a, b in stretches:
        inside |= (x > a) & (x < b)
    cuts = np.array([(a + b) / 2 for a, b in stretches], dtype=float)
    xs = np.concatenate([x.astype(float), cuts])
    order = np.argsort(xs, kind="stable")
    values = [np.concatenate([np.where(inside, np.nan, v), np.full(len(cuts), np.nan)])[order] for v in (m, lo, hi)]
    return (xs[order], *values)


def _mean_accuracy(scenario, runs, out) -> list[Path]:
    fig, axes = _figure(1, 2, figsize=(14, 5), sharey=True)
    colours = strategy_colours(runs)
    for ax, old_only in zip(axes, (False, True)):
        for strategy, seeds in runs.items():
            series = [100 * seen_mean(log, old_only) for log in seeds.values()]
            series = [x for x in series if len(x)]
            if not series:
                continue
            x, m, lo, hi = _band(series)
            ax.plot(x, m, lw=1.2, label=strategy, color=colours[strategy])
            ax.fill_between(x, lo, hi, color=colours[strategy], alpha=0.2, lw=0)
        _mark(ax, boundaries(next(iter(next(iter(runs.values())).values()))))
    axes[0].set(xlabel="training iteration", ylabel="mean accuracy (percent)", ylim=(0, 102),
                title="tasks seen so far (a new task enters at each boundary)")
    axes[1].set(xlabel="training iteration", title="old tasks only (trained before the current one)")
    _legend(axes[1])
    n = max(len(seeds) for seeds in runs.values())
    fig.suptitle(f"{scenario}: accuracy during training (line: mean over {n} seed(s); band: min-max over seeds; "
                 "dashed: task boundaries)")
    return _save(fig, out / io.path_segment(portable=True, text=f"{scenario}_mean_accuracy.png"))


def _per_task(scenario, strategy, seeds, out, free: bool = False) -> list[Path]:
    fig, ax = _figure(figsize=(11, 5))
    logs = list(seeds.values())
    first = logs[0]
    for task in sorted(first["task"].unique()):
        per_seed = []
        for log in logs:
            steps = log.groupby("eval_step")[["trained_task"]].first()["trained_task"].cummax()
            log = log.join(steps.rename("phase"), on="eval_step")
            g = log[(log["task"] == task) & ((log["task"] <= log["phase"]) | free)]
            per_seed.append(100 * g.groupby("iteration")["accuracy"].mean())
        per_seed = [x for x in per_seed if len(x)]
        if not per_seed:
            continue
        x, m, lo, hi = _broken(_band(per_seed), [_unevaluated(s, log) for s, log in zip(per_seed, logs)])
        (line,) = ax.plot(x, m, lw=1, label=f"task {task}")
        if len(per_seed) > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    bounds = [] if free else boundaries(first)
    _mark(ax, bounds)
    if not bounds:
        what = "trained on every task from the first update: no task boundaries, so no stability gap"
    elif any(shows_gap(log) for log in logs):
        what = "dips right after a boundary that recover within the task = stability gap"
    else:
        what = "no dip that recovers: drops after boundaries are forgetting, not a gap"
    ax.set(xlabel="training iteration", ylabel="accuracy (percent)", ylim=(0, 102),
           title=f"{scenario} / {strategy}: each task {'' if free else 'from its start '}(mean over {len(logs)} "
                 f"seed(s), band min-max)\n"
                 f"{what}")
    _legend(ax)
    return _save(fig, out / io.path_segment(portable=True, text=f"{scenario}_tasks_{strategy.split(' ')[0]}.png"))


def _gap_zoom(scenario, runs, out, free: set[str] = frozenset()) -> list[Path]:
    first = next(iter(next(iter(runs.values())).values()))
    bounds = boundaries(first)
    task_len = (first["iteration"].max() / max(1, len(bounds) + 1))
    window = max(5, int(task_len * 0.25))
    n = max(1, len(bounds))
    fig, axes = _figure(1, n, figsize=(3.2 * n + 2, 3.8), sharey=True, squeeze=False)
    colours = strategy_colours(runs)  # the colours of the other figures, whoever is left out here
    without = []
    for strategy, seeds in runs.items():
        if strategy in free or not boundaries(next(iter(seeds.values()))):
            without.append(strategy)  # no boundary, no gap: left out rather than drawn as one
            continue
        for k, b in enumerate(bounds):
            curves = []
            for log in seeds.values():
                old = log[(log["task"] <= k) & (log["iteration"] >= b) & (log["iteration"] <= b + window)]
                whole = old.groupby("iteration")["task"].nunique() == k + 1  # not a look at some tasks
                curves.append(old.groupby("iteration")["accuracy"].mean()[whole])
            c = pd.concat(curves, axis=1).mean(1)
            axes[0, k].plot(c.index - b, 100 * c.to_numpy(), lw=1.2, marker=".", ms=2, label=strategy,
                            color=colours[strategy])
    for k in range(len(bounds)):
        axes[0, k].set(title=f"after boundary {k + 1}", xlabel="updates into the new task")
    axes[0, 0].set_ylabel("mean accuracy on old tasks (percent)")
    _legend(axes[0, -1])
    note = f" ({', '.join(without)}: no task boundaries, left out)" if without else ""
    fig.suptitle(f"{scenario}: old tasks' accuracy right after each task switch (mean over seeds){note}")
    return _save(fig, out / io.path_segment(portable=True, text=f"{scenario}_gap_zoom.png"))


def _matrices(scenario, runs, out) -> list[Path]:
    n = len(runs)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = _figure(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    image = None
    for ax, (strategy, seeds) in zip(axes.flat, runs.items()):
        R = np.nanmean([metrics.accuracy_matrix(log) for log in seeds.values()], axis=0)
        image = ax.imshow(100 * R, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(R):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k",
                    in_layout=False)  # inside its cell: the layout need not measure 25 texts per axes
        ax.set(title=strategy, xlabel="evaluated task", ylabel="after training task")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy (percent)")
    fig.suptitle(f"{scenario}: accuracy matrix R (percent, mean over seeds)")
    return _save(fig, out / io.path_segment(portable=True, text=f"{scenario}_matrix.png"))


def _bars(scenario, runs, out) -> list[Path]:
    names = list(runs)
    vals = {m: [] for m in ("acc", "min_acc", "wc_acc")}
    for strategy in names:  # the three metrics drawn, not the whole summary (the gap's is the costly part)
        logs = [metrics.as_log(log) for log in runs[strategy].values()]
        for m in vals:
            vals[m].append([getattr(metrics, m)(log) for log in logs])
    # in the leaderboard's order: by ACC, a strategy with a diverged run last
    order = sorted(range(len(names)), key=lambda i: ("DIVERGED" in names[i], -np.nan_to_num(
        np.nanmean(np.array(vals["acc"][i], dtype=float)) if np.isfinite(vals["acc"][i]).any() else -1.0)))
    names = [names[i] for i in order]
    vals = {m: [v[i] for i in order] for m, v in vals.items()}
    x = np.arange(len(names))
    fig, ax = _figure(figsize=(max(7, 1.2 * len(names) + 2), 4.2))
    for k, (m, label) in enumerate((("acc", "ACC (final)"), ("min_acc", "min-ACC"), ("wc_acc", "WC-ACC"))):
        per_seed = [np.array(v, dtype=float) for v in vals[m]]
        mean = [100 * np.nanmean(v) if np.isfinite(v).any() else np.nan for v in per_seed]
        # the tables' ±: the 95% confidence interval of the mean over seeds (none with one seed)
        ci = [100 * np.nan_to_num(ci95(v[np.isfinite(v)])) for v in per_seed]
        ax.bar(x + (k - 1) * 0.27, mean, 0.27, yerr=ci, capsize=2, label=label, error_kw={"lw": 0.8})
    ax.set_xticks(x, names, rotation=20)
    n = max(len(runs[s]) for s in names)
    ax.set(ylabel="percent", ylim=(0, 100),
           title=f"{scenario}: final vs worst-case accuracy (mean over {n} seed(s), error bar: 95% CI)")
    _legend(ax)
    return _save(fig, out / io.path_segment(portable=True, text=f"{scenario}_bars.png"))


def _figure(*grid, figsize, **kw):
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **kw)


def _save(fig, path: Path) -> list[Path]:
    """Write the figure in each format asked for (``path`` with its suffix replaced), each to a
    temporary name, then renamed: a plot is complete or absent. The files written."""
    files = []
    for fmt in _OUTPUT["formats"]:
        target = path.with_suffix(f".{fmt}")
        tmp = target.with_name(f".{target.name}.tmp.{fmt}")
        fig.savefig(tmp, dpi=_OUTPUT["dpi"], format=fmt)
        tmp.replace(target)
        files.append(target)
    return files
