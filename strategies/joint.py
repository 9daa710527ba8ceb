"""Joint training: the reference points every continual method is compared against."""

from __future__ import annotations

from itertools import accumulate
from typing import Literal

import torch
from torch.nn import functional as F

from clbench.common.errors import InputError
from clbench.common.validation import checked
from clbench.scenarios.data import Scenario, Task
from clbench.strategies.base import Strategy


class Joint(Strategy):
    """Train on the union of tasks instead of the current one, with the stream's batch size and
    number of updates.

    ``incremental``: at each task, batches are drawn from every task seen so far (the "full
    replay" that still shows a stability gap; Hess, Tuytelaars & van de Ven 2023).
    ``offline``: batches are drawn i.i.d. from every task of the scenario from the first update
    on (the upper bound). Batches are epochs over a seeded permutation of the union.
    """

    name = "joint"

    @checked
    def __init__(self, model, optimizer=None, *, mode: Literal["incremental", "offline"] = "incremental", **common):
        super().__init__(model, optimizer, **common)
        self.mode = mode
        self._data: list[Task] = []
        #: each task's training tensors on the device, as they are (on the CPU the scenario's own:
        #: no copy of the union, which at 20 permuted-fmnist tasks was 0.9 GB, twice over while
        #: the next union was built)
        self._xs: list[torch.Tensor] = []
        self._ys: list[torch.Tensor] = []
        self._starts = torch.zeros(1, dtype=torch.long)  # where each task's samples start in the union
        self._order = torch.zeros(0, dtype=torch.long)
        self._cursor = 0

    def before_stream(self, scenario: Scenario) -> None:
        super().before_stream(scenario)
        if self.mode == "offline":
            for task in scenario.tasks:
                self._add(task)

    def before_task(self, task: Task) -> None:
        super().before_task(task)
        if self.mode == "incremental" and all(t.id != task.id for t in self._data):
            self._add(task)

    def _add(self, task: Task) -> None:
        self._data.append(task)
        self._xs.append(task.train.x.to(self.device))
        self._ys.append(task.train.y.to(self.device))
        self._starts = torch.tensor([0, *accumulate(len(y) for y in self._ys)])
        self._norm = self._data[0].train.normalize
        self._order, self._cursor = torch.randperm(int(self._starts[-1]), generator=self.generator), 0

    def _next_indices(self, n: int) -> torch.Tensor:
        if self._cursor + n > len(self._order):
            self._order, self._cursor = torch.randperm(int(self._starts[-1]), generator=self.generator), 0
        idx = self._order[self._cursor:self._cursor + n]
        self._cursor += n
        return idx

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``idx`` of the union of the tasks seen (inputs as stored, labels, task ids), in
        that order: grouped by task, one gather from each task's tensors, then put back in order."""
        part = torch.bucketize(idx, self._starts[1:], right=True)  # which task each row is in
        order = torch.argsort(part, stable=True)
        local = (idx - self._starts[part])[order].to(self.device)
        chunks = local.split(torch.bincount(part, minlength=len(self._xs)).tolist())
        xs = torch.cat([x.index_select(0, rows) for x, rows in zip(self._xs, chunks)])
        ys = torch.cat([y.index_select(0, rows) for y, rows in zip(self._ys, chunks)])
        x, y = torch.empty_like(xs), torch.empty_like(ys)
        order = order.to(self.device)
        x[order], y[order] = xs, ys
        ids = torch.tensor([t.id for t in self._data], dtype=torch.long)
        return x, y, ids[part].to(self.device)

    def kept_data(self) -> list[torch.Tensor]:
        """Every sample met: the scenario's tensors, referenced rather than copied, are this
        strategy's memory (``clbench.evaluation.held`` counts them)."""
        return [*self._xs, *self._ys]

    def training_loss(self, x, y, task_ids):
        if not self._data:
            raise InputError("joint training needs before_task (or before_stream for offline mode) first")
        x, target, tid = self._batch(self._next_indices(len(y)))
        return F.cross_entropy(self.logits(self.augment_inputs(self._norm(x)), tid), target)

    def memory_samples(self):
        """Joint training keeps every sample it has met: the reference point, not a budgeted method."""
        return int(self._starts[-1])

    @property
    def task_boundaries(self) -> bool:
        return self.mode != "offline"

    def config(self):
        return {**super().config(), "mode": self.mode}
