"""The stability gap apart from forgetting and from the evaluation's own noise, on hand-made curves
evaluated at every iteration (task 0 at 0.9 when task 1 starts at iteration 100)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clbench.evaluation import metrics
from clbench.evaluation.replay import replay
from clbench.evaluation.schedules import RefineSchedule, Schedule

LENGTH = 100


def log_of(second: np.ndarray):
    """Task 0 at 0.9 through its own segment, then ``second`` (its accuracy after updates 101-200);
    task 1 learnt to 0.8 in its own."""
    curves = np.full((2 * LENGTH + 1, 2), 0.1)
    curves[: LENGTH + 1, 0] = 0.9
    curves[LENGTH + 1:, 0] = second
    curves[LENGTH + 1:, 1] = 0.8
    segments = [(0, LENGTH, 0), (LENGTH, 2 * LENGTH, 1)]
    return replay(Schedule(1), np.round(curves, 4), segments).log, curves, segments


def jitter(amplitude: float) -> np.ndarray:
    """A fixed subset's accuracy with no real change: up and down by ``amplitude`` in turn."""
    return amplitude * np.where(np.arange(LENGTH) % 2, 1.0, -1.0)


def test_a_dip_that_comes_back_is_a_gap_and_one_that_stays_is_forgetting():
    t = np.arange(1, LENGTH + 1)
    back = np.where(t <= 10, 0.9 - 0.05 * t, np.minimum(0.9, 0.4 + 0.02 * (t - 10)))  # 0.4 at 110, 0.9 by 135
    gap = metrics.summarize(log_of(back)[0])
    assert gap["gap_depth"] == pytest.approx(0.5) and gap["gap_iters_to_recover"] == 35
    assert gap["gap_unrecovered"] == 0 and math.isnan(gap["drop_kept"])

    stays = np.where(t <= 10, 0.9 - 0.05 * t, 0.4)  # the same fall, never back: forgetting
    forget = metrics.summarize(log_of(stays)[0])
    assert math.isnan(forget["gap_depth"]) and math.isnan(forget["gap_iters_to_recover"])
    assert forget["gap_unrecovered"] == 1 and forget["drop_kept"] == pytest.approx(0.5)
    assert forget["dip_depth"] == pytest.approx(0.5)  # the old, mixed depth would read as the same "gap"

    flat = metrics.summarize(log_of(np.full(LENGTH, 0.9))[0])
    assert flat["gap_depth"] == 0 and math.isnan(flat["gap_unrecovered"])  # no dip: a measured 0


def test_the_noise_floor_is_the_gap_statistic_at_a_pseudo_switch():
    t = np.arange(1, LENGTH + 1)
    # a real gap (0.9 -> 0.4 -> back) with jitter of 0.02 on top; the pseudo-switch is at 150,
    # where task 0 is 0.9 + 0.02 (an even offset): its minimum after it is 0.88, so the floor is 0.04
    dip = np.where(t <= 10, 0.9 - 0.05 * t, np.minimum(0.9, 0.4 + 0.02 * (t - 10)))
    log, *_ = log_of(dip + jitter(0.02))
    real = metrics.summarize(log)
    assert real["gap_noise"] == pytest.approx(0.04) and real["gap_depth"] == pytest.approx(0.5)  # 0.9 - 0.40
    assert metrics.noise_verdict(real["gap_depth"], real["gap_noise"]) == "above noise"

    # the same jitter with no real change: the "gap" is the jitter's own depth (0.9 -> 0.88), within its floor
    noise = metrics.summarize(log_of(0.9 + jitter(0.02))[0])
    assert noise["gap_depth"] == pytest.approx(0.02) and noise["gap_noise"] == pytest.approx(0.04)
    assert metrics.noise_verdict(noise["gap_depth"], noise["gap_noise"]) == "within noise"
    assert metrics.noise_verdict(float("nan"), 0.04) == "n/a"


def test_the_refine_schedule_measures_the_noise_floor_as_every_iteration_does():
    rng = np.random.default_rng(0)
    t = np.arange(1, LENGTH + 1)
    dip = np.where(t <= 10, 0.9 - 0.05 * t, np.minimum(0.9, 0.4 + 0.02 * (t - 10)))
    log, curves, segments = log_of(dip + np.round(rng.normal(0, 0.01, LENGTH), 3))
    refined = replay(RefineSchedule(task_sizes=[1000, 1000], short_segment=0), np.round(curves, 4), segments)
    every, sparse = metrics.summarize(log), metrics.summarize(refined.log)
    assert 150 in set(refined.log[refined.log.task == 0].iteration)  # the pseudo-switch is evaluated
    assert abs(sparse["gap_noise"] - every["gap_noise"]) <= 0.005 and refined.share < 0.9


def test_wf10_has_a_noise_floor_across_each_phase_s_middle():
    t = np.arange(1, LENGTH + 1)
    # jitter alone: WF10 is the jitter's own largest drop (0.92 -> 0.88 on task 0, task 1 flat),
    # and the same drop across the middle of task 1's phase (150) is its floor: within noise
    still = metrics.summarize(log_of(0.9 + jitter(0.02))[0])
    assert still["wf10"] == pytest.approx(0.02) and still["wf10_noise"] == pytest.approx(0.02)
    assert metrics.noise_verdict(still["wf10"], still["wf10_noise"]) == "within noise"

    # a real fall across the switch (0.9 -> 0.45 within 9 updates) over the same jitter: above noise
    fall = np.where(t <= 10, 0.9 - 0.05 * t, np.minimum(0.9, 0.4 + 0.02 * (t - 10)))
    real = metrics.summarize(log_of(fall + jitter(0.02))[0])
    assert real["wf10"] > 0.2 and real["wf10_noise"] == pytest.approx(0.02)
    assert metrics.noise_verdict(real["wf10"], real["wf10_noise"]) == "above noise"


def test_wf10_s_noise_floor_is_unmeasurable_when_evaluated_every_10_iterations():
    _, curves, segments = log_of(0.9 + jitter(0.02))
    sparse = metrics.summarize(replay(Schedule(10), np.round(curves, 4), segments).log)
    assert math.isnan(sparse["wf10"]) and math.isnan(sparse["wf10_noise"])


def test_the_refine_schedule_measures_wf10_s_noise_floor_as_every_iteration_does():
    # task 1 jitters up and down while it is trained (task 0 flat): the coarse grid sees it early,
    # takes it for noise and sees only one side of it later, so only evaluating around the middle
    # (150) finds the 0.04 drop across it
    log, curves, segments = log_of(np.full(LENGTH, 0.9))
    curves[LENGTH + 1:, 1] = 0.8 + jitter(0.02)
    log = replay(Schedule(1), np.round(curves, 4), segments).log
    refined = replay(RefineSchedule(task_sizes=[1000, 1000], short_segment=0), np.round(curves, 4), segments)
    every, sparse = metrics.summarize(log), metrics.summarize(refined.log)
    assert every["wf10_noise"] == pytest.approx(0.02)  # task 1's 0.04 across the middle, task 0's 0
    assert sparse["wf10_noise"] == pytest.approx(every["wf10_noise"]) and refined.share < 0.9
