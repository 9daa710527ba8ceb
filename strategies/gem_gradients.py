"""GEM's gradients for MLPs in one pass: the current batch's flat gradient and one flat gradient row
per past task's memory, from one forward over the batch and the concatenated memory and one
backward pass to the Linear layers' outputs (``linear_layers``). ``GEM.memory_gradients`` falls
back to a loop over tasks for other models."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clbench.strategies.linear_layers import recorded_io


def one_pass(strategy, linears: list[nn.Linear], x, y, task_ids, memory: tuple[torch.Tensor, ...], sizes: list[int],
             slots: dict[int, tuple[int, int]]):
    """``(loss, g, G)``: the current batch's loss and flat gradient (None without a batch) and
    one flat gradient row per past task, from one forward over the batch and the concatenated
    memory and one backward pass to the layers' outputs. The gradient of row n's loss w.r.t. a
    Linear layer is delta_n a_n^T, so a group of rows (the batch, a task's memory) has the
    gradient delta[group]^T a[group]: one matmul per group and layer, written straight into
    ``g`` and ``G``. None when a layer sees more than one vector per sample."""
    mx, my, mt = memory
    n = 0 if x is None else len(y)
    rows = mx if x is None else torch.cat([strategy.augment_inputs(x), mx])
    with recorded_io(linears) as (inputs, outputs):
        logits = strategy.logits(rows, mt if x is None else torch.cat([task_ids, mt]))
    if any(inputs[m].dim() != 2 for m in linears):
        return None
    weights = torch.cat([torch.full((k,), 1.0 / k, device=my.device) for k in sizes])
    total = (F.cross_entropy(logits[n:], my, reduction="none") * weights).sum()
    loss = strategy.batch_loss(logits[:n], y) if n else None
    # each row's loss depends on its own row alone, so one backward of the sum gives every
    # group's own deltas
    deltas = torch.autograd.grad(total if loss is None else loss + total, [outputs[m] for m in linears])
    groups = np.concatenate([[0, n], n + np.cumsum(sizes)]).tolist()
    n_params = sum(k for _, k in slots.values())
    flat = logits.new_empty(len(groups) - 1, n_params)  # row 0: the batch, then one row per task
    for m, d in zip(linears, deltas):
        a = inputs[m]
        for j, (lo, hi) in enumerate(zip(groups, groups[1:])):
            if hi == lo:
                continue
            o, k = slots[id(m.weight)]
            torch.mm(d[lo:hi].T, a[lo:hi], out=flat[j, o:o + k].view_as(m.weight))
            if m.bias is not None:
                o, k = slots[id(m.bias)]
                torch.sum(d[lo:hi], 0, out=flat[j, o:o + k])
    return loss, (flat[0] if n else None), flat[1:]
