"""Per-sample gradients of Linear layers without materialising them: the gradient of sample n's
loss w.r.t. a Linear layer's weight is the outer product delta_n a_n^T (delta: the gradient at
the layer's output, a: its input). EWC's exact Fisher and GEM's per-task memory gradients both
build on this for MLPs, from the layers' recorded inputs and outputs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def linear_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The model's Linear layers if they hold every trainable parameter (MLPs), else None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for m in linears for p in m.parameters() if p.requires_grad}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    return linears if linears and owned == trainable else None


@contextlib.contextmanager
def recorded_io(linears: list[nn.Linear]) -> Iterator[tuple[dict, dict]]:
    """``(inputs, outputs)`` of each layer during the forward passes inside the block: inputs
    detached, outputs kept in the graph (to take gradients at them)."""
    inputs: dict[nn.Linear, torch.Tensor] = {}
    outputs: dict[nn.Linear, torch.Tensor] = {}

    def hook(module, inp, out):
        inputs[module], outputs[module] = inp[0].detach(), out

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        yield inputs, outputs
    finally:
        for h in handles:
            h.remove()
