"""The refine schedule (coarse evaluation, looks back at snapshots) on hand-made curves, replayed as
clbench's loop drives it, and in a real run against every-iteration evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clbench.evaluation import metrics
from clbench.evaluation.replay import every_iteration_curves, replay
from clbench.evaluation.schedules import RefineSchedule, Schedule
from clbench.evaluation.snapshots import SnapshotRing
from clbench.run.runner import RunConfig, run

EXACT = ["min_acc", "wc_acc", "gap_depth", "wf10", "gap_iters_to_recover", "lca10", "acc", "bwt"]


def learning(length: int, top: float) -> np.ndarray:
    """A learning curve: from 0.1 towards ``top`` within some 20 iterations."""
    return 0.1 + (top - 0.1) * (1 - np.exp(-np.arange(length) / 5.0))


def two_tasks(second: np.ndarray, first_end: float = 0.9, length: int = 100) -> np.ndarray:
    """Task 0 learnt to ``first_end`` during its ``length`` iterations, then ``second`` (its accuracy
    during task 1, ``length`` values); task 1 learnt to 0.8 during its own."""
    n = 2 * length
    curves = np.full((n + 1, 2), np.nan)
    curves[: length + 1, 0] = learning(length + 1, first_end)
    curves[length, 0] = first_end
    curves[length + 1:, 0] = second
    curves[:, 1] = 0.1
    curves[length + 1:, 1] = learning(length, 0.8)
    return np.round(curves, 3)


def segments(length: int = 100):
    return [(0, length, 0), (length, 2 * length, 1)]


def exact(curves: np.ndarray, segs, schedule: RefineSchedule):
    every = replay(Schedule(1), curves, segs)
    refined = replay(schedule, curves, segs)
    return metrics.summarize(every.log), metrics.summarize(refined.log), refined


def test_a_minimum_between_coarse_points_is_found_at_its_exact_iteration():
    # task 0 dips to 0.40 at iteration 137 (between the coarse points 132 and 148) and is back at 0.9 by 170
    t = np.arange(1, 101)
    second = 0.9 - 0.1 * (t <= 20) * t / 20  # the switch's own dip, seen by the early grid
    second = np.where(t > 20, 0.88, second)
    second = second - 0.48 * np.exp(-((t - 37) ** 2) / 18.0)
    second[36] = 0.40
    curves = two_tasks(second)
    every, refined, r = exact(curves, segments(), RefineSchedule(task_sizes=[1000, 1000], short_segment=0))
    gap = metrics.stability_gap(r.log).iloc[0]
    assert gap["minimum"] == pytest.approx(0.40) and refined["min_acc"] == pytest.approx(0.40)
    assert 137 in set(r.log[(r.log.task == 0)].iteration)
    for m in EXACT:
        assert refined[m] == pytest.approx(every[m], nan_ok=True), m
    # far from every iteration, even on so short a stream (0.14 of it the 19 iterations around each
    # segment's middle that the noise floors need)
    assert r.share < 0.7


def test_the_recovery_crossing_is_found_at_its_exact_iteration():
    t = np.arange(1, 101)
    second = np.where(t <= 10, 0.9 - 0.05 * t, 0.4 + (t - 10) * 0.01)  # down to 0.4, back by 0.01 a step
    curves = two_tasks(np.minimum(second, 0.9))
    every, refined, r = exact(curves, segments(), RefineSchedule(task_sizes=[1000, 1000], short_segment=0))
    assert every["gap_iters_to_recover"] == 59  # back within 0.01 of 0.9 at 0.89: iteration 59 of task 1
    assert refined["gap_iters_to_recover"] == 59 and refined["gap_depth"] == pytest.approx(every["gap_depth"])


def test_a_lower_low_after_a_return_is_found_inside_a_steady_oscillation():
    """A real curve: task 4 of EWC on permuted-fmnist (seed 0, every iteration) during task 8. It
    falls to 0.483 at update 796, comes back, and at update 916 dips to 0.476 within 8 updates
    (0.577 -> 0.476 -> 0.569) while its neighbours move at a third of that speed. Only the lowest
    point counts, and iterations-to-recover counts from it: 921, not 821."""
    second = np.loadtxt(Path(__file__).parent / "curves" / "ewc_permuted_fmnist_task4_after_switch7.txt")
    curves = two_tasks(second, first_end=0.586, length=1000)
    every, refined, r = exact(curves, segments(1000), RefineSchedule(task_sizes=[1000, 1000]))
    assert every["min_acc"] == pytest.approx(0.476) and every["gap_iters_to_recover"] == 921
    assert refined["min_acc"] == pytest.approx(0.476) and refined["gap_iters_to_recover"] == 921
    assert r.share < 0.4
    # the slopes just before the dip alone miss it
    blind = exact(curves, segments(1000), RefineSchedule(task_sizes=[1000, 1000], back_quantile=0.0))[1]
    assert blind["gap_iters_to_recover"] == 821


def test_a_drop_across_the_switch_is_measured_from_the_segment_s_last_window():
    # task 0 peaks at iteration 93, before the segment's last coarse interval (96, 100), and falls to
    # 0.7 when task 1 starts: WF10's drop is 0.95 -> 0.7, from a point only the ring still holds
    curves = two_tasks(np.full(100, 0.7))
    curves[93, 0] = 0.95
    every, refined, r = exact(curves, segments(), RefineSchedule(task_sizes=[1000, 1000], short_segment=0))
    assert every["wf10"] == pytest.approx((0.25 + 0.0) / 2)
    assert 93 in set(r.log[r.log.task == 0].iteration)
    assert refined["wf10"] == pytest.approx(every["wf10"])


def test_short_segments_are_evaluated_at_every_iteration():
    """Tasks of at most ``SHORT_SEGMENT`` updates hold a needed point at nearly every iteration, and a
    look costs more than its share of a full evaluation: the default evaluates them all."""
    t = np.arange(1, 101)
    curves = two_tasks(np.where(t <= 10, 0.9 - 0.05 * t, 0.5 + 0.004 * t))
    every = replay(Schedule(1), curves, segments())
    r = replay(RefineSchedule(task_sizes=[1000, 1000]), curves, segments())
    assert r.share == pytest.approx(every.share) and r.log.equals(every.log)
    assert RefineSchedule.SHORT_SEGMENT == 100 and replay(RefineSchedule(task_sizes=[1000, 1000], short_segment=0),
                                                         curves, segments()).share < 0.7


def ar_noise(rng, n: int, sd: float = 0.01, phi: float = 0.75) -> np.ndarray:
    """A fixed subset's accuracy with no real change: samples near the boundary flip and stay
    flipped for a while (lag-one correlation 0.6-0.8 on real every-iteration curves)."""
    e = np.zeros(n)
    for k in range(1, n):
        e[k] = phi * e[k - 1] + rng.normal(0, sd * np.sqrt(1 - phi ** 2))
    return e


def test_noise_alone_does_not_keep_the_schedule_dense():
    rng = np.random.default_rng(0)
    length = 400
    curves = two_tasks(0.85 + ar_noise(rng, length), first_end=0.85, length=length)
    curves[20:length + 1, 0] = np.round(0.85 + ar_noise(rng, length - 19), 3)
    r = replay(RefineSchedule(task_sizes=[1000, 1000]), curves, segments(length))
    assert r.share < 0.42, r.share  # 0.045 of it the 19 iterations around each segment's middle
    every = replay(Schedule(1), curves, segments(length))
    dense, refined = metrics.summarize(every.log), metrics.summarize(r.log)
    assert abs(refined["min_acc"] - dense["min_acc"]) <= 0.005  # the noise's lowest point, near enough


def test_a_task_at_zero_costs_no_looks_for_its_minimum():
    # finetuning in class-IL: task 0 at exactly 0 for all of task 1
    curves = two_tasks(np.zeros(100))
    r = replay(RefineSchedule(task_sizes=[1000, 1000], short_segment=0), curves, segments())
    looked = r.log[(r.log.task == 0) & (r.log.iteration > 100)].iteration
    # the drop across the switch (the first 16-18 updates), the coarse grid, the 19 iterations
    # around the pseudo-switch in the middle and the last window before the end, nothing else
    assert len(looked) <= 18 + 100 // 16 + 19 + 10


def test_the_scale_benchmark_replays_the_default_schedule_over_a_kept_every_iteration_run(tmp_path):
    """``benchmarks/scale.py --replay`` reads an every-iteration run's curves.csv and gives the default
    schedule's kept share and metrics without a second run."""
    from benchmarks.scale import replayed

    t = np.arange(1, 401)
    curves = two_tasks(np.where(t <= 10, 0.9 - 0.04 * t, np.minimum(0.9, 0.5 + 0.01 * (t - 10))), length=400)
    folder = tmp_path / "perm" / "every" / "er" / "seed0"
    folder.mkdir(parents=True)
    every = replay(Schedule(1), curves, segments(400))
    every.log.to_csv(folder / "curves.csv", index=False)
    r = replayed("perm", "er", 0, str(tmp_path))
    dense = metrics.summarize(every.log)
    assert 0 < r["share"] < 0.5 and r["evaluations"] < every.evaluations
    assert r["min_acc"] == pytest.approx(dense["min_acc"]) == pytest.approx(0.5)
    assert r["gap_iters_to_recover"] == dense["gap_iters_to_recover"] == 49


