"""Orderings checked on the stream itself, no training."""

import math

import pytest
import torch

from clbench import scenarios
from clbench.run.runner import RunConfig, run
from clbench.scenarios import InputError
from clbench.scenarios.orderings import make_stream, rehearsal_iterations


@pytest.fixture(scope="module")
def sc():
    return scenarios.build("split-digits", seed=0)


def _task_counts(stream, i, n_tasks=5):
    return torch.bincount(stream.pool_task[stream.batches[i]], minlength=n_tasks).tolist()


def test_fuzzy_mixing_proportions_around_a_boundary(sc):
    s = make_stream(sc, "fuzzy", batch_size=32, seed=0, epochs=5, width=20)
    b = s.segments[0].stop  # 45: the nominal boundary between tasks 0 and 1
    for i in range(b - 10, b + 10):
        p = (i - (b - 10) + 0.5) / 20
        assert _task_counts(s, i)[:2] == [32 - round(32 * p), round(32 * p)]
    assert _task_counts(s, b - 11) == [32, 0, 0, 0, 0] and _task_counts(s, b + 10) == [0, 32, 0, 0, 0]
    # the nominal task switches where the majority does
    assert s.task_of_iteration[b - 1] == 0 and s.task_of_iteration[b] == 1
    assert _task_counts(s, b - 1)[0] > 16 and _task_counts(s, b)[1] > 16


def test_fuzzy_width_is_clamped_to_the_tasks(sc):
    s = make_stream(sc, "fuzzy", batch_size=32, seed=0, epochs=1, width=500)
    assert s.meta["half_widths"] == [4, 4, 4, 4]  # 9 or 10 iterations per task


def test_blurry_proportions_per_task(sc):
    s = make_stream(sc, "blurry", batch_size=32, seed=0, epochs=1, m=10)
    for t, task in enumerate(s.tasks):
        own = torch.isin(task.train.y, torch.tensor(sc.tasks[t].classes))
        foreign = int((~own).sum())
        assert foreign == round(0.10 * len(sc.tasks[t].train))
        assert len(task.train) == len(sc.tasks[t].train)
    # nothing lost or duplicated: the same samples overall
    before = torch.cat([t.train.x.flatten(1) for t in sc.tasks]).sum(1).sort().values
    after = torch.cat([t.train.x.flatten(1) for t in s.tasks]).sum(1).sort().values
    assert torch.equal(before, after)


@pytest.mark.parametrize("decay", ["power", "exponential"])
def test_recurring_rehearsal_counts_follow_the_formula(sc, decay):
    s = make_stream(sc, "recurring", batch_size=32, seed=0, epochs=5, decay=decay, budget=0.5, exponent=0.5,
                    rate=1.0)
    for r in s.meta["rehearsals"]:
        per_task = 5 * math.ceil(len(sc.tasks[r["task"]].train) / 32)  # 5 epochs of the rehearsed task
        age = r["after_task"] - r["task"]
        w = age ** -0.5 if decay == "power" else math.exp(-(age - 1))
        assert r["iterations"] == round(0.5 * per_task * w)
    assert [r["task"] for r in s.meta["rehearsals"] if r["after_task"] == 3] == [0, 1, 2]
    # each segment's batches come from its task only
    for seg in s.segments:
        assert set(s.pool_task[torch.cat(s.batches[seg.start:seg.stop])].tolist()) == {seg.task}
    assert rehearsal_iterations(4, 0, 100, 0.5, "power", 0.5, 1.0) == 25


@pytest.mark.parametrize("ordering,params", [("fuzzy", {"width": 30}), ("recurring", {})])
def test_every_sample_used_as_often_as_the_plan_says(sc, ordering, params):
    s = make_stream(sc, ordering, batch_size=32, seed=0, epochs=3, **params)
    offsets = [0, *torch.tensor([len(t.train) for t in sc.tasks]).cumsum(0).tolist()]
    used = torch.bincount(torch.cat(s.batches), minlength=offsets[-1])
    for t, drawn in enumerate(s.meta["draws_per_task"]):
        n = offsets[t + 1] - offsets[t]
        counts = used[offsets[t]:offsets[t + 1]]
        assert int(counts.sum()) == drawn
        assert set(counts.tolist()) <= {drawn // n, -(-drawn // n)}


def test_sequential_uses_every_sample_once_per_epoch(sc):
    s = make_stream(sc, "sequential", batch_size=32, seed=0, epochs=3)
    assert set(torch.bincount(torch.cat(s.batches)).tolist()) == {3}


@pytest.mark.parametrize("ordering,params", [("sequential", {}), ("fuzzy", {"width": 20}), ("blurry", {"m": 20}),
                                             ("recurring", {"decay": "exponential"})])
def test_identical_streams_for_identical_seeds(sc, ordering, params):
    a = make_stream(sc, ordering, batch_size=32, seed=5, epochs=2, **params)
    b = make_stream(sc, ordering, batch_size=32, seed=5, epochs=2, **params)
    c = make_stream(sc, ordering, batch_size=32, seed=6, epochs=2, **params)
    assert all(torch.equal(x, y) for x, y in zip(a.batches, b.batches)) and len(a) == len(b)
    assert not all(torch.equal(x, y) for x, y in zip(a.batches, c.batches))


def test_bad_orderings_are_clear_errors(sc):
    with pytest.raises(InputError, match="known orderings"):
        make_stream(sc, "shuffled", batch_size=32, seed=0)
    with pytest.raises(InputError, match="has no parameter widht"):
        make_stream(sc, "fuzzy", batch_size=32, seed=0, widht=3)
    with pytest.raises(InputError, match="task-il"):
        make_stream(scenarios.build("split-digits", setting="task-il"), "blurry", batch_size=32, seed=0)
    with pytest.raises(InputError, match="decay"):
        make_stream(sc, "recurring", batch_size=32, seed=0, decay="linear")


def test_boundary_aware_strategies_get_nominal_boundaries_in_fuzzy_streams():
    res = run(RunConfig(scenario="split-digits", strategy="ewc", seed=0, eval_every=10, ordering="fuzzy",
                        eval_schedule="periodic",
                        iterations=40, ordering_params={"width": 10}))
    assert res.summary["n_tasks"] == 5 and 0 < res.summary["acc"] <= 1
    steps = res.log.groupby("eval_step").agg(n=("task", "size"), it=("iteration", "first"), t=("trained_task", "first"))
    # every task is evaluated at the start and at each nominal task end (the segment boundaries)
    assert steps[(steps.n == 5) & (steps.t < 4)].it.tolist() == [0, 40, 80, 120, 160]


def test_recurring_metrics_use_phases():
    res = run(RunConfig(scenario="split-digits", strategy="finetune", seed=0, eval_every=None, ordering="recurring",
                        eval_schedule="periodic"))
    # rehearsal segments end with a full evaluation too: 1 + 5 tasks + 10 rehearsal segments
    assert res.summary["n_evaluations"] == 16
    assert res.summary["acc"] > 0
