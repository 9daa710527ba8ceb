"""Gradient episodic memory."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clbench.common.errors import InputError
from clbench.common.validation import Count, NonNegative, checked
from clbench.strategies.base import Strategy
from clbench.strategies.gem_gradients import one_pass
from clbench.strategies.linear_layers import linear_layers


def project_gradient(g: torch.Tensor, G: torch.Tensor, margin: float = 0.5, eps: float = 1e-8) -> torch.Tensor:
    """GEM's projection (Lopez-Paz & Ranzato, NeurIPS 2017, eq. 10-11): solve the dual QP

        min_v 1/2 v^T (G G^T + eps I) v + g^T G^T v   subject to  v >= margin

    with quadprog and return ``G^T v + g``: the closest gradient (in L2) whose dot product with
    every memory gradient is non-negative. ``g`` is the flat gradient, ``G`` one row per past task.

    The ridge ``eps`` only keeps the matrix positive definite, but it also loosens the constraints
    by up to ``eps * v``: the reference code's 1e-3 leaves dot products around -1e-3. We start
    from 1e-8 and raise it only when quadprog fails.
    """
    import quadprog

    # The products over the parameters stay in torch (in float64, on the model's device): numpy's
    # BLAS threads spin after a call and, beside torch's own threads, slowed every other op of a
    # 2-thread run several-fold. Only the t x t problem goes to quadprog.
    Gd, gd = G.detach().double(), g.detach().double()
    t = Gd.shape[0]
    P = (Gd @ Gd.T).cpu().numpy()
    q = -(Gd @ gd).cpu().numpy()
    # Badly conditioned Gram matrices (near-parallel memory gradients) can make quadprog report
    # inconsistent constraints; a larger ridge term is the standard remedy.
    for ridge in (eps, eps * 1e2, eps * 1e4, eps * 1e6, max(eps, 1e-3)):
        try:
            v = quadprog.solve_qp(0.5 * (P + P.T) + ridge * np.eye(t), q, np.eye(t), np.full(t, margin))[0]
            break
        except ValueError:
            continue
    else:
        raise RuntimeError("GEM's QP has no solution even with a ridge of 1e-3 (are the gradients finite?)")
    return (torch.from_numpy(v).to(Gd) @ Gd + gd).to(g.dtype)


class GEM(Strategy):
    """GEM (Lopez-Paz & Ranzato, "Gradient episodic memory for continual learning", NeurIPS 2017):
    an episodic memory of the ``patterns_per_task`` most recent samples of each task; when the
    new gradient would increase the loss on a past task's memory (negative dot product), it is
    projected by a QP (``memory_strength`` is the margin, 0.5 in the paper). Everything works on
    one flattened gradient vector.

    Every sample is filed under its own task (mixed batches of fuzzy streams included); a task's
    memory is frozen at its first end and only tasks that have ended constrain the update, so a
    task that comes back (recurring streams) is neither re-memorised nor constrains itself early.
    An experiment's memory budget of N samples gives N // T per task."""

    name = "gem"

    @checked
    def __init__(self, model, optimizer=None, *, patterns_per_task: Count = 256,
                 memory_strength: NonNegative = 0.5, **common):
        super().__init__(model, optimizer, **common)
        self.patterns_per_task, self.memory_strength = patterns_per_task, memory_strength
        #: each ended task's memory (x, y, task ids), frozen at the task's first end
        self.memory: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        #: tasks not ended yet: their recent batches' samples, trimmed lazily (``_remember``)
        self._pending: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        #: the concatenated memory of the past tasks in use (it changes only when a task ends)
        self._joined: tuple[tuple[int, ...], tuple[torch.Tensor, ...]] | None = None
        self.n_projections = 0
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._linears: list[nn.Linear] | None = None
        self._offsets: dict[int, tuple[int, int]] | None = None

    @classmethod
    def memory_params(cls, budget, n_tasks):
        per_task = int(budget) // max(1, int(n_tasks))
        if per_task < 1:
            raise InputError(f"a memory of {budget} samples leaves GEM less than one sample for each of {n_tasks} "
                             "tasks; raise --memory")
        return {"patterns_per_task": per_task}

    def memory_samples(self):
        """The frozen memories and what tasks that have not ended would keep now."""
        return sum(len(m[1]) for m in [*self.memory.values(), *(self._recent(k) for k in self._pending)])

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self._params])

    def _set_grad(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params:  # views of ``flat``, a fresh tensor: no copies
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n

    def memory_gradients(self, past: list[int]) -> torch.Tensor:
        """One flat gradient row per past task: each task's mean loss on its memory. Models made of
        Linear layers (MLPs) get all rows from one forward over the whole memory and one backward
        pass (``_linear_gradients``); other models loop over the tasks."""
        linears = self._linear_layers()
        if linears is not None:
            out = self._linear_gradients(None, None, None, past, linears)
            if out is not None:
                return out[2]
        return self._looped_memory_gradients(past)

    def _looped_memory_gradients(self, past: list[int]) -> torch.Tensor:
        G = []
        for k in past:
            mx, my, mt = self.memory[k]
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.logits(mx, mt), my).backward()
            G.append(self._flat_grad())
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack(G)

    def _linear_layers(self) -> list[nn.Linear] | None:
        """``linear_layers`` of the model, looked up once (this runs every step)."""
        if self._linears is None:
            self._linears = linear_layers(self.model) or []
        return self._linears or None

    def _slots(self) -> dict[int, tuple[int, int]]:
        """Where each parameter lies in the flat gradient: ``id(p) -> (offset, numel)``."""
        if self._offsets is None:
            sizes = [p.numel() for p in self._params]
            starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
            self._offsets = {id(p): (int(o), n) for p, o, n in zip(self._params, starts, sizes)}
        return self._offsets

    def _linear_gradients(self, x, y, task_ids, past: list[int], linears: list[nn.Linear]):
        """``(loss, g, G)`` from one pass (``gem_gradients.one_pass``); None where it does not apply."""
        sizes = [len(self.memory[k][1]) for k in past]
        return one_pass(self, linears, x, y, task_ids, self._joined_memory(past), sizes, self._slots())

    def _joined_memory(self, past: list[int]) -> tuple[torch.Tensor, ...]:
        """The memories of ``past`` concatenated, kept until the list changes (at a task's end),
        not copied again at every step."""
        if self._joined is None or self._joined[0] != tuple(past):
            parts = [self.memory[k] for k in past]
            self._joined = (tuple(past), tuple(torch.cat(a) for a in zip(*parts)))
        return self._joined[1]

    def observe(self, x, y, task_ids=None):
        if task_ids is None:
            task_ids = torch.full_like(y, self.current_task or 0)
        self.model.train()
        past = [k for k in self.memory if k in self.consolidated and k != self.current_task]
        linears = self._linear_layers() if past else None
        both = self._linear_gradients(x, y, task_ids, past, linears) if linears is not None else None
        if both is not None:  # the batch's gradient and the memory's, in one pass (MLPs)
            loss, g, Gm = both
        else:
            Gm = self.memory_gradients(past) if past else None
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.batch_loss(self.logits(self.augment_inputs(x), task_ids), y)
            loss.backward()
            g = self._flat_grad() if Gm is not None else None
        if Gm is not None:
            if bool((Gm @ g < 0).any()):
                g = project_gradient(g, Gm, self.memory_strength)
                self.n_projections += 1
            self._set_grad(g)
        self.optimizer.step()
        self._remember(x, y, task_ids)
        return loss.detach()

    def _remember(self, x, y, t) -> None:
        """Keep the most recent ``patterns_per_task`` samples of each task in the batch (raw, not
        augmented), until the task first ends. Batches are kept as they come and dropped from the
        front once the later ones hold enough: no copy of the memory at every step."""
        for k in t.unique().tolist():
            if k in self.consolidated:
                continue
            sel = t == k
            chunks = self._pending.setdefault(k, [])
            chunks.append((x[sel].detach(), y[sel].detach(), t[sel].detach()))
            held = sum(len(c[1]) for c in chunks)
            while held - len(chunks[0][1]) >= self.patterns_per_task:
                held -= len(chunks.pop(0)[1])

    def _recent(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Task ``k``'s most recent ``patterns_per_task`` samples so far."""
        return tuple(torch.cat(a)[-self.patterns_per_task:] for a in zip(*self._pending[k]))

    def after_task(self, task) -> None:
        """Freezes the task's memory at its first end (samples of a task seen only later, as in a
        fuzzy stream's mixed batches, stay pending until that task ends)."""
        if self.first_end(task) and task.id in self._pending:
            self.memory[task.id] = self._recent(task.id)
            del self._pending[task.id]

    def config(self):
        return {**super().config(), "patterns_per_task": self.patterns_per_task,
                "memory_strength": self.memory_strength,
                "qp": "dual, quadprog, P = G G^T + 1e-8 I (raised only if quadprog fails)",
                "memory": "most recent samples of each task, frozen at its first end",
                "memory_capacity": self.patterns_per_task * len(self._task_classes or [None]),
                "projections": self.n_projections}
