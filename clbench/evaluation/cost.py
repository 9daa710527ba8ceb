"""What a run costs, measured beside its accuracy (Harun et al., "How efficient are today's
continual learning algorithms?", CVPR-W 2023): training compute in FLOPs, memory held, trainable
parameters. A method that buys accuracy with compute or memory must show it in the same table.

FLOPs are counted with ``torch.utils.flop_counter``'s formulas (matrix products and
convolutions, forward and backward; ``FlopCount`` below) on sampled training steps, never from
hand-written formulas, so every extra pass a strategy makes is included: replay batches, GEM's memory
gradients, view-batch's views. A segment's FLOPs are the mean of its sampled steps times its
length (a step's cost can change within a task, e.g. once a replay memory fills, so steps are
sampled across the segment, not at its start). Consolidation at task ends (EWC's Fisher) is
counted in full in both training loops: in Avalanche's, all its plugins do between an
experience's last update and the next experience (clbench's evaluation left out). Work outside
PyTorch (GEM's QP on the host) and evaluation are not training FLOPs and are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

T = TypeVar("T")

#: metadata queries that FlopCounterMode leaves alone
_METADATA_OPS = {torch.ops.aten.sym_is_contiguous.default, torch.ops.aten.is_contiguous.default,
                 torch.ops.aten.is_contiguous.memory_format, torch.ops.aten.is_strides_like_format.default,
                 torch.ops.aten.is_non_overlapping_and_dense.default, torch.ops.aten.size.default,
                 torch.ops.aten.sym_size.default, torch.ops.aten.stride.default, torch.ops.aten.sym_stride.default,
                 torch.ops.aten.storage_offset.default, torch.ops.aten.sym_storage_offset.default,
                 torch.ops.aten.numel.default, torch.ops.aten.sym_numel.default, torch.ops.aten.dim.default,
                 torch.ops.prim.layout.default}


class FlopCount(TorchDispatchMode):
    """The total of ``torch.utils.flop_counter.FlopCounterMode`` (same formulas, same rule: an op
    without a formula is decomposed, and its parts counted) without its per-module breakdown.
    That breakdown hooks every module's forward and backward, and it cost EWC's Fisher on
    split-fmnist 13-25% of its time, which a run would then report as the strategy's."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _METADATA_OPS:
            return NotImplemented
        if func is not torch.ops.prim.device.default and _decomposable(func):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out

_DECOMPOSABLE: dict[Any, bool] = {}


def _decomposable(func) -> bool:
    """Whether ``func.decompose`` can return anything but NotImplemented (its own test, made once
    per op): most ops cannot, and trying means re-entering the mode, the costliest part of
    counting an op."""
    known = _DECOMPOSABLE.get(func)
    if known is None:
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        known = _DECOMPOSABLE[func] = key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(
            func.name(), key)
    return known


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
        self._open: tuple[int, FlopCount] | None = None
        self._hook: FlopCount | None = None

    def start(self, iteration: int) -> None:
        """Begin step ``iteration`` (0-based); counted only when sampled. For loops that are not
        ours (Avalanche's), whose steps run between two plugin callbacks."""
        segment = self.sampled.get(iteration)
        if segment is not None:
            counter = FlopCount()
            counter.__enter__()
            self._open = (segment, counter)

    def stop(self) -> None:
        if self._open is not None:
            segment, counter = self._open
            self._open = None
            counter.__exit__(None, None, None)
            self.step_flops[segment].append(counter.total)

    def step(self, iteration: int, fn: Callable[[], T]) -> T:
        """Run one training step, counting it when ``iteration`` is sampled."""
        self.start(iteration)
        try:
            return fn()
        finally:
            self.stop()

    def hook(self, fn: Callable[[], T]) -> T:
        """Run a boundary hook (consolidation), counting all of it."""
        with FlopCount() as counter:
            out = fn()
        self.hook_flops += counter.total
        return out

    def hook_start(self) -> None:
        """Begin counting consolidation that runs between callbacks of a loop that is not ours
        (Avalanche's plugins after an experience's last update); ``hook_stop`` ends it."""
        if self._hook is None:
            self._hook = FlopCount()
            self._hook.__enter__()

    def hook_stop(self) -> None:
        if self._hook is not None:
            counter, self._hook = self._hook, None
            counter.__exit__(None, None, None)
            self.hook_flops += counter.total

    def train_flops(self) -> float:
        """Estimated training FLOPs of the whole stream."""
        total = float(self.hook_flops)
        for s, (start, stop) in enumerate(self.bounds):
            counts = self.step_flops[s]
            if counts:
                total += sum(counts) / len(counts) * (stop - start)
        return total

    def record(self) -> dict[str, Any]:
        return {"flops": "torch.utils.flop_counter's formulas, as FlopCounterMode counts (matmul/conv, forward "
                          "and backward)",
                "sampled_steps": len(self.sampled), "samples_per_segment": SAMPLES_PER_SEGMENT,
                "consolidation_flops": self.hook_flops,
                "not_counted": "evaluation; work outside PyTorch (GEM's QP on the host); elementwise ops"}


def trainable_parameters(model) -> int:
    if model is None:
        return 0
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
