"""Figures people put in a paper: one colour per strategy in every figure, accuracies in percent."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clbench.evaluation.replay import replay
from clbench.evaluation.schedules import Schedule
from clbench.results import plots


def _log(level: float) -> pd.DataFrame:
    """Two tasks of 20 updates; task 0 dips after the switch and comes back."""
    curves = np.full((41, 2), 0.1)
    curves[:21, 0] = 0.9
    curves[21:, 0] = np.where(np.arange(20) < 5, 0.5, 0.9)
    curves[21:, 1] = level
    return replay(Schedule(1), curves, [(0, 20, 0), (20, 40, 1)]).log


def test_a_strategy_keeps_its_colour_in_every_figure_and_accuracies_are_percent(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault(path.name, fig) and path)
    runs = {"a": {"seed0": _log(0.8)}, "offline": {"seed0": _log(0.7)}, "c": {"seed0": _log(0.6)}}
    plots._mean_accuracy("s", runs, tmp_path)
    plots._gap_zoom("s", runs, tmp_path, free={"offline"})  # leaves "offline" out: "c" must not take its colour

    def colours(fig) -> dict[str, tuple]:
        return {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()
                if not line.get_label().startswith("_")}

    mean, zoom = colours(drawn["s_mean_accuracy.png"]), colours(drawn["s_gap_zoom.png"])
    assert set(zoom) == {"a", "c"} and all(zoom[k] == mean[k] for k in zoom)
    assert len(set(map(tuple, mean.values()))) == 3  # three strategies, three colours
    top = max(line.get_ydata().max() for line in drawn["s_mean_accuracy.png"].axes[0].get_lines()
              if not line.get_label().startswith("_"))
    assert 80 < top <= 100  # percent, as the tables


def test_a_task_s_line_is_broken_where_it_was_not_evaluated_while_others_were(tmp_path, monkeypatch):
    """Offline joint's later tasks are evaluated at the start and then from their phase on: nothing
    is drawn between, while a task evaluated at every step is one unbroken line."""
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault(path.name, fig) and path)
    log = _log(0.8)
    late = (log["task"] == 1) & log["iteration"].between(1, 19)  # task 1 not evaluated inside task 0's phase
    plots._per_task("s", "joint-offline", {"seed0": log[~late]}, tmp_path, free=True)
    lines = {line.get_label(): line for line in drawn["s_tasks_joint-offline.png"].axes[0].get_lines()}
    x, y = lines["task 1"].get_xdata(), lines["task 1"].get_ydata()
    between = (x > 0) & (x < 20)
    assert between.any() and np.isnan(y[between]).all()  # a break, not a straight line from 0 to 20
    assert not np.isnan(lines["task 0"].get_ydata()).any()


def test_plots_are_written_in_each_format_asked_for(tmp_path):
    from clbench.common.errors import InputError

    run = tmp_path / "exp" / "runs" / "s" / "a" / "seed0"
    run.mkdir(parents=True)
    _log(0.8).to_csv(run / "curves.csv", index=False)
    (run / "summary.json").write_text('{"scenario": "s", "strategy": "mine:A", "seed": 0, "label": "a-by-name"}')
    for name in ("config.json",):
        (run / name).write_text("{}")
    for name in ("matrix.csv", "train.csv"):
        (run / name).write_text("x\n")
    files = plots.plot_all([tmp_path / "exp"], tmp_path / "plots", formats=("png", "pdf", "svg"), dpi=60)
    names = {f.name for f in files}
    assert {"s_matrix.png", "s_matrix.pdf", "s_matrix.svg", "s_tasks_a-by-name.svg"} <= names
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert (tmp_path / "plots" / "s_matrix.pdf").read_bytes().startswith(b"%PDF")
    try:
        plots.plot_formats("png,gif")
    except InputError as e:
        assert "gif" in str(e)
    else:
        raise AssertionError("an unknown plot format must be refused")
