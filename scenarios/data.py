"""The data model: whole splits held in memory as compact tensors, tasks, scenarios.

Images stay uint8 until a batch is drawn; conversion to float and normalisation happen per
batch (``TensorData.batch``), so MNIST- and CIFAR-sized datasets fit in RAM with no
DataLoader and no worker process on the hot path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch

#: the three settings of van de Ven et al. (2022)
Setting = Literal["class-il", "task-il", "domain-il"]
SETTINGS: tuple[str, ...] = get_args(Setting)


def seeded_generator(seed: int, *purpose) -> torch.Generator:
    """An independent CPU generator for one random choice of a run (``purpose`` names it, e.g.
    ``("task", 3)``), so adding a random choice elsewhere changes nothing here. The key is hashed
    with blake2b: deterministic across processes, unlike ``hash()`` of strings."""
    digest = hashlib.blake2b(repr((int(seed), *purpose)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class TensorData:
    """One split: ``x`` uint8 images ``[N, C, H, W]``, ``y`` int64 labels ``[N]``.

    ``mean``/``std`` (per channel, on the 0..1 scale) normalise batches on the fly.
    """

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> TensorData:
        return TensorData(self.x[idx], self.y[idx], self.mean, self.std)

    def with_labels(self, y: torch.Tensor) -> TensorData:
        return TensorData(self.x, y, self.mean, self.std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (any device) -> normalised float32."""
        return normalize(x, self.mean, self.std)

    def batch(self, idx: torch.Tensor | None = None, device: str | torch.device = "cpu"):
        """Float, normalised ``(x, y)`` for the given indices (all samples when ``idx`` is None)."""
        x = self.x if idx is None else self.x.index_select(0, idx)
        y = self.y if idx is None else self.y.index_select(0, idx)
        return self.normalize(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 -> float in [0, 1] -> (x - mean) / std, per channel."""
    xf = x.float().div_(255.0)
    if len(mean) == 1:
        return xf.sub_(mean[0]).div_(std[0])
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return xf.sub_(m).div_(s)


def stratified_split(data: TensorData, fraction: float, g: torch.Generator) -> tuple[TensorData, TensorData | None]:
    """``(rest, held_out)``: ``round(fraction * n_c)`` samples of every class ``c`` held out (at
    least one where ``fraction`` > 0 and the class has two or more samples, never all of them),
    chosen with ``g``; both parts keep the original sample order. ``fraction == 0`` holds out nothing."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), not {fraction}")
    if fraction == 0.0 or len(data) == 0:
        return data, None
    held = []
    for c in torch.unique(data.y).tolist():
        idx = torch.nonzero(data.y == c).flatten()
        k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        if k > 0:
            held.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    mask = torch.zeros(len(data), dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return data.subset(torch.nonzero(~mask).flatten()), data.subset(torch.nonzero(mask).flatten())


@dataclass
class Task:
    """One task of a scenario: its training, test and (optional) validation data and the
    (global) classes it holds. ``val`` is carved out of the training data (``--val-fraction``),
    so the model never trains on it; hyperparameters are chosen on it, never on ``test``."""

    id: int
    train: TensorData
    test: TensorData
    classes: list[int]
    val: TensorData | None = None

    def split(self, which: str) -> TensorData:
        """The task's ``train``, ``val`` or ``test`` data (a clear error for a missing split)."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"unknown split {which!r}; use train, val or test")
        data = getattr(self, which)
        if data is None or len(data) == 0:
            raise ValueError(f"task {self.id} has no {which} data (validation needs a val fraction > 0)")
        return data

    def __repr__(self) -> str:
        val = f", val={len(self.val)}" if self.val is not None else ""
        return f"Task(id={self.id}, classes={self.classes}, train={len(self.train)}{val}, test={len(self.test)})"


@dataclass
class Scenario:
    """A stream of tasks over one dataset.

    ``setting`` is part of the scenario: ``class-il`` (one head over all classes),
    ``task-il`` (task identity given, the head masked to the task's classes) or
    ``domain-il`` (the same label space in every task). Slicing (``scenario[:k]``) gives the
    scenario of the first ``k`` tasks.
    """

    name: str
    setting: str
    tasks: list[Task]
    n_classes: int
    input_shape: tuple[int, ...]
    class_order: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, not {self.setting!r}")

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return Scenario(self.name, self.setting, self.tasks[item], self.n_classes, self.input_shape,
                            self.class_order, dict(self.meta))
        return self.tasks[item]

    @property
    def task_classes(self) -> list[list[int]]:
        return [t.classes for t in self.tasks]

    def task_mask(self) -> torch.Tensor:
        """``[n_tasks, n_classes]`` bool: which outputs belong to which task (task-il masking)."""
        mask = torch.zeros(len(self.tasks), self.n_classes, dtype=torch.bool)
        for t in self.tasks:
            mask[t.id, t.classes] = True
        return mask

    def __repr__(self) -> str:
        return (f"Scenario({self.name!r}, {self.setting}, {len(self.tasks)} tasks, {self.n_classes} classes, "
                f"input {self.input_shape})")
