"""Experience replay with a tensor buffer."""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

from clbench.common.validation import Count, NonNegativeInt, UnitInterval, checked
from clbench.strategies.base import Strategy

#: how a full memory chooses what to keep
BufferPolicy = Literal["reservoir", "class-balanced"]


class _Reservoir:
    """Algorithm R (Vitter) over tensors, applied per batch: after n samples, each one is in the
    memory with probability capacity / n."""

    def __init__(self):
        self.x = self.y = self.t = None
        self.n_seen = 0

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def add(self, x, y, t, capacity: int, g: torch.Generator) -> None:
        if self.x is None:
            self.x, self.y, self.t = x[:0].clone(), y[:0].clone(), t[:0].clone()
        take = max(0, min(capacity - len(self), len(y)))
        if take:
            self.x, self.y, self.t = (torch.cat([self.x, x[:take]]), torch.cat([self.y, y[:take]]),
                                      torch.cat([self.t, t[:take]]))
        rest = len(y) - take
        positions = self.n_seen + take + 1 + torch.arange(rest)
        self.n_seen += len(y)
        if rest <= 0 or capacity <= 0:
            return
        slots = (torch.rand(rest, generator=g) * positions).long()
        # a later sample overwrites an earlier one aimed at the same slot: keep the last per slot
        hit = torch.where(slots < capacity, torch.arange(rest), -1)
        last = torch.full((capacity,), -1, dtype=torch.long).scatter_reduce(
            0, slots.clamp(max=capacity - 1), hit, "amax")
        dst = torch.nonzero(last >= 0).flatten()
        src = last[dst] + take
        dst, src = dst.to(self.y.device), src.to(y.device)
        self.x[dst], self.y[dst], self.t[dst] = x[src], y[src], t[src]

    def shrink(self, capacity: int, g: torch.Generator) -> None:
        """Keep a random ``capacity`` of the stored samples."""
        if len(self) > capacity:
            keep = torch.randperm(len(self), generator=g)[:capacity].sort().values.to(self.y.device)
            self.x, self.y, self.t = self.x[keep], self.y[keep], self.t[keep]


class ReplayBuffer:
    """A fixed-size memory of (x, y, task) kept as tensors on the model's device.

    ``reservoir``: every sample seen has the same chance mem_size / n_seen of being in memory.
    ``class-balanced``: one reservoir per class, each holding mem_size // (classes seen); a new
    class shrinks the others at random (the class-balanced buffer of De Lange et al.'s code).
    """

    @checked
    def __init__(self, mem_size: NonNegativeInt, policy: BufferPolicy, generator: torch.Generator):
        self.mem_size, self.policy, self.g = mem_size, policy, generator
        self.stores: dict[int, _Reservoir] = {}
        self._cat = None

    def __len__(self) -> int:
        return sum(len(s) for s in self.stores.values())

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        if self.mem_size == 0:
            return
        x, y, t = x.detach(), y.detach(), t.detach()
        self._cat = None
        if self.policy == "reservoir":
            self.stores.setdefault(0, _Reservoir()).add(x, y, t, self.mem_size, self.g)
            return
        classes = y.unique().tolist()
        for c in classes:
            self.stores.setdefault(c, _Reservoir())
        cap = self.mem_size // len(self.stores)
        for store in self.stores.values():
            store.shrink(cap, self.g)
        for c in classes:
            sel = torch.nonzero(y == c).flatten()
            self.stores[c].add(x[sel], y[sel], t[sel], cap, self.g)

    def tensors(self):
        if self._cat is None:
            parts = [s for s in self.stores.values() if len(s)]
            if len(parts) == 1:  # the reservoir: its own tensors, not a copy of them every step
                return parts[0].x, parts[0].y, parts[0].t
            self._cat = tuple(torch.cat([getattr(s, a) for s in parts]) for a in ("x", "y", "t"))
        return self._cat

    def sample(self, n: int):
        """``n`` samples without replacement (all of them if the memory holds fewer)."""
        x, y, t = self.tensors()
        idx = torch.randperm(len(y), generator=self.g)[:n].to(y.device)
        return x.index_select(0, idx), y.index_select(0, idx), t.index_select(0, idx)


