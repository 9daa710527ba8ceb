"""The parameters of the last few iterations, so that a schedule can evaluate coarsely and still
look back at the exact iteration of a minimum or a recovery: evaluating a snapshot gives what an
evaluation at that iteration would have given, because an evaluation depends on nothing but the
tensors a prediction reads (the fixed evaluation subsets are the same).

The ring is one preallocated tensor per prediction tensor, so keeping an iteration is a copy into
memory that already exists (no allocation per iteration, nothing that grows).
"""

from __future__ import annotations

import contextlib

import torch

#: the most memory a ring may take; deeper rings are cut to fit (a large network keeps fewer
#: iterations, and the refine schedule then evaluates coarsely more often: ``Schedule.fit_depth``)
RING_BYTES = 256 * 2**20


def prediction_tensors(strategy) -> list[torch.Tensor]:
    """The tensors a strategy's predictions read: ``strategy.prediction_state()`` where it says,
    otherwise its model's parameters and floating-point buffers (batch-norm statistics)."""
    own = getattr(strategy, "prediction_state", None)
    if own is not None:
        return list(own())
    model = strategy.model
    return [p.data for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]


class SnapshotRing:
    """The prediction tensors of the last ``depth`` iterations kept with ``keep(n)``; ``look(n)`` puts
    iteration ``n``'s back for the length of a ``with`` block and restores the present after."""

    def __init__(self, strategy, depth: int):
        self.strategy, self.wanted = strategy, depth
        self.slots: list[list[torch.Tensor]] = []
        self.held: list[int | None] = []
        self.present: list[torch.Tensor] = []
        #: iterations held: ``depth`` unless the tensors are too large for ``RING_BYTES``
        self.depth = self._fitting(prediction_tensors(strategy))

    def _fitting(self, tensors: list[torch.Tensor]) -> int:
        size = sum(t.numel() * t.element_size() for t in tensors)
        return max(2, min(self.wanted, RING_BYTES // max(1, size)))  # two at least, whatever they take

    def _allocate(self, tensors: list[torch.Tensor]) -> None:
        self.depth = min(self.depth, self._fitting(tensors))
        self.slots = [[torch.empty_like(t) for t in tensors] for _ in range(self.depth)]
        self.held = [None] * self.depth
        self.present = [torch.empty_like(t) for t in tensors]

    def keep(self, n: int) -> None:
        """Copy the prediction tensors after update ``n`` into the ring (over the oldest)."""
        tensors = prediction_tensors(self.strategy)
        if not self.slots or [t.shape for t in tensors] != [t.shape for t in self.present]:
            self._allocate(tensors)  # first use, or a model that grew (a new head): older iterations go
        k = n % self.depth
        with torch.no_grad():
            for slot, t in zip(self.slots[k], tensors):
                slot.copy_(t)
        self.held[k] = n

    def has(self, n: int) -> bool:
        return bool(self.slots) and self.held[n % self.depth] == n

    @contextlib.contextmanager
    def look(self, n: int):
        """Iteration ``n``'s tensors in place of the present ones, inside the block."""
        if not self.has(n):
            raise KeyError(f"iteration {n} is no longer held (the ring keeps {self.depth})")
        tensors = prediction_tensors(self.strategy)
        with torch.no_grad():
            for keep, t in zip(self.present, tensors):
                keep.copy_(t)
            for t, slot in zip(tensors, self.slots[n % self.depth]):
                t.copy_(slot)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, keep in zip(tensors, self.present):
                    t.copy_(keep)
