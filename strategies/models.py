"""The networks the literature uses on these benchmarks, one output head over all classes.

They live here (not in ``clbench``) because strategies need them too: the NMC baseline loads
a ``checkpoint:`` backbone by architecture name, and a user of ``strategies`` alone can build
the same networks the benchmark uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from clbench.common.errors import InputError
from clbench.common.validation import Count, checked


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear head (De Lange et al.: 784-400-400)."""

    @checked
    def __init__(self, input_shape: Sequence[Count], n_out: Count, hidden: Sequence[Count] = (400, 400)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_out)
        self.feature_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: a cheap convolutional baseline for 8x8 to 32x32 inputs."""

    @checked
    def __init__(self, input_shape: Sequence[Count], n_out: Count, width: Count = 32):
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.feature_dim = 8 * width
        self.head = nn.Linear(self.feature_dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SlimResNet18(nn.Module):
    """The reduced ResNet-18 of the GEM paper (Lopez-Paz & Ranzato 2017): nf=20 filters, 3x3 stem."""

    @checked
    def __init__(self, input_shape: Sequence[Count], n_out: Count, nf: Count = 20):
        super().__init__()
        c = input_shape[0]
        self.conv1 = nn.Conv2d(c, nf, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        blocks, cin = [], nf
        for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            blocks += [_BasicBlock(cin, nf * mult, stride), _BasicBlock(nf * mult, nf * mult, 1)]
            cin = nf * mult
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = cin
        self.head = nn.Linear(cin, n_out)

    def features(self, x):
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


MODELS = {"mlp": MLP, "cnn": SmallCNN, "resnet18-slim": SlimResNet18}


def build_model(name: str, input_shape: Sequence[int], n_out: int, **kwargs) -> nn.Module:
    """Build a registered network; ``kwargs`` are its own options (``hidden=[100, 100]``, ``nf=20``)."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    try:
        return MODELS[name](tuple(input_shape), n_out, **kwargs)
    except InputError as e:  # a declared option out of its range or of the wrong type
        raise InputError(f"bad options for model {name}: {e}") from None
    except TypeError as e:
        raise InputError(f"bad options for model {name}: {e}") from None
