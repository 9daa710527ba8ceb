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
