"""Stream orderings: the order and mixture in which a learner meets the tasks.

An ordering's own parameters are declared in its signature and checked by ``make_stream``, the
way in for every caller.

Every ordering is drawn from the seed and shared by every strategy of an experiment.
Boundaries stay explicit (``Stream.segments``): in fuzzy and blurry streams the nominal
boundary is where the majority of the batch switches task, so boundary-aware strategies
(EWC, GEM) still get ``before_task``/``after_task`` and the metrics their phases.

- ``sequential``: tasks one after another, sharp boundaries (the default).
- ``fuzzy``: around each boundary the share of the new task in a batch ramps linearly from 0 to
  1 over ``width`` iterations (van de Ven et al.'s task-free stream).
- ``blurry``: each task's training data holds ``m`` percent samples of other tasks' classes
  (Blurry-M, Bang et al., "Rainbow memory", CVPR 2021).
- ``recurring``: after each new task, earlier tasks come back for a number of iterations that
  decays with the time since they were last learned, as a power law (default) or exponentially
  (Gandhi et al. 2024, "Catastrophic interference is mitigated in naturalistic power-law
  learning environments").
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Annotated, Literal

import torch
from pydantic import Field

from clbench.common.errors import InputError
from clbench.common.validation import NonNegative, NonNegativeInt, validate_keywords
from clbench.scenarios.data import Scenario, TensorData, seeded_generator
from clbench.scenarios.stream import (
    Cursor,
    Segment,
    Stream,
    check_stream_size,
    iterations_per_task,
    make_pool,
    sequential,
)

#: a share in percent, [0, 100)
Percent = Annotated[float, Field(ge=0, lt=100, allow_inf_nan=False)]


def _plan_sizes(scenario: Scenario, batch_size: int, epochs, iterations, views: int) -> list[int]:
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if batch_size % views:
        raise InputError(f"batch size {batch_size} is not divisible by views={views}")
    sizes = [iterations_per_task(len(t.train), batch_size, epochs, iterations) for t in scenario.tasks]
    check_stream_size(scenario, sum(sizes), batch_size)
    return sizes


def _finish(pool, pool_task, batches, tasks, segments, meta) -> Stream:
    return Stream(pool, pool_task, batches, torch.tensor(tasks), segments, meta)


def fuzzy(scenario: Scenario, *, batch_size: int, seed: int, epochs: float | None = 1, iterations: int | None = None,
          views: int = 1, width: NonNegativeInt = 500) -> Stream:
    """Linear ramps of ``width`` iterations centred on each boundary (clamped to the shorter
    neighbouring task). In iteration ``i`` of a ramp starting at ``B - h`` the new task supplies
    ``round(p * batch)`` samples (rounded to whole view groups), ``p = (i - B + h + 0.5) / (2h)``."""
    sizes = _plan_sizes(scenario, batch_size, epochs, iterations, views)
    pool, pool_task, offsets = make_pool(scenario)
    cursors = [Cursor(len(t.train), seeded_generator(seed, "task", t.id), views) for t in scenario.tasks]
    bounds = torch.tensor(sizes).cumsum(0).tolist()
    halves = [min(width // 2, sizes[t] // 2, sizes[t + 1] // 2) for t in range(len(sizes) - 1)]
    batches, tasks, segments = [], [], []
    task = 0
    for i in range(bounds[-1]):
        while i >= bounds[task]:
            task += 1
        ramp = new_task_share(i, bounds, halves)
        old, new, share = (task, task, 0.0) if ramp is None else ramp
        n_new = views * round(share * batch_size / views)
        parts = []
        if batch_size - n_new:
            parts.append(cursors[old].take(batch_size - n_new) + offsets[old])
        if n_new:
            parts.append(cursors[new].take(n_new) + offsets[new])
        batches.append(torch.cat(parts))
        tasks.append(task)
    start = 0
    for t, stop in enumerate(bounds):
        segments.append(Segment(t, start, stop))
        start = stop
    return _finish(pool, pool_task, batches, tasks, segments,
                   {"ordering": "fuzzy", "width": width, "half_widths": halves, "batch_size": batch_size,
                    "epochs": epochs, "iterations": iterations, "views": views,
                    "draws_per_task": [c.drawn for c in cursors]})


def new_task_share(i: int, bounds: list[int], halves: list[int]) -> tuple[int, int, float] | None:
    """``(old task, new task, share of the new task)`` if iteration ``i`` lies in a ramp, else None."""
    for t, h in enumerate(halves):
        b = bounds[t]
        if h > 0 and b - h <= i < b + h:
            return t, t + 1, (i - (b - h) + 0.5) / (2 * h)
    return None


def blurry(scenario: Scenario, *, batch_size: int, seed: int, epochs: float | None = 1, iterations: int | None = None,
           views: int = 1, m: Percent = 10.0) -> Stream:
    """Blurry-M: every task gives away ``m`` percent of its training samples, chosen at random, and
    receives as many from the other tasks, so each task's data holds m % samples of other tasks'
    classes. Test sets are unchanged; the task id a strategy sees is the task whose data the
    sample now belongs to."""
    if scenario.setting == "task-il":
        raise InputError("blurry streams mix classes across tasks, which task-il masking forbids; "
                         "use class-il or domain-il")
    if len(scenario.tasks) < 2:
        raise InputError("a blurry stream needs at least two tasks")
    g = seeded_generator(seed, "blurry")
    kept, given = [], []
    for t in scenario.tasks:
        perm = torch.randperm(len(t.train), generator=g)
        k = round(m / 100 * len(t.train))
        given.append([(t.id, int(i)) for i in perm[:k]])
        kept.append([(t.id, int(i)) for i in perm[k:]])
    received = _deal(given, g)
    datas = [_gather(scenario, kept[t] + received[t]) for t in range(len(scenario.tasks))]
    blurred = Scenario(scenario.name, scenario.setting,
                       [dataclasses.replace(t, train=d) for t, d in zip(scenario.tasks, datas)],
                       scenario.n_classes, scenario.input_shape, scenario.class_order, scenario.meta)
    stream = sequential(blurred, batch_size=batch_size, seed=seed, epochs=epochs, iterations=iterations, views=views)
    stream.tasks = blurred.tasks
    stream.meta.update({"ordering": "blurry", "m": m,
                        "foreign_per_task": [len(r) for r in received], "size_per_task": [len(d) for d in datas]})
    return stream


def _deal(given: list[list[tuple[int, int]]], g: torch.Generator) -> list[list[tuple[int, int]]]:
    """Hand the given-away samples back out: task t receives exactly len(given[t]) of them, none
    of its own (a random assignment, then swaps to repair the few own ones)."""
    flat = [s for part in given for s in part]
    order = torch.randperm(len(flat), generator=g).tolist()
    flat = [flat[i] for i in order]
    out, pos = [], 0
    for part in given:
        out.append(flat[pos:pos + len(part)])
        pos += len(part)
    for t in range(len(out)):
        for a, item in enumerate(out[t]):
            if item[0] != t:
                continue
            for u in range(len(out)):
                if u == t:
                    continue
                swap = next((b for b, other in enumerate(out[u]) if other[0] != t and item[0] != u), None)
                if swap is not None:
                    out[t][a], out[u][swap] = out[u][swap], out[t][a]
                    break
            else:
                raise InputError("cannot build a blurry stream: too few other tasks to exchange samples with")
    return out


def _gather(scenario: Scenario, items: list[tuple[int, int]]) -> TensorData:
    by_task: dict[int, list[int]] = {}
    for t, i in items:
        by_task.setdefault(t, []).append(i)
    xs, ys = [], []
    for t, idx in sorted(by_task.items()):
        d = scenario.tasks[t].train
        xs.append(d.x[idx])
        ys.append(d.y[idx])
    d0 = scenario.tasks[0].train
    return TensorData(torch.cat(xs), torch.cat(ys), d0.mean, d0.std)


def rehearsal_iterations(k: int, j: int, task_iterations: int, budget: float, decay: str, exponent: float,
                         rate: float) -> int:
    """Iterations of old task ``j`` rehearsed right after new task ``k``: ``budget`` times a task's
    iterations, times ``(k - j) ** -exponent`` (power law) or ``exp(-rate * (k - j - 1))``
    (exponential). Time is counted in tasks since ``j`` was learned; rehearsals are short visits
    that do not reset it (otherwise every rehearsed task would always count as just seen)."""
    age = k - j
    weight = age ** -exponent if decay == "power" else math.exp(-rate * (age - 1))
    return int(round(budget * task_iterations * weight))


def recurring(scenario: Scenario, *, batch_size: int, seed: int, epochs: float | None = 1,
              iterations: int | None = None, views: int = 1, budget: NonNegative = 0.5,
              decay: Literal["power", "exponential"] = "power", exponent: NonNegative = 0.5,
              rate: NonNegative = 1.0) -> Stream:
    """New tasks in order; after each one (from the second on, the last included) every earlier task
    comes back for ``rehearsal_iterations`` iterations, oldest first."""
    sizes = _plan_sizes(scenario, batch_size, epochs, iterations, views)
    check_stream_size(scenario, sum(sizes) + sum(rehearsal_iterations(k, j, sizes[j], budget, decay, exponent, rate)
                                                 for k in range(len(sizes)) for j in range(k)), batch_size)
    pool, pool_task, offsets = make_pool(scenario)
    cursors = [Cursor(len(t.train), seeded_generator(seed, "task", t.id), views) for t in scenario.tasks]
    batches, tasks, segments, plan = [], [], [], []

    def add(task: int, n: int) -> None:
        start = len(batches)
        for _ in range(n):
            batches.append(cursors[task].take(batch_size) + offsets[task])
            tasks.append(task)
        segments.append(Segment(task, start, len(batches)))

    for k in range(len(scenario.tasks)):
        add(k, sizes[k])
        for j in range(k):
            n = rehearsal_iterations(k, j, sizes[j], budget, decay, exponent, rate)
            if n > 0:
                add(j, n)
                plan.append({"after_task": k, "task": j, "iterations": n})
    return _finish(pool, pool_task, batches, tasks, segments,
                   {"ordering": "recurring", "budget": budget, "decay": decay, "exponent": exponent, "rate": rate,
                    "rehearsals": plan, "batch_size": batch_size, "epochs": epochs, "iterations": iterations,
                    "views": views, "draws_per_task": [c.drawn for c in cursors]})


ORDERINGS = {"sequential": sequential, "fuzzy": fuzzy, "blurry": blurry, "recurring": recurring}


def ordering_params(name: str) -> dict:
    fn = _ordering(name)
    base = set(inspect.signature(sequential).parameters)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.name not in base}


def _ordering(name: str):
    if name not in ORDERINGS:
        raise InputError(f"unknown ordering {name!r}; known orderings: {', '.join(ORDERINGS)}")
    return ORDERINGS[name]


def make_stream(scenario: Scenario, ordering: str = "sequential", **kwargs) -> Stream:
    """The stream of a named ordering; unknown ordering parameters are an error."""
    fn = _ordering(ordering)
    allowed = set(inspect.signature(fn).parameters) - {"scenario"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError(f"ordering {ordering} has no parameter {', '.join(unknown)}; its parameters: "
                         f"{', '.join(ordering_params(ordering)) or 'none'}")
    own = {k: v for k, v in kwargs.items() if k in ordering_params(ordering)}
    own = validate_keywords(f"ordering {ordering}", [fn], own, skip=set(inspect.signature(sequential).parameters))
    return fn(scenario, **{**kwargs, **own})
