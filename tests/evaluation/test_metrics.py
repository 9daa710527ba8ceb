"""Every metric against values worked out by hand on a small log.

Two tasks; task 0 is learned (0.5, 0.9), drops to 0.4 when task 1 starts, and recovers to
0.895 (within 0.01 of its pre-switch 0.9) three updates into task 1.
"""

import math

import numpy as np
import pandas as pd
import pytest

from clbench.evaluation import metrics

ROWS = [  # eval_step, iteration, trained_task, {task: accuracy}
    (0, 0, -1, {0: 0.1, 1: 0.2}),
    (1, 1, 0, {0: 0.5}),
    (2, 2, 0, {0: 0.9, 1: 0.3}),
    (3, 3, 1, {0: 0.4, 1: 0.6}),
    (4, 4, 1, {0: 0.6, 1: 0.8}),
    (5, 5, 1, {0: 0.895, 1: 0.9}),
]


@pytest.fixture
def log():
    return pd.DataFrame([{"eval_step": s, "iteration": i, "trained_task": t, "task": k, "accuracy": a, "n": 100}
                         for s, i, t, accs in ROWS for k, a in accs.items()])


def test_accuracy_matrix_and_classic_metrics(log):
    np.testing.assert_allclose(metrics.accuracy_matrix(log), [[0.9, 0.3], [0.895, 0.9]])
    assert metrics.acc(log) == pytest.approx(0.8975)
    assert metrics.bwt(log) == pytest.approx(-0.005)
    assert metrics.fwt(log) == pytest.approx(0.1)
    assert metrics.forgetting(log) == pytest.approx(0.005)


def test_min_acc_and_wc_acc(log):
    assert metrics.min_acc(log) == pytest.approx(0.4)
    assert metrics.wc_acc(log) == pytest.approx(0.5 * 0.9 + 0.5 * 0.4)


def test_windowed_forgetting_and_plasticity(log):
    # task 0's curve 0.5 0.9 0.4 0.6 0.895: largest drop 0.5; task 1's 0.6 0.8 0.9: none
    assert metrics.windowed_forgetting(log, 10) == pytest.approx(0.25)
    assert metrics.windowed_forgetting(log, 2) == pytest.approx(0.25)
    # rises: task 0 0.4 -> 0.895 (w=10) or 0.5 -> 0.9 (w=2); task 1 0.6 -> 0.9 or 0.8 -> 0.9... 0.2
    assert metrics.windowed_plasticity(log, 10) == pytest.approx((0.495 + 0.3) / 2)
    assert metrics.windowed_plasticity(log, 2) == pytest.approx((0.4 + 0.2) / 2)


def test_window_limits_the_drop():
    log = pd.DataFrame([{"eval_step": i, "iteration": i, "trained_task": 0, "task": 0, "accuracy": a, "n": 1}
                        for i, a in enumerate([1.0, 0.9, 0.8, 0.7])])
    assert metrics.windowed_forgetting(log, 2) == pytest.approx(0.1)
    assert metrics.windowed_forgetting(log, 3) == pytest.approx(0.2)
    assert metrics.windowed_forgetting(log, 10) == pytest.approx(0.3)


def test_lca_and_aaa(log):
    assert metrics.lca(log, 1) == pytest.approx(0.55)
    assert metrics.lca(log, 2) == pytest.approx(0.7)
    assert metrics.aaa(log) == pytest.approx((0.5 + 0.9 + 0.5 + 0.7 + 0.8975) / 5)


def test_aaa_weights_each_full_evaluation_by_the_iterations_it_stands_for():
    # evaluations at 0 (before training), 2, 3 and 7 of one task; a look back at 5 of task 0 alone
    rows = [(0, 0, -1, {0: 0.1, 1: 0.1}), (1, 2, 0, {0: 0.6}), (2, 3, 0, {0: 0.7}), (3, 5, 1, {0: 0.2}),
            (4, 7, 1, {0: 0.5, 1: 0.9})]
    log = pd.DataFrame([{"eval_step": s, "iteration": i, "trained_task": t, "task": k, "accuracy": a, "n": 100}
                        for s, i, t, accs in rows for k, a in accs.items()])
    # 0.6 stands for iterations 1-2, 0.7 for 3, (0.5 + 0.9) / 2 for 4-7; the partial look is left out
    assert metrics.aaa(log) == pytest.approx((2 * 0.6 + 0.7 + 4 * 0.7) / 7)