class ER(Strategy):
    """Experience replay: each step adds a replay minibatch drawn from the memory.

    Loss weighting ``concat`` (one mean over both batches, as Avalanche's Replay), ``weighted``
    (``w_new`` CE(new) + (1 - w_new) CE(replay), as De Lange et al., ICLR 2023) or ``1/k`` (weight
    1/k on the current task with k tasks seen, as van de Ven et al. 2022). The replay batch is
    drawn before the new batch enters the memory. ``update="online"`` (default) fills the memory
    from the stream as it comes, so it also holds the current task; ``"task_end"`` adds a random
    sample of each task's training data when the task first ends, so the memory holds only past
    tasks (as Avalanche's Replay does). Chaudhry et al., "On tiny episodic memories in
    continual learning" (2019); Rolnick et al., "Experience replay for continual learning" (2019).

    The memory holds raw (un-augmented) samples, one per view group; augmentation is applied to
    the current and the replayed samples alike at each step. Under the view-batch wrapper the
    replay batch is made of view groups too, so memory samples get their views and the
    self-supervised loss, as in Kang et al.'s code where the memory is merged into the data.
    """

    name = "er"

    @checked
    def __init__(self, model, optimizer=None, *, mem_size: NonNegativeInt = 200, buffer: BufferPolicy = "reservoir",
                 replay_batch: Count | None = None, weighting: Literal["concat", "weighted", "1/k"] = "concat",
                 w_new: UnitInterval = 0.5, update: Literal["online", "task_end"] = "online", **common):
        super().__init__(model, optimizer, **common)
        self.update = update
        self.buffer = ReplayBuffer(mem_size, buffer, self.generator)
        self.replay_batch, self.weighting, self.w_new = replay_batch, weighting, w_new

    @classmethod
    def memory_params(cls, budget, n_tasks):
        return {"mem_size": int(budget)}

    def memory_samples(self):
        return len(self.buffer)

    def _replay(self, n: int):
        """``n`` replayed rows: ``n // views`` memory samples, each repeated ``views`` times."""
        v = self.views
        xr, yr, tr = self.buffer.sample(max(1, n // v))
        if v > 1:
            xr, yr, tr = (a.repeat_interleave(v, 0) for a in (xr, yr, tr))
        return xr, yr, tr

    def training_loss(self, x, y, task_ids):
        if task_ids is None:
            task_ids = torch.full_like(y, self.current_task or 0)
        n = len(y)
        if len(self.buffer) == 0:
            logits = self.logits(self.augment_inputs(x), task_ids)
            loss = F.cross_entropy(logits, y)
        else:
            xr, yr, tr = self._replay(self.replay_batch or n)
            logits = self.logits(self.augment_inputs(torch.cat([x, xr])), torch.cat([task_ids, tr]))
            if self.weighting == "concat":
                loss = F.cross_entropy(logits, torch.cat([y, yr]))
            else:
                w = self.w_new if self.weighting == "weighted" else 1.0 / max(1, len(self.tasks_seen))
                loss = w * F.cross_entropy(logits[:n], y) + (1 - w) * F.cross_entropy(logits[n:], yr)
        if self.extra_loss is not None:  # view-batch self-supervision: current and replayed groups alike
            loss = loss + self.extra_loss(logits)
        if self.update == "online":
            step = self.views  # one raw sample per view group
            self.buffer.add(x[::step], y[::step], task_ids[::step])
        return loss

    def after_task(self, task) -> None:
        if self.first_end(task) and self.update == "task_end":
            order = torch.randperm(len(task.train), generator=self.generator)
            x, y = task.train.batch(order, self.device)
            self.buffer.add(x, y, torch.full_like(y, task.id))

    def config(self):
        return {**super().config(), "mem_size": self.buffer.mem_size, "buffer": self.buffer.policy,
                "replay_batch": self.replay_batch, "weighting": self.weighting, "w_new": self.w_new,
                "update": self.update, "memory_capacity": self.buffer.mem_size,
                "memory": "raw samples (augmented when replayed), one per view group"}
