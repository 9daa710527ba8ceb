"""The stream: the iteration plan every strategy of an experiment shares.

A stream is a list of batches (indices into ``pool``, the concatenation of every task's
training data) and the nominal task of each iteration. Task boundaries are explicit
(``segments``), so boundary-aware strategies still get ``before_task``/``after_task`` even in
streams whose batches mix tasks. All randomness comes from the seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from clbench.common.errors import InputError
from clbench.scenarios.data import Scenario, Task, TensorData, seeded_generator


@dataclass
class Segment:
    """A run of consecutive iterations ``[start, stop)`` whose nominal task is ``task``."""

    task: int
    start: int
    stop: int


@dataclass
class Stream:
    pool: TensorData
    pool_task: torch.Tensor
    batches: list[torch.Tensor]
    task_of_iteration: torch.Tensor
    segments: list[Segment]
    meta: dict = field(default_factory=dict)
    #: the tasks as this stream trains them (blurry streams move samples between tasks);
    #: None means the scenario's own tasks
    tasks: list[Task] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def on(self, device: torch.device | str) -> DeviceBatches:
        """The stream's data and batch plan moved to ``device`` once, for a training loop."""
        return DeviceBatches(self, torch.device(device))


class DeviceBatches:
    """A stream on its run's device: the pool (compact uint8), its labels and tasks, and every batch's
    indices in one flat tensor, so a batch is a slice and three gathers, normalised per batch."""

    def __init__(self, stream: Stream, device: torch.device):
        self.pool = stream.pool
        self.x, self.y = stream.pool.x.to(device), stream.pool.y.to(device)
        self.task = stream.pool_task.to(device)
        self.flat = torch.cat(stream.batches).to(device)
        self.starts = [0, *itertools.accumulate(len(b) for b in stream.batches)]

    def batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, task_ids)`` of iteration ``it``."""
        idx = self.flat[self.starts[it]:self.starts[it + 1]]
        # index_select, not x[idx]: advanced indexing of a 4-d uint8 tensor is 20x slower
        return (self.pool.normalize(self.x.index_select(0, idx)), self.y.index_select(0, idx),
                self.task.index_select(0, idx))


def make_pool(scenario: Scenario) -> tuple[TensorData, torch.Tensor, list[int]]:
    """All tasks' training data in one ``TensorData``, the task of each sample, and where each
    task's samples start (plus the total at the end)."""
    tr = [t.train for t in scenario.tasks]
    pool = TensorData(torch.cat([d.x for d in tr]), torch.cat([d.y for d in tr]), tr[0].mean, tr[0].std)
    pool_task = torch.cat([torch.full((len(d),), i, dtype=torch.long) for i, d in enumerate(tr)])
    offsets = [0, *torch.tensor([len(d) for d in tr]).cumsum(0).tolist()]
    return pool, pool_task, offsets


def epoch_batches(n: int, batch_size: int, n_iterations: int, g: torch.Generator, views: int = 1) -> list[torch.Tensor]:
    """``n_iterations`` batches over ``range(n)``, epoch after epoch (a new permutation each epoch).

    With ``views`` > 1 (the view-batch sampler of Kang et al., CVPR 2025) each permutation has
    every index repeated ``views`` times in a row and batches of ``batch_size`` are cut from the
    continuous sequence of such permutations: the batch size and the iterations per epoch
    (ceil(n / batch_size)) stay the same, so one pass over the data takes ``views`` epochs and a
    sample comes back about ``views`` times later. A group of repeats never straddles two batches
    (``batch_size`` must be a multiple of ``views``).
    """
    if views < 1:
        raise InputError(f"views must be at least 1, not {views}")
    if batch_size % views:
        raise InputError(f"batch size {batch_size} is not divisible by views={views}")
    if views > 1:
        cursor = Cursor(n, g, views)
        return [cursor.take(batch_size) for _ in range(n_iterations)]
    out: list[torch.Tensor] = []
    while len(out) < n_iterations:
        out += list(torch.randperm(n, generator=g).split(batch_size))
    return out[:n_iterations]


class Cursor:
    """Draws indices of one task's data in epochs (a new seeded permutation each time the data is
    used up), continuing across calls, so every sample is used as often as the plan draws it:
    after d draws from n samples each one has been used floor(d/n) or ceil(d/n) times. With
    ``views`` > 1 every index comes ``views`` times in a row; take multiples of ``views``."""

    def __init__(self, n: int, g: torch.Generator, views: int = 1):
        self.n, self.g, self.views = n, g, views
        self._seq = torch.zeros(0, dtype=torch.long)
        self._pos = 0
        self.drawn = 0

    def take(self, m: int) -> torch.Tensor:
        out = []
        while m > 0:
            if self._pos >= len(self._seq):
                self._seq, self._pos = torch.randperm(self.n, generator=self.g).repeat_interleave(self.views), 0
            chunk = self._seq[self._pos:self._pos + m]
            self._pos += len(chunk)
            m -= len(chunk)
            out.append(chunk)
        idx = torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
        self.drawn += len(idx)
        return idx


def iterations_per_task(n_train: int, batch_size: int, epochs: float | None, iterations: int | None) -> int:
    if iterations is not None:
        if iterations < 1:
            raise InputError(f"iterations per task must be at least 1, not {iterations}")
        return int(iterations)
    if epochs is None or epochs <= 0:
        raise InputError(f"epochs per task must be positive, not {epochs}")
    return max(1, round(epochs * math.ceil(n_train / batch_size)))


#: the most updates one stream may plan: its batches' sample indices are held from the start, and
#: the evaluator logs up to one evaluation of every task per update; the scenarios' defaults stay
#: far below (the default permuted stream has 10,000)
MAX_STREAM_UPDATES = 1_000_000
#: the most passes over the training data one stream may make (the papers' settings make 1-50)
MAX_PASSES = 1000


def check_stream_size(scenario: Scenario, updates: int, batch_size: int) -> None:
    """Refuse, before any memory is taken, a stream whose size is absurd for its data (a typo such as
    ``budget=1000`` or ``iterations=10000000``), with the numbers it would need."""
    samples = max(1, sum(len(t.train) for t in scenario.tasks))
    passes = updates * batch_size / samples
    if updates > MAX_STREAM_UPDATES or passes > MAX_PASSES:
        raise InputError(f"this stream would take {updates:,} updates, {passes:,.0f} passes over the "
                         f"{samples:,} training samples (at most {MAX_STREAM_UPDATES:,} updates and {MAX_PASSES:,} "
                         "passes); lower --epochs, --iterations or the ordering's parameters")


def sequential(scenario: Scenario, *, batch_size: int, seed: int, epochs: float | None = 1,
               iterations: int | None = None, views: int = 1) -> Stream:
    """Tasks one after another with sharp boundaries: the default ordering."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    sizes = [iterations_per_task(len(task.train), batch_size, epochs, iterations) for task in scenario.tasks]
    check_stream_size(scenario, sum(sizes), batch_size)
    pool, pool_task, offsets = make_pool(scenario)
    batches, tasks, segments = [], [], []
    for t, (task, n_it) in enumerate(zip(scenario.tasks, sizes)):
        g = seeded_generator(seed, "task", t)
        bs = [b + offsets[t] for b in epoch_batches(len(task.train), batch_size, n_it, g, views)]
        segments.append(Segment(t, len(batches), len(batches) + len(bs)))
        batches += bs
        tasks += [t] * len(bs)
    return Stream(pool, pool_task, batches, torch.tensor(tasks), segments,
                  {"ordering": "sequential", "batch_size": batch_size, "epochs": epochs, "iterations": iterations,
                   "views": views})