def test_stability_gap(log):
    gap = metrics.stability_gap(log)
    assert len(gap) == 1
    row = gap.iloc[0]
    assert (row.task, row.transition) == (0, 1)
    assert row.pre == pytest.approx(0.9) and row.minimum == pytest.approx(0.4)
    assert row.depth == pytest.approx(0.5) and row.depth_norm == pytest.approx(0.5 / 0.9)
    assert row.recovery == pytest.approx(0.495)
    assert row.iters_to_recover == 3  # back within 0.01 of 0.9 at iteration 5, task 1 started after 2


def test_never_recovered_is_nan(log):
    log.loc[(log.eval_step == 5) & (log.task == 0), "accuracy"] = 0.85
    assert math.isnan(metrics.stability_gap(log).iloc[0].iters_to_recover)
    assert metrics.summarize(log)["gap_unrecovered"] == 1.0


def test_undefined_metrics_are_nan_with_one_task():
    log = pd.DataFrame([{"eval_step": s, "iteration": s, "trained_task": t, "task": 0, "accuracy": a, "n": 1}
                        for s, t, a in [(0, -1, 0.1), (1, 0, 0.7), (2, 0, 0.8)]])
    s = metrics.summarize(log)
    assert math.isnan(s["bwt"]) and math.isnan(s["min_acc"]) and math.isnan(s["forgetting"])
    assert s["acc"] == pytest.approx(0.8) and s["wc_acc"] == pytest.approx(0.8)
    assert metrics.stability_gap(log).empty


def test_summary_has_every_metric(log):
    s = metrics.summarize(log)
    for key in ["acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf100", "wp10", "wp100", "lca10",
                "aaa", "gap_depth", "gap_iters_to_recover"]:
        assert key in s
    assert s["gap_depth"] == pytest.approx(0.5)


def test_a_partly_trained_stream_gives_the_metrics_of_its_prefix(log):
    # a third task that was evaluated at the start and the task ends, but never trained
    extra = pd.DataFrame([{"eval_step": s, "iteration": i, "trained_task": t, "task": 2, "accuracy": 0.05, "n": 100}
                          for s, i, t, _ in ROWS if s in (0, 2, 5)])
    longer = pd.concat([log, extra])
    for name in ("acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc"):
        assert getattr(metrics, name)(longer) == pytest.approx(getattr(metrics, name)(log))


def _one_task_log(iterations, accuracies):
    rows = [{"eval_step": 0, "iteration": 0, "trained_task": -1, "task": 0, "accuracy": 0.1, "n": 1}]
    rows += [{"eval_step": s + 1, "iteration": i, "trained_task": 0, "task": 0, "accuracy": a, "n": 1}
             for s, (i, a) in enumerate(zip(iterations, accuracies))]
    return pd.DataFrame(rows)


def test_windows_are_iterations_so_a_sparse_schedule_keeps_their_meaning():
    # task 0 evaluated every 5 iterations: 0.1 at 0, then 1.0, 0.9, 0.5, 0.6, 0.6 at 5, 10, ..., 25
    log = _one_task_log([5, 10, 15, 20, 25], [1.0, 0.9, 0.5, 0.6, 0.6])
    # no two evaluations less than 5 iterations apart: unmeasurable, n/a, not a 0 that reads "no drop"
    assert math.isnan(metrics.windowed_forgetting(log, 5)) and math.isnan(metrics.windowed_plasticity(log, 5))
    assert metrics.windowed_forgetting(log, 6) == pytest.approx(0.4)  # 0.9 -> 0.5, 5 iterations apart
    assert metrics.windowed_forgetting(log, 11) == pytest.approx(0.5)  # 1.0 -> 0.5, 10 apart
    assert metrics.windowed_plasticity(log, 6) == pytest.approx(0.1)  # 0.5 -> 0.6 (the curve starts in its phase)
    assert metrics.lca(log, 10) == pytest.approx((1.0 + 0.9) / 2)  # evaluations at iterations 5 and 10
    assert metrics.lca(log, 4) != metrics.lca(log, 4)  # nothing evaluated in the first 4 iterations: NaN


