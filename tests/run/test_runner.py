import filecmp
import json

import pytest
import torch

from clbench import scenarios
from clbench.common.io import RUN_FILES
from clbench.evaluation.evaluator import Evaluator
from clbench.evaluation.schedules import EVALUATE, Schedule
from clbench.run.runner import RunConfig, run
from clbench.strategies import Finetune, build_model


def evaluated(schedule: Schedule, bounds: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The iterations a loop evaluates with ``schedule`` (and those where it evaluates every task):
    the protocol's fixed points (0 and every segment end) and what the schedule asks for."""
    every_task, points = [0], [0]
    for start, stop in bounds:
        schedule.begin_segment(start, stop)
        points += [n for n in range(start + 1, stop) if schedule.at(n) == EVALUATE] + [stop]
        every_task.append(stop)
    return points, every_task


def test_schedule_points():
    due, full = evaluated(Schedule(every=4, dense_after_switch=2), [(0, 10), (10, 20)])
    assert due == [0, 1, 2, 4, 8, 10, 11, 12, 16, 20]
    assert full == [0, 10, 20]
    assert evaluated(Schedule(None), [(0, 10), (10, 20)])[0] == [0, 10, 20]


def test_evaluator_accuracy_matches_brute_force_and_restores_mode():
    sc = scenarios.build("split-digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", sc.input_shape, sc.n_classes, hidden=[32])
    strat = Finetune(model, setting=sc.setting)
    ev = Evaluator(sc, subset=50, seed=0)
    model.train()
    e = ev.evaluate(strat, 3, iteration=0, trained_task=-1)
    assert model.training  # restored
    model.eval()
    got = (e.correct.float() / e.counts.float()).tolist()
    assert e.counts.tolist() == [50, 50, 50]
    for t in range(3):
        x = ev.x[ev.offsets[t]:ev.offsets[t + 1]]
        y = ev.y[ev.offsets[t]:ev.offsets[t + 1]]
        assert got[t] == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    model.eval()
    ev.evaluate(strat, 5, 1, 0)
    assert not model.training


def test_fixed_subsets_are_seeded_and_resampling_redraws():
    sc = scenarios.build("split-digits", seed=0)
    a, b = Evaluator(sc, subset=20, seed=1), Evaluator(sc, subset=20, seed=1)
    assert torch.equal(a.x, b.x)
    r = Evaluator(sc, subset=20, resample=True, seed=1)
    assert torch.equal(r._indices(2), r._indices(2)) is False


def test_run_writes_files_and_shows_the_finetune_picture(tmp_path):
    res = run(RunConfig(scenario="split-digits", strategy="finetune", seed=0, eval_schedule="periodic"), tmp_path / "r")
    for f in RUN_FILES:
        assert (tmp_path / "r" / f).stat().st_size > 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    R = res.log.pivot_table(index="eval_step", columns="task", values="accuracy")
    assert s["acc"] < 0.3 and s["bwt"] < -0.8
    # the last task is learned, every earlier one forgotten
    assert R.iloc[-1, 4] > 0.6 and R.iloc[-1, :4].max() < 0.1
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["evaluation"]["subsets"] == "fixed, seeded" and cfg["scenario"]["class_order"] == list(range(10))
    assert res.log["iteration"].nunique() == s["iterations"] + 1  # every iteration and the start


def test_same_seed_gives_byte_identical_curves(tmp_path):
    cfg = RunConfig(scenario="split-digits", strategy="er", seed=3, eval_every=2, epochs=2)
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    assert filecmp.cmp(tmp_path / "a" / "curves.csv", tmp_path / "b" / "curves.csv", shallow=False)
    other = run(RunConfig(scenario="split-digits", strategy="er", seed=4, eval_every=2, epochs=2), tmp_path / "c")
    assert (tmp_path / "c" / "curves.csv").read_text() != (tmp_path / "a" / "curves.csv").read_text()
    assert other.summary["acc"] > 0


def test_bf16_evaluation_agrees_with_fp32_up_to_near_ties():
    common = dict(scenario="split-digits", strategy="er", seed=0, eval_every=10, eval_schedule="periodic")
    a = run(RunConfig(**common))
    b = run(RunConfig(**common, eval_precision="bf16"))
    diff = (a.log["accuracy"] - b.log["accuracy"]).abs()
    assert diff.max() <= 0.03 and diff.mean() < 0.005
    with pytest.raises(ValueError, match="eval precision"):
        Evaluator(scenarios.build("split-digits"), precision="fp8")