def test_replay_reads_back_the_log_it_was_given():
    curves = two_tasks(np.linspace(0.9, 0.5, 100))
    every = replay(Schedule(1), curves, segments())
    again, segs = every_iteration_curves(every.log)
    evaluated = ~np.isnan(again)  # a task not seen yet is evaluated at the segment ends only
    assert segs == segments() and np.allclose(again[evaluated], curves[evaluated])
    assert evaluated[:, 0].all() and evaluated[100:, 1].all() and not evaluated[1:100, 1].any()


def test_a_snapshot_looks_back_exactly_and_restores_the_present():
    torch.manual_seed(0)

    class Holder:
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))

    h = Holder()
    ring = SnapshotRing(h, depth=3)
    states = []
    for n in range(1, 6):
        with torch.no_grad():
            for p in h.model.parameters():
                p.add_(torch.randn_like(p))
            h.model[1].running_mean.add_(1.0)
        ring.keep(n)
        states.append({k: v.clone() for k, v in h.model.state_dict().items()})
    with ring.look(3):
        assert all(torch.equal(v, states[2][k]) for k, v in h.model.state_dict().items() if v.is_floating_point())
    assert all(torch.equal(v, states[4][k]) for k, v in h.model.state_dict().items())
    with pytest.raises(KeyError, match="no longer held"):
        with ring.look(1):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["er", "gem"])
