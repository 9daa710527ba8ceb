"""What a run costs, measured beside its accuracy (Harun et al., "How efficient are today's
continual learning algorithms?", CVPR-W 2023): training compute in FLOPs, memory held, trainable
parameters. A method that buys accuracy with compute or memory must show it in the same table.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions, forward and backward) on sampled training steps, never from hand-written
formulas, so every extra pass a strategy makes is included: replay batches, GEM's memory
gradients, view-batch's views. A segment's FLOPs are the mean of its sampled steps times its
length (a step's cost can change within a task, e.g. once a replay memory fills, so steps are
sampled across the segment, not at its start). Consolidation at task ends (EWC's Fisher) is
counted in full. Work outside PyTorch (GEM's QP on the host) and evaluation are not training
FLOPs and are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")

#: sampled steps per segment (a task's run of consecutive iterations)
SAMPLES_PER_SEGMENT = 3


class CostMeter:
    """Counts the FLOPs of sampled ``observe`` calls and of every task-boundary hook."""

    def __init__(self, segment_bounds: list[tuple[int, int]], samples_per_segment: int = SAMPLES_PER_SEGMENT):
        self.bounds = segment_bounds
        self.sampled: dict[int, int] = {}  # iteration -> segment
        for s, (start, stop) in enumerate(segment_bounds):
            n = stop - start
            k = min(samples_per_segment, n)
            for j in range(k):
                self.sampled[start + int((j + 0.5) * n / k)] = s
        self.step_flops: dict[int, list[int]] = {s: [] for s in range(len(segment_bounds))}
        self.hook_flops = 0
        self._open: tuple[int, FlopCounterMode] | None = None

    def start(self, iteration: int) -> None:
        """Begin step ``iteration`` (0-based); counted only when sampled. For loops that are not
        ours (Avalanche's), whose steps run between two plugin callbacks."""
        segment = self.sampled.get(iteration)
        if segment is not None:
            counter = FlopCounterMode(display=False)
            counter.__enter__()
            self._open = (segment, counter)

    def stop(self) -> None:
        if self._open is not None:
            segment, counter = self._open
            self._open = None
            counter.__exit__(None, None, None)
            self.step_flops[segment].append(counter.get_total_flops())

    def step(self, iteration: int, fn: Callable[[], T]) -> T:
        """Run one training step, counting it when ``iteration`` is sampled."""
        self.start(iteration)
        try:
            return fn()
        finally:
            self.stop()

    def hook(self, fn: Callable[[], T]) -> T:
        """Run a boundary hook (consolidation), counting all of it."""
        with FlopCounterMode(display=False) as counter:
            out = fn()
        self.hook_flops += counter.get_total_flops()
        return out

    def train_flops(self) -> float:
        """Estimated training FLOPs of the whole stream."""
        total = float(self.hook_flops)
        for s, (start, stop) in enumerate(self.bounds):
            counts = self.step_flops[s]
            if counts:
                total += sum(counts) / len(counts) * (stop - start)
        return total

    def record(self) -> dict[str, Any]:
        return {"flops": "torch.utils.flop_counter.FlopCounterMode (matmul/conv, forward and backward)",
                "sampled_steps": len(self.sampled), "samples_per_segment": SAMPLES_PER_SEGMENT,
                "consolidation_flops": self.hook_flops,
                "not_counted": "evaluation; work outside PyTorch (GEM's QP on the host); elementwise ops"}


def trainable_parameters(model) -> int:
    if model is None:
        return 0
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