def test_every_iteration_evaluation_gives_the_per_evaluation_definitions():
    """With an evaluation at every iteration, windows of w iterations are windows of w evaluations
    and the first b iterations the first b evaluations (De Lange et al.'s and Chaudhry et al.'s)."""
    rng = np.random.default_rng(0)
    acc = rng.random(60)
    log = _one_task_log(range(1, 61), acc)
    curve = acc  # a task's curve starts with its own phase
    for w in (2, 3, 10, 100):
        drops = [max(0.0, curve[max(0, n - w + 1):n].max() - curve[n]) for n in range(1, len(curve))]
        rises = [max(0.0, curve[n] - curve[max(0, n - w + 1):n].min()) for n in range(1, len(curve))]
        assert metrics.windowed_forgetting(log, w) == pytest.approx(max(drops))
        assert metrics.windowed_plasticity(log, w) == pytest.approx(max(rises))
    for b in (1, 10, 100):
        assert metrics.lca(log, b) == pytest.approx(acc[:b].mean())


def test_a_log_says_whether_every_task_was_evaluated_at_every_iteration(log):
    """Each task from its own phase on, at every iteration to the last: the reference a table's
    WF10 header means (a task not yet trained needs no evaluation before its phase)."""
    assert metrics.evaluated_every_iteration(log)
    one_skipped = log[~((log["iteration"] == 4) & (log["task"] == 0))]  # a look for task 1 only
    assert not metrics.evaluated_every_iteration(one_skipped)
    assert not metrics.evaluated_every_iteration(_one_task_log([5, 10, 15], [1.0, 0.9, 0.5]))
    assert metrics.evaluated_every_iteration(_one_task_log([1, 2, 3], [1.0, 0.9, 0.5]))


def test_a_log_missing_an_evaluation_the_matrix_metrics_need_says_so():
    """A loop of one's own that evaluates only the current task at its end: forgetting is NaN, and
    summarize says which evaluation is missing instead of returning NaN without a word."""
    import warnings

    from clbench.evaluation import metrics

    steps = [(0, -1, {0: 0.1, 1: 0.1}), (40, 0, {0: 0.9}), (80, 1, {1: 0.9})]  # task 0 not evaluated after task 1
    log = pd.DataFrame([{"eval_step": k, "iteration": it, "trained_task": tt, "task": task, "accuracy": acc, "n": 10}
                        for k, (it, tt, accs) in enumerate(steps) for task, acc in accs.items()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = metrics.summarize(log)
    messages = [str(w.message) for w in caught if issubclass(w.category, metrics.MissingEvaluation)]
    assert np.isnan(summary["forgetting"]) and len(messages) == 1 and "task 0 after task 1" in messages[0]
    whole = pd.concat([log, log.iloc[[-1]].assign(task=0, accuracy=0.5)], ignore_index=True)
    assert metrics.missing_evaluations(whole) == [] and metrics.summarize(whole)["forgetting"] == pytest.approx(0.4)


def test_a_clbench_run_gives_summarize_every_input(tmp_path):
    import warnings

    from clbench.evaluation import metrics
    from clbench.run.runner import run
    from clbench.run.settings import RunConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(RunConfig(scenario="split-digits", strategy="finetune", seed=0, iterations=5), tmp_path / "r")
    assert not [w for w in caught if issubclass(w.category, metrics.MissingEvaluation)]