def test_a_refined_run_gives_the_every_iteration_metrics(tmp_path, strategy):
    """The same training (identical R matrix) and, from the looks back at the snapshots, the same
    minima, recovery and windowed forgetting as evaluation at every iteration, with fewer evaluations."""
    common = dict(scenario="split-fmnist", strategy=strategy, seed=0, epochs=3)
    every = run(RunConfig(**common, eval_schedule="periodic", eval_every=1), tmp_path / "every")
    refined = run(RunConfig(**common), tmp_path / "refine")
    a, b = every.summary, refined.summary
    # GEM's old tasks move at every step at 3 epochs a task (130 updates): 517 of 646 evaluations
    # (seconds are measured in benchmarks/scale.py, not here)
    assert b["n_evaluations"] < 0.85 * a["n_evaluations"]
    for m in ["acc", "bwt", "min_acc", "wc_acc", "gap_depth", "lca10"]:
        assert b[m] == pytest.approx(a[m], abs=1e-9), m
    assert abs(b["wf10"] - a["wf10"]) <= 0.005
    assert abs(b["gap_iters_to_recover"] - a["gap_iters_to_recover"]) <= 2 or np.isnan(a["gap_iters_to_recover"])


def test_small_evaluation_subsets_are_evaluated_at_every_iteration(tmp_path):
    """split-digits holds 360 evaluation samples in all: a look back would cost what a whole
    evaluation costs, so the default schedule evaluates every iteration there (the default
    benchmark's numbers are every-iteration evaluation's)."""
    common = dict(scenario="split-digits", strategy="er", seed=0, epochs=2)
    every = run(RunConfig(**common, eval_schedule="periodic"), tmp_path / "every")
    refined = run(RunConfig(**common), tmp_path / "refine")
    assert refined.log.equals(every.log)
    schedule = json.loads((tmp_path / "refine" / "config.json").read_text())["evaluation"]["schedule"]
    assert schedule["kind"] == "refine" and "every iteration" in schedule["evaluated"]


def test_a_network_too_large_for_the_ring_gets_a_shorter_period(monkeypatch):
    from clbench.evaluation import snapshots
    from clbench.evaluation.driver import Evaluations

    class Holder:
        model = torch.nn.Linear(100, 10)  # 4,040 bytes of parameters

    monkeypatch.setattr(snapshots, "RING_BYTES", 4 * 4040)
    schedule = RefineSchedule()
    driver = Evaluations(None, schedule, Holder())
    assert driver.ring.depth == 4 and schedule.period == 4 and schedule.depth == 4


def test_a_look_at_some_tasks_counts_what_a_full_evaluation_counts_and_logs_in_iteration_order():
    from clbench import scenarios
    from clbench.evaluation.evaluator import Evaluator
    from clbench.strategies import build_model
    from clbench.strategies.base import Finetune

    sc = scenarios.build("split-digits")
    torch.manual_seed(0)
    strategy = Finetune(build_model("mlp", sc.input_shape, sc.n_classes, hidden=[32]), setting=sc.setting)
    ev = Evaluator(sc, subset=50)
    full = ev.evaluate(strategy, 5, 10, 1)
    look = ev.evaluate(strategy, 5, 7, 1, tasks=[3, 0])  # made after 10, for iteration 7
    assert look.counts.tolist() == [50, 50]
    assert look.correct.tolist() == [full.correct[3].item(), full.correct[0].item()]
    ev.evaluate(strategy, 5, 7, 1, tasks=[1])
    rows = ev.log_rows()
    assert [(r["eval_step"], r["iteration"], r["task"]) for r in rows] == [
        (0, 7, 3), (0, 7, 0), (0, 7, 1), (1, 10, 0), (1, 10, 1), (1, 10, 2), (1, 10, 3), (1, 10, 4)]
    assert ev.n_steps() == 2


def test_dense_after_switch_is_refused_under_the_refine_schedule(tmp_path):
    from tests.helpers import clbench

    r = clbench("run", "--strategy", "finetune", "--seeds", "0", "--iterations", "3", "--dense-after-switch", "5",
                "--quiet", "--no-plots", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--dense-after-switch belongs to --eval-schedule periodic" in r.stderr
    assert "Traceback" not in r.stderr
