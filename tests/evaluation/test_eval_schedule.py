"""The adaptive evaluation schedule on hand-made accuracy sequences: a dip after a switch is
followed densely until it recovers, a collapse stops being followed once it is still, a late
dip inside a task is caught by the probe, and a calm task is evaluated sparsely."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clbench.evaluation.schedules import EVALUATE, PROBE, AdaptiveSchedule
from clbench.run.runner import RunConfig, run

BOUNDS = [(0, 100), (100, 200)]


def drive(accuracy, bounds=BOUNDS, **options) -> list[int]:
    """Run the schedule as the runner does; ``accuracy(n)`` gives [task 0, task 1] after update n."""
    s = AdaptiveSchedule(band=0.01, probe_drop=0.05, **options)
    evaluated = []
    s.observe_accuracy(0, accuracy(0), [0], 0)
    for start, stop in bounds:
        task = bounds.index((start, stop))
        s.begin_segment(start, stop)
        for n in range(start + 1, stop + 1):
            watched = list(range(task + 1))
            action = EVALUATE if n == stop else s.at(n)  # every segment end is evaluated
            if action == EVALUATE or (action == PROBE and s.observe_probe(n, accuracy(n)[:task + 1])):
                evaluated.append(n)
                s.observe_accuracy(n, accuracy(n), watched, task)
    return evaluated


def learned(n: int) -> float:
    """Task 0 learned in 8 updates, then flat."""
    return min(1.0, 0.2 + 0.1 * n)


def test_a_dip_after_a_switch_is_followed_until_it_recovers():
    def acc(n):
        t0 = learned(n) if n <= 100 else 1.0 - 0.05 * min(n - 100, 10) + 0.025 * max(0, n - 110)
        return [min(1.0, t0), min(1.0, 0.1 * max(0, n - 100))]

    ev = set(drive(acc))
    assert set(range(101, 131)) <= ev  # the dip (to 0.5 at 110) and the recovery (back at 130), every update
    assert len(ev & set(range(150, 200))) <= 8  # still afterwards: sparse again


def test_a_collapse_that_never_recovers_is_not_followed_to_the_end():
    def acc(n):
        return [learned(n) if n <= 100 else max(0.0, 1.0 - 0.2 * (n - 100)), min(1.0, 0.1 * max(0, n - 100))]

    ev = set(drive(acc))
    assert set(range(101, 111)) <= ev and len(ev & set(range(101, 200))) < 50


def test_a_late_dip_inside_a_task_is_caught_by_the_probe():
    dip = {n: 1.0 - 0.06 * (n - 160) if n <= 165 else 0.7 + 0.06 * (n - 165) for n in range(161, 171)}

    def acc(n):
        t0 = learned(n) if n <= 100 else dip.get(n, 1.0)
        return [t0, min(1.0, 0.1 * max(0, n - 100))]

    ev = drive(acc)
    assert 165 in ev  # the bottom of the dip is evaluated
    assert set(range(161, 166)) & set(ev) and len([n for n in ev if 130 <= n < 160]) < 12


def test_a_calm_stream_is_evaluated_sparsely():
    ev = drive(lambda n: [learned(n), 1.0 if n > 100 else 0.0])
    assert len(ev) < 70 and {100, 200} <= set(ev)  # task ends are always evaluated


def test_adaptive_runs_record_their_rule_and_match_every_iteration_on_er(tmp_path):
    common = dict(strategy="er", seed=0, iterations=40, eval_subset="all")
    dense = run(RunConfig(**common, eval_schedule="periodic")).summary
    adaptive = run(RunConfig(**common, eval_schedule="adaptive"), tmp_path / "run")
    assert adaptive.summary["n_evaluations"] < dense["n_evaluations"]
    for m in ("min_acc", "wc_acc", "gap_depth"):
        assert abs(adaptive.summary[m] - dense[m]) <= 0.005, m
    import json

    schedule = json.loads((tmp_path / "run/config.json").read_text())["evaluation"]["schedule"]
    assert schedule["kind"] == "adaptive" and schedule["sparse"] == 50 and np.isfinite(schedule["band"])


def test_the_oracle_floor_keeps_each_dips_minimum_recovery_and_wf_pair():
    """benchmarks/eval_schedule_floor.py: on a hand-made every-iteration log, the oracle keeps the
    start, the segment ends, the dip's minimum, its recovery iteration and the WF10 pair, and those
    alone reproduce the metrics."""
    import pandas as pd

    from benchmarks.eval_schedule_floor import METRICS, difference, oracle_iterations
    from clbench.evaluation import metrics

    # task 0 learned over iterations 1-20 (ends at 0.9); task 1 from 21 to 60: task 0 falls to 0.3
    # at iteration 23 (its WF10 pair: 0.9 at 20, 0.3 at 23), stays there at 24, climbs back and is
    # within 0.01 of 0.9 first at iteration 40 (0.3 + 0.6 * 16 / 15.5)
    def task0(n):
        if n <= 20:
            return 0.1 + 0.04 * n
        return max(0.3, 0.9 - 0.2 * (n - 20)) if n <= 24 else min(0.95, 0.3 + 0.6 * (n - 24) / 15.5)

    rows = []
    for n in range(61):
        trained = -1 if n == 0 else (0 if n <= 20 else 1)
        tasks = [0, 1] if n in (0, 20, 60) else list(range(max(trained, 0) + 1))
        for k in tasks:
            a = task0(n) if k == 0 else (0.2 if n <= 20 else min(0.9, 0.2 + 0.05 * (n - 20)))
            rows.append({"eval_step": n, "iteration": n, "trained_task": trained, "task": k, "accuracy": a, "n": 100})
    log = pd.DataFrame(rows)
    gap = metrics.stability_gap(log).iloc[0]
    assert gap["minimum"] == pytest.approx(0.3) and gap["iters_to_recover"] == 20
    keep = oracle_iterations(log)
    assert keep == {0, 20, 23, 40, 60}
    full, sub = metrics.summarize(log), metrics.summarize(log[log["iteration"].isin(keep)])
    assert all(difference(full[m], sub[m]) == 0 for m in METRICS)
    assert full["wf10"] > 0 and not math.isnan(full["gap_iters_to_recover"])
