"""Joint training: the reference points every continual method is compared against."""

from __future__ import annotations

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
        self._order = torch.zeros(0, dtype=torch.long)
        self._cursor = 0
        self._x = self._y = self._t = None

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
        dev = self.device
        self._x = torch.cat([t.train.x for t in self._data]).to(dev)
        self._y = torch.cat([t.train.y for t in self._data]).to(dev)
        self._t = torch.cat([torch.full((len(t.train),), t.id, dtype=torch.long) for t in self._data]).to(dev)
        self._norm = self._data[0].train.normalize
        self._order, self._cursor = torch.randperm(len(self._y), generator=self.generator), 0

    def _next_indices(self, n: int) -> torch.Tensor:
        if self._cursor + n > len(self._order):
            self._order, self._cursor = torch.randperm(len(self._y), generator=self.generator), 0
        idx = self._order[self._cursor:self._cursor + n]
        self._cursor += n
        return idx.to(self.device)

    def training_loss(self, x, y, task_ids):
        if self._x is None:
            raise InputError("joint training needs before_task (or before_stream for offline mode) first")
        idx = self._next_indices(len(y))
        tid = self._t.index_select(0, idx)
        x = self._norm(self._x.index_select(0, idx))
        return F.cross_entropy(self.logits(self.augment_inputs(x), tid), self._y.index_select(0, idx))

    def memory_samples(self):
        """Joint training keeps every sample it has met: the reference point, not a budgeted method."""
        return 0 if self._y is None else len(self._y)

    @property
    def task_boundaries(self) -> bool:
        return self.mode != "offline"

    def config(self):
        return {**super().config(), "mode": self.mode}
