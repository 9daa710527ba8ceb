"""Memory a strategy holds, measured by the runner for every strategy (built-in, Avalanche or
user-written) rather than reported by it: a method whose author forgot to report its teacher copy,
its importances or its buffer must not read as free (Harun et al., CVPR-W 2023: cost beside
accuracy).

``held_by`` walks the objects the strategy references (attributes, containers, modules, plugins)
and adds up every tensor and array it reaches, each storage once, leaving out the model being
trained (its parameters and buffers), its optimiser (and that optimiser's state) and the
scenario's own data, which every strategy has, unless the strategy keeps it as its memory
(``Strategy.kept_data``: joint training references every task's tensors instead of copying
them). A dataset it reaches (Avalanche's replay buffers are datasets of indices into the
experience's data) holds ``len`` samples of the size of its first one. Samples: a dataset's
``len``, and the leading size of every tensor shaped like a batch of inputs
(``[n, *input_shape]``), unless the strategy counts its own (``Strategy.memory_samples``: a
buffer kept with a concatenated copy for sampling is the same samples twice).
"""

from __future__ import annotations

import math
import types
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: attributes of Avalanche's template that hold the current step's data, not a memory: the
#: experience and its data loader, the minibatch and its output, the loss, the evaluation streams
TRANSIENT = {"experience", "adapted_dataset", "dataloader", "mbatch", "mb_output", "loss", "_criterion",
             "mb_buffer_x", "mb_buffer_y", "mb_buffer_tid", "mb_buffer_logits", "batch_logits",
             "current_eval_stream", "_eval_streams", "evaluator", "_stop_training", "clock"}
_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.device, torch.dtype, torch.Generator,
           types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType, type)


@dataclass
class Held:
    """``samples`` and ``bytes`` held beyond the model, its optimiser and the data (NaN: unknown)."""

    samples: float
    bytes: float


def _storage(t: torch.Tensor) -> tuple[str, int]:
    return str(t.device), t.untyped_storage().data_ptr()


def _is_dataset(obj) -> bool:
    """A torch dataset, or one of Avalanche's (which are not torch subclasses; named, not imported:
    importing Avalanche patches torch)."""
    if not hasattr(obj, "__len__") or not hasattr(obj, "__getitem__"):
        return False
    return isinstance(obj, torch.utils.data.Dataset) or any(
        c.__name__ in ("AvalancheDataset", "IDataset") for c in type(obj).__mro__)


def _sample_bytes(dataset) -> int:
    """Bytes of one sample of ``dataset`` (its tensors), 0 if it has none."""
    try:
        first = dataset[0]
    except Exception:  # noqa: BLE001 - a dataset that cannot give a sample holds what it holds
        return 0
    items = first if isinstance(first, (tuple, list)) else [first]
    return sum(t.element_size() * t.nelement() for t in items if isinstance(t, torch.Tensor))


def held_by(strategy: Any, *, model: torch.nn.Module | None, optimizer: Any, data: list[torch.Tensor],
            input_shape: tuple[int, ...], skip: tuple[Any, ...] = (), own_samples: int | None = None,
            limit: int = 200_000) -> Held:
    """What ``strategy`` holds (see the module docstring). ``skip``: objects that are not the
    strategy's (clbench's evaluation plugin); ``own_samples``: the strategy's own count of its
    samples; ``limit``: objects visited at most (past it the answer is unknown)."""
    excluded = set()
    for t in [*(model.parameters() if model is not None else ()), *(model.buffers() if model is not None else ()),
              *data]:
        excluded.add(_storage(t))
    kept = getattr(strategy, "kept_data", None)  # the scenario's tensors a strategy keeps as its memory
    for t in kept() if callable(kept) else ():
        excluded.discard(_storage(t))
    if optimizer is not None:
        for state in getattr(optimizer, "state", {}).values():
            for v in state.values() if isinstance(state, dict) else ():
                if isinstance(v, torch.Tensor):
                    excluded.add(_storage(v))
    visited = {id(model), id(optimizer), *(id(s) for s in skip)}
    storages: dict[tuple[str, int], int] = {}
    samples = 0.0
    nbytes = 0
    todo = deque([strategy])
    while todo:
        obj = todo.popleft()
        if id(obj) in visited or isinstance(obj, _LEAVES):
            continue
        visited.add(id(obj))
        if len(visited) > limit:
            return Held(float("nan"), float("nan"))
        if isinstance(obj, torch.Tensor):
            key = _storage(obj)
            if key in excluded or key in storages or obj.device.type == "meta":
                continue
            storages[key] = obj.untyped_storage().nbytes()
            if obj.dim() == len(input_shape) + 1 and tuple(obj.shape[1:]) == tuple(input_shape):
                samples += obj.shape[0]
            continue
        if isinstance(obj, np.ndarray):
            nbytes += obj.nbytes
            continue
        if isinstance(obj, torch.utils.data.DataLoader):
            continue  # it iterates over datasets reached elsewhere
        if _is_dataset(obj):
            n = len(obj)
            samples += n
            nbytes += n * _sample_bytes(obj) if n else 0
            continue
        if isinstance(obj, dict):
            todo.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset, deque)):
            todo.extend(obj)
            continue
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            todo.extend(v for k, v in attrs.items() if k not in TRANSIENT)
        for name in getattr(type(obj), "__slots__", ()):
            if name not in TRANSIENT and hasattr(obj, name):
                todo.append(getattr(obj, name))
    total = nbytes + sum(storages.values())
    return Held(float(own_samples) if own_samples is not None else samples, float(total))


def as_summary(held: Held) -> dict[str, float | None]:
    """The summary's fields: None (JSON null, "unknown" in tables) where it could not be measured."""
    return {"memory_samples": None if math.isnan(held.samples) else held.samples,
            "memory_bytes": None if math.isnan(held.bytes) else held.bytes}
